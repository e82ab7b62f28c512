/**
 * virtio_net_hdr helpers (virtio 1.x, 12 bytes):
 *   flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start u16,
 *   csum_offset u16, num_buffers u16
 * Operate on a byte view at an offset so callers can use the mapped memory
 * they already have.
 */
import { NET_HDR_FLAGS, NET_HDR_NUM_BUFFERS, VIRTIO_NET_HDR_SIZE } from './defs';

/** Write a plain header (no offloads) with the given flags and num_buffers. */
export function writeNetHdr(mem: Uint8Array, off: number, flags: number, numBuffers: number): void {
  mem.fill(0, off, off + VIRTIO_NET_HDR_SIZE);
  mem[off + NET_HDR_FLAGS] = flags;
  mem[off + NET_HDR_NUM_BUFFERS] = numBuffers & 0xff;
  mem[off + NET_HDR_NUM_BUFFERS + 1] = numBuffers >>> 8;
}

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
