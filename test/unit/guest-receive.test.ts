/**
 * The guest driver's receive loop for fixed rx descriptors (receiveFixed:
 * rx descriptor b is buffer b's, fields read once, the pool told the peer
 * is alive once per call) must end where the general loop (receiveEntry,
 * one completion at a time, descriptors allocated) ends: the same packets
 * in the same order, the same counters, the same pool (its buffers in the
 * same order, paused or not). Both run over the same random completions:
 * frames, gifts, gift-chain links, gifts RETURNED, frames marked RETURNED,
 * refused postings, in batches cut by random limits; with and without
 * PROTOCOL_F_RETURNED_IN_USED (the switch then marks RETURNED in the used
 * len too). And completionKind itself: with that bit a 12-byte completion
 * is a gift without a header read.
 */
import t from 'tap';
import { BufferPool } from '../../src/guest/buffer-pool';
import { DriverCounters } from '../../src/guest/counters';
import { GuestDataPath, NO_EXTENSIONS } from '../../src/guest/data-path';
import { Completion, completionKind } from '../../src/guest/fixed-descs';
import { GUEST_GPA, GuestMemory } from '../../src/guest/guest-memory';
import { QueuePair } from '../../src/guest/queue-pair';
import { SharedRegion } from '../../src/guest/shared-region';
import { USED_LEN_RETURNED, VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED } from '../../src/vhost/protocol';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { DriverQueue } from '../../src/virtio/driver-queue';
import { SplitRing } from '../../src/virtio/ring';
import { prngU32 } from '../helpers/prng';

const BUF_COUNT = 64;
const BUF_SIZE = 128;
/** This VM owns buffers [0, OWNED) at attach; the others are posted on its rx ring. */
const OWNED = 32;

interface Side {
  dp: GuestDataPath;
  qp: QueuePair;
  pool: BufferPool;
  counters: DriverCounters;
  rx: { rxToken: Int32Array; rxLen: Uint32Array; rxQueue: Uint8Array };
  sh: SharedRegion;
}

/** A data path over plain memory; rxNum >= BUF_COUNT gives fixed rx descriptors, less the general path. */
function side(rxNum: number, returnedInUsed: boolean): Side {
  const sh = new SharedRegion(new ArrayBuffer(BUF_COUNT * BUF_SIZE), 0x2000_0000, BUF_SIZE, BUF_COUNT, 0, OWNED, false);
  const gm = new GuestMemory([rxNum, 256], 0, 2048, (size) => ({ buffer: new ArrayBuffer(size), fd: -1, gpaBase: GUEST_GPA, close: () => {} }));
  const qp = new QueuePair(new DriverQueue(new SplitRing(rxNum, gm.ringParts(0)), false), new DriverQueue(new SplitRing(256, gm.ringParts(1)), false));
  const pool = new BufferPool(BUF_COUNT, Infinity, Infinity, () => 0);
  const counters = new DriverCounters();
  const rx = { rxToken: new Int32Array(BUF_COUNT), rxLen: new Uint32Array(BUF_COUNT), rxQueue: new Uint8Array(BUF_COUNT) };
  const dp = new GuestDataPath(sh, gm, [qp], pool, counters, rx, () => {}, 0, 0, { ...NO_EXTENSIONS, returnedInUsed });
  dp.postInitial();
  return { dp, qp, pool, counters, rx, sh };
}

/** Complete the posting of buffer b with len bytes and header flags, as the switch would. */
function complete(s: Side, b: number, len: number, flags: number): void {
  const r = s.qp.rxq.ring;
  let id = b;
  if (r.num < BUF_COUNT) id = s.qp.rxKind.findIndex((k, d) => k === b && d < r.num);
  s.sh.mem[b * BUF_SIZE] = flags;
  const u = r.used16[1];
  r.used32[1 + 2 * (u & r.mask)] = id;
  r.used32[2 + 2 * (u & r.mask)] = len;
  r.used16[1] = (u + 1) & 0xffff;
}

/** What a side holds after a receive: the packets, the counters, the pool. */
function state(s: Side, n: number) {
  const free = new Int32Array(BUF_COUNT);
  const k = s.pool.allocBurst(free, BUF_COUNT);
  for (let i = k - 1; i >= 0; i--) s.pool.put(free[i]);
  return {
    n,
    tokens: Array.from(s.rx.rxToken.subarray(0, n)),
    lens: Array.from(s.rx.rxLen.subarray(0, n)),
    counters: { ...s.counters },
    pool: Array.from(free.subarray(0, k)),
    blocked: s.pool.blocked,
  };
}

for (const returnedInUsed of [false, true]) t.test(`receiveFixed ends where the general receive loop ends${returnedInUsed ? ', RETURNED in the used len' : ''}`, async (t) => {
  const next = prngU32(0x7ec0); // deterministic: a failure reproduces
  // What the switch writes as used len for a completion flagged so (PortQueues.returnedLen).
  const usedLen = (len: number, flags: number) => (returnedInUsed && flags & VIRTIO_NET_HDR_F_RETURNED ? (len | USED_LEN_RETURNED) >>> 0 : len);
  const KINDS: Array<[len: number, flags: number]> = [
    [60 + VIRTIO_NET_HDR_SIZE, 0], // a frame
    [1500 + VIRTIO_NET_HDR_SIZE, 0],
    [VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_F_GIFT_BUFFER], // a gift's head
    [VIRTIO_NET_HDR_SIZE, 0], // a gift chain's link
    [VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_F_GIFT_BUFFER | VIRTIO_NET_HDR_F_RETURNED], // our gift, back
    [VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_F_RETURNED],
    [60 + VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_F_RETURNED], // a frame-length return (a peer's lying header)
    [60 + VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_F_GIFT_BUFFER], // a frame-length gift
    [0, 0], // a refused posting
    [VIRTIO_NET_HDR_SIZE - 1, 0],
  ];
  let trials = 0;
  let calls = 0;
  const seen = new Set<number>();
  for (let trial = 0; trial < 300; trial++) {
    const fixed = side(BUF_COUNT, returnedInUsed);
    const general = side(OWNED, returnedInUsed);
    t.ok(fixed.qp.rxq.reserved === BUF_COUNT && general.qp.rxq.reserved === 0, 'one side has fixed rx descriptors, the other not');
    // Some of the posted buffers complete, in a random order, each as a random kind.
    const posted = Array.from({ length: BUF_COUNT - OWNED }, (_, i) => OWNED + i);
    for (let i = posted.length - 1; i > 0; i--) {
      const j = next() % (i + 1);
      [posted[i], posted[j]] = [posted[j], posted[i]];
    }
    const count = 1 + (next() % posted.length);
    for (const b of posted.slice(0, count)) {
      const kind = next() % KINDS.length;
      seen.add(kind);
      const [len, flags] = KINDS[kind];
      complete(fixed, b, usedLen(len, flags), flags);
      complete(general, b, usedLen(len, flags), flags);
    }
    // Received in calls of random limits until nothing is left.
    for (let guard = 0; guard < 100; guard++) {
      const max = 1 + (next() % 8);
      const a = state(fixed, fixed.dp.receive(max));
      const b = state(general, general.dp.receive(max));
      calls++;
      if (!t.same(a, b, `trial ${trial}, call with max ${max}`)) return;
      if (fixed.qp.rxq.usedPending() === 0 && general.qp.rxq.usedPending() === 0) break;
    }
    t.equal(fixed.qp.rxq.usedPending(), 0, 'every completion taken');
    trials++;
  }
  t.equal(seen.size, KINDS.length, 'every kind of completion came up');
  t.ok(trials === 300 && calls > 300, `${trials} trials, ${calls} receive calls compared`);
});

t.test('completionKind: with RETURNED_IN_USED a 12-byte completion is a gift unread, a return says so in the used len', async (t) => {
  const mem = new Uint8Array(8);
  const HDR = VIRTIO_NET_HDR_SIZE;
  const RET = VIRTIO_NET_HDR_F_RETURNED;
  const GIFT = VIRTIO_NET_HDR_F_GIFT_BUFFER;
  const kind = (len: number, flags: number, inUsed: boolean) => {
    mem[4] = flags;
    return completionKind(len, mem, 4, inUsed);
  };
  // Without the bit the header says it (ownership rules 4, 5).
  t.equal(kind(HDR, 0, false), Completion.Gift, 'a chain link');
  t.equal(kind(HDR, GIFT, false), Completion.Gift, 'a gift head');
  t.equal(kind(HDR, RET, false), Completion.Returned, 'a frame of ours, back');
  t.equal(kind(HDR, GIFT | RET, false), Completion.ReturnedGift, 'a gift of ours, back');
  t.equal(kind(72, 0, false), Completion.Frame, 'a frame');
  t.equal(kind(72, GIFT, false), Completion.Gift, 'a frame flagged GIFT_BUFFER is taken as handed back');
  t.equal(kind(HDR - 1, 0, false), Completion.Refused, 'a refused posting');
  // With it, 12 bytes are a gift whatever the header says; a return says so in the used len; frames as without.
  t.equal(kind(HDR, GIFT | RET, true), Completion.Gift, '12 bytes: a gift, whatever the header');
  t.equal(kind(72, 0, true), Completion.Frame, 'longer: a frame');
  t.equal(kind(72, GIFT, true), Completion.Gift, 'longer and flagged GIFT_BUFFER: handed back, as without');
  t.equal(kind((HDR | USED_LEN_RETURNED) >>> 0, 0, true), Completion.Returned, 'RETURNED in the used len');
  t.equal(kind((HDR | USED_LEN_RETURNED) >>> 0, GIFT | RET, true), Completion.ReturnedGift, 'RETURNED, and the header says it was our gift');
  t.equal(kind(0, 0, true), Completion.Refused, 'a refused posting');
  // With it a gift's header is not even read (that read is the line transfer the bit saves).
  let reads = 0;
  const watched = new Proxy(mem, {
    get: (m, k) => {
      if (k === '4') reads++;
      return Reflect.get(m, k);
    },
  });
  completionKind(HDR, watched, 4, true);
  t.equal(reads, 0, 'no header read for a gift');
  completionKind((HDR | USED_LEN_RETURNED) >>> 0, watched, 4, true);
  completionKind(72, watched, 4, true);
  completionKind(HDR, watched, 4, false);
  t.equal(reads, 3, 'read for a return, for a frame, and for any 12-byte one without the bit');
});
