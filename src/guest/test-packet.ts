/**
 * The self-checking test frame that `zcswitch vm` generates and verifies:
 *
 *   0  dst MAC, 6  src MAC (last byte = stream id), 12 ethertype 0x88b5
 *   14 magic "ZCSW", 18 stream id, 22 sequence number, 26 frame length,
 *   30 checksum of the pattern bytes [34, len) folded with the sequence,
 *   34 pattern: byte i = (seq + i) & 0xff
 *
 * Every field the receiver can get wrong (truncation, corruption, a stale
 * buffer, a duplicate) shows up in verify().
 */
export const TEST_ETHERTYPE = 0x88b5;
export const TEST_MAGIC = 0x5a435357;
export const TEST_HEADER = 34;
export const MIN_TEST_FRAME = TEST_HEADER;

function put32(m: Uint8Array, o: number, v: number): void {
  m[o] = v >>> 24;
  m[o + 1] = (v >>> 16) & 0xff;
  m[o + 2] = (v >>> 8) & 0xff;
  m[o + 3] = v & 0xff;
}

function get32(m: Uint8Array, o: number): number {
  return ((m[o] << 24) | (m[o + 1] << 16) | (m[o + 2] << 8) | m[o + 3]) >>> 0;
}

/** Pattern checksum: FNV-1a style over the pattern, seeded with seq. */
function checksum(m: Uint8Array, from: number, to: number, seq: number): number {
  let h = (0x811c9dc5 ^ seq) >>> 0;
  for (let i = from; i < to; i++) h = Math.imul(h ^ m[i], 0x01000193);
  return h >>> 0;
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
 * (benchmarks).
 */
export function writeTestFrame(m: Uint8Array, off: number, len: number, stream: number, seq: number, fill = true, macs = defaultMacs(stream)): void {
  for (let i = 0; i < 12; i++) m[off + i] = macs[i];
  m[off + 12] = TEST_ETHERTYPE >>> 8;
  m[off + 13] = TEST_ETHERTYPE & 0xff;
  put32(m, off + 14, TEST_MAGIC);
  put32(m, off + 18, stream);
  put32(m, off + 22, seq);
  put32(m, off + 26, len);
  if (fill) {
    for (let i = TEST_HEADER; i < len; i++) m[off + i] = (seq + i) & 0xff;
    put32(m, off + 30, checksum(m, off + TEST_HEADER, off + len, seq));
  } else {
    put32(m, off + 30, 0);
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

/** Check a received frame; on Ok, lastStream/lastSeq hold its identity. */
export class FrameChecker {
  lastStream = 0;
  lastSeq = 0;

  verify(m: Uint8Array, off: number, len: number, checkPayload = true): Verdict {
    if (len < TEST_HEADER || get32(m, off + 14) !== TEST_MAGIC) return Verdict.NotTest;
    if (get32(m, off + 26) !== len) return Verdict.BadLength;
    const seq = get32(m, off + 22);
    if (checkPayload && get32(m, off + 30) !== 0 && checksum(m, off + TEST_HEADER, off + len, seq) !== get32(m, off + 30)) {
      return Verdict.BadChecksum;
    }
    this.lastStream = get32(m, off + 18);
    this.lastSeq = seq;
    return Verdict.Ok;
  }
}

/** Per-stream sequence tracking: counts gaps (lost) and repeats or reorders (dup). */
export class SequenceTracker {
  private readonly next = new Map<number, number>();
  lost = 0;
  dup = 0;

  see(stream: number, seq: number): void {
    const exp = this.next.get(stream) ?? 0;
    if (seq === exp) this.next.set(stream, exp + 1);
    else if (seq > exp) {
      this.lost += seq - exp;
      this.next.set(stream, seq + 1);
    } else this.dup++;
  }
}
