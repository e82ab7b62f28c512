/**
 * The zero-copy fast lane (docs/design.md, "The zero-copy fast lane"): the
 * common case of pair mode, run as one tight loop per burst
 * over the rings' own words, with batched counters and ledger counts.
 *
 * - forwardMoved (gift exchange): a sender's tx entries that are one
 *   readable descriptor exactly at a shared buffer it owns, a frame the
 *   peer takes as it is (within its MTU, and its header unread where the
 *   peer takes all the sender may ask, else asking for nothing), for
 *   which the peer holds a posting: the peer's posting is completed and the
 *   ledger moves the buffer.
 * - forwardSwapped (pairExchange "swap"): the same frames, but the frame's
 *   buffer and the peer's oldest own empty buffer trade places.
 * - gifts (GIFT_BUFFER) have their own lane, zc-gifts.ts.
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
import type { DeviceQueue } from '../virtio/device-queue';
import type { SharingDomain } from '../shm/domain';
import { type PortWindow, bufAtInBlock } from '../shm/geometry';
import type { OwnershipLedger } from '../shm/ledger';
import { type Counted, countRxRun, countTxRun } from './counters';
import type { Mirror } from './mirror';
import { HEAD_FIFO_CAP } from './head-fifo';
import { HEAD_MASK, QUEUE_SHIFT, type RxPostings } from './rx-postings';
import { headerUnread } from './segment';
import { MIN_PACKET } from './tx-class';

/** A gift chain's longest (GIFT_CHAIN_MAX, VIRTQ_MAX_CHAIN): more is the walk's to refuse. */
export const CHAIN_MAX = 64;

/** The values the loops below use as literals (a const enum is inlined; an import is a load per use). */
export const enum Bits {
  /** NEXT | WRITE | INDIRECT: a descriptor's kind bits. */
  DescKind = 7,
  Next = 1,
  Write = 2,
  Indirect = 4,
  HdrSize = 12,
  QueueShift = 16,
  HeadMask = 0xffff,
  /** The ledger's owner of a pool buffer. */
  Pool = 0xffff,
  /** A virtio_net_hdr's first two bytes as one u16 (flags, gso_type): a frame that asks for nothing has 0 in these bits. */
  HdrAsksMask = 0xff01,
  /** A HeadFifo's slot mask (HEAD_FIFO_CAP - 1). */
  FifoMask = 0x7fff,
}
// The literals above are the definitions' values; a change there must fail here, at load.
if (
  Bits.DescKind !== (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_INDIRECT) || Bits.Write !== VIRTQ_DESC_F_WRITE ||
  Bits.Next !== VIRTQ_DESC_F_NEXT || Bits.Indirect !== VIRTQ_DESC_F_INDIRECT || CHAIN_MAX !== VIRTQ_MAX_CHAIN ||
  VIRTIO_NET_HDR_GSO_NONE !== 0 || Bits.HdrSize !== VIRTIO_NET_HDR_SIZE ||
  Bits.QueueShift !== QUEUE_SHIFT || Bits.HeadMask !== HEAD_MASK || Bits.Pool !== POOL || Bits.FifoMask !== HEAD_FIFO_CAP - 1 ||
  Bits.HdrAsksMask !== ((0xff << (8 * NET_HDR_GSO_TYPE)) | (VIRTIO_NET_HDR_F_NEEDS_CSUM << (8 * NET_HDR_FLAGS)))
) {
  throw new Error('zc-lane: its literals differ from src/virtio/defs.ts, rx-postings.ts, head-fifo.ts or ledger.ts');
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
  readonly swapInUsed: boolean;
  readonly mtu: number;
  readonly offloadCaps: number;
  readonly txOffloads: number;
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
 * The loops below read every field they use into a local first and call
 * nothing that is not inlined: a call in the loop makes the compiled code
 * reload each field (and check its type) for every packet, about 5% of
 * the switch's time per packet (docs/performance-log.md, "Fields read once per
 * burst, gift chains that stay put"). Descriptor flags are read from the
 * descriptor's last 32-bit word (flags | next << 16) so a ring is one typed
 * array.
 */

/**
 * The buffer of tx descriptor head when it holds a frame the lane takes as
 * it is, else -1: one readable descriptor of MIN_PACKET to maxLen bytes (a
 * gift, 12 bytes, and a runt are shorter; a frame over the peer's MTU or
 * the buffer is longer) exactly at a shared buffer src owns, whose header
 * goes unread (hdrMask 0) or asks for nothing in hdrMask (no open
 * checksum, no GSO). Over the
 * caller's locals, like bufAtInBlock, so the loops that call it (inlined)
 * share it without reloading a field.
 */
function frameBufAt(
  d32: Uint32Array, head: number, maxLen: number, baseLo: number, baseHi: number, size: number, shift: number, bufSize: number,
  owner: Uint16Array, srcId: number, mem16: Uint16Array, hdrMask: number,
): number {
  if ((d32[4 * head + 3] & Bits.DescKind) !== 0) return -1;
  const len = d32[4 * head + 2];
  if (len < MIN_PACKET || len > maxLen) return -1;
  const lo = d32[4 * head];
  const b = bufAtInBlock(lo, d32[4 * head + 1], baseLo, baseHi, size, shift, bufSize);
  if (b < 0 || owner[b] !== srcId) return -1;
  // The header at the buffer's start (its byte offset is the address less the base), read only where it matters (hdrMaskFor).
  if (hdrMask !== 0 && (mem16[((lo - baseLo) | 0) >> 1] & hdrMask) !== 0) return -1;
  return b;
}

/**
 * frameBufAt's header mask for a burst from src to dst: 0 where the header
 * goes unread (headerUnread: dst takes whatever src may ask, so the frame
 * fits dst whatever its header says, as the general path then decides
 * too), else the bits of a header that asks something.
 */
function hdrMaskFor(src: LanePort, dst: LanePort): number {
  return headerUnread(src.txOffloads, dst.offloadCaps) ? 0 : Bits.HdrAsksMask;
}

/**
 * Gift exchange: forward up to max of src's tx queue qi entries to dst, as
 * laid out above; returns how many it took (0: the next entry is the
 * general path's). Each frame completes dst's posting of its buffer, on the
 * rx queue of the run's first posting (a posting on another ends the run,
 * so the run's deliveries count on one queue). Call only when
 * laneOpen(src, dst).
 */
export function forwardMoved(src: LanePort, qi: number, txq: DeviceQueue, dst: LanePort, max: number): number {
  const ring = txq.ring;
  const avail = ring.avail;
  const d32 = ring.desc32;
  // A ring's mask is below 2^15: masked to 16 bits the compiler knows it, and the slot arithmetic needs no overflow checks.
  const mask = ring.mask & 0xffff;
  const num = ring.num | 0;
  let last = txq.lastAvail | 0;
  // A gift chain (or anything but a lone descriptor) at the head: nothing for this loop, and none of its set-up.
  const first = avail[2 + (last & mask)];
  if (first >= num || (d32[4 * first + 3] & Bits.DescKind) !== 0) return 0;
  const used = ring.used32;
  const win = src.win;
  const baseLo = win.baseLo | 0;
  const baseHi = win.baseHi;
  const size = win.size | 0;
  const bufSize = win.bufSize | 0;
  const shift = win.bufShift | 0;
  const mem16 = win.mem16;
  const owner = src.ledger.owner;
  const srcId = src.id | 0;
  const dstId = dst.id | 0;
  const byBuf = dst.postings.byBuf;
  // Rx descriptors by buffer: each frame's buffer is re-posted in the sender's rx descriptor b (PortQueues.repost).
  const srcByBuf = src.postings.byBuf;
  const repost = src.rxByBuffer[qi] === 1;
  const selfTag = (qi << Bits.QueueShift) | 0;
  // What the peer takes as it is (Offloads.fits for a frame that needs nothing): up to its MTU.
  const maxLen = Math.min(bufSize, dst.mtu + ETH_HDR_MAX + Bits.HdrSize) | 0;
  // The run's rx queue: the one dst posted the first frame's buffer on (a posting on another ends the run). The
  // loop takes that first frame again, with the others.
  const hdrMask = hdrMaskFor(src, dst);
  const b0 = frameBufAt(d32, first, maxLen, baseLo, baseHi, size, shift, bufSize, owner, srcId, mem16, hdrMask);
  const p0 = b0 < 0 ? -1 : byBuf[b0];
  if (p0 < 0) return 0;
  const dq = p0 >>> Bits.QueueShift;
  const rxq = dst.rxqs[dq];
  if (rxq === null) return 0;
  const rxUsed32 = rxq.ring.used32;
  const rxMask = rxq.ring.mask & 0xffff;
  let rxUsed = rxq.usedIdx | 0;
  let usedIdx = txq.usedIdx | 0;
  let bytes = 0;
  let k = 0;
  for (; k < max; k++) {
    const head = avail[2 + (last & mask)];
    if (head >= num) break;
    const b = frameBufAt(d32, head, maxLen, baseLo, baseHi, size, shift, bufSize, owner, srcId, mem16, hdrMask);
    if (b < 0) break;
    const len = d32[4 * head + 2];
    // dst's posting of b, on the run's queue.
    const p = byBuf[b];
    if (p < 0 || p >>> Bits.QueueShift !== dq) break;
    byBuf[b] = -1;
    if (repost && srcByBuf[b] < 0) srcByBuf[b] = selfTag | b;
    // The sender's tx entry completes, dst's rx entry completes with the frame (DeviceQueue.pushUsed, in locals).
    let slot = usedIdx & mask;
    used[1 + 2 * slot] = head;
    used[2 + 2 * slot] = 0;
    usedIdx = (usedIdx + 1) & 0xffff;
    last = (last + 1) & 0xffff;
    slot = rxUsed & rxMask;
    rxUsed32[1 + 2 * slot] = p & Bits.HeadMask;
    rxUsed32[2 + 2 * slot] = len;
    rxUsed = (rxUsed + 1) & 0xffff;
    owner[b] = dstId;
    bytes += len - Bits.HdrSize;
  }
  if (k === 0) return 0;
  txq.lastAvail = last;
  txq.usedIdx = usedIdx;
  rxq.usedIdx = rxUsed;
  const owned = src.ledger.owned;
  owned[srcId] -= k;
  owned[dstId] += k;
  src.counters.zeroCopy += k;
  countRxRun(src, qi, k, bytes);
  countTxRun(dst, dq, k, bytes);
  return k;
}

/**
 * Swap exchange (docs/protocol.md, "Pair mode: swapping buffers"; swap.ts,
 * swapBuffers): forward up to max of src's tx queue qi entries to dst as
 * forwardMoved does, except that each frame's buffer goes into dst's
 * oldest own empty posting on the rx queue for qi and that empty buffer
 * into the sender's tx descriptor (SWAP_IN_USED: its index into the used
 * element, swap.ts), for as long as dst has own postings of
 * buffers it still owns (both windows oneBlock). Returns how many it took.
 * Call only when laneOpen(src, dst).
 *
 * A bridge (bridge-forwarder.ts) passes eth, the Ethernet words its first
 * frame was switched by (frame bytes 0..11 as three 32-bit words, the
 * ethertype as the low half of a fourth): a frame with other addresses or
 * another ethertype ends the run, so every frame taken goes where that one
 * went, learnt and looked up once per run.
 */
export function forwardSwapped(src: LanePort, qi: number, txq: DeviceQueue, dst: LanePort, max: number, eth: Uint32Array | null = null): number {
  const dq = dst.rxQueueFor(qi);
  const dwin = dst.win;
  if (dq < 0 || !dwin.oneBlock) return 0;
  const rxq = dst.rxqs[dq];
  if (rxq === null) return 0;
  const ring = txq.ring;
  const avail = ring.avail;
  const d32 = ring.desc32;
  const used = ring.used32;
  const mask = ring.mask & 0xffff;
  const num = ring.num | 0;
  const win = src.win;
  const baseLo = win.baseLo | 0;
  const baseHi = win.baseHi;
  const size = win.size | 0;
  const bufSize = win.bufSize | 0;
  const shift = win.bufShift | 0;
  const mem16 = win.mem16;
  const mem32 = win.mem32;
  const owner = src.ledger.owner;
  const srcId = src.id | 0;
  const dstId = dst.id | 0;
  // dst's own empty buffers on queue dq, oldest first (HeadFifo, shifted in locals).
  const own = dst.postings.ownFifo(dq);
  const ownHeads = own.heads;
  const ownBufs = own.bufs;
  let ownFirst = own.first | 0;
  let ownLeft = own.count | 0;
  // The frame's Ethernet words sit at word 3 of its buffer (after the 12-byte header).
  const match = eth !== null;
  const e0 = match ? eth[0] : 0;
  const e1 = match ? eth[1] : 0;
  const e2 = match ? eth[2] : 0;
  const e3 = match ? eth[3] : 0;
  const bufWords = bufSize >>> 2;
  const dBaseLo = dwin.baseLo | 0;
  const dBaseHi = dwin.baseHi;
  // SWAP_IN_USED: the sender learns its new buffer from the used element, and its descriptor stays as it was.
  const inUsed = src.swapInUsed;
  const maxLen = Math.min(bufSize, dst.mtu + ETH_HDR_MAX + Bits.HdrSize) | 0;
  // A bridge reads every frame's header (BridgeForwarder: it switches on the Ethernet words beside it anyway).
  const hdrMask = match ? Bits.HdrAsksMask : hdrMaskFor(src, dst);
  const rxd32 = rxq.ring.desc32;
  const rxUsed32 = rxq.ring.used32;
  const rxMask = rxq.ring.mask & 0xffff;
  let rxUsed = rxq.usedIdx | 0;
  let last = txq.lastAvail | 0;
  let usedIdx = txq.usedIdx | 0;
  let bytes = 0;
  let k = 0;
  for (; k < max; k++) {
    const head = avail[2 + (last & mask)];
    if (head >= num) break;
    const b = frameBufAt(d32, head, maxLen, baseLo, baseHi, size, shift, bufSize, owner, srcId, mem16, hdrMask);
    if (b < 0) break;
    if (match) {
      const w = b * bufWords + 3;
      if (mem32[w] !== e0 || mem32[w + 1] !== e1 || mem32[w + 2] !== e2 || (mem32[w + 3] & 0xffff) !== e3) break;
    }
    const len = d32[4 * head + 2];
    // dst's oldest own empty buffer y, still its own (a stale posting is swapBuffers' to complete and count).
    if (ownLeft === 0) break;
    const y = ownBufs[ownFirst];
    if (owner[y] !== dstId) break;
    const rxHead = ownHeads[ownFirst];
    ownFirst = (ownFirst + 1) & Bits.FifoMask;
    ownLeft--;
    // b into dst's rx descriptor (where dst sees it), y into the sender's tx descriptor; each keeps its count.
    rxd32[4 * rxHead] = (dBaseLo + b * bufSize) | 0;
    rxd32[4 * rxHead + 1] = dBaseHi;
    if (!inUsed) d32[4 * head] = (baseLo + y * bufSize) | 0;
    owner[y] = srcId;
    let slot = usedIdx & mask;
    used[1 + 2 * slot] = head;
    used[2 + 2 * slot] = inUsed ? y + 1 : 0;
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
  own.first = ownFirst;
  own.count = ownLeft;
  txq.lastAvail = last;
  txq.usedIdx = usedIdx;
  rxq.usedIdx = rxUsed;
  src.counters.zeroCopy += k;
  countRxRun(src, qi, k, bytes);
  countTxRun(dst, dq, k, bytes);
  return k;
}

/**
 * Take up to max of port's rx queue qi entries as shared-buffer postings,
 * as laid out above (swap: as own empty buffers, each one the port owns,
 * pushed onto the queue's HeadFifo over locals); returns how many (0: the
 * next entry is the general path's). Call only for a zero-copy port whose
 * window is oneBlock.
 */
export function ingestShared(port: LanePort, qi: number, q: DeviceQueue, max: number, swap: boolean): number {
  const ring = q.ring;
  const avail = ring.avail;
  const d32 = ring.desc32;
  const mask = ring.mask & 0xffff;
  const num = ring.num | 0;
  const win = port.win;
  const baseLo = win.baseLo | 0;
  const baseHi = win.baseHi;
  const size = win.size | 0;
  const bufSize = win.bufSize | 0;
  const shift = win.bufShift | 0;
  const owner = port.ledger.owner;
  const portId = port.id | 0;
  const byBuf = port.postings.byBuf;
  const tag = qi << Bits.QueueShift;
  // Rx descriptors by buffer: a posting elsewhere than descriptor b is the general path's (it refuses it).
  const byBuffer = port.rxByBuffer[qi] === 1;
  const own = port.postings.ownFifo(qi);
  const ownHeads = own.heads;
  const ownBufs = own.bufs;
  const ownFirst = own.first | 0;
  let ownCount = own.count | 0;
  let last = q.lastAvail | 0;
  let k = 0;
  for (; k < max; k++) {
    const head = avail[2 + (last & mask)];
    if (head >= num || (d32[4 * head + 3] & Bits.DescKind) !== Bits.Write || d32[4 * head + 2] !== bufSize) break;
    const b = bufAtInBlock(d32[4 * head], d32[4 * head + 1], baseLo, baseHi, size, shift, bufSize);
    if (b < 0) break;
    if (swap) {
      // Swaps: an own empty buffer; anything else (a pool buffer to be given, another's) is the general path's.
      if (owner[b] !== portId) break;
      const at = (ownFirst + ownCount++) & Bits.FifoMask;
      ownHeads[at] = head;
      ownBufs[at] = b;
    } else {
      // A buffer posted twice, or one in the pool (it may be gifted at once), is the general path's.
      if (byBuf[b] >= 0 || owner[b] === Bits.Pool || (byBuffer && head !== b)) break;
      byBuf[b] = tag | head;
    }
    last = (last + 1) & 0xffff;
  }
  own.count = ownCount;
  q.lastAvail = last;
  return k;
}
