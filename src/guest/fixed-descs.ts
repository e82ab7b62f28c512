/**
 * The guest driver's per-packet loops over fixed descriptors: with the gift
 * exchange, shared buffer b is posted in rx descriptor b and leaves in tx
 * descriptor b (GuestDataPath.fixedRx, fixedTx), so neither side allocates,
 * frees or looks up a descriptor per packet.
 *
 * Free functions over locals, as the switch's lanes are
 * (src/datapath/zc-lane.ts): each reads the ring's and the region's fields
 * once and writes the ring index and the counters back once, instead of a
 * method call per packet that reloads them (docs/performance-log.md, "The guest
 * driver's loops over locals").
 */
import { USED_LEN_RETURNED, VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED } from '../vhost/protocol';
import { VIRTIO_NET_HDR_SIZE, VIRTQ_DESC_F_NEXT } from '../virtio/defs';
import type { DriverQueue } from '../virtio/driver-queue';
import { writeNetHdrWords } from '../virtio/net-hdr';
import type { BufferPool } from './buffer-pool';
import type { DriverCounters, RxBatch } from './counters';
import type { QueuePair } from './queue-pair';
import type { SharedRegion } from './shared-region';

/** What an rx completion of a shared buffer is (completionKind). */
export const enum Completion {
  /** A frame for the application. */
  Frame,
  /** A buffer the peer handed us (a gift, or a link of a gift chain): the pool's. */
  Gift,
  /** One of ours the switch could not deliver (ownership rule 5): the pool's again. */
  Returned,
  /** A gift of ours RETURNED: the peer cannot take gifts now (BufferPool.handedBack pauses gifting). */
  ReturnedGift,
  /** The switch refused the posting (used len under 12): the buffer is not ours. */
  Refused,
}

/**
 * What the completion of a shared buffer's posting with used len len is (its header
 * at byte at of mem; docs/protocol.md, ownership rules 4 and 5): a
 * 12-byte or flagged completion is handed back, and the header says which
 * way. With PROTOCOL_F_RETURNED_IN_USED acked (returnedInUsed) a 12-byte
 * one is a gift without that read, which would pull a line from the core
 * that touched it last only for the sender to take it again when it fills
 * the buffer, and a return says so in its used len. A frame's header is
 * read either way: the application reads that line next, and builds that
 * left it to the application, whose checks then touched it first, were
 * slower in every A/B (docs/performance-log.md, "A gift's header, unread").
 */
export function completionKind(len: number, mem: Uint8Array, at: number, returnedInUsed: boolean): Completion {
  if (len < VIRTIO_NET_HDR_SIZE) return Completion.Refused;
  if (returnedInUsed) {
    if (len === VIRTIO_NET_HDR_SIZE) return Completion.Gift;
    if (len >= USED_LEN_RETURNED) return (mem[at] & VIRTIO_NET_HDR_F_GIFT_BUFFER) !== 0 ? Completion.ReturnedGift : Completion.Returned;
  }
  const flags = mem[at];
  if (len !== VIRTIO_NET_HDR_SIZE && (flags & (VIRTIO_NET_HDR_F_GIFT_BUFFER | VIRTIO_NET_HDR_F_RETURNED)) === 0) return Completion.Frame;
  if ((flags & VIRTIO_NET_HDR_F_RETURNED) === 0) return Completion.Gift;
  return (flags & VIRTIO_NET_HDR_F_GIFT_BUFFER) !== 0 ? Completion.ReturnedGift : Completion.Returned;
}

/**
 * Take rx queue q's completions of shared buffers' own descriptors (below
 * bufCount) into rx from index n on, while n < max; stops at the first
 * completion of any other descriptor (a copy target, a test hook's
 * posting), leaving it for the caller's general step. Returns n. Gifts and
 * buffers handed back go to the pool; the pool hears that the peer is
 * alive once per call, but never later than a RETURNED gift that pauses
 * it, so its state ends as it would entry by entry. returnedInUsed:
 * PROTOCOL_F_RETURNED_IN_USED acked (completionKind).
 */
export function receiveFixedRun(
  q: DriverQueue, sh: SharedRegion, pool: BufferPool, c: DriverCounters, rx: RxBatch, qi: number, n: number, max: number,
  returnedInUsed: boolean,
): number {
  const r = q.ring;
  const used32 = r.used32;
  const mask = r.mask & 0xffff;
  const mem = sh.mem;
  const bufSize = sh.bufSize;
  const bufCount = sh.bufCount;
  const rxToken = rx.rxToken;
  const rxLen = rx.rxLen;
  const rxQueue = rx.rxQueue;
  let last = q.lastUsed;
  let pending = (Atomics.load(r.used16, 1) - last) & 0xffff;
  let packets = 0;
  let bytes = 0;
  let gifts = 0;
  let alive = false;
  for (; pending > 0 && n < max; pending--) {
    const slot = last & mask;
    const id = used32[1 + 2 * slot];
    if (id >= bufCount) break;
    const len = used32[2 + 2 * slot];
    last = (last + 1) & 0xffff;
    const kind = completionKind(len, mem, id * bufSize, returnedInUsed);
    if (kind === Completion.Frame) {
      alive = true;
      rxToken[n] = id;
      rxQueue[n] = qi;
      rxLen[n++] = len - VIRTIO_NET_HDR_SIZE;
      packets++;
      bytes += len - VIRTIO_NET_HDR_SIZE;
    } else if (kind === Completion.Gift) {
      gifts++;
      pool.put(id);
      alive = true;
    } else if (kind === Completion.Refused) {
      c.rxErrors++;
    } else {
      if (alive) pool.peerAlive();
      alive = false;
      c.returned++;
      pool.handedBack(id, true, kind === Completion.ReturnedGift);
    }
  }
  q.lastUsed = last;
  if (alive) pool.peerAlive();
  c.giftsReceived += gifts;
  c.rxPackets += packets;
  c.rxBytes += bytes;
  return n;
}

/**
 * Queue bufs[i] (a frame of lens[i] bytes behind a plain header), i < n,
 * on qp's tx ring in their own descriptors; the caller checked the room.
 * Returns the frames' bytes.
 */
export function sendFixedRun(qp: QueuePair, sh: SharedRegion, bufs: Int32Array, lens: Uint32Array, n: number): number {
  const mem32 = sh.mem32;
  const bufWords = sh.bufSize >>> 2;
  const tx = qp.txq;
  const avail = tx.ring.avail;
  const mask = tx.ring.mask & 0xffff;
  let idx = tx.availIdx;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const b = bufs[i];
    const len = lens[i];
    writeNetHdrWords(mem32, b * bufWords, 0, 1);
    fixTxDesc(qp, b, VIRTIO_NET_HDR_SIZE + len, 0);
    avail[2 + (idx & mask)] = b;
    idx = (idx + 1) & 0xffff;
    bytes += len;
  }
  tx.availIdx = idx;
  return bytes;
}

/**
 * Link the gift chain bufs[0..k) through the buffers' own tx descriptors,
 * bufs[0] the head (k ≥ 1): each a 12-byte header naming the next, the
 * last none. fixTxDesc over locals: the peer's driver hands the same
 * buffers back in the same order (GuestDataPath.giftLinksFixed), so most
 * chains find every word as it is and write nothing.
 */
export function linkGiftChain(qp: QueuePair, bufs: Int32Array, k: number): void {
  const words = qp.txWords;
  const d32 = qp.txq.ring.desc32;
  let b = bufs[0];
  for (let i = 1; i <= k; i++) {
    const next = i < k ? bufs[i] : -1;
    const chain = next < 0 ? 0 : (VIRTQ_DESC_F_NEXT | (next << 16)) >>> 0;
    if (words[2 * b] !== VIRTIO_NET_HDR_SIZE) {
      words[2 * b] = VIRTIO_NET_HDR_SIZE;
      d32[4 * b + 2] = VIRTIO_NET_HDR_SIZE;
    }
    if (words[2 * b + 1] !== chain) {
      words[2 * b + 1] = chain;
      d32[4 * b + 3] = chain;
    }
    b = next;
  }
}

/**
 * Tx descriptor b says len bytes and the chain word (flags in the low
 * half, next in the high half), each written only when it differs from
 * what we last wrote there (QueuePair.txWords: our own copy, so
 * deciding reads no ring line). A write would take the line from the
 * switch's cache; a read of it, after the switch read it, measured as the
 * gift loop's slowest step.
 */
export function fixTxDesc(qp: QueuePair, b: number, len: number, chain: number): void {
  const words = qp.txWords;
  if (words[2 * b] !== len) {
    words[2 * b] = len;
    qp.txq.ring.desc32[4 * b + 2] = len;
  }
  if (words[2 * b + 1] !== chain) {
    words[2 * b + 1] = chain;
    qp.txq.ring.desc32[4 * b + 3] = chain;
  }
}
