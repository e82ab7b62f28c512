/**
 * A switch port: one vhost-user socket `<socketDir>/<name>.sock`, at most
 * one front-end at a time, its running queues (virtio-net: vring 0 = the
 * VM's receive queue, vring 1 = its transmit queue), kick watchers, and the
 * table of shared buffers the VM has posted on its receive queue (docs/protocol.md,
 * rule 3: buffer index → rx descriptor head, O(1) lookup).
 */
import { FdWatcher, closeFd, dupFd, eventfdDrain, eventfdSignal } from '../../bindings';
import type { Logger } from '../log';
import { POOL, type OwnershipLedger } from '../shm/ledger';
import type { SharedBuffers } from '../shm/shared-buffers';
import { VhostUserBackend } from '../vhost/session';
import type { SharedBuffersInfo } from '../vhost/codec';
import { SHARED_BUFFERS_F_SWAP, VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED } from '../vhost/protocol';
import { CHAIN_BAD_HEAD, CHAIN_BAD_NEXT, CHAIN_INDIRECT, CHAIN_LOOP, CHAIN_TOO_LONG, ChainSegments, ChainWalker } from '../virtio/chain';
import { VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_SIZE, hasBit } from '../virtio/defs';
import type { DeviceQueue } from '../virtio/device-queue';
import { netHdrFlags, setNetHdrFlags, writeNetHdr } from '../virtio/net-hdr';
import { Drop, PortCounters } from '../datapath/counters';
import { HeadFifo } from '../datapath/head-fifo';
import type { Mirror } from '../datapath/mirror';

/** virtio-net: vring 2q is queue pair q's receive queue, 2q+1 its transmit queue. */
export const rxVring = (q: number): number => 2 * q;
export const txVring = (q: number): number => 2 * q + 1;

/** rxSlot packs (rx queue, head): heads are < 32768, queues < 256. */
export const SLOT_QUEUE_SHIFT = 16;
const SLOT_HEAD_MASK = 0xffff;

/** What every port shares: the region, the ledger, logging, and the switch's wake-up. */
export interface PortContext {
  shared: SharedBuffers;
  ledger: OwnershipLedger;
  log: Logger;
  features: bigint;
  protocolFeatures: bigint;
  giftHigh: number;
  giftLow: number;
  /** Queue pairs each port offers (VHOST_USER_PROTOCOL_F_MQ). */
  queuePairs: number;
  /** Bridge mode: VMs post their own buffers and the switch swaps (docs/protocol.md, "Bridge mode"). */
  swap: boolean;
  /** A kick arrived or queues changed: run the data path. */
  wake(): void;
  /** A front-end attached or went away (for pair bookkeeping and logs). */
  attached(port: Port): void;
  detached(port: Port, reason: string): void;
}

/** Map a ChainWalker error to its drop reason. */
export function chainDrop(code: number): Drop {
  switch (code) {
    case CHAIN_BAD_HEAD: return Drop.BadHead;
    case CHAIN_BAD_NEXT: return Drop.BadNext;
    case CHAIN_LOOP: return Drop.ChainLoop;
    case CHAIN_TOO_LONG: return Drop.ChainTooLong;
    case CHAIN_INDIRECT: return Drop.Indirect;
    default: return Drop.BadOrder;
  }
}

export class Port {
  readonly isTap = false;
  backend: VhostUserBackend | null = null;
  /** Running receive / transmit queues by queue-pair index (null: not running). */
  readonly rxqs: (DeviceQueue | null)[];
  readonly txqs: (DeviceQueue | null)[];
  readonly rxWalkers: (ChainWalker | null)[];
  readonly txWalkers: (ChainWalker | null)[];
  /** Queue pairs up to the highest running one (loops stop here). */
  nq = 0;
  readonly counters = new PortCounters();
  /** Per queue pair: [4q]=rx packets, [4q+1]=rx bytes, [4q+2]=tx packets, [4q+3]=tx bytes. */
  readonly queueCounters: Float64Array;
  /** rxSlot[b] = (rx queue << 16 | head) of the rx descriptor posting shared buffer b, or -1. */
  readonly rxSlot: Int32Array;
  /** Per rx queue: posted chains outside the region, targets for copied packets. */
  private readonly copyQ: HeadFifo[];
  /** Per rx queue, bridge mode: posted descriptors holding this port's own empty buffers. */
  private readonly ownRx: HeadFifo[];
  private readonly seg = new ChainSegments();
  private readonly kick: ({ watcher: FdWatcher; fd: number; gen: number } | undefined)[] = [];
  /** The region is usable by this front-end (SHARED_BUFFERS negotiated and fetched). */
  zeroCopy = false;
  /** Set while someone captures this port's traffic. */
  mirror: Mirror | null = null;
  /** The front-end takes packets spread over several rx buffers (VIRTIO_NET_F_MRG_RXBUF). */
  mergeable = false;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly socketPath: string,
    readonly partition: { start: number; count: number },
    private readonly ctx: PortContext,
  ) {
    this.rxSlot = new Int32Array(ctx.shared.bufCount).fill(-1);
    const n = ctx.queuePairs;
    this.rxqs = new Array<DeviceQueue | null>(n).fill(null);
    this.txqs = new Array<DeviceQueue | null>(n).fill(null);
    this.rxWalkers = new Array<ChainWalker | null>(n).fill(null);
    this.txWalkers = new Array<ChainWalker | null>(n).fill(null);
    this.copyQ = Array.from({ length: n }, () => new HeadFifo());
    this.ownRx = Array.from({ length: n }, () => new HeadFifo());
    this.queueCounters = new Float64Array(4 * n);
    this.counters.onFirstDrop = (reason) =>
      ctx.log.warn({ port: name, reason }, 'first drop for this reason (later ones are only counted: zcswitch stats)');
  }

  get attached(): boolean {
    return this.backend !== null;
  }

  /** Queue pair 0 runs both ways: the port can carry traffic. */
  get ready(): boolean {
    return this.rxqs[0] !== null && this.txqs[0] !== null;
  }

  /** Start serving a newly accepted front-end connection. */
  accept(fd: number): void {
    const ctx = this.ctx;
    ctx.log.info({ port: this.name }, 'front-end connected');
    this.backend = new VhostUserBackend(
      fd,
      { port: this.name, log: ctx.log, features: ctx.features, protocolFeatures: ctx.protocolFeatures, queuePairs: ctx.queuePairs },
      {
        queuesChanged: () => this.syncQueues(),
        sharedBuffers: () => this.sharedBuffersReply(),
        sharedWindow: () => ({ base: ctx.shared.base, size: ctx.shared.size }),
        closed: (reason) => this.detach(reason),
      },
    );
    ctx.attached(this);
  }

  /** Re-read the backend's running queues and kick fds. */
  private syncQueues(): void {
    const b = this.backend;
    this.mergeable = b !== null && hasBit(b.ackedFeatures, VIRTIO_NET_F_MRG_RXBUF);
    let nq = 0;
    for (let q = 0; q < this.rxqs.length; q++) {
      const rx = b ? b.vrings[rxVring(q)].queue : null;
      const tx = b ? b.vrings[txVring(q)].queue : null;
      const oldRx = this.rxqs[q];
      if (rx !== oldRx) {
        // A fresh or stopped ring: the postings we held from it are void.
        if (!rx || !oldRx) this.clearPostings(q);
        this.rxWalkers[q] = rx ? walkerFor(this.rxWalkers[q], oldRx, rx) : null;
        this.rxqs[q] = rx;
      }
      if (tx !== this.txqs[q]) {
        this.txWalkers[q] = tx ? walkerFor(this.txWalkers[q], this.txqs[q], tx) : null;
        this.txqs[q] = tx;
      }
      if (rx || tx) nq = q + 1;
    }
    this.nq = nq;
    for (let i = 0; i < 2 * this.rxqs.length; i++) {
      const slot = b ? b.vrings[i] : null;
      const cur = this.kick[i];
      const gen = slot && slot.kickFd >= 0 ? slot.kickGen : -1;
      if (cur && cur.gen === gen) continue;
      if (cur) this.stopKick(i);
      if (slot && gen >= 0) {
        // Our own dup: the backend may close its fd whenever the front-end replaces it.
        const fd = dupFd(slot.kickFd);
        const watcher = new FdWatcher(fd, () => {
          eventfdDrain(fd);
          this.counters.kicks++;
          this.ctx.wake();
        });
        watcher.start();
        this.kick[i] = { watcher, fd, gen };
      }
    }
    this.ctx.wake();
  }

  private stopKick(i: number): void {
    const k = this.kick[i];
    if (!k) return;
    k.watcher.close();
    closeFd(k.fd);
    this.kick[i] = undefined;
  }

  private sharedBuffersReply(): { info: SharedBuffersInfo; fd: number } | string {
    const { shared, ledger } = this.ctx;
    const p = this.partition;
    // The static partition is handed out whole when all of it is in the pool;
    // otherwise (a re-attach after traffic) the port starts empty and the
    // pool gifts it buffers as it posts them (see ingestRx).
    const given = ledger.owned[this.id] === 0 && ledger.assignRange(p.start, p.count, this.id);
    this.zeroCopy = true;
    this.ctx.log.info({ port: this.name, partition: given ? p : null, owned: ledger.owned[this.id] }, 'shared buffers mapped by front-end');
    return {
      fd: shared.fd,
      info: {
        base: BigInt(shared.base), size: BigInt(shared.size), bufSize: shared.bufSize, bufCount: shared.bufCount,
        partitionStart: given ? p.start : 0, partitionCount: given ? p.count : 0,
        giftHigh: Math.ceil(this.ctx.giftHigh * p.count), giftLow: Math.ceil(this.ctx.giftLow * p.count),
        flags: this.ctx.swap ? SHARED_BUFFERS_F_SWAP : 0,
      },
    };
  }

  private detach(reason: string): void {
    const { ledger, log } = this.ctx;
    for (let i = 0; i < this.kick.length; i++) this.stopKick(i);
    this.rxqs.fill(null);
    this.txqs.fill(null);
    this.rxWalkers.fill(null);
    this.txWalkers.fill(null);
    this.nq = 0;
    this.mergeable = false;
    for (let q = 0; q < this.copyQ.length; q++) this.clearPostings(q);
    const reclaimed = ledger.reclaim(this.id);
    this.backend = null;
    this.zeroCopy = false;
    log.info({ port: this.name, reason, reclaimed }, 'front-end disconnected');
    this.ctx.detached(this, reason);
  }

  /** Drop the front-end (misbehaviour or shutdown). */
  disconnect(reason: string): void {
    this.backend?.disconnect(reason);
  }

  /** Forget what rx queue q had posted. */
  private clearPostings(q: number): void {
    const slot = this.rxSlot;
    for (let b = 0; b < slot.length; b++) if (slot[b] >= 0 && slot[b] >>> SLOT_QUEUE_SHIFT === q) slot[b] = -1;
    this.copyQ[q].clear();
    this.ownRx[q].clear();
  }

  /**
   * Consume newly posted rx descriptors on every queue: shared buffers go
   * into rxSlot (or are gifted at once from the pool, or, on a bridge, wait
   * as this port's own empty buffers), other chains become copy targets.
   * Invalid postings are completed empty so the VM gets them back.
   */
  ingestRx(): number {
    let taken = 0;
    for (let q = 0; q < this.nq; q++) if (this.rxqs[q] !== null) taken += this.ingestQueue(q);
    return taken;
  }

  private ingestQueue(qi: number): number {
    const q = this.rxqs[qi]!;
    let n = q.availPending();
    if (n < 0) {
      this.counters.drop(Drop.RingBroken);
      this.disconnect(`rx queue ${qi}: avail index ran ahead of the ring size`);
      return 0;
    }
    const taken = n;
    const { shared, ledger } = this.ctx;
    const seg = this.seg;
    const walker = this.rxWalkers[qi]!;
    const num = q.ring.num;
    while (n-- > 0) {
      const head = q.popAvail();
      const c = walker.walk(q.ring, head, seg);
      if (c < 0) {
        this.counters.drop(chainDrop(c));
        if (head < num) q.pushUsed(head, 0);
        continue;
      }
      const addr = seg.addr[0];
      const b = shared.indexOf(addr);
      if (seg.readable !== 0 || (b >= 0 && (!this.zeroCopy || c !== 1 || addr !== shared.addrOf(b) || seg.len[0] !== shared.bufSize))) {
        this.counters.drop(Drop.BadRxDesc);
        q.pushUsed(head, 0);
      } else if (b < 0) {
        this.copyQ[qi].push(head);
      } else if (this.ctx.swap && ledger.owner[b] === this.id) {
        this.ownRx[qi].push(head, b);
      } else if (this.rxSlot[b] >= 0) {
        this.counters.drop(Drop.DupRxPost);
        q.pushUsed(head, 0);
      } else if (ledger.owner[b] === POOL && ledger.owned[this.id] < this.partition.count) {
        writeNetHdr(shared.mem, shared.offsetOf(b), VIRTIO_NET_HDR_F_GIFT_BUFFER, 1);
        q.pushUsed(head, VIRTIO_NET_HDR_SIZE);
        ledger.transfer(b, this.id);
        this.counters.giftsOut++;
      } else {
        this.rxSlot[b] = (qi << SLOT_QUEUE_SHIFT) | head;
      }
    }
    return taken;
  }

  /**
   * Descriptors waiting on tx queue qi, at most `burst`; 0 when it is not
   * running. An avail index that ran ahead of the ring disconnects the port.
   */
  txPending(qi: number, burst: number): number {
    const q = this.txqs[qi];
    if (q === null) return 0;
    const n = q.availPending();
    if (n < 0) {
      this.counters.drop(Drop.RingBroken);
      this.disconnect(`tx queue ${qi}: avail index ran ahead of the ring size`);
      return 0;
    }
    return n > burst ? burst : n;
  }

  /** A running rx queue for traffic arriving on the sender's queue pair q (same index when we have it). */
  rxQueueFor(q: number): number {
    const nq = this.nq;
    if (nq === 0) return -1;
    for (let i = 0, k = q % nq; i < nq; i++, k = k + 1 === nq ? 0 : k + 1) if (this.rxqs[k] !== null) return k;
    return -1;
  }

  /** Complete the rx posting of shared buffer b (found in rxSlot) with len bytes. False if none. */
  completeSlot(b: number, len: number): boolean {
    const slot = this.rxSlot[b];
    if (slot < 0) return false;
    const q = this.rxqs[slot >>> SLOT_QUEUE_SHIFT];
    if (q === null) return false;
    q.pushUsed(slot & SLOT_HEAD_MASK, len);
    this.rxSlot[b] = -1;
    return true;
  }

  /** Rx queue of the slot completeSlot() would use for b. */
  slotQueue(b: number): number {
    return this.rxSlot[b] >>> SLOT_QUEUE_SHIFT;
  }

  /** Bridge mode: own empty buffers posted on rx queue q. */
  ownRxCount(q: number): number {
    return this.ownRx[q].count;
  }

  /** Take rx queue q's oldest own posting: returns its head; its buffer is in takenBuf. */
  takeOwnRx(q: number): number {
    const f = this.ownRx[q];
    const head = f.shift();
    this.takenBuf = f.lastBuf;
    return head;
  }

  /** Buffer of the posting last returned by takeOwnRx(). */
  takenBuf = -1;

  /** Rx queue q's i-th next copy target head without consuming it, or -1. */
  peekCopyTarget(q: number, i = 0): number {
    return this.copyQ[q].peek(i);
  }

  /** Drop rx queue q's i-th next copy target from the queue (the caller completes it). */
  removeCopyTarget(q: number, i: number): void {
    this.copyQ[q].remove(i);
  }



  consumeCopyTarget(q: number): void {
    this.copyQ[q].shift();
  }

  /**
   * Hand shared buffer b back to this port through its own posted rx
   * descriptor, flagged RETURNED (docs/protocol.md, ownership rule 5). False if it posted none.
   */
  returnBuffer(b: number): boolean {
    if (this.rxSlot[b] < 0) this.ingestRx();
    if (this.rxSlot[b] < 0) return false;
    const { shared } = this.ctx;
    const off = shared.offsetOf(b);
    setNetHdrFlags(shared.mem, off, netHdrFlags(shared.mem, off) | VIRTIO_NET_HDR_F_RETURNED);
    if (!this.completeSlot(b, VIRTIO_NET_HDR_SIZE)) return false;
    this.counters.returned++;
    return true;
  }

  /** Publish used entries and send the calls the VM asked for. */
  flush(): void {
    const b = this.backend;
    if (b === null) return;
    for (let q = 0; q < this.nq; q++) {
      const rx = this.rxqs[q];
      if (rx !== null) {
        rx.publishUsed();
        if (rx.needsCall()) this.call(b.vrings[rxVring(q)].callFd);
      }
      const tx = this.txqs[q];
      if (tx !== null) {
        tx.publishUsed();
        if (tx.needsCall()) this.call(b.vrings[txVring(q)].callFd);
      }
    }
  }

  private call(fd: number): void {
    if (fd < 0) return;
    eventfdSignal(fd);
    this.counters.calls++;
  }

  /** Enable or disable kicks on every running queue; returns entries already pending. */
  setKicks(on: boolean): number {
    let pending = 0;
    for (let q = 0; q < this.nq; q++) {
      const rx = this.rxqs[q];
      const tx = this.txqs[q];
      if (rx !== null) pending += Math.max(0, rx.setKicks(on));
      if (tx !== null) pending += Math.max(0, tx.setKicks(on));
    }
    return pending;
  }
}

/** Reuse a walker when the ring size did not change. */
function walkerFor(w: ChainWalker | null, old: DeviceQueue | null, q: DeviceQueue): ChainWalker {
  return w !== null && old !== null && old.ring.num === q.ring.num ? w : new ChainWalker(q.ring.num);
}
