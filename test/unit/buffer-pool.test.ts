/**
 * Unit tests for the guest driver's BufferPool (src/guest/buffer-pool.ts):
 * the free stack, the gift policy (above the high watermark gift down to
 * the low one, in chains of at most GIFT_CHAIN_MAX, never more than the
 * rings have room for), the pause after RETURNED gifts and its retries, and the count of
 * buffers a VM owns across alloc / send / receive / release. No switch:
 * giftOut() below does what the data path does with each chain length.
 */
import t from 'tap';
import { BufferPool, GIFT_RETRY_MS } from '../../src/guest/buffer-pool';
import { RegionGeometry } from '../../src/shm/geometry';
import { GIFT_CHAIN_MAX } from '../../src/vhost/protocol';

/** Fill a pool with buffers [start, start + n), as attach does with the partition. */
function withPartition(capacity: number, start: number, n: number, high = Infinity, low = Infinity): BufferPool {
  const p = new BufferPool(capacity, high, low);
  for (let b = start; b < start + n; b++) p.put(b);
  return p;
}

/** The data path's gift loop: chain lengths, taking each chain's buffers out of the pool. */
function giftOut(p: BufferPool, txRoom = 1024, rxRoom = 1024, ask = true): { chains: number[]; gifted: number[] } {
  const chains: number[] = [];
  const gifted: number[] = [];
  if (ask && !p.wantsToGift()) return { chains, gifted };
  for (;;) {
    const k = p.giftChainLength(txRoom, rxRoom);
    if (k === 0) break;
    chains.push(k);
    for (let i = 0; i < k; i++) gifted.push(p.alloc());
    txRoom -= k;
    rxRoom -= k;
  }
  return { chains, gifted };
}

t.test('the free stack: put, alloc (last in, first out), -1 when empty', async (t) => {
  const p = new BufferPool(8);
  t.equal(p.count, 0);
  t.equal(p.alloc(), -1, 'empty pool');
  p.put(3);
  p.put(5);
  t.equal(p.count, 2);
  t.equal(p.alloc(), 5);
  t.equal(p.alloc(), 3);
  t.equal(p.alloc(), -1);
  t.equal(p.count, 0);
  const full = withPartition(16, 16, 16);
  t.equal(full.count, 16, 'a partition fills the pool');
  const seen = new Set<number>();
  for (let b = full.alloc(); b >= 0; b = full.alloc()) seen.add(b);
  t.equal(seen.size, 16, 'every buffer comes out once');
  t.ok([...seen].every((b) => b >= 16 && b < 32), 'only the partition');
});

t.test('no gifts at or below the high watermark, nor with the default (Infinity)', async (t) => {
  t.notOk(withPartition(512, 0, 512).wantsToGift(), 'default watermarks never gift');
  const p = withPartition(512, 0, 320, 320, 256);
  t.notOk(p.wantsToGift(), 'exactly at giftHigh: no gift');
  t.same(giftOut(p).chains, []);
  t.equal(p.count, 320);
  p.put(400);
  t.ok(p.wantsToGift(), 'one above giftHigh: gift');
});

t.test('above the high watermark it gifts down to the low one', async (t) => {
  const p = withPartition(512, 0, 321, 320, 256);
  const { chains, gifted } = giftOut(p);
  t.same(chains, [GIFT_CHAIN_MAX, 321 - 256 - GIFT_CHAIN_MAX], 'one full chain, then the rest');
  t.equal(gifted.length, 65);
  t.equal(new Set(gifted).size, 65, 'no buffer gifted twice');
  t.ok(gifted.every((b) => b >= 0), 'never an empty alloc');
  t.equal(p.count, 256, 'left with giftLow');
  t.notOk(p.wantsToGift());
});

t.test('gift chains are at most GIFT_CHAIN_MAX long', async (t) => {
  const p = withPartition(4096, 0, 4096, 1000, 100);
  const { chains, gifted } = giftOut(p, 4096, 4096);
  t.ok(chains.every((k) => k > 0 && k <= GIFT_CHAIN_MAX), 'every chain within the limit');
  t.equal(chains.filter((k) => k === GIFT_CHAIN_MAX).length, Math.floor(3996 / GIFT_CHAIN_MAX));
  t.equal(gifted.length, 3996);
  t.equal(p.count, 100);
});

t.test('gift chains never take more descriptors than tx and rx have free', async (t) => {
  const p = withPartition(512, 0, 512, 300, 100);
  t.equal(p.giftChainLength(10, 1024), 10, 'tx room');
  t.equal(p.giftChainLength(1024, 7), 7, 'rx room (each gift is posted on our own rx first)');
  t.equal(p.giftChainLength(0, 1024), 0, 'a full tx ring: stop');
  const { chains } = giftOut(p, 100, 1024);
  t.same(chains, [GIFT_CHAIN_MAX, 100 - GIFT_CHAIN_MAX], 'stops when tx is full');
  t.equal(p.count, 412, 'the rest waits for the next flush');
  t.equal(withPartition(64, 0, 50, 40, 60).giftChainLength(64, 64), 0, 'giftLow above the count: nothing');
});

t.test('gifts handed back RETURNED pause gifting until the peer shows life', async (t) => {
  const p = withPartition(512, 0, 300, 256, 200);
  t.ok(p.wantsToGift());
  const { gifted } = giftOut(p);
  t.equal(p.count, 200);
  p.handedBack(gifted[0], true, true);
  t.equal(p.count, 201, 'the returned gift is ours again');
  t.ok(p.blocked);
  for (const b of gifted.slice(1)) p.handedBack(b, true, false);
  t.equal(p.count, 300);
  t.notOk(p.wantsToGift(), 'above giftHigh, but the peer hands gifts back');
  t.equal(p.giftChainLength(1024, 1024), GIFT_CHAIN_MAX, 'the chain length itself ignores the pause (flush checks wantsToGift)');
  p.peerAlive();
  t.ok(p.wantsToGift(), 'a packet from the peer: gifting resumes');
  p.handedBack(gifted[0] === 0 ? 1 : 0, true, true);
  t.notOk(p.wantsToGift());
  p.alloc();
  p.handedBack(511, false, true);
  t.notOk(p.blocked, 'a gift from the peer: it is alive');
  t.ok(p.wantsToGift());
});

t.test('while paused, one gift round every GIFT_RETRY_MS (a peer that owns nothing cannot show life)', async (t) => {
  let now = 1000;
  const p = new BufferPool(512, 256, 200, () => now);
  for (let b = 0; b < 300; b++) p.put(b);
  const { gifted } = giftOut(p);
  for (const b of gifted) p.handedBack(b, true, b === gifted[0]);
  t.ok(p.blocked);
  t.notOk(p.wantsToGift(), 'paused right after the gifts came back');
  now += GIFT_RETRY_MS - 1;
  t.notOk(p.wantsToGift(), 'still paused just before the retry');
  now += 1;
  t.ok(p.wantsToGift(), 'a retry once GIFT_RETRY_MS passed');
  t.notOk(p.wantsToGift(), 'one round per retry');
  t.ok(p.blocked, 'still paused: only the peer showing life resumes gifting');
  now += GIFT_RETRY_MS;
  t.ok(p.wantsToGift(), 'the next retry');
  const again = giftOut(p, 1024, 1024, false).gifted;
  for (const b of again) p.handedBack(b, true, b === again[0]);
  now += GIFT_RETRY_MS / 2;
  t.notOk(p.wantsToGift(), 'returned again: the wait starts over from then');
  p.peerAlive();
  t.ok(p.wantsToGift(), 'the peer sent a packet: gifting as usual');
  t.ok(p.wantsToGift());
});

t.test('a returned packet (not a gift) does not pause gifting', async (t) => {
  const p = withPartition(512, 0, 257, 256, 200);
  p.alloc();
  p.handedBack(7, true, false);
  t.notOk(p.blocked);
  t.ok(p.wantsToGift());
});

t.test('ownership counts: pool + application + in flight = what the VM owns', async (t) => {
  // A pair port with partition [256, 512) of 512: owns 256 at attach.
  const p = withPartition(512, 256, 256, 320, 256);
  let withApp = 0;
  let inFlight = 0;
  const owned = () => p.count + withApp + inFlight;
  t.equal(owned(), 256);
  const app: number[] = [];
  for (let i = 0; i < 100; i++) app.push(p.alloc());
  withApp = 100;
  t.equal(p.count, 156);
  t.equal(owned(), 256, 'alloc moves buffers to the application');
  // send 60: still ours while on tx, the peer's once the switch delivers them.
  app.splice(0, 60);
  withApp = 40;
  inFlight = 60;
  t.equal(owned(), 256, 'in flight on tx');
  inFlight = 0;
  t.equal(owned(), 196, 'delivered buffers belong to the peer');
  // The peer sends us 90 packets; the sink releases them: now ours and free.
  for (let b = 0; b < 90; b++) p.put(b);
  t.equal(owned(), 286);
  t.equal(p.count, 246);
  t.notOk(p.wantsToGift(), '246 free: not above giftHigh (320)');
  for (const b of app.splice(0)) p.put(b);
  withApp = 0;
  for (let b = 90; b < 130; b++) p.put(b);
  t.equal(p.count, 326, 'released and received');
  t.ok(p.wantsToGift());
  const { gifted } = giftOut(p);
  t.equal(gifted.length, 70, 'gifted down to giftLow');
  t.equal(owned(), 256, 'back to the partition size');
});

t.test('RegionGeometry.indexAt: only exact buffer starts inside the window', async (t) => {
  const g = new RegionGeometry(0x40_0000_0000, 2048, 64);
  t.equal(g.indexAt(g.addrOf(0)), 0);
  t.equal(g.indexAt(g.addrOf(63)), 63);
  t.equal(g.indexAt(g.addrOf(5) + 12), -1, 'inside a buffer, not its start');
  t.equal(g.indexAt(g.base - 2048), -1, 'below the window');
  t.equal(g.indexAt(g.base + g.size), -1, 'just past the window');
  t.equal(g.offsetOf(7), 7 * 2048);
  t.equal(g.indexOf(g.addrOf(5) + 12), 5);
});

t.test('RegionGeometry.touchAhead: from a page per buffer', async (t) => {
  t.notOk(new RegionGeometry(0, 128, 64).touchAhead, '128 B buffers: the hardware prefetchers follow');
  t.notOk(new RegionGeometry(0, 4032, 64).touchAhead);
  t.ok(new RegionGeometry(0, 4096, 64).touchAhead);
  t.ok(new RegionGeometry(0, 65600, 64).touchAhead, '64 KiB buffers');
});
