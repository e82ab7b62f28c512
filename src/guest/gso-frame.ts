/**
 * `zcswitch vm --gso`: a test frame sent as a TCP segment for TSO. The
 * switch checks a TSO header against its frame (src/datapath/segment.ts),
 * so the frame is a real Ethernet / IPv4 / TCP one: the self-checking test
 * frame (test-packet.ts) starts GSO_SHIFT bytes in, and the Ethernet, IPv4
 * and TCP headers are written over its first 14 bytes (addresses and
 * ethertype, which verification never reads):
 *
 *   0 Ethernet (0x0800), 14 IPv4 (20 bytes), 34 TCP (20 bytes),
 *   54 = GSO_SHIFT + 14: the test header's magic, stream, sequence, ...
 *
 * The virtio_net_hdr says TCPV4 with gso_size GSO_MSS, the checksum left
 * open at the TCP header. A receiver that negotiated TSO gets the frame as
 * it is; gsoHeaderIntact() checks that the header arrived unchanged.
 */
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 } from '../virtio/defs';
import type { NetHdrOffload } from '../virtio/net-hdr';

/** Where the test frame starts in a --gso frame (a multiple of 4: the word-wise header writer and checker still line up). */
export const GSO_SHIFT = 40;
/** Ethernet + IPv4 + TCP. */
export const GSO_HEADERS = 54;
/** The MSS a --gso frame asks to be cut at. */
export const GSO_MSS = 1448;

export const GSO_OFFLOAD: Readonly<NetHdrOffload> = {
  flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: GSO_HEADERS, gsoSize: GSO_MSS, csumStart: 34, csumOffset: 16,
};

/** Write Ethernet (macs: destination then source), IPv4 and TCP headers for a frame of len bytes at m[off]. */
export function writeGsoHeaders(m: Uint8Array, off: number, len: number, seq: number, macs: Uint8Array): void {
  for (let i = 0; i < 12; i++) m[off + i] = macs[i];
  m[off + 12] = 0x08;
  m[off + 13] = 0x00;
  const ip = off + 14;
  const ipLen = len - 14;
  m[ip] = 0x45;
  m[ip + 1] = 0;
  m[ip + 2] = ipLen >>> 8;
  m[ip + 3] = ipLen & 0xff;
  m[ip + 4] = (seq >>> 8) & 0xff;
  m[ip + 5] = seq & 0xff;
  m[ip + 6] = 0x40; // DF
  m[ip + 7] = 0;
  m[ip + 8] = 64;
  m[ip + 9] = 6;
  m[ip + 10] = m[ip + 11] = 0;
  m.set(TEST_ADDRS, ip + 12);
  const tcp = ip + 20;
  m.set(TCP_TEMPLATE, tcp);
  m[tcp + 4] = seq >>> 24;
  m[tcp + 5] = (seq >>> 16) & 0xff;
  m[tcp + 6] = (seq >>> 8) & 0xff;
  m[tcp + 7] = seq & 0xff;
}

/** 10.0.0.1 -> 10.0.0.2. */
const TEST_ADDRS = Uint8Array.of(10, 0, 0, 1, 10, 0, 0, 2);
/** Ports 40000 -> 5201, ack 0, data offset 5, ACK|PSH, window 65535, checksum 0, urgent 0. */
const TCP_TEMPLATE = Uint8Array.of(0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0);

/** The virtio_net_hdr at m[hdr] carries GSO_OFFLOAD's fields unchanged (flags: NEEDS_CSUM set, nothing of ours). */
export function gsoHeaderIntact(m: Uint8Array, hdr: number): boolean {
  const o = GSO_OFFLOAD;
  return m[hdr] === o.flags && m[hdr + 1] === o.gsoType && u16le(m, hdr + 2) === o.hdrLen && u16le(m, hdr + 4) === o.gsoSize &&
    u16le(m, hdr + 6) === o.csumStart && u16le(m, hdr + 8) === o.csumOffset;
}

const u16le = (m: Uint8Array, o: number): number => m[o] | (m[o + 1] << 8);
