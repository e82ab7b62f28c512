/**
 * The test frame of `zcswitch vm`: the benchmark's fast forms (a header
 * template written word-wise, a header check from word loads, a sequence
 * tracker that caches the current stream) must agree with the plain ones
 * byte for byte and verdict for verdict.
 */
import t from 'tap';
import {
  FrameChecker, MAX_RUN_ID, SequenceTracker, TEST_HEADER, TestHeaderWriter, Verdict, defaultMacs, freshRunId, parseMac, writeTestFrame,
} from '../../src/guest/test-packet';
import { prngU32 } from '../helpers/prng';

const CASES: Array<[len: number, stream: number, seq: number]> = [
  [34, 0, 0], [60, 1, 1], [64, 7, 0x12345678], [1500, 0xdeadbeef, 0xffffffff], [9000, 255, 256], [65535, 0x01020304, 0x80000000],
];

t.test('TestHeaderWriter writes what writeTestFrame(fill=false) writes, and nothing else', async (t) => {
  const macs = parseMac('0a:0b:0c:0d:0e:0f')!;
  const both = Uint8Array.of(...macs, ...parseMac('f0:e1:d2:c3:b4:a5')!);
  for (const [len, stream, seq] of CASES) {
    for (const m of [undefined, both]) {
      for (const run of [0, 1, 0x1234, MAX_RUN_ID]) {
        const a = new Uint8Array(128).fill(0xa5);
        const b = new Uint8Array(128).fill(0xa5);
        writeTestFrame(a, 12, len, stream, seq, false, m ?? defaultMacs(stream), run);
        new TestHeaderWriter(len, stream, m, run).write(new Uint32Array(b.buffer), b, 3, seq);
        t.same(b, a, `len ${len} stream ${stream} seq ${seq} run ${run}${m ? ' own macs' : ''}`);
        t.ok(b.subarray(12 + TEST_HEADER).every((x) => x === 0xa5), 'nothing written past the header');
      }
    }
  }
});

t.test('TestHeaderWriter over a buffer that already holds a header, or any bytes, leaves what writeTestFrame leaves', async (t) => {
  // It skips the stores of words the buffer holds already: whatever was there
  // before (another frame of this stream, another stream's, another length,
  // random bytes, a header differing in one byte), the result must be the same.
  const next = prngU32(0xbeef);
  let checked = 0;
  for (const [len, stream, seq] of CASES) {
    const w = new TestHeaderWriter(len, stream);
    const priors: Array<(b: Uint8Array) => void> = [
      (b) => writeTestFrame(b, 12, len, stream, seq - 1, false),
      (b) => writeTestFrame(b, 12, len, stream, seq + 0x10000, false),
      (b) => writeTestFrame(b, 12, len, stream ^ 1, seq, false),
      (b) => writeTestFrame(b, 12, len === 34 ? 35 : len - 1, stream, seq, false, defaultMacs(stream), 7),
      (b) => { for (let i = 0; i < b.length; i++) b[i] = next() & 0xff; },
      ...Array.from({ length: TEST_HEADER }, (_, i) => (b: Uint8Array) => {
        writeTestFrame(b, 12, len, stream, seq, false);
        b[12 + i] ^= 1 << (i & 7);
      }),
    ];
    for (const prior of priors) {
      const a = new Uint8Array(128);
      prior(a);
      const b = a.slice();
      writeTestFrame(a, 12, len, stream, seq, false);
      w.write(new Uint32Array(b.buffer), b, 3, seq);
      if (!t.same(b, a, `len ${len} stream ${stream} seq ${seq}, prior ${checked}`)) break;
      checked++;
    }
  }
  t.equal(checked, CASES.length * (5 + TEST_HEADER), 'every prior content checked');
});

t.test('verifyHeader agrees with verify(..., false), on good frames and corrupted ones', async (t) => {
  const next = prngU32(0x5eed); // deterministic: a failure reproduces
  const buf = new ArrayBuffer(128);
  const m8 = new Uint8Array(buf);
  const m32 = new Uint32Array(buf);
  const plain = new FrameChecker();
  const fast = new FrameChecker();
  let disagreements = 0;
  let checked = 0;
  const verdicts = new Set<Verdict>();
  for (const [len, stream, seq] of CASES) {
    writeTestFrame(m8, 12, len, stream, seq, false);
    t.equal(fast.verifyHeader(m32, 3, len), Verdict.Ok, `len ${len}: Ok`);
    t.equal(fast.lastStream, stream, 'stream read back');
    t.equal(fast.lastSeq, seq, 'sequence read back');
    t.equal(fast.verifyHeader(m32, 3, len + 1), Verdict.BadLength, 'a longer frame than the header says');
    t.equal(fast.verifyHeader(m32, 3, TEST_HEADER - 1), Verdict.NotTest, 'shorter than a test header');
    // Flip random bytes of the header (and the length given) and compare.
    for (let i = 0; i < 500; i++) {
      writeTestFrame(m8, 12, len, stream, seq, false);
      const flips = 1 + (next() % 3);
      for (let f = 0; f < flips; f++) m8[12 + (next() % TEST_HEADER)] ^= 1 + (next() % 255);
      const l = next() % 4 === 0 ? len ^ (1 << next() % 16) : len;
      const a = plain.verify(m8, 12, l, false);
      const b = fast.verifyHeader(m32, 3, l);
      verdicts.add(a);
      checked++;
      if (a !== b || (a === Verdict.Ok && (plain.lastStream !== fast.lastStream || plain.lastSeq !== fast.lastSeq))) disagreements++;
    }
  }
  t.equal(disagreements, 0, `${checked} corrupted frames: same verdict and identity`);
  t.ok(verdicts.has(Verdict.Ok) && verdicts.has(Verdict.NotTest) && verdicts.has(Verdict.BadLength), 'the corruption reached every verdict');
});

t.test('seeHeaders agrees with verify(..., false) and see() frame by frame, over bursts of mixed frames', async (t) => {
  const next = prngU32(0x5ee5); // deterministic: a failure reproduces
  const BUF = 128;
  const COUNT = 64;
  const buf = new ArrayBuffer(BUF * COUNT);
  const m8 = new Uint8Array(buf);
  const m32 = new Uint32Array(buf);
  const plain = new FrameChecker();
  const plainSeq = new SequenceTracker();
  const fastSeq = new SequenceTracker();
  const plainVerdicts = new Float64Array(4);
  const fastVerdicts = new Float64Array(4);
  const tokens = new Int32Array(COUNT);
  const lens = new Uint32Array(COUNT);
  const seqs = new Map<number, number>();
  let stops = 0;
  let badStops = 0;
  for (let trial = 0; trial < 400; trial++) {
    const n = next() % (COUNT + 1);
    for (let i = 0; i < n; i++) {
      const b = i; // each frame its own buffer
      const stream = next() % 3;
      const run = next() % 2;
      const key = stream * 2 + run;
      // Mostly in order; sometimes a gap, a repeat or an older frame.
      let seq = seqs.get(key) ?? 0;
      const r = next() % 16;
      if (r === 0) seq += 1 + (next() % 5);
      else if (r === 1 && seq > 0) seq -= 1 + (next() % Math.min(seq, 3));
      seqs.set(key, Math.max(seqs.get(key) ?? 0, seq + 1));
      const len = 60 + (next() % 40);
      writeTestFrame(m8, b * BUF + 12, len, stream, seq, false, defaultMacs(stream), run);
      let l = len;
      const c = next() % 12;
      if (c === 0) m8[b * BUF + 12 + (next() % TEST_HEADER)] ^= 1 + (next() % 255);
      else if (c === 1) l = len + 1;
      else if (c === 2) l = next() % TEST_HEADER;
      tokens[i] = next() % 20 === 0 ? -1 - (next() % 4) : b;
      lens[i] = l;
    }
    // The plain way: each shared frame through verify and see; the fast way stops at a private slot.
    let i = 0;
    while (i < n) {
      const stop = fastSeq.seeHeaders(m32, BUF >>> 2, tokens, lens, i, n, fastVerdicts);
      for (; i < stop; i++) {
        const v = plain.verify(m8, tokens[i] * BUF + 12, lens[i], false);
        plainVerdicts[v]++;
        if (v === Verdict.Ok) plainSeq.see(plain.lastStream, plain.lastSeq, plain.lastRun);
      }
      if (i < n) {
        if (tokens[i] >= 0) badStops++;
        stops++;
        i++;
      }
    }
  }
  t.same([...fastVerdicts], [...plainVerdicts], `verdicts agree (${plainVerdicts.join('/')})`);
  t.same([fastSeq.lost, fastSeq.dup, fastSeq.streams], [plainSeq.lost, plainSeq.dup, plainSeq.streams], 'lost, dup and streams agree');
  t.ok(plainVerdicts[Verdict.Ok] > 0 && plainVerdicts[Verdict.NotTest] > 0 && plainVerdicts[Verdict.BadLength] > 0, 'every header verdict was reached');
  t.ok(plainSeq.lost > 0 && plainSeq.dup > 0 && plainSeq.streams >= 6, `gaps, repeats and streams were seen (${plainSeq.lost}/${plainSeq.dup}/${plainSeq.streams})`);
  t.ok(stops > 0 && badStops === 0, `it stopped only at private slots (${stops} stops)`);
});

t.test('SequenceTracker: gaps, repeats, and streams that interleave', async (t) => {
  const s = new SequenceTracker();
  for (let i = 0; i < 100; i++) s.see(1, i);
  t.same([s.lost, s.dup], [0, 0], 'one stream in order');
  s.see(1, 105);
  t.same([s.lost, s.dup], [5, 0], 'a gap of 5');
  s.see(1, 103);
  t.same([s.lost, s.dup], [5, 1], 'a late one counts as a repeat');
  s.see(2, 0);
  s.see(2, 1);
  s.see(1, 106);
  s.see(2, 2);
  s.see(3, 1);
  t.same([s.lost, s.dup], [6, 1], 'each stream keeps its own next number across switches');
  s.see(1, 106);
  s.see(2, 2);
  t.same([s.lost, s.dup], [6, 3], 'repeats after a switch back');
  s.see(0xffffffff, 0);
  s.see(0xffffffff, 1);
  t.same([s.lost, s.dup], [6, 3], 'the largest stream id');
});

t.test('run ids: a second run of one stream is a new stream, not a storm of duplicates', async (t) => {
  // What a sink saw when `zcswitch vm --mode gen --count 1000` ran twice with the same --stream.
  const buf = new ArrayBuffer(128);
  const m8 = new Uint8Array(buf);
  const m32 = new Uint32Array(buf);
  const fast = new FrameChecker();
  const plain = new FrameChecker();
  const s = new SequenceTracker();
  const runs = [freshRunId(), 0];
  do runs[1] = freshRunId(); while (runs[1] === runs[0]);
  for (const run of runs) {
    t.ok(run >= 1 && run <= MAX_RUN_ID, `fresh run id ${run} within 1..${MAX_RUN_ID}`);
    for (let seq = 0; seq < 1000; seq++) {
      writeTestFrame(m8, 12, 64, 1, seq, seq % 2 === 0, defaultMacs(1), run);
      const v = seq % 2 === 0 ? plain.verify(m8, 12, 64) : fast.verifyHeader(m32, 3, 64);
      const c = seq % 2 === 0 ? plain : fast;
      if (v !== Verdict.Ok || c.lastRun !== run || c.lastStream !== 1 || c.lastSeq !== seq) {
        t.fail(`run ${run} seq ${seq}: verdict ${v}, run ${c.lastRun}, stream ${c.lastStream}, seq ${c.lastSeq}`);
        return;
      }
      s.see(c.lastStream, c.lastSeq, c.lastRun);
    }
  }
  t.same([s.lost, s.dup, s.streams], [0, 0, 2], 'two runs: nothing lost, no duplicates, two streams');
  s.see(1, 500, runs[0]);
  t.same([s.lost, s.dup], [0, 1], 'a real repeat within a run still counts');
  s.see(1, 0);
  s.see(1, 1);
  t.same([s.lost, s.dup, s.streams], [0, 1, 3], 'run 0 (frames without a run id) is a stream of its own');
  s.see(0xffffffff, 0, MAX_RUN_ID);
  s.see(0xffffffff, 1, MAX_RUN_ID);
  t.same([s.lost, s.dup, s.streams], [0, 1, 4], 'the largest stream id and run id make an exact key');
  t.equal(new SequenceTracker().streams, 0, 'no frame, no stream');
});

t.test('frame length and run id share the old 32-bit length field', async (t) => {
  const m8 = new Uint8Array(128);
  writeTestFrame(m8, 0, 100, 7, 3, true, defaultMacs(7), 0);
  t.same([...m8.subarray(26, 30)], [0, 0, 0, 100], 'run 0: the bytes of the old format (length as 32 bits)');
  writeTestFrame(m8, 0, 100, 7, 3, true, defaultMacs(7), 0xabcd);
  t.same([...m8.subarray(26, 30)], [0xab, 0xcd, 0, 100], 'run id in the upper half, big-endian');
  const c = new FrameChecker();
  t.equal(c.verify(m8, 0, 100), Verdict.Ok);
  t.equal(c.lastRun, 0xabcd);
  t.equal(c.verify(m8, 0, 101), Verdict.BadLength, 'the length half is still checked');
});
