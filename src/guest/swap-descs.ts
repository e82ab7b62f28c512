/**
 * The guest driver's per-packet loops for the swap exchange (a bridge, or a
 * pair with pairExchange "swap": docs/protocol.md, "Bridge mode: swapping
 * buffers"). The switch writes the buffer it gives in exchange into every
 * descriptor it completes, so descriptors cannot stay with one buffer as
 * they do with gifts (fixed-descs.ts): each send and own posting takes a
 * descriptor from the queue's free stack, and each completion frees it
 * and reads the buffer it now holds: an rx completion's from the
 * descriptor, a tx completion's from the used element where
 * PROTOCOL_F_SWAP_IN_USED was acked (docs/protocol.md, "Swaps: the
 * exchanged buffer in the used element"), else from the descriptor.
 *
 * Free functions over locals, as fixed-descs.ts: the ring's, the queue's and
 * the region's fields are read once per run and written back once, instead
 * of a method call per packet (DriverQueue.allocDesc, setBufDesc, popUsed,
 * bufAtDesc, freeDesc) that reloads them. Each takes the entries it knows
 * (one descriptor of a shared buffer of ours) and stops at the first other
 * one (a copy, a gift chain, a buffer handed back, a test hook's), which
 * the caller's general step takes. Only for a region in one 4 GiB block
 * (RegionGeometry.oneBlock), whose addresses are int32 arithmetic.
 */
import { bufAtInBlock } from '../shm/geometry';
import { VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED } from '../vhost/protocol';
import { VIRTIO_NET_HDR_SIZE, VIRTQ_DESC_F_WRITE } from '../virtio/defs';
import { writeNetHdrWords } from '../virtio/net-hdr';
import type { BufferPool } from './buffer-pool';
import type { DriverCounters, RxBatch } from './counters';
import type { QueuePair } from './queue-pair';
import type { SharedRegion } from './shared-region';

/**
 * Queue bufs[i] (a frame of lens[i] bytes behind a plain header), i < n, on
 * qp's tx ring, each in a descriptor from the free stack; the caller
 * checked there are n free. Returns the frames' bytes.
 */
export function sendSwapRun(qp: QueuePair, sh: SharedRegion, bufs: Int32Array, lens: Uint32Array, n: number): number {
  const tx = qp.txq;
  const r = tx.ring;
  const d32 = r.desc32;
  const avail = r.avail;
  const mask = r.mask & 0xffff;
  const stack = tx.freeStack;
  const txKind = qp.txKind;
  const mem32 = sh.mem32;
  const bufSize = sh.bufSize | 0;
  const bufWords = bufSize >>> 2;
  const baseLo = sh.baseLo | 0;
  const baseHi = sh.baseHi;
  let top = tx.freeTop;
  let idx = tx.availIdx;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const b = bufs[i];
    const len = lens[i];
    writeNetHdrWords(mem32, b * bufWords, 0, 1);
    const id = stack[--top];
    d32[4 * id] = (baseLo + b * bufSize) | 0;
    d32[4 * id + 1] = baseHi;
    d32[4 * id + 2] = VIRTIO_NET_HDR_SIZE + len;
    d32[4 * id + 3] = 0;
    txKind[id] = b;
    avail[2 + (idx & mask)] = id;
    idx = (idx + 1) & 0xffff;
    bytes += len;
  }
  tx.freeTop = top;
  tx.availIdx = idx;
  qp.txOthers += n;
  return bytes;
}

/**
 * The buffer a swap gave us, named by a tx completion's used len under
 * PROTOCOL_F_SWAP_IN_USED (len = its index + 1): the index, or -1 past the
 * region. Only for len > 0: len 0 means nothing was exchanged, and the
 * descriptor still names our buffer.
 */
export function bufInUsedLen(len: number, bufCount: number): number {
  return len <= bufCount ? len - 1 : -1;
}

/**
 * Reap qp's tx completions of lone shared-buffer descriptors: each frees
 * its descriptor and gives the pool the buffer we got in exchange, named
 * by the used element's len (inUsed: PROTOCOL_F_SWAP_IN_USED acked; len 0,
 * nothing exchanged) or else by the descriptor (one outside the region
 * counts as an rx error, as in the general step). Stops at any other
 * completion; returns the completions left.
 */
export function reapSwapRun(qp: QueuePair, sh: SharedRegion, pool: BufferPool, c: DriverCounters, got: Int32Array, inUsed: boolean): number {
  const q = qp.txq;
  const r = q.ring;
  const used32 = r.used32;
  const d32 = r.desc32;
  const mask = r.mask & 0xffff;
  const num = r.num | 0;
  const stack = q.freeStack;
  const txKind = qp.txKind;
  const txSpan = qp.txSpan;
  const reserved = q.reserved;
  const baseLo = sh.baseLo | 0;
  const baseHi = sh.baseHi;
  const size = sh.size | 0;
  const shift = sh.bufShift | 0;
  const bufSize = sh.bufSize | 0;
  const bufCount = sh.bufCount | 0;
  let top = q.freeTop;
  let last = q.lastUsed;
  let pending = (Atomics.load(r.used16, 1) - last) & 0xffff;
  let k = 0;
  let done = 0;
  const cap = got.length;
  for (; pending > 0 && done < cap; pending--) {
    const slot = last & mask;
    const id = used32[1 + 2 * slot];
    // Not a lone shared-buffer send (a private slot, a gift chain, a raw chain): the general step's.
    if (id >= num || id < reserved || txKind[id] < 0 || txSpan[id] > 1) break;
    last = (last + 1) & 0xffff;
    stack[top++] = id;
    done++;
    const e = inUsed ? used32[2 + 2 * slot] : 0;
    const b = e > 0 ? bufInUsedLen(e, bufCount) : bufAtInBlock(d32[4 * id], d32[4 * id + 1], baseLo, baseHi, size, shift, bufSize);
    if (b >= 0) got[k++] = b;
  }
  q.lastUsed = last;
  q.freeTop = top;
  qp.txOthers -= done;
  c.rxErrors += done - k;
  pool.putBurst(got, k);
  return pending;
}

/**
 * Take qp's rx completions of our own empty-buffer postings (rx queue qi)
 * into rx from index n on, while n < max: each frees its descriptor and is
 * a packet in the buffer the switch put there. Stops at any other
 * completion, and at a buffer handed back (12 bytes, or flagged), which
 * the general step counts. Returns n; qp.ownPosted drops by the postings
 * taken.
 */
export function receiveSwapRun(qp: QueuePair, sh: SharedRegion, pool: BufferPool, c: DriverCounters, rx: RxBatch, qi: number, n: number, max: number): number {
  const q = qp.rxq;
  const r = q.ring;
  const used32 = r.used32;
  const d32 = r.desc32;
  const mask = r.mask & 0xffff;
  const num = r.num | 0;
  const stack = q.freeStack;
  const rxOwn = qp.rxOwn;
  const mem = sh.mem;
  const baseLo = sh.baseLo | 0;
  const baseHi = sh.baseHi;
  const size = sh.size | 0;
  const shift = sh.bufShift | 0;
  const bufSize = sh.bufSize | 0;
  const rxToken = rx.rxToken;
  const rxLen = rx.rxLen;
  const rxQueue = rx.rxQueue;
  let top = q.freeTop;
  let last = q.lastUsed;
  let pending = (Atomics.load(r.used16, 1) - last) & 0xffff;
  let own = 0;
  let packets = 0;
  let bytes = 0;
  let errors = 0;
  for (; pending > 0 && n < max; pending--) {
    const slot = last & mask;
    const id = used32[1 + 2 * slot];
    if (id >= num || rxOwn[id] === 0) break;
    const len = used32[2 + 2 * slot];
    const b = bufAtInBlock(d32[4 * id], d32[4 * id + 1], baseLo, baseHi, size, shift, bufSize);
    // A buffer handed back rather than a packet: the general step's (it tells the pool).
    if (b >= 0 && (len === VIRTIO_NET_HDR_SIZE || (len > VIRTIO_NET_HDR_SIZE && (mem[b * bufSize] & (VIRTIO_NET_HDR_F_GIFT_BUFFER | VIRTIO_NET_HDR_F_RETURNED)) !== 0))) break;
    last = (last + 1) & 0xffff;
    rxOwn[id] = 0;
    own++;
    stack[top++] = id;
    // Outside the region, or refused by the switch (shorter than a header): not a buffer of ours.
    if (b < 0 || len < VIRTIO_NET_HDR_SIZE) {
      errors++;
      continue;
    }
    rxToken[n] = b;
    rxQueue[n] = qi;
    rxLen[n++] = len - VIRTIO_NET_HDR_SIZE;
    packets++;
    bytes += len - VIRTIO_NET_HDR_SIZE;
  }
  q.lastUsed = last;
  q.freeTop = top;
  qp.ownPosted -= own;
  if (packets > 0) pool.peerAlive();
  c.rxErrors += errors;
  c.rxPackets += packets;
  c.rxBytes += bytes;
  return n;
}

/**
 * Post n of the pool's free buffers on qp's rx ring as our own empty
 * buffers (each in a descriptor from the free stack); the caller checked
 * that the pool has n and the ring n free descriptors. got is scratch.
 */
export function postOwnRun(qp: QueuePair, sh: SharedRegion, pool: BufferPool, n: number, got: Int32Array): void {
  n = pool.allocBurst(got, n);
  const q = qp.rxq;
  const r = q.ring;
  const d32 = r.desc32;
  const avail = r.avail;
  const mask = r.mask & 0xffff;
  const stack = q.freeStack;
  const rxKind = qp.rxKind;
  const rxOwn = qp.rxOwn;
  const bufSize = sh.bufSize | 0;
  const baseLo = sh.baseLo | 0;
  const baseHi = sh.baseHi;
  let top = q.freeTop;
  let idx = q.availIdx;
  for (let i = 0; i < n; i++) {
    const b = got[i];
    const id = stack[--top];
    d32[4 * id] = (baseLo + b * bufSize) | 0;
    d32[4 * id + 1] = baseHi;
    d32[4 * id + 2] = bufSize;
    d32[4 * id + 3] = VIRTQ_DESC_F_WRITE;
    rxKind[id] = b;
    rxOwn[id] = 1;
    avail[2 + (idx & mask)] = id;
    idx = (idx + 1) & 0xffff;
  }
  q.freeTop = top;
  q.availIdx = idx;
  qp.ownPosted += n;
}
