/**
 * The capture mirror ring between a data-path worker and the main thread
 * (src/workers/mirror-ring.ts): records come out as they went in, across
 * the wrap, cut to snaplen and filtered by direction; a full ring drops
 * and counts; the writer signals only when the reader asked for it. Both
 * sides run in this thread here: the ring is the same SharedArrayBuffer a
 * worker writes.
 */
import t from 'tap';
import { MirrorDir } from '../../src/datapath/mirror';
import { MIRROR_RING_MIN_BYTES, type MirrorSink, MirrorRingReader, MirrorRingWriter, createMirrorRing } from '../../src/workers/mirror-ring';

interface Got { bytes: number[]; len: number; dir: MirrorDir; ts: number }

function sink(snaplen: number, direction: MirrorSink['direction'] = 'both') {
  const got: Got[] = [];
  const s = {
    snaplen, direction, bufferBytes: MIRROR_RING_MIN_BYTES, dropped: 0,
    frameAt(b: Uint8Array, off: number, kept: number, len: number, dir: MirrorDir, ts: number) {
      got.push({ bytes: [...b.subarray(off, off + kept)], len, dir, ts });
    },
    ringDropped(n: number) {
      s.dropped += n;
    },
  };
  return { s, got };
}

/** A frame of len bytes whose every byte is (seed + i) & 0xff. */
const frame = (len: number, seed: number) => Uint8Array.from({ length: len }, (_, i) => (seed + i) & 0xff);

t.test('records come out whole and in order, across many wraps', async (t) => {
  const { s, got } = sink(300);
  const ring = createMirrorRing(s);
  let wakes = 0;
  const w = new MirrorRingWriter(ring, () => wakes++);
  const r = new MirrorRingReader(ring, s);
  const before = Date.now();
  // 64 KiB ring, ~50 records per fill: 4000 frames wrap it many times; drained every 7 frames so it never fills.
  let sent = 0;
  for (let i = 0; i < 4000; i++) {
    const len = 60 + ((i * 37) % 1400);
    w.frame(frame(len + 10, i), 10, len, i % 3 === 0 ? MirrorDir.ToVm : MirrorDir.FromVm);
    sent++;
    if (i % 7 === 6) r.drain();
  }
  r.drain();
  t.equal(got.length, sent, 'every frame came out');
  t.equal(s.dropped, 0, 'nothing dropped');
  let bad = 0;
  got.forEach((g, i) => {
    const len = 60 + ((i * 37) % 1400);
    const want = [...frame(len + 10, i).subarray(10, 10 + Math.min(len, 300))];
    if (g.len !== len || g.dir !== (i % 3 === 0 ? MirrorDir.ToVm : MirrorDir.FromVm) || g.bytes.length !== want.length || g.bytes.some((b, k) => b !== want[k])) bad++;
  });
  t.equal(bad, 0, 'lengths, directions and bytes (cut to the snaplen) as written');
  t.ok(got.every((g) => g.ts >= before - 1 && g.ts <= Date.now() + 1), 'timestamps are ms since the epoch, taken by the writer');
  t.equal(wakes, Math.ceil(4000 / 7), 'one wake per drain that left the ring empty, none per frame');
});

t.test('a full ring drops and counts; the reader gets the count and the ring works again', async (t) => {
  const { s, got } = sink(2000);
  const ring = createMirrorRing(s);
  const w = new MirrorRingWriter(ring, () => {});
  const r = new MirrorRingReader(ring, s);
  const f = frame(1000, 1);
  for (let i = 0; i < 200; i++) w.frame(f, 0, 1000, MirrorDir.FromVm);
  r.drain();
  // 1024-byte records in a 64 KiB ring that never lets the writer reach the reader: 63 fit.
  t.equal(got.length, 63, '63 records fit');
  t.equal(s.dropped, 200 - 63, 'the rest were dropped and counted');
  for (let i = 0; i < 10; i++) w.frame(f, 0, 1000, MirrorDir.ToVm);
  r.drain();
  t.equal(got.length, 73, 'room again once drained');
  t.equal(s.dropped, 137, 'no new drops');
});

t.test('the direction filter and a frame larger than the ring', async (t) => {
  const { s, got } = sink(262144, 'to-vm');
  const ring = createMirrorRing(s);
  const w = new MirrorRingWriter(ring, () => {});
  const r = new MirrorRingReader(ring, s);
  w.frame(frame(100, 0), 0, 100, MirrorDir.FromVm);
  w.frame(frame(100, 0), 0, 100, MirrorDir.ToVm);
  w.frame(frame(70000, 0), 0, 70000, MirrorDir.ToVm);
  r.drain();
  t.same(got.map((g) => [g.len, g.dir]), [[100, MirrorDir.ToVm]], 'from-vm frames are not written at all');
  t.equal(s.dropped, 1, 'a frame that can never fit is a counted drop');
});

t.test('a reader closed while draining stops after the current record', async (t) => {
  const { s, got } = sink(100);
  const ring = createMirrorRing(s);
  const w = new MirrorRingWriter(ring, () => {});
  const r = new MirrorRingReader(ring, s);
  const frameAt = s.frameAt;
  s.frameAt = (...a) => {
    frameAt(...a);
    if (got.length === 3) r.closed = true;
  };
  for (let i = 0; i < 10; i++) w.frame(frame(64, i), 0, 64, MirrorDir.FromVm);
  r.drain();
  t.equal(got.length, 3, 'three records, then the reader let go');
});
