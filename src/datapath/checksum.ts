/**
 * The Internet checksum (RFC 1071) over bytes of mapped or scratch memory:
 * a running 32-bit sum of big-endian 16-bit words, folded at the end. Used
 * by the software offload fallback (segment.ts) to complete checksums the
 * sender left to the device. No allocation.
 */

/**
 * Add bytes [from, to) of mem to sum as big-endian 16-bit words; `odd`
 * says the range starts in the middle of a word (its first byte is a low
 * byte). Returns the new sum (kept below 2^31 by folding as it goes).
 */
export function sumBytes(mem: Uint8Array, from: number, to: number, sum: number, odd = false): number {
  let i = from;
  if (odd && i < to) sum += mem[i++];
  const pairsEnd = to - ((to - i) & 1);
  for (; i < pairsEnd; i += 2) {
    sum += (mem[i] << 8) | mem[i + 1];
    // 16 bits per add: fold well before 2^31 so the sum stays a small integer.
    if (sum > 0x7fff0000) sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (i < to) sum += mem[i] << 8;
  return sum;
}

/**
 * sumBytes 32 bits at a time, for a range of mem where mem32 views the same
 * memory from byte 0 (the fallback's scratch buffers). The words are added
 * as little-endian 16-bit lanes by address, which is the range's
 * big-endian pairing byte-swapped when it starts at an even address (and
 * exactly it at an odd one): the ones' complement sum does not care about
 * byte order (RFC 1071 §2(B)), so one swap at the end puts it right.
 */
export function sumBytesWide(mem: Uint8Array, mem32: Uint32Array, from: number, to: number, sum: number): number {
  let s = 0;
  let i = from;
  for (; i < to && (i & 3) !== 0; i++) s += i & 1 ? mem[i] << 8 : mem[i];
  const end4 = to & ~3;
  for (let w = i >>> 2, we = end4 >>> 2; w < we; w++) {
    const x = mem32[w];
    s += (x & 0xffff) + (x >>> 16);
  }
  if (end4 > i) i = end4;
  for (; i < to; i++) s += i & 1 ? mem[i] << 8 : mem[i];
  // At most 2^15 words of 2^17 each: well within a double's exact integers.
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  return sum + ((from & 1) === 0 ? ((s & 0xff) << 8) | (s >>> 8) : s);
}

/** Fold a running sum to 16 bits and complement it: the value stored in a checksum field. */
export function foldChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The IPv4 pseudo-header's sum (RFC 793): addresses at mem[ip+12..ip+20), protocol, L4 length. */
export function pseudoSumV4(mem: Uint8Array, ip: number, proto: number, l4Len: number): number {
  return sumBytes(mem, ip + 12, ip + 20, 0) + proto + l4Len;
}

/** The IPv6 pseudo-header's sum (RFC 8200 §8.1): addresses at mem[ip+8..ip+40), next header, L4 length. */
export function pseudoSumV6(mem: Uint8Array, ip: number, proto: number, l4Len: number): number {
  return sumBytes(mem, ip + 8, ip + 40, 0) + proto + (l4Len >>> 16) + (l4Len & 0xffff);
}
