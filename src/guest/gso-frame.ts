/**
 * `zcswitch vm --gso`: a test frame sent as a TCP segment for TSO. The
 * switch checks a TSO header against its frame (src/datapath/segment.ts),
 * so the frame is a real Ethernet / IPv4 / TCP one:
 *
 *   0 Ethernet (0x0800), 14 IPv4 (20 bytes: the id is the run id),
 *   34 TCP (20 bytes: ports 40000 -> 5201, the sequence number is the
 *   frame's, the ack number is the stream id), 54 payload.
 *
 * The frame names itself in those headers, all of them but the TCP urgent
 * pointer within the buffer's first cache line (12 bytes of virtio_net_hdr
 * + 52): with --no-verify the generator writes only the headers and the
 * sink checks only them (GsoFrameChecker), so a 64 KiB segment costs both
 * the one line a 64-byte test frame costs. With payload verification the
 * self-checking test frame (test-packet.ts) starts GSO_SHIFT bytes in, and
 * the headers are written over its first 14 bytes (addresses and
 * ethertype, which verification never reads).
 *
 * The virtio_net_hdr says TCPV4 with gso_size GSO_MSS, the checksum left
 * open at the TCP header. A receiver that negotiated TSO gets the frame as
 * it is; gsoHeaderIntact() checks that the header arrived unchanged.
 */
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 } from '../virtio/defs';
import type { NetHdrOffload } from '../virtio/net-hdr';
import { u16be, u16le, u32be } from '../virtio/bytes';
import { Verdict } from './test-packet';

/** Where the test frame starts in a --gso frame (a multiple of 4: the word-wise header writer and checker still line up). */
export const GSO_SHIFT = 40;
/** Ethernet + IPv4 + TCP. */
export const GSO_HEADERS = 54;
/** The MSS a --gso frame asks to be cut at. */
export const GSO_MSS = 1448;

export const GSO_OFFLOAD: Readonly<NetHdrOffload> = {
  flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: GSO_HEADERS, gsoSize: GSO_MSS, csumStart: 34, csumOffset: 16,
};

/**
 * Writes the Ethernet (macs: destination then source), IPv4 and TCP headers
 * of a --gso frame: a template per generator (addresses, ports, run id,
 * stream id) copied as 13 words, with the IPv4 length and the TCP sequence
 * patched in, and the urgent pointer (bytes 52..53, the only ones on the
 * buffer's second cache line) written only when it is not 0 already. A
 * frame on a 4-byte boundary (a shared buffer's is) is written word by
 * word; any other byte by byte.
 */
export class GsoHeaderWriter {
  /** The 54 header bytes as 14 little-endian words (the last one's top half unused). */
  private readonly tpl = new Uint32Array(14);
  private readonly bytes = new Uint8Array(this.tpl.buffer);

  constructor(macs: Uint8Array, stream: number, run: number) {
    const b = this.bytes;
    b.set(macs.subarray(0, 12), 0);
    b[12] = 0x08;
    b[13] = 0x00;
    b.set(IPV4_TEMPLATE, 14);
    b[18] = (run >>> 8) & 0xff;
    b[19] = run & 0xff;
    b.set(TCP_TEMPLATE, 34);
    b[42] = stream >>> 24;
    b[43] = (stream >>> 16) & 0xff;
    b[44] = (stream >>> 8) & 0xff;
    b[45] = stream & 0xff;
  }

  /**
   * Write the headers for a frame of len bytes, sequence seq, at m[off]
   * (m32: a word view of m's buffer from byte 0, as SharedRegion's mem32 is).
   * Word by word, unrolled: a loop over the template, or a look at
   * m.byteOffset, cost the generator a quarter of its time per packet
   * (docs/PERFORMANCE.md, "TSO frames against 64-byte frames").
   */
  write(m32: Uint32Array, m: Uint8Array, off: number, len: number, seq: number): void {
    if ((off & 3) !== 0) return this.writeBytes(m, off, len, seq);
    const t = this.tpl;
    const w = off >>> 2;
    const ipLen = len - 14;
    m32[w] = t[0];
    m32[w + 1] = t[1];
    m32[w + 2] = t[2];
    m32[w + 3] = t[3];
    // Bytes 16..19: IPv4 total length (big-endian), then the id (the template's).
    m32[w + 4] = (ipLen >>> 8) | ((ipLen & 0xff) << 8) | (t[4] & 0xffff0000);
    m32[w + 5] = t[5];
    m32[w + 6] = t[6];
    m32[w + 7] = t[7];
    m32[w + 8] = t[8];
    // Bytes 36..39: TCP destination port, then the sequence's top half; 40..43: its low half, then the ack's top half.
    m32[w + 9] = (t[9] & 0xffff) | (((seq >>> 24) & 0xff) << 16) | (((seq >>> 16) & 0xff) << 24);
    m32[w + 10] = ((seq >>> 8) & 0xff) | ((seq & 0xff) << 8) | (t[10] & 0xffff0000);
    m32[w + 11] = t[11];
    m32[w + 12] = t[12];
    // Bytes 52..53: TCP urgent pointer 0. Looked at first: a store would take the line from whoever read it last.
    if (m[off + 52] !== 0) m[off + 52] = 0;
    if (m[off + 53] !== 0) m[off + 53] = 0;
  }

  private writeBytes(m: Uint8Array, off: number, len: number, seq: number): void {
    m.set(this.bytes.subarray(0, GSO_HEADERS), off);
    const ipLen = len - 14;
    m[off + 16] = ipLen >>> 8;
    m[off + 17] = ipLen & 0xff;
    m[off + 38] = seq >>> 24;
    m[off + 39] = (seq >>> 16) & 0xff;
    m[off + 40] = (seq >>> 8) & 0xff;
    m[off + 41] = seq & 0xff;
  }
}

/**
 * The sink's check of a --gso frame by its headers alone (with
 * --no-verify): IPv4 / TCP from port 40000 to 5201 is a test frame; its IPv4
 * length must match what arrived; the run, sequence and stream come from
 * the IPv4 id, the TCP sequence and the ack number. Reads only the frame's
 * first 52 bytes.
 */
export class GsoFrameChecker {
  lastStream = 0;
  lastSeq = 0;
  lastRun = 0;

  verify(m: Uint8Array, off: number, len: number): Verdict {
    if (len < GSO_HEADERS || m[off + 12] !== 0x08 || m[off + 13] !== 0x00 || m[off + 23] !== 6 ||
      u16be(m, off + 34) !== TCP_SOURCE_PORT || u16be(m, off + 36) !== TCP_DEST_PORT) return Verdict.NotTest;
    if (u16be(m, off + 16) !== len - 14) return Verdict.BadLength;
    this.lastRun = u16be(m, off + 18);
    this.lastSeq = u32be(m, off + 38);
    this.lastStream = u32be(m, off + 42);
    return Verdict.Ok;
  }
}

const TCP_SOURCE_PORT = 40000;
const TCP_DEST_PORT = 5201;

/** Version 4, IHL 5, length patched per frame, id (the run id) 0 here, DF, TTL 64, TCP, checksum 0, 10.0.0.1 -> 10.0.0.2. */
const IPV4_TEMPLATE = Uint8Array.of(0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2);
/** Ports 40000 -> 5201, ack (the stream id) 0 here, data offset 5, ACK|PSH, window 65535, checksum 0, urgent 0. */
const TCP_TEMPLATE = Uint8Array.of(0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0);

/** The virtio_net_hdr at m[hdr] carries GSO_OFFLOAD's fields unchanged (flags: NEEDS_CSUM set, nothing of ours). */
export function gsoHeaderIntact(m: Uint8Array, hdr: number): boolean {
  const o = GSO_OFFLOAD;
  return m[hdr] === o.flags && m[hdr + 1] === o.gsoType && u16le(m, hdr + 2) === o.hdrLen && u16le(m, hdr + 4) === o.gsoSize &&
    u16le(m, hdr + 6) === o.csumStart && u16le(m, hdr + 8) === o.csumOffset;
}

/** gsoHeaderIntact for a header on a word boundary, word: its index in m32 (num_buffers, the top half of the third word, not compared). */
export function gsoHeaderIntactWords(m32: Uint32Array, word: number): boolean {
  return m32[word] === GSO_HDR_WORD0 && m32[word + 1] === GSO_HDR_WORD1 && (m32[word + 2] & 0xffff) === GSO_OFFLOAD.csumOffset;
}

const GSO_HDR_WORD0 = (GSO_OFFLOAD.flags | (GSO_OFFLOAD.gsoType << 8) | (GSO_OFFLOAD.hdrLen << 16)) >>> 0;
const GSO_HDR_WORD1 = (GSO_OFFLOAD.gsoSize | (GSO_OFFLOAD.csumStart << 16)) >>> 0;

