/**
 * GuestDriver: a vhost-user front-end in TypeScript (like DPDK's
 * virtio-user) with a netmap-style API over the Shared Buffers region
 * (docs/protocol.md):
 *
 *   alloc()            take a free shared buffer (owned by this VM)
 *   frameOffset(b)     where to write the Ethernet frame in shared.mem
 *   send(b, len)       post b on our own rx queue, then queue it on tx:
 *                      ownership passes to the peer
 *   flush()            publish both rings, kick if the switch asked, gift
 *   receive(max)       reap completions into rxToken[]/rxLen[]
 *   release(token)     give a received buffer back to the free pool
 *
 * Invariant kept by the driver: every shared buffer we do not own is posted
 * on our rx queue (the peer may send it to us), every buffer we own is in
 * the free pool, with the application, or in flight on tx. A VM whose free
 * pool grows above the high-water mark gifts the surplus (GIFT_BUFFER).
 * Classic traffic uses private copy-target and tx slots in GuestMemory.
 */
import { FdWatcher, closeFd, eventfdCreate, eventfdDrain, eventfdSignal, munmap } from '../../bindings';
import type { Logger } from '../log';
import { decodeU64, memTable, u64, vringAddr, vringState } from '../vhost/codec';
import {
  GIFT_CHAIN_MAX, PROTOCOL_F_MQ, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_SHARED_BUFFERS, Req, VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED,
} from '../vhost/protocol';
import {
  VIRTIO_F_VERSION_1, VIRTIO_NET_HDR_SIZE, VIRTIO_RING_F_EVENT_IDX, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_MAX_SIZE, bit, hasBit,
} from '../virtio/defs';
import { DriverQueue } from '../virtio/driver-queue';
import { writeNetHdr, writeNetHdrWords } from '../virtio/net-hdr';
import { SplitRing } from '../virtio/ring';
import { VhostUserFrontend } from './frontend';
import { GuestMemory } from './guest-memory';
import { KIND_RAW, QueuePair, RX_RAW } from './queue-pair';
import { type SharedRegion, fetchSharedRegion } from './shared-region';

export type { SharedRegion };

export interface GuestDriverOptions {
  socketPath: string;
  /** Negotiate SHARED_BUFFERS when the back-end offers it (default true). */
  zeroCopy?: boolean;
  /** Queue pairs to open (default 1; more needs VHOST_USER_PROTOCOL_F_MQ). */
  queuePairs?: number;
  txQueueSize?: number;
  /** Default: room for every shared buffer plus the copy targets. */
  rxQueueSize?: number;
  /** Private rx buffers posted for copied packets (default 256). */
  copyTargets?: number;
  /** Private tx buffers for sendCopy (default 64). */
  privateTx?: number;
  /** Size of a private slot (default: the region's bufSize, at least 2048). */
  slotSize?: number;
  /** Override the switch's gift watermarks (in buffers). */
  giftHigh?: number;
  giftLow?: number;
  log?: Logger;
  onClose?: (reason: string) => void;
}


export class DriverCounters {
  txPackets = 0;
  txBytes = 0;
  rxPackets = 0;
  rxBytes = 0;
  giftsSent = 0;
  giftsReceived = 0;
  returned = 0;
  /** Completions the driver could not make sense of (rejected postings). */
  rxErrors = 0;
}

export class GuestDriver {
  readonly counters = new DriverCounters();
  shared: SharedRegion | null = null;
  readonly rxToken: Int32Array;
  readonly rxLen: Uint32Array;
  /** Queue pair each received packet arrived on. */
  readonly rxQueue: Uint8Array;
  features = 0n;
  giftHigh = Infinity;
  giftLow = Infinity;

  private fe!: VhostUserFrontend;
  private gm!: GuestMemory;
  private qps: QueuePair[] = [];
  /** Swap mode: own empty buffers to keep posted per rx queue. */
  private rxTarget = 0;
  /** Queue the next receive() starts from (round robin). */
  private rxNext = 0;
  private freePool!: Int32Array;
  private freeTop = 0;
  private privTxFree!: Int32Array;
  private privTxTop = 0;
  private copyTargets = 0;
  private readonly kickFd: number[] = [];
  private readonly callFd: number[] = [];
  private readonly watchers: FdWatcher[] = [];
  private regionBuffer: ArrayBuffer | null = null;
  private wakeCb: (() => void) | null = null;
  private readonly rawChains = new Map<number, number[]>();
  private closed = false;
  /**
   * Set when a gift of ours came back RETURNED (the peer is gone or cannot
   * take it); cleared when the peer shows life (a packet or a gift from it).
   * Without it a VM whose peer left would gift and get its gifts back in a
   * tight loop.
   */
  private giftsBlocked = false;

  private constructor(private readonly opts: GuestDriverOptions, maxBatch: number) {
    this.rxToken = new Int32Array(maxBatch);
    this.rxLen = new Uint32Array(maxBatch);
    this.rxQueue = new Uint8Array(maxBatch);
  }

  /** Connect, negotiate, map, set up both rings and post the initial rx buffers. */
  static async attach(opts: GuestDriverOptions): Promise<GuestDriver> {
    const d = new GuestDriver(opts, 1024);
    try {
      await d.setup();
    } catch (e) {
      d.close();
      throw e;
    }
    return d;
  }

  private async setup(): Promise<void> {
    const o = this.opts;
    this.fe = VhostUserFrontend.connect(o.socketPath, (reason) => this.onDisconnect(reason));
    const fe = this.fe;
    const offered = decodeU64(await fe.call(Req.GET_FEATURES));
    if (!hasBit(offered, VIRTIO_F_VERSION_1)) throw new Error('back-end does not offer VIRTIO_F_VERSION_1');
    const want = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_RING_F_EVENT_IDX);
    this.features = offered & want;
    const protocol = hasBit(offered, VHOST_USER_F_PROTOCOL_FEATURES);
    if (protocol) {
      const pf = decodeU64(await fe.call(Req.GET_PROTOCOL_FEATURES));
      const wantP = bit(PROTOCOL_F_REPLY_ACK) | bit(PROTOCOL_F_MQ) | (o.zeroCopy === false ? 0n : bit(PROTOCOL_F_SHARED_BUFFERS));
      const acked = pf & wantP;
      await fe.send(Req.SET_PROTOCOL_FEATURES, u64(acked));
      fe.ackedProtocol = acked;
    }
    const nq = o.queuePairs ?? 1;
    if (nq > 1) {
      if (!hasBit(fe.ackedProtocol, PROTOCOL_F_MQ)) throw new Error(`${nq} queue pairs requested but the back-end does not offer multiqueue`);
      const max = Number(decodeU64(await fe.call(Req.GET_QUEUE_NUM)));
      if (nq > max) throw new Error(`${nq} queue pairs requested, the back-end supports ${max}`);
    }
    await fe.send(Req.SET_OWNER);
    if (hasBit(fe.ackedProtocol, PROTOCOL_F_SHARED_BUFFERS)) await this.mapSharedBuffers();
    await fe.send(Req.SET_FEATURES, u64(this.features));

    const sh = this.shared;
    const bufCount = sh ? sh.bufCount : 0;
    this.copyTargets = o.copyTargets ?? 256;
    const privTx = o.privateTx ?? 64;
    const rxNum = o.rxQueueSize ?? Math.min(VIRTQ_MAX_SIZE, nextPow2(bufCount + this.copyTargets));
    const txNum = o.txQueueSize ?? 1024;
    if (rxNum < bufCount) throw new Error(`rx queue size ${rxNum} cannot hold the region's ${bufCount} buffers`);
    this.copyTargets = Math.min(this.copyTargets, rxNum - bufCount);
    const slotSize = o.slotSize ?? Math.max(2048, sh ? sh.bufSize : 0);
    // Every rx ring can hold every buffer: postings need not be spread evenly.
    const sizes: number[] = [];
    for (let q = 0; q < nq; q++) sizes.push(rxNum, txNum);
    this.gm = new GuestMemory(sizes, this.copyTargets + privTx, slotSize);
    const eventIdx = hasBit(this.features, VIRTIO_RING_F_EVENT_IDX);
    for (let q = 0; q < nq; q++) {
      this.qps.push(new QueuePair(
        new DriverQueue(new SplitRing(rxNum, this.gm.ringParts(2 * q)), eventIdx),
        new DriverQueue(new SplitRing(txNum, this.gm.ringParts(2 * q + 1)), eventIdx),
      ));
    }
    this.freePool = new Int32Array(Math.max(1, bufCount));
    this.privTxFree = new Int32Array(privTx);
    for (let k = privTx - 1; k >= 0; k--) this.privTxFree[this.privTxTop++] = this.copyTargets + k;

    await fe.send(
      Req.SET_MEM_TABLE,
      memTable([{ guestPhysAddr: BigInt(this.gm.gpa(0)), memorySize: BigInt(this.gm.size), userspaceAddr: BigInt(this.gm.uaddr(0)), mmapOffset: 0n }]),
      [this.gm.fd],
    );

    // Initial posting. Pair: every shared buffer we do not own (the peer may
    // send it). Swap: half of our own buffers; but a VM that starts with none
    // posts the others too, so the switch can gift it buffers from its pool.
    if (sh) {
      const end = sh.partitionStart + sh.partitionCount;
      for (let b = 0; b < sh.bufCount; b++) {
        if (b >= sh.partitionStart && b < end) this.freePool[this.freeTop++] = b;
        else if (!sh.swap || sh.partitionCount === 0) this.postShared(b, b % nq);
      }
      this.rxTarget = Math.max(1, Math.floor((sh.partitionCount >> 1) / nq));
      if (sh.swap) for (let q = 0; q < nq; q++) this.refillOwnRx(q);
    }
    for (let k = 0; k < this.copyTargets; k++) this.postCopyTarget(k, k % nq);
    for (const qp of this.qps) {
      qp.rxq.publishAvail();
      qp.rxDirty = false;
    }

    for (let i = 0; i < 2 * nq; i++) {
      const r = this.gm.rings[i];
      this.kickFd[i] = eventfdCreate();
      this.callFd[i] = eventfdCreate();
      await fe.send(Req.SET_VRING_NUM, vringState(i, r.num));
      await fe.send(Req.SET_VRING_BASE, vringState(i, 0));
      await fe.send(Req.SET_VRING_ADDR, vringAddr({
        index: i, flags: 0, desc: BigInt(this.gm.uaddr(r.desc)), used: BigInt(this.gm.uaddr(r.used)),
        avail: BigInt(this.gm.uaddr(r.avail)), log: 0n,
      }));
      await fe.send(Req.SET_VRING_CALL, u64(BigInt(i)), [this.callFd[i]]);
      await fe.send(Req.SET_VRING_KICK, u64(BigInt(i)), [this.kickFd[i]]);
      const fd = this.callFd[i];
      const w = new FdWatcher(fd, () => {
        eventfdDrain(fd);
        const cb = this.wakeCb;
        this.wakeCb = null;
        cb?.();
      });
      this.watchers.push(w);
    }
    if (protocol) {
      for (let i = 0; i < 2 * nq; i++) await fe.send(Req.SET_VRING_ENABLE, vringState(i, 1));
    }
    for (let q = 0; q < nq; q++) eventfdSignal(this.kickFd[2 * q]);
    this.opts.log?.info({ socket: o.socketPath, zeroCopy: this.shared !== null, queuePairs: nq, rxNum, txNum, owned: this.freeTop }, 'guest driver attached');
  }

  private async mapSharedBuffers(): Promise<void> {
    const r = await fetchSharedRegion(this.fe, this.opts);
    this.regionBuffer = r.buffer;
    this.shared = r.region;
    this.giftHigh = r.giftHigh;
    this.giftLow = r.giftLow;
  }

  // ---- buffers -----------------------------------------------------------

  get freeCount(): number {
    return this.freeTop;
  }

  /** A free shared buffer this VM owns, or -1. */
  alloc(): number {
    return this.freeTop === 0 ? -1 : this.freePool[--this.freeTop];
  }

  /** Byte offset in shared.mem where buffer b's Ethernet frame starts. */
  frameOffset(b: number): number {
    return b * this.shared!.bufSize + VIRTIO_NET_HDR_SIZE;
  }

  /** Largest frame a shared buffer holds. */
  get maxFrame(): number {
    return this.shared ? this.shared.bufSize - VIRTIO_NET_HDR_SIZE : this.gm.slotSize - VIRTIO_NET_HDR_SIZE;
  }

  /** The connection is gone and the memory unmapped: nothing may be touched. */
  get isClosed(): boolean {
    return this.closed;
  }

  get queuePairs(): number {
    return this.qps.length;
  }

  /** Free tx descriptors on queue q (an echo should not take more packets than it can send back). */
  txFree(q = 0): number {
    const qp = this.qps[q];
    this.reapTx(qp);
    return Math.min(qp.txq.freeDescs, qp.rxq.freeDescs);
  }

  /** Room on tx queue q for another send (and on its rx for the return posting). */
  canSend(q = 0): boolean {
    const qp = this.qps[q];
    return qp.txq.freeDescs > 0 && qp.rxq.freeDescs > 0;
  }

  /**
   * Transmit shared buffer b holding a frame of frameLen bytes at
   * frameOffset(b). Returns false (and b stays ours) when the rings are full.
   */
  send(b: number, frameLen: number, hdrFlags = 0, q = 0): boolean {
    const qp = this.qps[q];
    if (qp.txq.freeDescs === 0) this.reapTx(qp);
    if (!this.canSend(q)) return false;
    const sh = this.shared!;
    writeNetHdrWords(sh.mem32, (b * sh.bufSize) >>> 2, hdrFlags, 1);
    // Ownership rule 2 (docs/protocol.md): post b on our own rx before it leaves on tx.
    if (!sh.swap) this.postShared(b, q);
    const id = qp.txq.allocDesc();
    qp.txq.ring.setDesc(id, sh.base + b * sh.bufSize, VIRTIO_NET_HDR_SIZE + frameLen, 0, 0);
    qp.txKind[id] = b;
    qp.txq.addAvail(id);
    qp.txDirty = true;
    if (hdrFlags & VIRTIO_NET_HDR_F_GIFT_BUFFER) this.counters.giftsSent++;
    else {
      this.counters.txPackets++;
      this.counters.txBytes += frameLen;
    }
    return true;
  }

  /** Transmit a frame from private memory (the classic, copied path). */
  sendCopy(src: Uint8Array, off: number, len: number, q = 0): boolean {
    const qp = this.qps[q];
    if (qp.txq.freeDescs === 0 || this.privTxTop === 0) for (const x of this.qps) this.reapTx(x);
    if (this.privTxTop === 0 || qp.txq.freeDescs === 0 || len + VIRTIO_NET_HDR_SIZE > this.gm.slotSize) return false;
    const k = this.privTxFree[--this.privTxTop];
    const at = this.gm.slotOffset(k);
    writeNetHdr(this.gm.mem, at, 0, 1);
    this.gm.mem.set(src.subarray(off, off + len), at + VIRTIO_NET_HDR_SIZE);
    const id = qp.txq.allocDesc();
    qp.txq.ring.setDesc(id, this.gm.gpa(at), VIRTIO_NET_HDR_SIZE + len, 0, 0);
    qp.txKind[id] = -(k + 1);
    qp.txq.addAvail(id);
    qp.txDirty = true;
    this.counters.txPackets++;
    this.counters.txBytes += len;
    return true;
  }

  /** Publish what was queued, gift any surplus, and kick where the switch asked. */
  flush(): void {
    if (this.freeTop > this.giftHigh && !this.giftsBlocked) this.giftSurplus();
    const swap = this.shared !== null && this.shared.swap;
    for (let q = 0; q < this.qps.length; q++) {
      const qp = this.qps[q];
      if (swap && qp.ownPosted < this.rxTarget) this.refillOwnRx(q);
      // rx before tx: a buffer's return posting is visible before its send (rule 2).
      if (qp.rxDirty) {
        qp.rxq.publishAvail();
        qp.rxDirty = false;
        if (qp.rxq.needsKick()) eventfdSignal(this.kickFd[2 * q]);
      }
      if (qp.txDirty) {
        qp.txq.publishAvail();
        qp.txDirty = false;
        if (qp.txq.needsKick()) eventfdSignal(this.kickFd[2 * q + 1]);
      }
    }
  }

  /**
   * Hand buffers above the low watermark back to the peer, up to
   * GIFT_CHAIN_MAX per descriptor chain: one tx entry then hands back 64
   * buffers, where one-way traffic used to cost one gift entry per packet.
   */
  private giftSurplus(): void {
    const qp = this.qps[0];
    for (;;) {
      let k = this.freeTop - this.giftLow;
      if (k > GIFT_CHAIN_MAX) k = GIFT_CHAIN_MAX;
      if (k > qp.txq.freeDescs) k = qp.txq.freeDescs;
      if (k > qp.rxq.freeDescs) k = qp.rxq.freeDescs;
      if (k <= 0) return;
      this.sendGiftChain(qp, k);
    }
  }

  /**
   * One gift: k free buffers as one chain of 12-byte descriptors (docs/protocol.md,
   * ownership rule 4). Only the first header carries GIFT_BUFFER;
   * the receiver takes any 12-byte completion as a buffer handed back.
   */
  private sendGiftChain(qp: QueuePair, k: number): void {
    const sh = this.shared!;
    const q = qp.txq;
    // Built tail first, so each descriptor can name the one after it.
    let next = 0;
    let b = -1;
    for (let i = 0; i < k; i++) {
      b = this.freePool[--this.freeTop];
      // Ownership rule 2 (docs/protocol.md): post b on our own rx before it leaves on tx.
      this.postShared(b, 0);
      const id = q.allocDesc();
      q.ring.setDesc(id, sh.base + b * sh.bufSize, VIRTIO_NET_HDR_SIZE, i === 0 ? 0 : VIRTQ_DESC_F_NEXT, next);
      qp.txNext[id] = next;
      next = id;
    }
    writeNetHdrWords(sh.mem32, (b * sh.bufSize) >>> 2, VIRTIO_NET_HDR_F_GIFT_BUFFER, 1);
    qp.txKind[next] = b;
    qp.txSpan[next] = k;
    q.addAvail(next);
    qp.txDirty = true;
    this.counters.giftsSent += k;
  }

  /**
   * Reap tx and rx completions on every queue pair, round robin. Received
   * packets land in rxToken/rxLen/rxQueue [0, n): a token >= 0 is a shared
   * buffer (frame at frameOffset), < 0 a private slot (use
   * packetMem/packetOffset). Gifts and returned buffers go straight to the
   * free pool.
   */
  receive(max: number): number {
    if (max > this.rxToken.length) max = this.rxToken.length;
    const nq = this.qps.length;
    let n = 0;
    for (let q = 0; q < nq; q++) this.reapTx(this.qps[q]);
    for (let i = 0; i < nq && n < max; i++) n = this.receiveQueue((this.rxNext + i) % nq, n, max);
    this.rxNext = (this.rxNext + 1) % nq;
    return n;
  }

  private receiveQueue(qi: number, n: number, max: number): number {
    const qp = this.qps[qi];
    const q = qp.rxq;
    const sh = this.shared;
    let pending = q.usedPending();
    while (pending-- > 0 && n < max) {
      const id = q.popUsed();
      const len = q.lastUsedLen;
      let kind = qp.rxKind[id];
      q.freeDesc(id);
      if (kind === RX_RAW) continue;
      if (qp.rxOwn[id]) {
        // Swap: the switch may have put another buffer in this descriptor.
        qp.rxOwn[id] = 0;
        qp.ownPosted--;
        kind = this.bufferAt(q.ring.descAddr(id));
        if (kind < 0) {
          this.counters.rxErrors++;
          continue;
        }
      }
      if (kind >= 0) {
        const flags = sh!.mem[kind * sh!.bufSize];
        if (len < VIRTIO_NET_HDR_SIZE) {
          // The switch refused this posting; the buffer is not ours.
          this.counters.rxErrors++;
          continue;
        }
        // A buffer handed back: 12 bytes (a gift, or a link of a gift chain
        // whose header nobody wrote) or flagged.
        if (len === VIRTIO_NET_HDR_SIZE || flags & (VIRTIO_NET_HDR_F_GIFT_BUFFER | VIRTIO_NET_HDR_F_RETURNED)) {
          if (flags & VIRTIO_NET_HDR_F_RETURNED) {
            this.counters.returned++;
            if (flags & VIRTIO_NET_HDR_F_GIFT_BUFFER) this.giftsBlocked = true;
          } else {
            this.counters.giftsReceived++;
            this.giftsBlocked = false;
          }
          this.freePool[this.freeTop++] = kind;
          continue;
        }
        this.giftsBlocked = false;
      } else if (len <= VIRTIO_NET_HDR_SIZE) {
        this.postCopyTarget(-kind - 1, qi);
        continue;
      }
      this.rxToken[n] = kind;
      this.rxQueue[n] = qi;
      this.rxLen[n++] = len - VIRTIO_NET_HDR_SIZE;
      this.counters.rxPackets++;
      this.counters.rxBytes += len - VIRTIO_NET_HDR_SIZE;
    }
    return n;
  }

  /** Memory holding a received packet's frame. */
  packetMem(token: number): Uint8Array {
    return token >= 0 ? this.shared!.mem : this.gm.mem;
  }

  /** Offset of a received packet's frame in packetMem(token). */
  packetOffset(token: number): number {
    return token >= 0 ? this.frameOffset(token) : this.gm.slotOffset(-token - 1) + VIRTIO_NET_HDR_SIZE;
  }

  /** Done with a received packet: its buffer returns to the free pool (or is reposted). */
  release(token: number): void {
    if (token >= 0) this.freePool[this.freeTop++] = token;
    else this.postCopyTarget(-token - 1, (-token - 1) % this.qps.length);
  }

  private reapTx(qp: QueuePair): void {
    const q = qp.txq;
    let pending = q.usedPending();
    while (pending-- > 0) {
      const id = q.popUsed();
      const kind = qp.txKind[id];
      if (kind === KIND_RAW) {
        for (const d of this.rawChains.get(id) ?? [id]) q.freeDesc(d);
        this.rawChains.delete(id);
        continue;
      }
      if (qp.txSpan[id] > 1) {
        // A gift chain: free every link.
        let d = id;
        for (let i = qp.txSpan[id]; i > 1; i--) {
          const nx = qp.txNext[d];
          q.freeDesc(d);
          d = nx;
        }
        q.freeDesc(d);
        qp.txSpan[id] = 0;
        continue;
      }
      q.freeDesc(id);
      if (kind < 0) this.privTxFree[this.privTxTop++] = -kind - 1;
      else if (this.shared!.swap) {
        // Swap: the descriptor now names the (empty) buffer we got in exchange.
        const b = this.bufferAt(q.ring.descAddr(id));
        if (b >= 0) this.freePool[this.freeTop++] = b;
        else this.counters.rxErrors++;
      }
    }
  }

  /** Buffer index of a buffer-start address in the region, or -1. */
  private bufferAt(addr: number): number {
    const sh = this.shared!;
    const off = addr - sh.base;
    if (off < 0 || off >= sh.bufCount * sh.bufSize || off % sh.bufSize !== 0) return -1;
    return off / sh.bufSize;
  }

  /** Swap mode: keep rxTarget of our own empty buffers posted on rx queue q. */
  private refillOwnRx(q: number): void {
    const qp = this.qps[q];
    while (qp.ownPosted < this.rxTarget && this.freeTop > 0 && qp.rxq.freeDescs > 0) {
      const id = this.postShared(this.freePool[--this.freeTop], q);
      qp.rxOwn[id] = 1;
      qp.ownPosted++;
    }
  }

  /** Post shared buffer b on rx queue q; returns the descriptor id. */
  private postShared(b: number, q: number): number {
    const sh = this.shared!;
    const qp = this.qps[q];
    const id = qp.rxq.allocDesc();
    qp.rxq.ring.setDesc(id, sh.base + b * sh.bufSize, sh.bufSize, VIRTQ_DESC_F_WRITE, 0);
    qp.rxKind[id] = b;
    qp.rxq.addAvail(id);
    qp.rxDirty = true;
    return id;
  }

  private postCopyTarget(k: number, q: number): void {
    const qp = this.qps[q];
    const id = qp.rxq.allocDesc();
    qp.rxq.ring.setDesc(id, this.gm.gpa(this.gm.slotOffset(k)), this.gm.slotSize, VIRTQ_DESC_F_WRITE, 0);
    qp.rxKind[id] = -(k + 1);
    qp.rxq.addAvail(id);
    qp.rxDirty = true;
  }

  // ---- sleeping ------------------------------------------------------------

  /**
   * Sleep until the switch completes something: re-enable calls, re-check,
   * and call cb once (at once if work is already pending).
   */
  waitForWork(cb: () => void): void {
    if (this.closed) return;
    let pending = 0;
    for (const qp of this.qps) pending += qp.rxq.setCalls(true) + qp.txq.setCalls(true);
    if (pending > 0) {
      this.pollMode();
      setImmediate(cb);
      return;
    }
    this.wakeCb = () => {
      this.pollMode();
      cb();
    };
    for (const w of this.watchers) w.start();
  }

  /** Transmit descriptors the switch has not completed yet, over all queue pairs. */
  txInFlight(): number {
    let n = 0;
    for (const qp of this.qps) {
      this.reapTx(qp);
      n += qp.txq.ring.num - qp.txq.freeDescs;
    }
    return n;
  }

  /**
   * Before leaving: wait (up to timeoutMs) until the switch has taken every
   * packet we queued. Closing the connection earlier would drop what is
   * still on the tx rings. Resolves with what is left (0 = drained).
   */
  async drainTx(timeoutMs = 2000): Promise<number> {
    // A closed driver has nothing to drain (and its rings are unmapped).
    if (this.closed) return 0;
    this.flush();
    const end = Date.now() + timeoutMs;
    let left = this.txInFlight();
    while (left > 0 && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 1));
      if (this.closed) return 0;
      left = this.txInFlight();
    }
    return left;
  }

  /** Calls off while the application is polling. */
  pollMode(): void {
    for (const qp of this.qps) {
      qp.rxq.setCalls(false);
      qp.txq.setCalls(false);
    }
  }

  // ---- test hooks ----------------------------------------------------------

  /**
   * Put an arbitrary descriptor chain on tx (tests of the switch's
   * validation). `next` is an index into `descs`; headOverride publishes a
   * raw head value instead of the chain's first descriptor.
   */
  injectRawTx(descs: { addr: number; len: number; flags?: number; next?: number }[], headOverride?: number): void {
    const qp = this.qps[0];
    const ids = descs.map(() => qp.txq.allocDesc());
    if (ids.some((i) => i < 0)) throw new Error('tx ring full');
    descs.forEach((d, i) => {
      const flags = d.flags ?? (d.next !== undefined ? VIRTQ_DESC_F_NEXT : 0);
      qp.txq.ring.setDesc(ids[i], d.addr, d.len, flags, d.next !== undefined ? ids[d.next] : 0);
    });
    if (ids.length) {
      qp.txKind[ids[0]] = KIND_RAW;
      this.rawChains.set(ids[0], ids);
    }
    qp.txq.addAvail(headOverride ?? ids[0]);
    qp.txDirty = true;
    this.flush();
  }

  /**
   * Put an arbitrary rx posting on queue 0 (tests of the switch's rx
   * validation). The descriptor is never reused by the driver: its
   * completion, if any, is ignored.
   */
  injectRawRx(addr: number, len: number, flags: number): void {
    const qp = this.qps[0];
    const id = qp.rxq.allocDesc();
    if (id < 0) throw new Error('rx ring full');
    qp.rxq.ring.setDesc(id, addr, len, flags, 0);
    qp.rxKind[id] = RX_RAW;
    qp.rxq.addAvail(id);
    qp.rxDirty = true;
    this.flush();
  }

  /** Guest-physical address of private slot k (for raw tests). */
  privateSlotAddr(k: number): number {
    return this.gm.gpa(this.gm.slotOffset(k));
  }

  get privateMem(): Uint8Array {
    return this.gm.mem;
  }

  get guestMemorySize(): number {
    return this.gm.size;
  }

  // ---- teardown --------------------------------------------------------------

  private onDisconnect(reason: string): void {
    if (this.closed) return;
    this.opts.log?.warn({ reason }, 'switch connection closed');
    this.close();
    this.opts.onClose?.(reason);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watchers) w.close();
    this.watchers.length = 0;
    if (this.fe && !this.fe.isClosed) this.fe.close();
    for (const fd of [...this.kickFd, ...this.callFd]) {
      try {
        closeFd(fd);
      } catch {
        /* already closed */
      }
    }
    this.gm?.close();
    if (this.regionBuffer) munmap(this.regionBuffer);
    this.regionBuffer = null;
  }
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p <<= 1;
  return p;
}
