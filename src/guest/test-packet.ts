/**
 * The self-checking test frame that `zcswitch vm` generates and verifies:
 *
 *   0  dst MAC, 6  src MAC (last byte = stream id), 12 ethertype 0x88b5
 *   14 magic "ZCSW", 18 stream id, 22 sequence number, 26 run id (16 bits),
 *   28 frame length (16 bits), 30 checksum of the pattern bytes [34, len)
 *   folded with the sequence, 34 pattern: byte i = (seq + i) & 0xff
 *
 * Every field the receiver can get wrong (truncation, corruption, a stale
 * buffer, a duplicate) shows up in verify(). The run id tells two runs of
 * one stream apart: every `zcswitch vm --mode gen` picks a fresh one, so a
 * second run counting from sequence 0 again is a new stream to a sink, not
 * a million duplicates. (It sits where the length field's upper half was,
 * always 0 for frames up to 65535 bytes: run 0 is the old format.)
 */
import { bswap32, putU16be, putU32be, u32be } from '../virtio/bytes';

export const TEST_ETHERTYPE = 0x88b5;
export const TEST_MAGIC = 0x5a435357;
export const TEST_HEADER = 34;
export const MIN_TEST_FRAME = TEST_HEADER;

/** Pattern checksum: FNV-1a style over the pattern, seeded with seq. */
function checksum(m: Uint8Array, from: number, to: number, seq: number): number {
  let h = (0x811c9dc5 ^ seq) >>> 0;
  for (let i = from; i < to; i++) h = Math.imul(h ^ m[i], 0x01000193);
  return h >>> 0;
}

/** Run ids are 16 bits; 0 is "no run id" (frames from before run ids, hand-made frames). */
export const MAX_RUN_ID = 0xffff;

/** A run id for a new generator run: random in 1..MAX_RUN_ID. */
export function freshRunId(): number {
  return 1 + Math.floor(Math.random() * MAX_RUN_ID);
}

/** Default addresses: to 02:00:00:00:00:ff, from 02:00:00:00:00:<stream>. */
export function defaultMacs(stream: number): Uint8Array {
  return Uint8Array.of(2, 0, 0, 0, 0, 0xff, 2, 0, 0, 0, 0, stream & 0xff);
}

/** "aa:bb:cc:dd:ee:ff" → 6 bytes, or null. */
export function parseMac(s: string): Uint8Array | null {
  const parts = s.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) return null;
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

/**
 * Write a test frame of len bytes at m[off]; macs holds destination then
 * source address (12 bytes). With fill=false only the header is written
 * (benchmarks). run is the run id (0..MAX_RUN_ID).
 */
export function writeTestFrame(
  m: Uint8Array, off: number, len: number, stream: number, seq: number, fill = true, macs = defaultMacs(stream), run = 0,
): void {
  for (let i = 0; i < 12; i++) m[off + i] = macs[i];
  m[off + 12] = TEST_ETHERTYPE >>> 8;
  m[off + 13] = TEST_ETHERTYPE & 0xff;
  putU32be(m, off + 14, TEST_MAGIC);
  putU32be(m, off + 18, stream);
  putU32be(m, off + 22, seq);
  putU16be(m, off + 26, run);
  putU16be(m, off + 28, len);
  if (fill) {
    for (let i = TEST_HEADER; i < len; i++) m[off + i] = (seq + i) & 0xff;
    putU32be(m, off + 30, checksum(m, off + TEST_HEADER, off + len, seq));
  } else {
    putU32be(m, off + 30, 0);
  }
}

/** Little-endian 32-bit word of four bytes (the host is checked to be little-endian in net-hdr.ts). */
function le(b0: number, b1: number, b2: number, b3: number): number {
  return (b0 & 0xff) | ((b1 & 0xff) << 8) | ((b2 & 0xff) << 16) | ((b3 & 0xff) << 24);
}

/**
 * The header writeTestFrame(..., fill=false) writes, as 32-bit words
 * instead of 34 byte stores: the generator's share of every benchmark
 * packet. Everything but the sequence number is fixed per stream and
 * length, so it is computed once. Every word is stored, none read first:
 * the sequence number must be written anyway, so the line has to come over
 * from the receiver that read it last, and a read before the store would
 * bring it over twice (once to read, once more to own) where the receiver
 * runs on another core. Comparing first, as this once did, paid off only
 * with the receiver on this core (docs/performance-log.md, "A gift's header,
 * unread"). The frame must start 4-byte aligned (a shared buffer's frame
 * does: buffer + 12).
 */
export class TestHeaderWriter {
  /** Words 0-4 and 7 of the header (5 and 6 hold the sequence number), as the buffer holds them. */
  private readonly w: Uint32Array;
  /** Word 5's fixed half (the stream id's low 16 bits) and word 6's (the run id). */
  private readonly streamLo: number;
  private readonly runHi: number;

  constructor(len: number, stream: number, macs = defaultMacs(stream), run = 0) {
    const m = macs;
    this.w = Uint32Array.of(
      le(m[0], m[1], m[2], m[3]), le(m[4], m[5], m[6], m[7]), le(m[8], m[9], m[10], m[11]),
      le(TEST_ETHERTYPE >>> 8, TEST_ETHERTYPE, TEST_MAGIC >>> 24, TEST_MAGIC >>> 16),
      le(TEST_MAGIC >>> 8, TEST_MAGIC, stream >>> 24, stream >>> 16),
      le(len >>> 8, len, 0, 0),
    );
    this.streamLo = le(stream >>> 8, stream, 0, 0);
    this.runHi = le(0, 0, run >>> 8, run);
  }

  /** Write the header of frame seq at byte offset 4 × word of m32 (whose bytes are m8). */
  write(m32: Uint32Array, m8: Uint8Array, word: number, seq: number): void {
    const w = this.w;
    m32[word] = w[0];
    m32[word + 1] = w[1];
    m32[word + 2] = w[2];
    m32[word + 3] = w[3];
    m32[word + 4] = w[4];
    m32[word + 5] = (this.streamLo | ((seq >>> 24) << 16) | (((seq >>> 16) & 0xff) << 24)) >>> 0;
    m32[word + 6] = ((seq >>> 8) & 0xff) | ((seq & 0xff) << 8) | this.runHi;
    m32[word + 7] = w[5];
    // The checksum's last two bytes (0: no payload checksum); the pattern starts at byte 34.
    m8[4 * word + 32] = 0;
    m8[4 * word + 33] = 0;
  }
}

/** A broadcast frame that makes a bridge learn our address (not a test frame: receivers count it as such). */
export function writeAnnounceFrame(m: Uint8Array, off: number, src: Uint8Array): number {
  m.fill(0, off, off + 60);
  m.fill(0xff, off, off + 6);
  m.set(src, off + 6);
  m[off + 12] = 0x88;
  m[off + 13] = 0xb6;
  return 60;
}

export const enum Verdict {
  Ok,
  NotTest,
  BadLength,
  BadChecksum,
}

/** The magic as the word verifyHeader() assembles it (bytes 14..17 of the frame, little-endian). */
const MAGIC_LE = bswap32(TEST_MAGIC);

/** Check a received frame; on Ok, lastStream/lastSeq/lastRun hold its identity. */
export class FrameChecker {
  lastStream = 0;
  lastSeq = 0;
  lastRun = 0;

  /**
   * verify(m8, 4 × word, len, false) from six word loads: the header of a
   * frame that starts 4-byte aligned (every shared buffer's does). The
   * big-endian fields straddle words (they start at 2 mod 4), so each is
   * two half words, byte-swapped.
   */
  verifyHeader(m32: Uint32Array, word: number, len: number): Verdict {
    if (len < TEST_HEADER) return Verdict.NotTest;
    const w3 = m32[word + 3];
    const w4 = m32[word + 4];
    if (((w3 >>> 16) | (w4 << 16)) >>> 0 !== MAGIC_LE) return Verdict.NotTest;
    const w5 = m32[word + 5];
    const w6 = m32[word + 6];
    const w7 = m32[word + 7];
    const runLen = bswap32((w6 >>> 16) | (w7 << 16));
    if ((runLen & 0xffff) !== len) return Verdict.BadLength;
    this.lastRun = runLen >>> 16;
    this.lastStream = bswap32((w4 >>> 16) | (w5 << 16));
    this.lastSeq = bswap32((w5 >>> 16) | (w6 << 16));
    return Verdict.Ok;
  }

  verify(m: Uint8Array, off: number, len: number, checkPayload = true): Verdict {
    if (len < TEST_HEADER || u32be(m, off + 14) !== TEST_MAGIC) return Verdict.NotTest;
    const runLen = u32be(m, off + 26);
    if ((runLen & 0xffff) !== len) return Verdict.BadLength;
    const seq = u32be(m, off + 22);
    if (checkPayload && u32be(m, off + 30) !== 0 && checksum(m, off + TEST_HEADER, off + len, seq) !== u32be(m, off + 30)) {
      return Verdict.BadChecksum;
    }
    this.lastStream = u32be(m, off + 18);
    this.lastSeq = seq;
    this.lastRun = runLen >>> 16;
    return Verdict.Ok;
  }
}

/**
 * Per-stream sequence tracking: counts gaps (lost) and repeats or reorders
 * (dup). A stream is a (stream id, run id) pair: a generator run again with
 * the same stream id has a new run id, and starts a new stream. The stream
 * seen last is kept in fields, so a run of one stream (a benchmark) costs
 * no Map operation per packet, and its identity is two small integers, so
 * the per-packet check compares integers (a key of both, run × 2^32 +
 * stream, would be a double kept boxed in a field).
 */
export class SequenceTracker {
  private readonly next = new Map<number, number>();
  /** The current stream's id and run id; curRun -1 before the first frame. */
  private curStream = 0;
  private curRun = -1;
  private curNext = 0;
  lost = 0;
  dup = 0;

  /** The Map's key of a stream: run × 2^32 + stream (under 2^48: exact in a double). */
  private static key(stream: number, run: number): number {
    return run * 0x1_0000_0000 + stream;
  }

  /** How many different streams (stream id and run id) were seen. */
  get streams(): number {
    const cur = this.curRun >= 0 && !this.next.has(SequenceTracker.key(this.curStream, this.curRun)) ? 1 : 0;
    return this.next.size + cur;
  }

  see(stream: number, seq: number, run = 0): void {
    if (stream !== this.curStream || run !== this.curRun) this.switchTo(stream, run);
    const exp = this.curNext;
    if (seq === exp) this.curNext = exp + 1;
    else if (seq > exp) {
      this.lost += seq - exp;
      this.curNext = seq + 1;
    } else this.dup++;
  }

  /**
   * verifyHeader and see() for the frames in shared buffers tokens[from..n)
   * (each frame at word bufWords × token + 3 of m32, lens[i] bytes long) in
   * one loop over locals, the current stream's state included: a call or a
   * field store per packet would be most of a sink's work. Stops at the
   * first token < 0 (a private slot: the caller's general step) and returns
   * its index, or n. Each frame counts on verdicts[its Verdict].
   */
  seeHeaders(
    m32: Uint32Array, bufWords: number, tokens: Int32Array, lens: Uint32Array, from: number, n: number, verdicts: Float64Array,
  ): number {
    let stream = this.curStream;
    let run = this.curRun;
    let next = this.curNext;
    let lost = this.lost;
    let dup = this.dup;
    let passed = 0;
    let i = from;
    for (; i < n; i++) {
      const tok = tokens[i];
      if (tok < 0) break;
      const len = lens[i];
      // verifyHeader over locals (its comment says why half words).
      const word = bufWords * tok + 3;
      if (len < TEST_HEADER) {
        verdicts[Verdict.NotTest]++;
        continue;
      }
      const w3 = m32[word + 3];
      const w4 = m32[word + 4];
      if (((w3 >>> 16) | (w4 << 16)) >>> 0 !== MAGIC_LE) {
        verdicts[Verdict.NotTest]++;
        continue;
      }
      const w5 = m32[word + 5];
      const w6 = m32[word + 6];
      const runLen = bswap32((w6 >>> 16) | (m32[word + 7] << 16));
      if ((runLen & 0xffff) !== len) {
        verdicts[Verdict.BadLength]++;
        continue;
      }
      passed++;
      const s = bswap32((w4 >>> 16) | (w5 << 16));
      const seq = bswap32((w5 >>> 16) | (w6 << 16));
      const r = runLen >>> 16;
      if (s !== stream || r !== run) {
        this.curNext = next;
        this.switchTo(s, r);
        stream = s;
        run = r;
        next = this.curNext;
      }
      // see() over locals.
      if (seq === next) next++;
      else if (seq > next) {
        lost += seq - next;
        next = seq + 1;
      } else dup++;
    }
    this.curNext = next;
    this.lost = lost;
    this.dup = dup;
    verdicts[Verdict.Ok] += passed;
    return i;
  }

  /** Another stream than the last frame's: keep where the current one stands, pick up where the new one stood. */
  private switchTo(stream: number, run: number): void {
    if (this.curRun >= 0) this.next.set(SequenceTracker.key(this.curStream, this.curRun), this.curNext);
    this.curStream = stream;
    this.curRun = run;
    this.curNext = this.next.get(SequenceTracker.key(stream, run)) ?? 0;
  }
}
