/**
 * The zero-copy fast lane (docs/design.md, "The zero-copy fast lane"): the
 * common case of pair mode, run as one tight loop per burst
 * over the rings' own words, with batched counters and ledger counts.
 *
 * - forwardShared: a sender's tx entries that are one readable descriptor
 *   exactly at a shared buffer it owns, a frame the peer takes as it is (no
 *   open checksum, no TSO, within its MTU), for which the peer holds a
 *   posting: the peer's posting is completed and the ledger moves the
 *   buffer. With swaps (pairExchange "swap") the frame's buffer and the
 *   peer's oldest own empty buffer trade places instead.
 * - giftShared: the links of a gift chain (GIFT_BUFFER) the peer holds
 *   postings for: each posting completes with the bare header.
 * - giftChainShared: a whole gift chain at the head of a tx queue whose
 *   every link is giftShared's case, read from the descriptors' words
 *   without the chain walk (gifts are half of one-way traffic's work).
 * - ingestShared: a receiver's rx entries that are one writable descriptor
 *   covering exactly a shared buffer that is not in the pool and not posted
 *   yet: they become postings (swaps: one it owns becomes an own empty
 *   buffer).
 *
 * An entry is taken only when the general path (PairForwarder.forward,
 * PortQueues.ingestQueue) would do exactly the same with it; the first one
 * that is anything else (a gift, a chain, a copy, a drop, a posting missing,
 * a pool buffer) ends the run without being consumed, and the general path
 * takes it with every check and counter it has. So the lane adds no rule:
 * it only spares the common case the general path's calls, its float
 * address arithmetic and a counter update per packet. Nothing here
 * allocates.
 */
import { POOL } from '../shm/ledger';
import {
  ETH_HDR_MAX, NET_HDR_FLAGS, NET_HDR_GSO_TYPE, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_SIZE,
  VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_MAX_CHAIN,
} from '../virtio/defs';
import type { ChainSegments } from '../virtio/chain';
import type { DeviceQueue } from '../virtio/device-queue';
import type { SharingDomain } from '../shm/domain';
import type { PortWindow } from '../shm/geometry';
import type { OwnershipLedger } from '../shm/ledger';
import { type Counted, countRxRun, countTxRun } from './counters';
import type { Mirror } from './mirror';
import { HEAD_MASK, QUEUE_SHIFT, type RxPostings } from './rx-postings';
import { MIN_PACKET } from './tx-class';

/** A gift chain's longest (GIFT_CHAIN_MAX, VIRTQ_MAX_CHAIN): more is the walk's to refuse. */
const CHAIN_MAX = 64;

/** The values the loops below use as literals (a const enum is inlined; an import is a load per use). */
const enum Bits {
  /** NEXT | WRITE | INDIRECT: a descriptor's kind bits. */
  DescKind = 7,
  Next = 1,
  Write = 2,
  Indirect = 4,
  NeedsCsum = 1,
  GsoNone = 0,
  HdrFlags = 0,
  HdrGsoType = 1,
  HdrSize = 12,
  QueueShift = 16,
  HeadMask = 0xffff,
  /** The ledger's owner of a pool buffer. */
  Pool = 0xffff,
}
// The literals above are the definitions' values; a change there must fail here, at load.
if (
  Bits.DescKind !== (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_INDIRECT) || Bits.Write !== VIRTQ_DESC_F_WRITE ||
  Bits.Next !== VIRTQ_DESC_F_NEXT || Bits.Indirect !== VIRTQ_DESC_F_INDIRECT || CHAIN_MAX !== VIRTQ_MAX_CHAIN ||
  Bits.NeedsCsum !== VIRTIO_NET_HDR_F_NEEDS_CSUM || Bits.GsoNone !== VIRTIO_NET_HDR_GSO_NONE ||
  Bits.HdrFlags !== NET_HDR_FLAGS || Bits.HdrGsoType !== NET_HDR_GSO_TYPE || Bits.HdrSize !== VIRTIO_NET_HDR_SIZE ||
  Bits.QueueShift !== QUEUE_SHIFT || Bits.HeadMask !== HEAD_MASK || Bits.Pool !== POOL
) {
  throw new Error('zc-lane: its literals differ from src/virtio/defs.ts, rx-postings.ts or ledger.ts');
}

/**
 * What the lane reads and writes of a port: PortQueues (port-queues.ts) has
 * all of it; named here so the lane does not import the port that calls it.
 */
export interface LanePort extends Counted {
  readonly id: number;
  readonly nq: number;
  readonly domain: SharingDomain;
  readonly zeroCopy: boolean;
  readonly mirror: Mirror | null;
  readonly win: PortWindow;
  readonly ledger: OwnershipLedger;
  readonly postings: RxPostings;
  readonly rxqs: readonly (DeviceQueue | null)[];
  readonly rxByBuffer: Uint8Array;
  /** giftChainShared's scratch: a stamp per buffer (a chain naming one twice is the general path's). */
  readonly laneStamp: Uint32Array;
  readonly mtu: number;
  rxQueueFor(q: number): number;
}

/**
 * The lane may run for this sender and peer at all (checked once per
 * burst): pair mode between two zero-copy ports of one domain, nobody
 * capturing, a sender's window whose addresses share a high word.
 */
export function laneOpen(src: LanePort, dst: LanePort | null): boolean {
  return dst !== null && dst !== src && dst.nq > 0 && dst.domain === src.domain && src.zeroCopy && dst.zeroCopy &&
    src.mirror === null && dst.mirror === null && src.win.oneBlock;
}

/**
 * Forward up to max of src's tx queue qi entries to dst as laid out above;
 * returns how many it took (0: the next entry is the general path's).
 * Gift exchange: each frame completes dst's posting of its buffer. Swap
 * exchange (docs/protocol.md, "Pair mode: swapping buffers"; swap.ts,
 * swapBuffers): the frame's buffer goes into dst's oldest own empty
 * posting on the rx queue for qi, that empty buffer into the sender's tx
 * descriptor, for as long as dst has own postings of buffers it still owns
 * (both windows oneBlock). Call only when laneOpen(src, dst).
 */
export function forwardShared(src: LanePort, qi: number, txq: DeviceQueue, dst: LanePort, max: number, swap: boolean): number {
  const ring = txq.ring;
  const avail = ring.avail;
  const d32 = ring.desc32;
  const d16 = ring.desc16;
  const used = ring.used32;
  const mask = ring.mask;
  const num = ring.num;
  const win = src.win;
  const baseLo = win.baseLo;
  const bufSize = win.bufSize;
  const mem = win.mem;
  const owner = src.ledger.owner;
  const srcId = src.id;
  const dstId = dst.id;
  const postings = dst.postings;
  const byBuf = postings.byBuf;
  const dwin = dst.win;
  const dBaseLo = dwin.baseLo;
  const dBaseHi = dwin.baseHi;
  // Rx descriptors by buffer (gifts only): each frame's buffer is re-posted in the sender's rx descriptor b (PortQueues.repost).
  const srcByBuf = src.postings.byBuf;
  const repost = !swap && src.rxByBuffer[qi] === 1;
  const selfTag = qi << Bits.QueueShift;
  // What the peer takes as it is (Offloads.fits for a frame that needs nothing): up to its MTU.
  const maxLen = Math.min(bufSize, dst.mtu + ETH_HDR_MAX + Bits.HdrSize);
  let last = txq.lastAvail;
  let usedIdx = txq.usedIdx;
  // The peer's rx queue the run completes: swaps, the one for qi; gifts, the first posting's (a posting on
  // another ends the run, so the run's deliveries count on one queue). Its used entries go through locals too.
  let dq = -1;
  let rxq: DeviceQueue | null = null;
  if (swap) {
    dq = dst.rxQueueFor(qi);
    if (dq < 0 || !dwin.oneBlock) return 0;
    rxq = dst.rxqs[dq];
  }
  let rxd32 = rxq === null ? d32 : rxq.ring.desc32;
  let rxUsed32 = rxq === null ? used : rxq.ring.used32;
  let rxMask = rxq === null ? 0 : rxq.ring.mask;
  let rxUsed = rxq === null ? 0 : rxq.usedIdx;
  let bytes = 0;
  let k = 0;
  for (; k < max; k++) {
    const head = avail[2 + (last & mask)];
    if (head >= num || (d16[8 * head + 6] & Bits.DescKind) !== 0) break;
    const len = d32[4 * head + 2];
    // A gift (12 bytes) and a runt are shorter than MIN_PACKET; a frame over the peer's MTU or the buffer is no lane work.
    if (len < MIN_PACKET || len > maxLen) break;
    const b = win.bufAtWords(d32[4 * head], d32[4 * head + 1]);
    if (b < 0 || owner[b] !== srcId) break;
    const off = b * bufSize;
    if ((mem[off + Bits.HdrFlags] & Bits.NeedsCsum) !== 0 || mem[off + Bits.HdrGsoType] !== Bits.GsoNone) break;
    let rxHead: number;
    if (swap) {
      // dst's oldest own empty buffer y, still its own (a stale posting is swapBuffers' to complete and count).
      if (postings.ownCount(dq) === 0) break;
      const y = postings.nextOwnBuf(dq);
      if (owner[y] !== dstId) break;
      rxHead = postings.takeOwn(dq);
      // b into dst's rx descriptor (where dst sees it), y into the sender's tx descriptor; each keeps its count.
      rxd32[4 * rxHead] = (dBaseLo + off) | 0;
      rxd32[4 * rxHead + 1] = dBaseHi;
      d32[4 * head] = (baseLo + y * bufSize) | 0;
      owner[y] = srcId;
    } else {
      // dst's posting of b.
      const p = byBuf[b];
      if (p < 0) break;
      const pq = p >>> Bits.QueueShift;
      if (pq !== dq) {
        if (rxq !== null) break;
        rxq = dst.rxqs[pq];
        if (rxq === null) break;
        dq = pq;
        rxd32 = rxq.ring.desc32;
        rxUsed32 = rxq.ring.used32;
        rxMask = rxq.ring.mask;
        rxUsed = rxq.usedIdx;
      }
      byBuf[b] = -1;
      rxHead = p & Bits.HeadMask;
      if (repost && srcByBuf[b] < 0) srcByBuf[b] = selfTag | b;
    }
    // The sender's tx entry completes, dst's rx entry completes with the frame (DeviceQueue.pushUsed, in locals:
    // through the queues' fields the lane measured ~7% slower with gifts).
    let slot = usedIdx & mask;
    used[1 + 2 * slot] = head;
    used[2 + 2 * slot] = 0;
    usedIdx = (usedIdx + 1) & 0xffff;
    last = (last + 1) & 0xffff;
    slot = rxUsed & rxMask;
    rxUsed32[1 + 2 * slot] = rxHead;
    rxUsed32[2 + 2 * slot] = len;
    rxUsed = (rxUsed + 1) & 0xffff;
    owner[b] = dstId;
    bytes += len - Bits.HdrSize;
  }
  if (k === 0) return 0;
  txq.lastAvail = last;
  txq.usedIdx = usedIdx;
  rxq!.usedIdx = rxUsed;
  if (!swap) {
    const owned = src.ledger.owned;
    owned[srcId] -= k;
    owned[dstId] += k;
  }
  src.counters.zeroCopy += k;
  countRxRun(src, qi, k, bytes);
  countTxRun(dst, dq, k, bytes);
  return k;
}

/**
 * Take up to max of port's rx queue qi entries as shared-buffer postings,
 * as laid out above (swap: as own empty buffers, each one the port owns);
 * returns how many (0: the next entry is the general path's). Call only
 * for a zero-copy port whose window is oneBlock.
 */
export function ingestShared(port: LanePort, qi: number, q: DeviceQueue, max: number, swap: boolean): number {
  const ring = q.ring;
  const avail = ring.avail;
  const d32 = ring.desc32;
  const d16 = ring.desc16;
  const mask = ring.mask;
  const num = ring.num;
  const win = port.win;
  const bufSize = win.bufSize;
  const owner = port.ledger.owner;
  const postings = port.postings;
  const byBuf = postings.byBuf;
  const portId = port.id;
  const tag = qi << Bits.QueueShift;
  // Rx descriptors by buffer: a posting elsewhere than descriptor b is the general path's (it refuses it).
  const byBuffer = port.rxByBuffer[qi] === 1;
  let last = q.lastAvail;
  let k = 0;
  for (; k < max; k++) {
    const head = avail[2 + (last & mask)];
    if (head >= num || (d16[8 * head + 6] & Bits.DescKind) !== Bits.Write || d32[4 * head + 2] !== bufSize) break;
    const b = win.bufAtWords(d32[4 * head], d32[4 * head + 1]);
    if (b < 0) break;
    if (swap) {
      // Swaps: an own empty buffer; anything else (a pool buffer to be given, another's) is the general path's.
      if (owner[b] !== portId) break;
      postings.postOwn(qi, head, b);
    } else {
      // A buffer posted twice, or one in the pool (it may be gifted at once), is the general path's.
      if (byBuf[b] >= 0 || owner[b] === Bits.Pool || (byBuffer && head !== b)) break;
      byBuf[b] = tag | head;
    }
    last = (last + 1) & 0xffff;
  }
  q.lastAvail = last;
  return k;
}

/**
 * Hand links [from, cnt) of the gift chain walked into seg from src to dst
 * (GIFT_BUFFER: each link 12 bytes exactly at a buffer src owns, for which
 * dst holds a posting: the posting completes with the bare header and the
 * ledger moves the buffer), stopping at the first link that is anything
 * else; returns the index of that link (cnt: all taken). Call only when
 * laneOpen(src, dst); the walk already checked the chain itself.
 */
export function giftShared(src: LanePort, qi: number, dst: LanePort, seg: ChainSegments, from: number, cnt: number): number {
  const segAddr = seg.addr;
  const segLen = seg.len;
  const win = src.win;
  const owner = src.ledger.owner;
  const srcId = src.id;
  const dstId = dst.id;
  const byBuf = dst.postings.byBuf;
  // Rx descriptors by buffer: each link is re-posted in the sender's rx descriptor b (PortQueues.repost).
  const srcByBuf = src.postings.byBuf;
  const repost = src.rxByBuffer[qi] === 1;
  const selfTag = qi << Bits.QueueShift;
  // The rx queue of the first link's posting; a posting on another ends the run. Its used entries go through locals.
  let rxq: DeviceQueue | null = null;
  let dq = -1;
  let rxUsed32: Uint32Array | null = null;
  let rxMask = 0;
  let rxUsed = 0;
  let i = from;
  for (; i < cnt; i++) {
    if (segLen[i] !== Bits.HdrSize) break;
    const b = win.indexAt(segAddr[i]);
    if (b < 0 || owner[b] !== srcId) break;
    // dst's posting of b completes with the bare header.
    const p = byBuf[b];
    if (p < 0) break;
    const pq = p >>> Bits.QueueShift;
    if (pq !== dq) {
      if (rxq !== null) break;
      rxq = dst.rxqs[pq];
      if (rxq === null) break;
      dq = pq;
      rxUsed32 = rxq.ring.used32;
      rxMask = rxq.ring.mask;
      rxUsed = rxq.usedIdx;
    }
    byBuf[b] = -1;
    if (repost && srcByBuf[b] < 0) srcByBuf[b] = selfTag | b;
    const slot = rxUsed & rxMask;
    rxUsed32![1 + 2 * slot] = p & Bits.HeadMask;
    rxUsed32![2 + 2 * slot] = Bits.HdrSize;
    rxUsed = (rxUsed + 1) & 0xffff;
    owner[b] = dstId;
  }
  const k = i - from;
  if (k === 0) return from;
  rxq!.usedIdx = rxUsed;
  giftsHandedOver(src, dst, k);
  return i;
}

/** k gift links went from src to dst: the ledger's counts and both ports' gift counters, once per run. */
function giftsHandedOver(src: LanePort, dst: LanePort, k: number): void {
  const owned = src.ledger.owned;
  owned[src.id] -= k;
  owned[dst.id] += k;
  src.counters.giftsIn += k;
  dst.counters.giftsOut += k;
}

/** giftChainShared's links of the chain being taken: descriptor heads are < 32768, buffers are indexed by the region. */
const chainBufs = new Int32Array(CHAIN_MAX);
/** Stamps for laneStamp: a fresh value per chain, so nothing is cleared between chains. */
let stampGen = 0;

/**
 * Take the tx entry at the head of src's tx queue qi when it is a gift
 * whose every link is giftShared's case (readable, 12 bytes exactly at a
 * shared buffer src owns, for which dst holds a posting, all on one rx
 * queue), at most GIFT_CHAIN_MAX links and each buffer once (so no loop),
 * reading the descriptors' words instead of walking the chain: the tx
 * entry completes, every link is handed over as giftShared does. Returns
 * false, having touched nothing, for anything else: the general path
 * (walk, classify, gifts) takes it with every check. Call only when
 * laneOpen(src, dst), gifts exchange.
 */
export function giftChainShared(src: LanePort, qi: number, txq: DeviceQueue, dst: LanePort): boolean {
  const ring = txq.ring;
  const last = txq.lastAvail;
  const head = ring.avail[2 + (last & ring.mask)];
  const num = ring.num;
  if (head >= num) return false;
  const d32 = ring.desc32;
  const d16 = ring.desc16;
  const win = src.win;
  const owner = src.ledger.owner;
  const srcId = src.id;
  const byBuf = dst.postings.byBuf;
  const stamp = src.laneStamp;
  // At the wrap only this port's stamps are cleared: another's old stamp can then only make a chain look repeated,
  // which leaves it to the general path.
  if (++stampGen > 0xffff_ffff) {
    stampGen = 1;
    stamp.fill(0);
  }
  const gen = stampGen;
  // Check every link before anything moves: the general path takes a chain with a bad link link by link.
  let pq = -1;
  let n = 0;
  for (let d = head; ; ) {
    if (n === CHAIN_MAX) return false;
    const flags = d16[8 * d + 6];
    if ((flags & (Bits.Write | Bits.Indirect)) !== 0 || d32[4 * d + 2] !== Bits.HdrSize) return false;
    const b = win.bufAtWords(d32[4 * d], d32[4 * d + 1]);
    if (b < 0 || owner[b] !== srcId || stamp[b] === gen) return false;
    stamp[b] = gen;
    const p = byBuf[b];
    if (p < 0 || (pq >= 0 && p >>> Bits.QueueShift !== pq)) return false;
    pq = p >>> Bits.QueueShift;
    chainBufs[n++] = b;
    if ((flags & Bits.Next) === 0) break;
    d = d16[8 * d + 7];
    if (d >= num) return false;
  }
  const rxq = dst.rxqs[pq];
  if (rxq === null) return false;
  // Taken: the tx entry completes (DeviceQueue.popAvail, pushUsed), then each link as giftShared does.
  txq.lastAvail = (last + 1) & 0xffff;
  txq.pushUsed(head, 0);
  const srcByBuf = src.postings.byBuf;
  const repost = src.rxByBuffer[qi] === 1;
  const selfTag = qi << Bits.QueueShift;
  const dstId = dst.id;
  const rxUsed32 = rxq.ring.used32;
  const rxMask = rxq.ring.mask;
  let rxUsed = rxq.usedIdx;
  for (let i = 0; i < n; i++) {
    const b = chainBufs[i];
    const p = byBuf[b];
    byBuf[b] = -1;
    if (repost && srcByBuf[b] < 0) srcByBuf[b] = selfTag | b;
    const slot = rxUsed & rxMask;
    rxUsed32[1 + 2 * slot] = p & Bits.HeadMask;
    rxUsed32[2 + 2 * slot] = Bits.HdrSize;
    rxUsed = (rxUsed + 1) & 0xffff;
    owner[b] = dstId;
  }
  rxq.usedIdx = rxUsed;
  giftsHandedOver(src, dst, n);
  return true;
}
