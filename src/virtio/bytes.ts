/**
 * Fields read from the bytes of a packet: the virtio_net_hdr is
 * little-endian (virtio 1.x), the Ethernet, IP and TCP headers behind it
 * big-endian. Written once for the switch's offload checks
 * (src/datapath/segment.ts) and the guest driver's test frames.
 */
export const u16le = (m: Uint8Array, o: number): number => m[o] | (m[o + 1] << 8);
export const u16be = (m: Uint8Array, o: number): number => (m[o] << 8) | m[o + 1];
export const u32be = (m: Uint8Array, o: number): number => ((m[o] << 24) | (m[o + 1] << 16) | (m[o + 2] << 8) | m[o + 3]) >>> 0;
/** Stores into a Uint8Array keep the low 8 bits of each value: no masks needed. */
export function putU16le(m: Uint8Array, o: number, v: number): void {
  m[o] = v;
  m[o + 1] = v >>> 8;
}
export function putU16be(m: Uint8Array, o: number, v: number): void {
  m[o] = v >>> 8;
  m[o + 1] = v;
}
export function putU32be(m: Uint8Array, o: number, v: number): void {
  m[o] = v >>> 24;
  m[o + 1] = v >>> 16;
  m[o + 2] = v >>> 8;
  m[o + 3] = v;
}

/** Byte-swap a 32-bit value: four bytes loaded as a little-endian word become the big-endian number they spell, and back. */
export function bswap32(x: number): number {
  return (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
}
