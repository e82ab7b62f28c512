/**
 * The guest driver's per-packet code: send / flush / receive / release over
 * the shared buffers (zero-copy), the classic copied path through private
 * slots in GuestMemory, the rx postings that keep the ownership rules
 * (docs/protocol.md: every shared buffer we do not own is posted on rx, a
 * buffer is posted on our own rx before it leaves on tx, by us or, with rx
 * descriptors by buffer, by the switch; with swaps, a bridge or a pair's
 * swap exchange, our own empty buffers are posted instead); sleeping until
 * the switch signals a call eventfd is call-sleeper.ts's.
 *
 * Everything per packet works on typed arrays fixed at attach; the buffer
 * pool and the region are fields set once at construction, so the JIT sees
 * one shape and allocates nothing per packet.
 */
import { GIFT_CHAIN_MAX, VIRTIO_NET_HDR_F_GIFT_BUFFER } from '../vhost/protocol';
import { VIRTIO_NET_HDR_SIZE, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../virtio/defs';
import { type NetHdrOffload, writeNetHdr, writeNetHdrOffloadWords, writeNetHdrWords } from '../virtio/net-hdr';
import type { DriverQueue } from '../virtio/driver-queue';
import type { BufferPool } from './buffer-pool';
import { CallSleeper } from './call-sleeper';
import type { GuestMemory } from './guest-memory';
import { KIND_RAW, type QueuePair, RX_RAW } from './queue-pair';
import type { SharedRegion } from './shared-region';
import type { DriverCounters, RxBatch } from './counters';
import { Completion, completionKind, fixTxDesc, linkGiftChain, receiveFixedRun, sendFixedRun } from './fixed-descs';
import { bufInUsedLen, postOwnRun, reapSwapRun, receiveSwapRun, sendSwapRun } from './swap-descs';

/** The zcswitch protocol extensions a front-end acked beside SHARED_BUFFERS (docs/protocol.md), as the data path uses them. */
export interface AckedExtensions {
  /** PROTOCOL_F_RX_BY_BUFFER: the switch re-posts what we send where descriptors are fixed (fixedRx). */
  rxByBuffer: boolean;
  /** PROTOCOL_F_SWAP_IN_USED: with swaps a tx completion names the exchanged buffer in its used len. */
  swapInUsed: boolean;
  /** PROTOCOL_F_RETURNED_IN_USED: a RETURNED completion says so in its used len. */
  returnedInUsed: boolean;
}

export const NO_EXTENSIONS: AckedExtensions = { rxByBuffer: false, swapInUsed: false, returnedInUsed: false };

export class GuestDataPath {
  /** Swap mode: own empty buffers to keep posted per rx queue. */
  private readonly rxTarget: number;
  /** Swap mode: own empty buffers missing from the rx queues' targets, over all queues (0 otherwise). */
  private ownShort: number;
  /** Queue the next receive() starts from (round robin). */
  private rxNext = 0;
  /** Private tx slots free for sendCopy (slot indices after the copy targets). */
  private readonly privTxFree: Int32Array;
  /** The buffers of the gift chain being built (giftLinksFixed). */
  private readonly giftLinks = new Int32Array(GIFT_CHAIN_MAX);
  private privTxTop = 0;
  private readonly sleeper: CallSleeper;
  /** Test hooks: descriptors of each raw tx chain, by head. */
  private readonly rawChains = new Map<number, number[]>();

  constructor(
    /** null: the classic front-end (no SHARED_BUFFERS). */
    readonly shared: SharedRegion | null,
    private readonly gm: GuestMemory,
    private readonly qps: QueuePair[],
    private readonly pool: BufferPool,
    private readonly counters: DriverCounters,
    /** Where receive() reports packets. */
    private readonly rx: RxBatch,
    /** Tell the device vring i (2q rx, 2q+1 tx) has new buffers: an eventfd signal or a notify write. */
    private readonly kick: (vring: number) => void,
    /** Private slots [0, copyTargets) are rx copy targets, the next privTx are tx slots. */
    private readonly copyTargets: number,
    privTx: number,
    /** The protocol extensions acked beside SHARED_BUFFERS (none for a classic front-end). */
    acked: AckedExtensions = NO_EXTENSIONS,
  ) {
    this.swapInUsed = acked.swapInUsed;
    this.returnedInUsed = acked.returnedInUsed;
    this.sleeper = new CallSleeper(qps);
    this.rxTarget = shared ? Math.max(1, Math.floor((shared.partitionCount >> 1) / qps.length)) : 0;
    this.ownShort = shared !== null && shared.swap ? this.rxTarget * qps.length : 0;
    this.privTxFree = new Int32Array(privTx);
    for (let k = privTx - 1; k >= 0; k--) this.privTxFree[this.privTxTop++] = copyTargets + k;
    // Gift exchange: shared buffer b always posts in rx descriptor b (see postShared).
    const gifts = shared !== null && !shared.swap;
    this.fixedRx = gifts && qps.every((qp) => qp.rxq.ring.num >= shared.bufCount);
    if (this.fixedRx) {
      for (const qp of qps) {
        qp.rxq.reserveLow(shared!.bufCount);
        // Descriptor b is buffer b's: a completion of it names b even when we never posted it (rx by buffer).
        for (let b = 0; b < shared!.bufCount; b++) qp.rxKind[b] = b;
      }
    }
    this.rxByBuffer = acked.rxByBuffer && this.fixedRx;
    this.swapRuns = shared !== null && shared.swap && shared.oneBlock;
    this.swapGot = new Int32Array(this.swapRuns ? Math.max(...qps.map((qp) => Math.max(qp.txq.ring.num, qp.rxq.ring.num))) : 0);
    this.postOnSend = gifts && !this.rxByBuffer;
    // Gift exchange: shared buffer b always leaves in tx descriptor b (see fixedTx); the rest of the ring is for private slots.
    this.fixedTx = gifts && qps.every((qp) => qp.txq.ring.num >= shared.bufCount + privTx);
    if (this.fixedTx) {
      for (const qp of qps) {
        qp.txq.reserveLow(shared!.bufCount);
        for (let b = 0; b < shared!.bufCount; b++) shared!.setBufDesc(qp.txq.ring, b, b, VIRTIO_NET_HDR_SIZE, 0, 0);
        for (let b = 0; b < shared!.bufCount; b++) qp.txWords[2 * b] = VIRTIO_NET_HDR_SIZE;
      }
    }
  }

  /**
   * Shared buffer b leaves in tx descriptor b (gift exchange, tx rings of at
   * least bufCount entries plus the private tx slots). A buffer is in
   * flight at most once, so its descriptor is free whenever it is ours to
   * send, and a completion frees nothing: the driver neither allocates nor
   * frees tx descriptors for shared buffers, writes a descriptor's address
   * only once (here) and its length and chain word only when they change,
   * and reaps a run of such completions by moving its used index
   * (DriverQueue.skipUsed) instead of reading every entry. Descriptors from
   * bufCount up carry private tx slots (sendCopy) as before. Swaps rewrite
   * tx descriptors, so they allocate them.
   */
  readonly fixedTx: boolean;

  /** The switch re-posts what we send (PROTOCOL_F_RX_BY_BUFFER acked, descriptors fixed). */
  readonly rxByBuffer: boolean;
  /** PROTOCOL_F_SWAP_IN_USED was acked: with swaps a tx completion's used len is the exchanged buffer + 1 (0: ours, in the descriptor). */
  readonly swapInUsed: boolean;
  /**
   * PROTOCOL_F_RETURNED_IN_USED was acked: a RETURNED completion says so in
   * its used len, so a 12-byte one is a gift without reading the buffer's
   * header (completionKind).
   */
  readonly returnedInUsed: boolean;

  /** Swaps in a region of one 4 GiB block: sends, completions and own postings go through swap-descs.ts's loops. */
  private readonly swapRuns: boolean;
  /** Their scratch: buffers a run takes from or gives to the pool. */
  private readonly swapGot: Int32Array;

  /**
   * Ownership rule 2 is ours to keep: post each shared buffer on our own rx
   * before it leaves on tx. Not with swaps (nothing to post), nor with rx
   * descriptors by buffer (docs/protocol.md, "Pair mode: rx descriptors by
   * buffer"): there the switch counts a buffer we send as posted in
   * descriptor b, so a send writes nothing on rx.
   */
  private readonly postOnSend: boolean;

  /**
   * Shared buffer b posts in rx descriptor b (gift exchange, rx rings of at
   * least bufCount entries): a buffer is posted at most once, so its
   * descriptor is always free when it is posted, and the descriptor's
   * words never change, so they are written once and then only made
   * available again. The switch then reads a descriptor line that stays in
   * its cache instead of one this VM just wrote (docs/performance-log.md, "The
   * zero-copy fast lane and a cheaper guest driver"). Swaps rewrite rx descriptors, so
   * they take descriptors as they come.
   */
  private readonly fixedRx: boolean;

  /**
   * The postings before the rings start. Pair: every shared buffer we do not
   * own (the peer may send it). Swap: half of our own buffers; but a VM that
   * starts with none posts the others too, so the switch can gift it buffers
   * from its pool. Then every copy target.
   */
  postInitial(): void {
    const sh = this.shared;
    const nq = this.qps.length;
    if (sh) {
      for (let b = 0; b < sh.bufCount; b++) {
        if (sh.inPartition(b)) this.pool.put(b);
        else if (!sh.swap || sh.partitionCount === 0) this.postShared(b, b % nq);
      }
      if (sh.swap) for (let q = 0; q < nq; q++) this.refillOwnRx(q);
    }
    for (let k = 0; k < this.copyTargets; k++) this.postCopyTarget(k, k % nq);
    for (const qp of this.qps) {
      qp.rxq.publishAvail();
      qp.rxDirty = false;
    }
  }

  get queuePairs(): number {
    return this.qps.length;
  }

  /** Byte offset in shared.mem where buffer b's Ethernet frame starts. */
  frameOffset(b: number): number {
    return this.shared!.offsetOf(b) + VIRTIO_NET_HDR_SIZE;
  }

  /** Largest frame a shared buffer (or, classic, a private slot) holds. */
  get maxFrame(): number {
    return this.shared ? this.shared.bufSize - VIRTIO_NET_HDR_SIZE : this.gm.slotSize - VIRTIO_NET_HDR_SIZE;
  }

  // ---- transmit ------------------------------------------------------------

  /**
   * A free shared buffer for the application, or -1. Swap: our own rx
   * postings are topped up first. The peer's frames wait for our empty
   * buffers, and what we send comes back as empty buffers only once the
   * peer has posted its own; a sender that spent every free buffer on tx
   * would leave both sides waiting until the switch's rxWaitMs ran out.
   */
  alloc(): number {
    this.topUpOwnRx();
    return this.pool.alloc();
  }

  /** alloc() for a burst: up to max free buffers into out[0, n); returns n. */
  allocBurst(out: Int32Array, max: number): number {
    this.topUpOwnRx();
    return this.pool.allocBurst(out, max);
  }

  /** Swap: our own rx postings short of their targets get free buffers before the application does (see alloc). */
  private topUpOwnRx(): void {
    if (this.ownShort > 0 && this.pool.count > 0) for (let q = 0; q < this.qps.length; q++) this.refillOwnRx(q);
  }

  txFree(q: number): number {
    const qp = this.qps[q];
    this.reapTx(qp);
    return Math.min(this.txRoom(qp), this.rxRoom(qp));
  }

  /** Shared-buffer sends queue pair qp's tx ring can still take: fixed descriptors never run out. */
  private txRoom(qp: QueuePair): number {
    return this.fixedTx ? qp.txq.ring.num : qp.txq.freeDescs;
  }

  /**
   * Put shared buffer b (len bytes, header included) on qp's tx ring as one
   * descriptor: its own (fixedTx), else an allocated one whose completion
   * reapTx turns back into a free descriptor. The caller checked the room.
   */
  private queueShared(qp: QueuePair, b: number, len: number): void {
    const tx = qp.txq;
    if (this.fixedTx) {
      fixTxDesc(qp, b, len, 0);
      tx.addAvail(b);
      return;
    }
    const id = tx.allocDesc();
    this.shared!.setBufDesc(tx.ring, id, b, len, 0, 0);
    qp.txKind[id] = b;
    qp.txOthers++;
    tx.addAvail(id);
  }

  /** Rx postings queue pair qp can still take: fixed descriptors never run out. */
  private rxRoom(qp: QueuePair): number {
    return this.fixedRx ? qp.rxq.ring.num : qp.rxq.freeDescs;
  }

  canSend(q: number): boolean {
    const qp = this.qps[q];
    return this.txRoom(qp) > 0 && this.rxRoom(qp) > 0;
  }

  send(b: number, frameLen: number, hdrFlags: number, q: number, offload: NetHdrOffload | null = null): boolean {
    const qp = this.qps[q];
    if (this.txRoom(qp) === 0) this.reapTx(qp);
    if (!this.canSend(q)) return false;
    const sh = this.shared!;
    if (offload === null) writeNetHdrWords(sh.mem32, sh.offsetOf(b) >>> 2, hdrFlags, 1);
    else writeNetHdrOffloadWords(sh.mem32, sh.offsetOf(b) >>> 2, hdrFlags, 1, offload);
    // Ownership rule 2 (docs/protocol.md): post b on our own rx before it leaves on tx.
    if (this.postOnSend) this.postShared(b, q);
    this.queueShared(qp, b, VIRTIO_NET_HDR_SIZE + frameLen);
    qp.txDirty = true;
    if (hdrFlags & VIRTIO_NET_HDR_F_GIFT_BUFFER) this.counters.giftsSent++;
    else {
      this.counters.txPackets++;
      this.counters.txBytes += frameLen;
    }
    return true;
  }

  /**
   * send() for a burst: bufs[i] (a free buffer of ours) with a frame of
   * lens[i] bytes behind a plain header, i < n, on queue pair q, in one loop
   * (the rx posting of each before its tx entry, as send() does). Returns
   * how many were queued: the first ones; the rest stay the caller's (no
   * room on the rings).
   */
  sendBurst(bufs: Int32Array, lens: Uint32Array, n: number, q: number): number {
    const qp = this.qps[q];
    const tx = qp.txq;
    if (this.txRoom(qp) < n) this.reapTx(qp);
    const room = Math.min(this.txRoom(qp), this.rxRoom(qp));
    if (n > room) n = room;
    if (n <= 0) return 0;
    if (this.fixedTx && !this.postOnSend) {
      // Rx descriptors by buffer: nothing to post, buffer b in tx descriptor b (fixed-descs.ts).
      this.counters.txBytes += sendFixedRun(qp, this.shared!, bufs, lens, n);
      this.counters.txPackets += n;
      qp.txDirty = true;
      return n;
    }
    if (this.swapRuns) {
      this.counters.txBytes += sendSwapRun(qp, this.shared!, bufs, lens, n);
      this.counters.txPackets += n;
      qp.txDirty = true;
      return n;
    }
    const sh = this.shared!;
    const mem32 = sh.mem32;
    const post = this.postOnSend;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const b = bufs[i];
      const len = lens[i];
      const off = sh.offsetOf(b);
      writeNetHdrWords(mem32, off >>> 2, 0, 1);
      // Ownership rule 2 (docs/protocol.md): post b on our own rx before it leaves on tx.
      if (post) this.postOn(qp, b);
      this.queueShared(qp, b, VIRTIO_NET_HDR_SIZE + len);
      bytes += len;
    }
    if (post) qp.rxDirty = true;
    qp.txDirty = true;
    this.counters.txPackets += n;
    this.counters.txBytes += bytes;
    return n;
  }

  sendCopy(src: Uint8Array, off: number, len: number, q: number): boolean {
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
    qp.txOthers++;
    qp.txq.addAvail(id);
    qp.txDirty = true;
    this.counters.txPackets++;
    this.counters.txBytes += len;
    return true;
  }

  flush(): void {
    if (this.pool.wantsToGift()) this.giftSurplus();
    const swap = this.shared !== null && this.shared.swap;
    for (let q = 0; q < this.qps.length; q++) {
      const qp = this.qps[q];
      if (swap && qp.ownPosted < this.rxTarget) this.refillOwnRx(q);
      // rx before tx: a buffer's return posting is visible before its send (rule 2).
      if (qp.rxDirty) {
        qp.rxq.publishAvail();
        qp.rxDirty = false;
        if (qp.rxq.needsKick()) this.kick(2 * q);
      }
      if (qp.txDirty) {
        qp.txq.publishAvail();
        qp.txDirty = false;
        if (qp.txq.needsKick()) this.kick(2 * q + 1);
      }
    }
  }

  /** Hand the pool's surplus back to the peer on queue pair 0, one chain per tx entry. */
  private giftSurplus(): void {
    const qp = this.qps[0];
    for (;;) {
      const k = this.pool.giftChainLength(this.txRoom(qp), this.rxRoom(qp));
      if (k === 0) return;
      this.sendGiftChain(qp, k);
    }
  }

  /**
   * One gift: k free buffers as one chain of 12-byte descriptors (docs/protocol.md,
   * ownership rule 4). Only the first header carries GIFT_BUFFER;
   * the receiver takes any 12-byte completion as a buffer handed back.
   */
  private sendGiftChain(qp: QueuePair, k: number): void {
    const post = this.postOnSend;
    const head = this.fixedTx ? this.giftLinksFixed(qp, k, post) : this.giftLinksAllocated(qp, k, post);
    if (post) qp.rxDirty = true;
    qp.txq.addAvail(head);
    qp.txDirty = true;
    this.counters.giftsSent += k;
  }

  /**
   * fixedTx: k pool buffers linked through their own descriptors, head
   * first in the pool's order; returns the head's descriptor. The peer's
   * driver gets the links back in this order and, its pool being a stack
   * too, sends them in reverse, so the same buffers come back here in the
   * same order: each descriptor's chain word is then as we last wrote it
   * and stays unwritten (built tail first, every one changed each time,
   * and each write took the line from the switch's cache).
   */
  private giftLinksFixed(qp: QueuePair, k: number, post: boolean): number {
    const links = this.giftLinks;
    this.pool.allocBurst(links, k);
    // Ownership rule 2 (docs/protocol.md): post b on our own rx before it leaves on tx.
    if (post) for (let i = 0; i < k; i++) this.postOn(qp, links[i]);
    linkGiftChain(qp, links, k);
    this.markGift(links[0]);
    return links[0];
  }

  /** k pool buffers in allocated descriptors, built tail first so each can name the next; returns the head's. */
  private giftLinksAllocated(qp: QueuePair, k: number, post: boolean): number {
    const sh = this.shared!;
    const q = qp.txq;
    const pool = this.pool;
    let next = 0;
    let b = -1;
    for (let i = 0; i < k; i++) {
      b = pool.alloc();
      if (post) this.postOn(qp, b);
      const id = q.allocDesc();
      sh.setBufDesc(q.ring, id, b, VIRTIO_NET_HDR_SIZE, i === 0 ? 0 : VIRTQ_DESC_F_NEXT, next);
      qp.txNext[id] = next;
      next = id;
    }
    qp.txKind[next] = b;
    qp.txSpan[next] = k;
    qp.txOthers++;
    this.markGift(b);
    return next;
  }

  /** Only a gift's first header needs GIFT_BUFFER (the receiver takes any 12-byte completion as a gift). */
  private markGift(b: number): void {
    const sh = this.shared!;
    writeNetHdrWords(sh.mem32, sh.offsetOf(b) >>> 2, VIRTIO_NET_HDR_F_GIFT_BUFFER, 1);
  }

  private reapTx(qp: QueuePair): void {
    const q = qp.txq;
    // fixedTx with nothing else in flight: every completion is a shared buffer's, and frees nothing.
    if (this.fixedTx && qp.txOthers === 0) {
      q.skipUsed();
      return;
    }
    for (;;) {
      // Swaps: runs of shared-buffer completions in one loop (swap-descs.ts); what it leaves, one at a time here.
      if (this.swapRuns && reapSwapRun(qp, this.shared!, this.pool, this.counters, this.swapGot, this.swapInUsed) === 0) return;
      if (q.usedPending() === 0) return;
      this.reapOne(qp);
    }
  }

  /** One tx completion of qp: free what its descriptor held. */
  private reapOne(qp: QueuePair): void {
    const q = qp.txq;
    const id = q.popUsed();
    // fixedTx: a shared buffer's own descriptor, nothing to free.
    if (id < q.reserved) return;
    qp.txOthers--;
    const kind = qp.txKind[id];
    if (kind === KIND_RAW) return this.freeRawChain(q, id);
    if (qp.txSpan[id] > 1) return this.freeGiftChain(qp, id);
    q.freeDesc(id);
    const sh = this.shared;
    if (kind < 0) this.privTxFree[this.privTxTop++] = -kind - 1;
    else if (sh !== null && sh.swap) {
      // Swap: the (empty) buffer we got in exchange, named by the used element (SWAP_IN_USED) or the descriptor;
      // used len 0, nothing exchanged: the descriptor still names ours.
      const got = this.swapInUsed ? q.lastUsedLen : 0;
      const b = got > 0 ? bufInUsedLen(got, sh.bufCount) : sh.bufAtDesc(q.ring, id);
      if (b >= 0) this.pool.put(b);
      else this.counters.rxErrors++;
    }
  }

  /** A gift chain completed: free every link. */
  private freeGiftChain(qp: QueuePair, id: number): void {
    const q = qp.txq;
    let d = id;
    for (let i = qp.txSpan[id]; i > 1; i--) {
      const nx = qp.txNext[d];
      q.freeDesc(d);
      d = nx;
    }
    q.freeDesc(d);
    qp.txSpan[id] = 0;
  }

  /** A raw chain (test hooks) completed: free its descriptors. */
  private freeRawChain(q: DriverQueue, id: number): void {
    for (const d of this.rawChains.get(id) ?? [id]) q.freeDesc(d);
    this.rawChains.delete(id);
  }

  /** Transmit entries (frames, gift chains) the switch has not completed yet, over all queue pairs. */
  txInFlight(): number {
    let n = 0;
    for (const qp of this.qps) {
      this.reapTx(qp);
      n += (qp.txq.availIdx - qp.txq.lastUsed) & 0xffff;
    }
    return n;
  }

  // ---- receive -------------------------------------------------------------

  receive(max: number): number {
    if (max > this.rx.rxToken.length) max = this.rx.rxToken.length;
    const nq = this.qps.length;
    let n = 0;
    for (let q = 0; q < nq; q++) this.reapTx(this.qps[q]);
    for (let i = 0; i < nq && n < max; i++) n = this.receiveQueue((this.rxNext + i) % nq, n, max);
    this.rxNext = (this.rxNext + 1) % nq;
    return n;
  }

  private receiveQueue(qi: number, n: number, max: number): number {
    const qp = this.qps[qi];
    if (this.fixedRx) return this.receiveFixed(qp, qi, n, max);
    if (this.swapRuns) return this.receiveSwapped(qp, qi, n, max);
    const q = qp.rxq;
    let pending = q.usedPending();
    while (pending-- > 0 && n < max) {
      const id = q.popUsed();
      n = this.receiveEntry(qp, qi, id, q.lastUsedLen, n);
    }
    return n;
  }

  /**
   * receiveQueue with fixedRx: runs of completions of shared buffers' own
   * descriptors go through receiveFixedRun (fixed-descs.ts); any other
   * completion (a copy target, a test hook's posting) takes receiveEntry.
   */
  private receiveFixed(qp: QueuePair, qi: number, n: number, max: number): number {
    const q = qp.rxq;
    for (;;) {
      n = receiveFixedRun(q, this.shared!, this.pool, this.counters, this.rx, qi, n, max, this.returnedInUsed);
      if (n >= max || q.usedPending() === 0) return n;
      const id = q.popUsed();
      n = this.receiveEntry(qp, qi, id, q.lastUsedLen, n);
    }
  }

  /** receiveQueue with swapRuns: runs of own postings' completions through receiveSwapRun (swap-descs.ts), anything else through receiveEntry. */
  private receiveSwapped(qp: QueuePair, qi: number, n: number, max: number): number {
    const q = qp.rxq;
    for (;;) {
      const posted = qp.ownPosted;
      n = receiveSwapRun(qp, this.shared!, this.pool, this.counters, this.rx, qi, n, max);
      this.ownShort += posted - qp.ownPosted;
      if (n >= max || q.usedPending() === 0) return n;
      const id = q.popUsed();
      n = this.receiveEntry(qp, qi, id, q.lastUsedLen, n);
    }
  }

  /** One rx completion (descriptor id, len bytes written) on queue pair qp (queue qi): returns n, plus one if it is a packet for the caller. */
  private receiveEntry(qp: QueuePair, qi: number, id: number, len: number, n: number): number {
    const q = qp.rxq;
    const sh = this.shared;
    let kind = qp.rxKind[id];
    q.freeDesc(id);
    if (kind === RX_RAW) return n;
    if (qp.rxOwn[id]) {
      // Swap: the switch may have put another buffer in this descriptor.
      qp.rxOwn[id] = 0;
      qp.ownPosted--;
      this.ownShort++;
      kind = sh!.bufAtDesc(q.ring, id);
      if (kind < 0) {
        this.counters.rxErrors++;
        return n;
      }
    }
    if (kind >= 0) {
      const what = completionKind(len, sh!.mem, sh!.offsetOf(kind), this.returnedInUsed);
      if (what === Completion.Refused) {
        // The switch refused this posting; the buffer is not ours.
        this.counters.rxErrors++;
        return n;
      }
      if (what !== Completion.Frame) {
        const returned = what !== Completion.Gift;
        if (returned) this.counters.returned++;
        else this.counters.giftsReceived++;
        this.pool.handedBack(kind, returned, what === Completion.ReturnedGift);
        return n;
      }
      this.pool.peerAlive();
    } else if (len <= VIRTIO_NET_HDR_SIZE) {
      this.postCopyTarget(-kind - 1, qi);
      return n;
    }
    this.rx.rxToken[n] = kind;
    this.rx.rxQueue[n] = qi;
    this.rx.rxLen[n] = len - VIRTIO_NET_HDR_SIZE;
    this.counters.rxPackets++;
    this.counters.rxBytes += len - VIRTIO_NET_HDR_SIZE;
    return n + 1;
  }

  packetMem(token: number): Uint8Array {
    return token >= 0 ? this.shared!.mem : this.gm.mem;
  }

  packetOffset(token: number): number {
    return token >= 0 ? this.frameOffset(token) : this.gm.slotOffset(-token - 1) + VIRTIO_NET_HDR_SIZE;
  }

  release(token: number): void {
    if (token >= 0) this.pool.put(token);
    else this.postCopyTarget(-token - 1, (-token - 1) % this.qps.length);
  }

  releaseBurst(tokens: Int32Array, n: number): void {
    const pool = this.pool;
    for (let i = 0; i < n; i++) {
      const token = tokens[i];
      if (token >= 0) pool.put(token);
      else this.release(token);
    }
  }

  // ---- rx postings ---------------------------------------------------------

  /** Swap mode: keep rxTarget of our own empty buffers posted on rx queue q. */
  private refillOwnRx(q: number): void {
    const qp = this.qps[q];
    const pool = this.pool;
    let n = Math.min(this.rxTarget - qp.ownPosted, pool.count, qp.rxq.freeDescs);
    if (n <= 0) return;
    this.ownShort -= n;
    qp.rxDirty = true;
    if (this.swapRuns) return postOwnRun(qp, this.shared!, pool, n, this.swapGot);
    qp.ownPosted += n;
    for (; n > 0; n--) qp.rxOwn[this.postOn(qp, pool.alloc())] = 1;
  }

  /** Post shared buffer b on rx queue q; returns the descriptor id. */
  private postShared(b: number, q: number): number {
    const qp = this.qps[q];
    qp.rxDirty = true;
    return this.postOn(qp, b);
  }

  /** Post shared buffer b on queue pair qp's rx ring (the caller marks it dirty); returns the descriptor id. */
  private postOn(qp: QueuePair, b: number): number {
    const sh = this.shared!;
    const rx = qp.rxq;
    if (!this.fixedRx) {
      const id = rx.allocDesc();
      sh.setBufDesc(rx.ring, id, b, sh.bufSize, VIRTQ_DESC_F_WRITE, 0);
      qp.rxKind[id] = b;
      rx.addAvail(id);
      return id;
    }
    // Descriptor b: written only when it does not say so already (a write would take the line from the switch's cache).
    const r = rx.ring;
    const d = r.desc32;
    if ((d[4 * b] | 0) !== ((sh.baseLo + b * sh.bufSize) | 0) || d[4 * b + 1] !== sh.baseHi || d[4 * b + 2] !== sh.bufSize || r.desc16[8 * b + 6] !== VIRTQ_DESC_F_WRITE || r.desc16[8 * b + 7] !== 0) {
      sh.setBufDesc(r, b, b, sh.bufSize, VIRTQ_DESC_F_WRITE, 0);
    }
    // rxKind[b] is b from construction on (the descriptors below bufCount are reserved).
    rx.addAvail(b);
    return b;
  }

  private postCopyTarget(k: number, q: number): void {
    const qp = this.qps[q];
    const id = qp.rxq.allocDesc();
    qp.rxq.ring.setDesc(id, this.gm.gpa(this.gm.slotOffset(k)), this.gm.slotSize, VIRTQ_DESC_F_WRITE, 0);
    qp.rxKind[id] = -(k + 1);
    qp.rxq.addAvail(id);
    qp.rxDirty = true;
  }

  // ---- sleeping (call-sleeper.ts) ------------------------------------------

  watchCall(fd: number): void {
    this.sleeper.watchCall(fd);
  }

  waitForWork(cb: () => void): void {
    this.sleeper.waitForWork(cb);
  }

  pollMode(): void {
    this.sleeper.pollMode();
  }

  /** Stop watching the call eventfds (before they are closed). */
  closeWatchers(): void {
    this.sleeper.close();
  }

  // ---- test hooks ----------------------------------------------------------

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
      qp.txOthers++;
      this.rawChains.set(ids[0], ids);
    }
    qp.txq.addAvail(headOverride ?? ids[0]);
    qp.txDirty = true;
    this.flush();
  }

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
}
