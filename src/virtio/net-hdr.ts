/**
 * virtio_net_hdr helpers (virtio 1.x, 12 bytes):
 *   flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start u16,
 *   csum_offset u16, num_buffers u16
 * Operate on a byte view at an offset so callers can use the mapped memory
 * they already have.
 */
import { NET_HDR_FLAGS, NET_HDR_NUM_BUFFERS, VIRTIO_NET_HDR_SIZE } from './defs';

/** The offload fields of a virtio_net_hdr (a TSO segment or a frame with its checksum left open). */
export interface NetHdrOffload {
  /** Or'ed into the header's flags (VIRTIO_NET_HDR_F_NEEDS_CSUM). */
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

/** writeNetHdrWords with the offload fields: the three words at once (a header on a word boundary). */
export function writeNetHdrOffloadWords(mem32: Uint32Array, word: number, flags: number, numBuffers: number, o: NetHdrOffload): void {
  mem32[word] = (flags | o.flags) | (o.gsoType << 8) | (o.hdrLen << 16);
  mem32[word + 1] = o.gsoSize | (o.csumStart << 16);
  mem32[word + 2] = o.csumOffset | ((numBuffers & 0xffff) << 16);
}

/** Write a plain header (no offloads) with the given flags and num_buffers. */
export function writeNetHdr(mem: Uint8Array, off: number, flags: number, numBuffers: number): void {
  mem.fill(0, off, off + VIRTIO_NET_HDR_SIZE);
  mem[off + NET_HDR_FLAGS] = flags;
  mem[off + NET_HDR_NUM_BUFFERS] = numBuffers & 0xff;
  mem[off + NET_HDR_NUM_BUFFERS + 1] = numBuffers >>> 8;
}

/**
 * The same header as three 32-bit words of a word view of buffer memory
 * (`word` = byte offset / 4; buffers are 64-byte aligned). virtio 1.x fields
 * are little-endian, so on a little-endian host (every one Node runs
 * zcswitch on; checked below) word 0 is flags, word 2 num_buffers << 16.
 * Each word is stored only when it differs: a frame sent again as it
 * arrived (an echo, a forwarding VM) or a buffer whose header already says
 * "plain frame" leaves the header's cache line clean, so the switch that
 * reads it next finds it in its own cache (docs/performance-log.md,
 * "Descriptor words from our own copy, and headers written only when they
 * change").
 */
export function writeNetHdrWords(mem32: Uint32Array, word: number, flags: number, numBuffers: number): void {
  const w2 = ((numBuffers & 0xffff) << 16) >>> 0;
  if (mem32[word] !== flags) mem32[word] = flags;
  if (mem32[word + 1] !== 0) mem32[word + 1] = 0;
  if (mem32[word + 2] !== w2) mem32[word + 2] = w2;
}
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('zcswitch needs a little-endian host (virtio 1.x rings and headers are little-endian)');

export function netHdrFlags(mem: Uint8Array, off: number): number {
  return mem[off + NET_HDR_FLAGS];
}

export function setNetHdrFlags(mem: Uint8Array, off: number, flags: number): void {
  mem[off + NET_HDR_FLAGS] = flags;
}

export function setNumBuffers(mem: Uint8Array, off: number, n: number): void {
  mem[off + NET_HDR_NUM_BUFFERS] = n & 0xff;
  mem[off + NET_HDR_NUM_BUFFERS + 1] = n >>> 8;
}
