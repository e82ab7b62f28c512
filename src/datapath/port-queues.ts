/**
 * A vhost-user port as the data path sees it: its running queues (virtio-net:
 * vring 2q is queue pair q's receive queue, 2q+1 its transmit queue), their
 * chain walkers, the rx postings the switch holds, the front-end's memory
 * for the copy path, counters and the capture mirror. The control plane
 * (src/switch/port.ts) owns the session and calls sync() whenever queues or
 * memory change; nothing here touches a socket, and nothing here allocates
 * per packet.
 */
import { eventfdCall } from '../../bindings';
import type { Logger } from '../log';
import type { SharingDomain } from '../shm/domain';
import { POOL, type OwnershipLedger } from '../shm/ledger';
import { PortWindow } from '../shm/geometry';
import type { SharedBuffers } from '../shm/shared-buffers';
import type { MemoryTable } from '../vhost/memory-table';
import { ChainSegments, ChainWalker } from '../virtio/chain';
import {
  PROTOCOL_F_RETURNED_IN_USED, PROTOCOL_F_RX_BY_BUFFER, PROTOCOL_F_SWAP_IN_USED, USED_LEN_RETURNED, VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED,
} from '../vhost/protocol';
import { MTU_DEFAULT, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_SIZE, hasBit } from '../virtio/defs';
import type { DeviceQueue } from '../virtio/device-queue';
import { netHdrFlags, setNetHdrFlags, writeNetHdr } from '../virtio/net-hdr';
import { Drop, PortCounters } from './counters';
import type { Mirror } from './mirror';
import { RxPostings, postingHead, postingQueue } from './rx-postings';
import { rxOffloadsOf, txOffloadsOf } from './segment';
import { TxClassifier, chainDrop } from './tx-class';
import { ingestShared } from './zc-lane';

/** virtio-net: vring 2q is queue pair q's receive queue, 2q+1 its transmit queue. */
export const rxVring = (q: number): number => 2 * q;
export const txVring = (q: number): number => 2 * q + 1;

/** What the data path reads from a vhost-user session: the vrings' running queues and call fds, memory, features. */
export interface QueueSource {
  readonly vrings: readonly { readonly queue: DeviceQueue | null; readonly callFd: number }[];
  readonly mem: MemoryTable | null;
  readonly ackedFeatures: bigint;
  /** Acked protocol features (absent: none), for PROTOCOL_F_RX_BY_BUFFER, PROTOCOL_F_SWAP_IN_USED and PROTOCOL_F_RETURNED_IN_USED. */
  readonly ackedProtocol?: bigint;
  /** NET_SET_MTU from the front-end (0 or absent: none). */
  readonly mtu?: number;
}

/** What a port's data path is given: its sharing domain, and what every port shares. */
export interface DataPathContext {
  /** The port's sharing domain: its region and ledger (docs/design.md, "Trust model"). */
  domain: SharingDomain;
  log: Logger;
  queuePairs: number;
  /** VMs post their own empty buffers and the switch swaps (bridge mode, and pair mode's swap exchange: docs/protocol.md, "Pair mode: swapping buffers"). */
  swap: boolean;
  /** The port's `mtu` (default MTU_DEFAULT): frames longer than it plus an Ethernet header are not delivered to it. */
  mtu?: number;
}

export class PortQueues {
  readonly isTap = false;
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
  readonly postings: RxPostings;
  /** The front-end's memory table, for the copy path (null: none yet). */
  mem: MemoryTable | null = null;
  /** The region is usable by this front-end (SHARED_BUFFERS negotiated and fetched). */
  zeroCopy = false;
  /** The front-end takes packets spread over several rx buffers (VIRTIO_NET_F_MRG_RXBUF). */
  mergeable = false;
  /** What its front-end takes as it is: open checksums, TSO (RX_* of src/datapath/segment.ts, from its acked features). */
  offloadCaps = 0;
  /** What its front-end may ask of a receiver in a header (RX_* bits, txOffloadsOf: CSUM, HOST_TSO4/6, HOST_ECN). */
  txOffloads = 0;
  /** The MTU frames to this port must fit (L3 bytes): the front-end's NET_SET_MTU, else the port's `mtu`. */
  mtu: number;
  /** Set while someone captures this port's traffic. */
  mirror: Mirror | null = null;
  /** Back-pressure (FlowControl): since when frames for this port wait for an rx buffer; -1: none wait. */
  rxWaitSince = -1;
  /**
   * rxByBuffer[q]: rx queue q keeps descriptor b for shared buffer b, and a
   * buffer sent on tx queue q is re-posted there by the switch
   * (PROTOCOL_F_RX_BY_BUFFER: acked, the gift exchange, the queue running
   * with at least bufCount entries; docs/protocol.md, "Pair mode: rx
   * descriptors by buffer").
   */
  readonly rxByBuffer: Uint8Array;
  /**
   * A swap completes this port's tx entry with the exchanged buffer's index
   * + 1 as used len and leaves the descriptor alone (PROTOCOL_F_SWAP_IN_USED
   * acked, the swap exchange; docs/protocol.md, "Swaps: the exchanged buffer
   * in the used element").
   */
  swapInUsed = false;
  /**
   * The used len of a RETURNED completion (ownership rule 5): with
   * PROTOCOL_F_RETURNED_IN_USED acked it says so itself (docs/protocol.md,
   * "Pair mode: RETURNED in the used element"), else the header alone does.
   */
  returnedLen = VIRTIO_NET_HDR_SIZE;
  /** txBlocked[q]: tx queue q's head waits for a destination's rx buffer (its entries are not work to spin on). */
  readonly txBlocked: Uint8Array;
  /**
   * The fault boundary (DataPath.round): an exception while serving this
   * port's part of a round. The control plane sets it to log and disconnect
   * the port (Port.fault); by default the port is disconnected as broken.
   */
  onFault: (where: string, e: unknown) => void = (where, e) => this.broken(`fault in ${where}: ${(e as Error)?.message ?? String(e)}`);
  /** The port's sharing domain; the forwarders compare it (one identity compare) before any zero-copy move. */
  readonly domain: SharingDomain;
  /** Its domain's region and ledger: every buffer index this port sends, posts or is given is one of these. */
  readonly shared: SharedBuffers;
  readonly ledger: OwnershipLedger;
  /**
   * Where this port's VM sees the buffers: buffer i at guest address
   * win.addrOf(i). Every guest address this port sends or posts is read, and
   * every one written into its rings is made, through it (setWindow).
   */
  win: PortWindow;
  /** Classifies this port's tx chains against its own domain and window. */
  readonly tx: TxClassifier;
  private source: QueueSource | null = null;
  private readonly seg = new ChainSegments();

  constructor(
    readonly id: number,
    readonly name: string,
    /** Buffers this port may hold from the pool before its postings stop being gifted. */
    private readonly partitionCount: number,
    private readonly ctx: DataPathContext,
    /** A ring broke beyond repair: the control plane disconnects the front-end. */
    private readonly broken: (reason: string) => void,
  ) {
    const n = ctx.queuePairs;
    this.domain = ctx.domain;
    this.shared = ctx.domain.shared;
    this.mtu = ctx.mtu ?? MTU_DEFAULT;
    this.ledger = ctx.domain.ledger;
    this.win = new PortWindow(this.shared.base, this.shared.mem, this.shared.bufSize, this.shared.bufCount);
    this.tx = new TxClassifier(this.win, this.ledger);
    this.rxqs = new Array<DeviceQueue | null>(n).fill(null);
    this.txqs = new Array<DeviceQueue | null>(n).fill(null);
    this.rxWalkers = new Array<ChainWalker | null>(n).fill(null);
    this.txWalkers = new Array<ChainWalker | null>(n).fill(null);
    this.postings = new RxPostings(this.shared.bufCount, n);
    this.queueCounters = new Float64Array(4 * n);
    this.txBlocked = new Uint8Array(n);
    this.rxByBuffer = new Uint8Array(n);
    this.counters.onFirstDrop = (reason) =>
      ctx.log.warn({ port: name, reason }, 'first drop for this reason (later ones are only counted: zcswitch stats)');
  }

  /**
   * Put this port's window at guest address `base` (an ivshmem BAR) or back
   * at the domain's base (null). The postings the switch holds name buffers
   * by index, so they stay valid.
   */
  setWindow(base: number | null): void {
    const s = this.shared;
    const b = base ?? s.base;
    if (b === this.win.base) return;
    this.win = new PortWindow(b, s.mem, s.bufSize, s.bufCount);
    this.tx.win = this.win;
  }

  /** Queue pair 0 runs both ways: the port can carry traffic. */
  get ready(): boolean {
    return this.rxqs[0] !== null && this.txqs[0] !== null;
  }

  /** Take the session's running queues and memory (null: the front-end went away). */
  sync(src: QueueSource | null): void {
    this.source = src;
    this.mem = src === null ? null : src.mem;
    this.mergeable = src !== null && hasBit(src.ackedFeatures, VIRTIO_NET_F_MRG_RXBUF);
    this.offloadCaps = src === null ? 0 : rxOffloadsOf(src.ackedFeatures);
    this.txOffloads = src === null ? 0 : txOffloadsOf(src.ackedFeatures);
    this.mtu = src !== null && src.mtu ? src.mtu : (this.ctx.mtu ?? MTU_DEFAULT);
    if (src === null) this.zeroCopy = false;
    let nq = 0;
    for (let q = 0; q < this.rxqs.length; q++) {
      const rx = src === null ? null : src.vrings[rxVring(q)].queue;
      const tx = src === null ? null : src.vrings[txVring(q)].queue;
      const oldRx = this.rxqs[q];
      if (rx !== oldRx) {
        // A fresh or stopped ring: the postings we held from it are void.
        if (rx === null || oldRx === null) this.postings.clearQueue(q);
        this.rxWalkers[q] = rx === null ? null : walkerFor(this.rxWalkers[q], oldRx, rx);
        this.rxqs[q] = rx;
      }
      if (tx !== this.txqs[q]) {
        this.txWalkers[q] = tx === null ? null : walkerFor(this.txWalkers[q], this.txqs[q], tx);
        this.txqs[q] = tx;
      }
      if (rx !== null || tx !== null) nq = q + 1;
    }
    this.nq = nq;
    const byBuffer = src !== null && !this.ctx.swap && hasBit(src.ackedProtocol ?? 0n, PROTOCOL_F_RX_BY_BUFFER);
    this.swapInUsed = src !== null && this.ctx.swap && hasBit(src.ackedProtocol ?? 0n, PROTOCOL_F_SWAP_IN_USED);
    const returnedInUsed = src !== null && hasBit(src.ackedProtocol ?? 0n, PROTOCOL_F_RETURNED_IN_USED);
    this.returnedLen = returnedInUsed ? (VIRTIO_NET_HDR_SIZE | USED_LEN_RETURNED) >>> 0 : VIRTIO_NET_HDR_SIZE;
    for (let q = 0; q < this.rxqs.length; q++) {
      const rx = this.rxqs[q];
      this.rxByBuffer[q] = byBuffer && rx !== null && rx.ring.num >= this.shared.bufCount ? 1 : 0;
    }
    this.rxWaitSince = -1;
    this.txBlocked.fill(0);
  }

  /**
   * Consume newly posted rx descriptors on every queue: shared buffers become
   * postings (or are gifted at once from the pool, or, on a bridge, wait as
   * this port's own empty buffers), other chains become copy targets.
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
      this.broken(`rx queue ${qi}: avail index ran ahead of the ring size`);
      return 0;
    }
    // Most rounds find nothing new here (rx descriptors by buffer): then nothing below is set up.
    if (n === 0) return 0;
    const taken = n;
    // A posting, whatever its kind, shows the VM is alive: frames for it wait afresh (FlowControl).
    this.rxWaitSince = -1;
    const swap = this.ctx.swap;
    const { shared, win, ledger, seg, postings } = this;
    const walker = this.rxWalkers[qi]!;
    const num = q.ring.num;
    const byBuffer = this.rxByBuffer[qi] === 1;
    const bufCount = shared.bufCount;
    // Shared-buffer postings go through the fast lane (zc-lane.ts); what it leaves is taken here.
    const lane = this.zeroCopy && win.oneBlock;
    while (n > 0) {
      if (lane) {
        n -= ingestShared(this, qi, q, n, swap);
        if (n === 0) break;
      }
      n--;
      const head = q.popAvail();
      const c = walker.walk(q.ring, head, seg);
      if (c < 0) {
        this.counters.drop(chainDrop(c));
        if (head < num) q.pushUsed(head, 0);
        continue;
      }
      const addr = seg.addr[0];
      const b = win.indexOf(addr);
      // Rx descriptors by buffer: descriptor b is buffer b's, and nothing else may use one below bufCount.
      const misplaced = byBuffer && (b >= 0 ? head !== b : head < bufCount);
      if (seg.readable !== 0 || misplaced || (b >= 0 && (!this.zeroCopy || c !== 1 || addr !== win.addrOf(b) || seg.len[0] !== win.bufSize))) {
        this.counters.drop(Drop.BadRxDesc);
        q.pushUsed(head, 0);
      } else if (b < 0) {
        postings.postCopyTarget(qi, head);
      } else if (swap && ledger.owner[b] === this.id) {
        postings.postOwn(qi, head, b);
      } else if (postings.hasShared(b)) {
        this.counters.drop(Drop.DupRxPost);
        q.pushUsed(head, 0);
      } else if (ledger.owner[b] === POOL && ledger.owned[this.id] < this.partitionCount) {
        writeNetHdr(shared.mem, shared.offsetOf(b), VIRTIO_NET_HDR_F_GIFT_BUFFER, 1);
        q.pushUsed(head, VIRTIO_NET_HDR_SIZE);
        ledger.transfer(b, this.id);
        this.counters.giftsOut++;
      } else {
        postings.postShared(b, qi, head);
      }
    }
    return taken;
  }

  /**
   * Rx descriptors by buffer: shared buffer b, which this port sends on tx
   * queue q and owns, counts as posted in its rx queue q's descriptor b
   * unless it is posted already (ownership rule 2, done here). Call when
   * the tx entry is taken, before b moves or comes back RETURNED.
   */
  repost(b: number, q: number): void {
    if (this.rxByBuffer[q] === 1 && this.postings.byBuf[b] < 0) this.postings.postShared(b, q, b);
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
      this.broken(`tx queue ${qi}: avail index ran ahead of the ring size`);
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

  /** Rx queue q holds a copy target, looking for new postings first if it has none (back-pressure checks). */
  hasCopyTarget(q: number): boolean {
    if (this.postings.copyTargetCount(q) > 0) return true;
    this.ingestRx();
    return this.postings.copyTargetCount(q) > 0;
  }

  /** Rx queue q holds one of this port's own empty shared buffers (bridge), looking for new postings first. */
  hasOwnBuffer(q: number): boolean {
    if (this.postings.ownCount(q) > 0) return true;
    this.ingestRx();
    return this.postings.ownCount(q) > 0;
  }

  /**
   * Complete this port's posting of shared buffer b with len bytes, looking
   * for new postings first if it has none. Returns the rx queue it was
   * posted on, or -1 when there is none (nothing is touched then).
   */
  completeShared(b: number, len: number): number {
    const postings = this.postings;
    let p = postings.sharedPosting(b);
    if (p < 0) {
      this.ingestRx();
      p = postings.sharedPosting(b);
      if (p < 0) return -1;
    }
    const qi = postingQueue(p);
    const q = this.rxqs[qi];
    if (q === null) return -1;
    postings.takeShared(b);
    q.pushUsed(postingHead(p), len);
    return qi;
  }

  /**
   * Hand shared buffer b back to this port through its own posting for it,
   * flagged RETURNED (docs/protocol.md, ownership rule 5). False if it
   * posted none.
   */
  returnBuffer(b: number): boolean {
    if (!this.postings.hasShared(b)) this.ingestRx();
    if (!this.postings.hasShared(b)) return false;
    const shared = this.shared;
    const off = shared.offsetOf(b);
    setNetHdrFlags(shared.mem, off, netHdrFlags(shared.mem, off) | VIRTIO_NET_HDR_F_RETURNED);
    if (this.completeShared(b, this.returnedLen) < 0) return false;
    this.counters.returned++;
    return true;
  }

  /** Publish used entries and send the calls the VM asked for. */
  flush(): void {
    const src = this.source;
    if (src === null) return;
    for (let q = 0; q < this.nq; q++) {
      const rx = this.rxqs[q];
      if (rx !== null) {
        rx.publishUsed();
        if (rx.needsCall() && !this.call(src.vrings[rxVring(q)].callFd, 'rx', q)) return;
      }
      const tx = this.txqs[q];
      if (tx !== null) {
        tx.publishUsed();
        if (tx.needsCall() && !this.call(src.vrings[txVring(q)].callFd, 'tx', q)) return;
      }
    }
  }

  /**
   * Signal a call fd. The fd is the front-end's eventfd and the front-end
   * controls its flags (O_NONBLOCK lives in the open file description both
   * share): eventfdCall never blocks, and returns -1 when the write would
   * have (the counter is saturated). A well-behaved VM cannot get there: it
   * would take 2^64 - 2 calls without one read. So it is taken as hostile
   * (or hopelessly stuck): counted as call-blocked and the port is
   * disconnected through broken(), as for a broken ring. False then: the
   * caller stops serving this port (its queues are gone).
   */
  private call(fd: number, dir: 'rx' | 'tx', q: number): boolean {
    if (fd < 0) return true;
    if (eventfdCall(fd) < 0) {
      this.counters.drop(Drop.CallBlocked);
      this.broken(`call-blocked: the ${dir} queue ${q} call eventfd would block (counter saturated by the front-end)`);
      return false;
    }
    this.counters.calls++;
    return true;
  }

  /** Enable or disable kicks on every running queue; returns entries already pending. */
  setKicks(on: boolean): number {
    let pending = 0;
    for (let q = 0; q < this.nq; q++) {
      const rx = this.rxqs[q];
      const tx = this.txqs[q];
      if (rx !== null) pending += Math.max(0, rx.setKicks(on));
      if (tx !== null) {
        const n = tx.setKicks(on);
        // A head that waits for a receiver is no work: its receiver's rx kick (or the deadline) wakes the loop.
        if (this.txBlocked[q] === 0) pending += Math.max(0, n);
      }
    }
    return pending;
  }
}

/** Reuse a walker when the ring size did not change. */
function walkerFor(w: ChainWalker | null, old: DeviceQueue | null, q: DeviceQueue): ChainWalker {
  return w !== null && old !== null && old.ring.num === q.ring.num ? w : new ChainWalker(q.ring.num);
}
