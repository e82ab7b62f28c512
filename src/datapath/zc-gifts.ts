/**
 * The zero-copy fast lane for gifts (GIFT_BUFFER; docs/protocol.md,
 * ownership rule 4): one-way traffic's other half. Same contract as
 * zc-lane.ts: a link is taken only where the general path
 * (PairForwarder.gifts) would do exactly the same with it, and the first
 * one that is anything else is left to that path.
 *
 * - giftShared: the links of a gift chain already walked (ChainSegments)
 *   that the peer holds postings for: each posting completes with the bare
 *   header.
 * - giftChainShared: a whole gift chain at the head of a tx queue whose
 *   every link is giftShared's case, read from the descriptors' words
 *   without the chain walk.
 */
import type { ChainSegments } from '../virtio/chain';
import type { DeviceQueue } from '../virtio/device-queue';
import { bufAtInBlock } from '../shm/geometry';
import { Bits, CHAIN_MAX, type LanePort } from './zc-lane';

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

/**
 * giftChainShared's record of the links it moved so far, to put them back
 * when a later link is not its case: the buffer (~b when the link also
 * re-posted b on the sender's rx) and dst's posting of it.
 */
const movedBufs = new Int32Array(CHAIN_MAX);
const movedPostings = new Int32Array(CHAIN_MAX);

/**
 * Take the tx entry at the head of src's tx queue qi when it is a gift
 * whose every link is giftShared's case (readable, 12 bytes exactly at a
 * shared buffer src owns, for which dst holds a posting, all on one rx
 * queue), at most GIFT_CHAIN_MAX links, reading the descriptors' words
 * instead of walking the chain: the tx entry completes, every link is
 * handed over as giftShared does. Each link moves as soon as it is
 * checked, in one pass; a buffer named twice is then no longer src's the
 * second time, so a chain cannot loop. Returns false for anything else,
 * having put back every link it moved (the used entries it wrote lie
 * beyond the published index): the general path (walk, classify, gifts)
 * then takes the chain with every check. Call only when laneOpen(src,
 * dst), gifts exchange.
 */
export function giftChainShared(src: LanePort, qi: number, txq: DeviceQueue, dst: LanePort): boolean {
  const ring = txq.ring;
  const last = txq.lastAvail;
  const head = ring.avail[2 + (last & ring.mask)];
  const num = ring.num | 0;
  if (head >= num) return false;
  const d32 = ring.desc32;
  const win = src.win;
  const baseLo = win.baseLo | 0;
  const baseHi = win.baseHi;
  const size = win.size | 0;
  const bufSize = win.bufSize | 0;
  const shift = win.bufShift | 0;
  const owner = src.ledger.owner;
  const srcId = src.id | 0;
  const dstId = dst.id | 0;
  const byBuf = dst.postings.byBuf;
  // Rx descriptors by buffer: each link is re-posted in the sender's rx descriptor b (PortQueues.repost).
  const srcByBuf = src.postings.byBuf;
  const repost = src.rxByBuffer[qi] === 1;
  const selfTag = (qi << Bits.QueueShift) | 0;
  const bufs = movedBufs;
  const ps = movedPostings;
  // The run's rx queue: the one dst posted the head link's buffer on; every link's posting must be there.
  const b0 = bufAtInBlock(d32[4 * head], d32[4 * head + 1], baseLo, baseHi, size, shift, bufSize);
  const p0 = b0 < 0 ? -1 : byBuf[b0];
  if (p0 < 0) return false;
  const dq = p0 >>> Bits.QueueShift;
  const rxq = dst.rxqs[dq];
  if (rxq === null) return false;
  const rxUsed32 = rxq.ring.used32;
  const rxMask = rxq.ring.mask & 0xffff;
  let rxUsed = rxq.usedIdx | 0;
  let n = 0;
  let whole = false;
  for (let d = head; n < CHAIN_MAX; ) {
    // The descriptor's last word: flags | next << 16.
    const word = d32[4 * d + 3];
    if ((word & (Bits.Write | Bits.Indirect)) !== 0 || d32[4 * d + 2] !== Bits.HdrSize) break;
    const b = bufAtInBlock(d32[4 * d], d32[4 * d + 1], baseLo, baseHi, size, shift, bufSize);
    if (b < 0 || owner[b] !== srcId) break;
    const p = byBuf[b];
    if (p < 0 || p >>> Bits.QueueShift !== dq) break;
    // The link moves: dst's posting of b completes with the bare header.
    owner[b] = dstId;
    byBuf[b] = -1;
    ps[n] = p;
    if (repost && srcByBuf[b] < 0) {
      srcByBuf[b] = selfTag | b;
      bufs[n] = ~b;
    } else bufs[n] = b;
    n++;
    const slot = rxUsed & rxMask;
    rxUsed32[1 + 2 * slot] = p & Bits.HeadMask;
    rxUsed32[2 + 2 * slot] = Bits.HdrSize;
    rxUsed = (rxUsed + 1) & 0xffff;
    if ((word & Bits.Next) === 0) {
      whole = true;
      break;
    }
    d = word >>> 16;
    if (d >= num) break;
  }
  if (!whole) {
    putBack(src, dst, n);
    return false;
  }
  // Taken: the tx entry completes (DeviceQueue.popAvail, pushUsed), the links' used entries are published with it.
  txq.lastAvail = (last + 1) & 0xffff;
  txq.pushUsed(head, 0);
  rxq.usedIdx = rxUsed;
  giftsHandedOver(src, dst, n);
  return true;
}

/** Undo the first n links giftChainShared moved from src to dst. */
function putBack(src: LanePort, dst: LanePort, n: number): void {
  const owner = src.ledger.owner;
  const byBuf = dst.postings.byBuf;
  const srcByBuf = src.postings.byBuf;
  for (let i = 0; i < n; i++) {
    const v = movedBufs[i];
    const b = v < 0 ? ~v : v;
    owner[b] = src.id;
    byBuf[b] = movedPostings[i];
    if (v < 0) srcByBuf[b] = -1;
  }
}
