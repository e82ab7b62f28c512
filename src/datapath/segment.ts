/**
 * Checksum and segmentation offloads between ports (docs/qemu.md,
 * "Offloads"). A sender that negotiated CSUM / HOST_TSO4 / HOST_TSO6 /
 * HOST_ECN may hand the switch a frame whose checksum is left open
 * (VIRTIO_NET_HDR_F_NEEDS_CSUM) or a TCP segment of up to 64 KiB with
 * gso_size, the MSS to cut it at. The switch:
 *
 * - checks the header against the frame (inspect): csum_start/offset inside
 *   the frame, a known gso_type, a gso_size > 0, an hdr_len not past the
 *   frame, and for TSO an Ethernet / IPv4 or IPv6 / TCP frame whose TCP
 *   header is where csum_start says. A lie is a counted drop; no field is
 *   ever used to address memory before it passed;
 * - carries the header unchanged to a receiver that negotiated what the
 *   frame needs (fits: GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN), zero-copy or
 *   copied;
 * - otherwise does the work itself (begin / next): cuts the segment into
 *   gso_size frames (IPv4 ID + i, lengths, TCP sequence numbers, FIN/PSH on
 *   the last frame only, CWR on the first only, IPv4 header and TCP
 *   checksums; a receiver with GUEST_CSUM gets the TCP checksum left open)
 *   or completes the one open checksum, each frame in a scratch buffer the
 *   caller copies into the receiver's buffers.
 *
 * UFO (gso_type UDP) is not offered: Linux stopped generating it in 4.14,
 * and a guest kernel that asks for USO is newer than the image's 6.1. Such
 * frames are refused as an unknown gso_type.
 *
 * One instance per forwarder; nothing here allocates per packet.
 */
import {
  ETH_HDR_MAX, NET_HDR_CSUM_OFFSET, NET_HDR_CSUM_START, NET_HDR_FLAGS, NET_HDR_GSO_SIZE, NET_HDR_GSO_TYPE, NET_HDR_HDR_LEN,
  VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_SIZE, hasBit,
} from '../virtio/defs';
import { foldChecksum, pseudoSumV4, pseudoSumV6, sumBytes, sumBytesWide } from './checksum';
import { putU16be, putU16le, u16le, u32be } from '../virtio/bytes';
import { ResolvedChain } from './copy';
import { Drop } from './counters';
import { MAX_PACKET } from './tx-class';

/** What a receiver takes as it is (a port's offloadCaps; what a frame needs). */
export const RX_CSUM = 1;
export const RX_TSO4 = 2;
export const RX_TSO6 = 4;
export const RX_ECN = 8;

/** A vhost-user front-end's receive offloads from its acked features (TSO needs GUEST_CSUM: virtio 1.2 §5.1.3.1). */
export function rxOffloadsOf(acked: bigint): number {
  if (!hasBit(acked, VIRTIO_NET_F_GUEST_CSUM)) return 0;
  let caps = RX_CSUM;
  if (hasBit(acked, VIRTIO_NET_F_GUEST_TSO4)) caps |= RX_TSO4;
  if (hasBit(acked, VIRTIO_NET_F_GUEST_TSO6)) caps |= RX_TSO6;
  if (hasBit(acked, VIRTIO_NET_F_GUEST_ECN)) caps |= RX_ECN;
  return caps;
}

/**
 * What a sender may ask of a receiver in its virtio_net_hdr (RX_* bits),
 * from the sender's acked features: an open checksum with CSUM, TSO with
 * HOST_TSO4/6, ECN with HOST_ECN. Virtio forbids a driver every other
 * flag and GSO type (virtio 1.2 §5.1.6.2: without CSUM, flags must be 0).
 */
export function txOffloadsOf(acked: bigint): number {
  let asks = 0;
  if (hasBit(acked, VIRTIO_NET_F_CSUM)) asks |= RX_CSUM;
  if (hasBit(acked, VIRTIO_NET_F_HOST_TSO4)) asks |= RX_TSO4;
  if (hasBit(acked, VIRTIO_NET_F_HOST_TSO6)) asks |= RX_TSO6;
  if (hasBit(acked, VIRTIO_NET_F_HOST_ECN)) asks |= RX_ECN;
  return asks;
}

/**
 * A zero-copy frame from a sender that may ask (txOffloadsOf) to a
 * receiver that takes (rxOffloadsOf) goes with its header unread when the
 * receiver takes everything the sender may ask (docs/protocol.md, "The
 * header of a zero-copy frame"): whatever an honest sender's header says,
 * the receiver takes it as it is, so the switch has nothing to act on, and
 * reading it would pull the line the sender just wrote to the switch's core.
 */
export function headerUnread(asks: number, takes: number): boolean {
  return (asks & ~takes) === 0;
}

const ETH_P_IPV4 = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_VLAN = 0x8100;
const IPPROTO_TCP = 6;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;
/** Offset of the checksum field in a TCP header (what csum_offset must say for TSO). */
const TCP_CHECK = 16;
/** Offset of the checksum field in a UDP header: a computed 0 is sent as 0xffff (RFC 768). */
const UDP_CHECK = 6;
/** Header bytes looked at to check a TSO frame: Ethernet + VLAN tag + IPv4 with options + TCP with options. */
const HEAD_BYTES = VIRTIO_NET_HDR_SIZE + 18 + 60 + 60;

export class Offloads {
  /** What the last inspected frame needs of a receiver (RX_* bits; 0 for a plain frame). */
  needs = 0;
  /** The TSO frame's layout (frame offsets, after the virtio_net_hdr), set by inspect. */
  private l3 = 0;
  private l4 = 0;
  private l4End = 0;
  private v6 = false;
  private gsoSize = 0;
  private csumStart = 0;
  private csumOffset = 0;
  /** The packet (header + frame) gathered for the fallback, its frame length, and the next payload byte to send. */
  private readonly pkt = new Uint8Array(MAX_PACKET);
  private readonly pkt32 = new Uint32Array(this.pkt.buffer, 0, this.pkt.length >>> 2);
  private frameLen = 0;
  private pos = 0;
  private seq = 0;
  private ipId = 0;
  private index = 0;
  /** The segments leave their TCP checksum open (the receiver negotiated GUEST_CSUM). */
  private openCsum = false;
  private readonly head = new Uint8Array(HEAD_BYTES);
  private readonly outBuf = new Uint8Array(MAX_PACKET);
  private readonly out32 = new Uint32Array(this.outBuf.buffer, 0, this.outBuf.length >>> 2);
  /** The frame next() wrote: one segment over a scratch buffer, ready for the copy path. */
  readonly out = new ResolvedChain();

  constructor() {
    this.out.mem[0] = this.outBuf;
    this.out.off[0] = 0;
    this.out.count = 1;
  }

  /**
   * Check the virtio_net_hdr of the packet in res (header + frame, total
   * bytes) against its frame. Returns -1 when it may be forwarded (needs
   * says what it asks of a receiver), else the Drop reason.
   */
  inspect(res: ResolvedChain, total: number): number {
    const m0 = res.mem[0];
    const o0 = res.off[0];
    // Parse in place when the first descriptor holds the headers (a shared buffer always does), else a gathered copy.
    if (res.len[0] >= Math.min(total, HEAD_BYTES)) return this.inspectAt(m0, o0, total);
    let flags: number;
    let gsoType: number;
    if (res.len[0] >= 2) {
      flags = m0[o0 + NET_HDR_FLAGS];
      gsoType = m0[o0 + NET_HDR_GSO_TYPE];
    } else {
      gather(res, this.head, 2);
      flags = this.head[NET_HDR_FLAGS];
      gsoType = this.head[NET_HDR_GSO_TYPE];
    }
    this.needs = 0;
    this.frameLen = total - VIRTIO_NET_HDR_SIZE;
    if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0 && gsoType === VIRTIO_NET_HDR_GSO_NONE) return -1;
    const got = gather(res, this.head, Math.min(total, HEAD_BYTES));
    return this.check(this.head, 0, got, total, flags, gsoType);
  }

  /** inspect for a packet of total bytes held whole at m[off] (a shared buffer: no chain to set up). */
  inspectAt(m: Uint8Array, off: number, total: number): number {
    const flags = m[off + NET_HDR_FLAGS];
    const gsoType = m[off + NET_HDR_GSO_TYPE];
    this.needs = 0;
    this.frameLen = total - VIRTIO_NET_HDR_SIZE;
    if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0 && gsoType === VIRTIO_NET_HDR_GSO_NONE) return -1;
    return this.check(m, off, Math.min(total, HEAD_BYTES), total, flags, gsoType);
  }

  /** The checks of inspect, over the packet's first got bytes at h[hb] (got < total only when total > HEAD_BYTES). */
  private check(h: Uint8Array, hb: number, got: number, total: number, flags: number, gsoType: number): number {
    if (got < VIRTIO_NET_HDR_SIZE) return Drop.TooShort;
    const frameLen = total - VIRTIO_NET_HDR_SIZE;
    const csumStart = u16le(h, hb + NET_HDR_CSUM_START);
    const csumOffset = u16le(h, hb + NET_HDR_CSUM_OFFSET);
    if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      if (csumStart < 14 || csumStart + csumOffset + 2 > frameLen) return Drop.BadCsumOffset;
      this.needs = RX_CSUM;
    }
    this.csumStart = csumStart;
    this.csumOffset = csumOffset;
    if (gsoType === VIRTIO_NET_HDR_GSO_NONE) return -1;
    const kind = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    if (kind !== VIRTIO_NET_HDR_GSO_TCPV4 && kind !== VIRTIO_NET_HDR_GSO_TCPV6) return Drop.BadGsoType;
    const gsoSize = u16le(h, hb + NET_HDR_GSO_SIZE);
    if (gsoSize === 0) return Drop.BadGsoSize;
    if (u16le(h, hb + NET_HDR_HDR_LEN) > frameLen) return Drop.BadHdrLen;
    // TSO: the checksum is always left open, at the TCP header we find ourselves.
    if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) return Drop.BadGsoFrame;
    // Every byte read below is within the first `avail` bytes of the frame.
    const f = hb + VIRTIO_NET_HDR_SIZE;
    const avail = got - VIRTIO_NET_HDR_SIZE;
    if (avail < 18) return Drop.BadGsoFrame;
    let l3 = 14;
    let type = (h[f + 12] << 8) | h[f + 13];
    if (type === ETH_P_VLAN) {
      l3 = 18;
      type = (h[f + 16] << 8) | h[f + 17];
    }
    let l4: number;
    if (kind === VIRTIO_NET_HDR_GSO_TCPV4) {
      if (type !== ETH_P_IPV4 || l3 + 20 > avail || h[f + l3] >> 4 !== 4) return Drop.BadGsoFrame;
      const ihl = (h[f + l3] & 15) * 4;
      // A fragment (MF or an offset) cannot be cut into TCP segments.
      if (ihl < 20 || h[f + l3 + 9] !== IPPROTO_TCP || (((h[f + l3 + 6] << 8) | h[f + l3 + 7]) & 0x3fff) !== 0) return Drop.BadGsoFrame;
      l4 = l3 + ihl;
      this.v6 = false;
    } else {
      // No extension headers: the TCP header follows the fixed one.
      if (type !== ETH_P_IPV6 || l3 + 40 > avail || h[f + l3] >> 4 !== 6 || h[f + l3 + 6] !== IPPROTO_TCP) return Drop.BadGsoFrame;
      l4 = l3 + 40;
      this.v6 = true;
    }
    if (l4 + 20 > avail) return Drop.BadGsoFrame;
    const l4End = l4 + (h[f + l4 + 12] >> 4) * 4;
    if (l4End < l4 + 20 || l4End > avail || csumStart !== l4 || csumOffset !== TCP_CHECK) return Drop.BadGsoFrame;
    this.l3 = l3;
    this.l4 = l4;
    this.l4End = l4End;
    this.gsoSize = gsoSize;
    this.needs |= (this.v6 ? RX_TSO6 : RX_TSO4) | (gsoType & VIRTIO_NET_HDR_GSO_ECN ? RX_ECN : 0);
    return -1;
  }

  /**
   * The receiver (its offloadCaps and MTU) takes the last inspected frame as
   * it is: it negotiated what the frame needs, and the frame fits its MTU
   * (a GSO frame is the receiver's to cut).
   */
  fits(caps: number, mtu: number): boolean {
    return (this.needs & ~caps) === 0 && (this.frameLen <= mtu + ETH_HDR_MAX || this.gso);
  }

  /** The fallback's frames fit a receiver with this MTU (else the frame cannot be delivered to it: over-mtu). */
  cutsToFit(mtu: number): boolean {
    return (this.gso ? this.l4End + this.gsoSize : this.frameLen) <= mtu + ETH_HDR_MAX;
  }

  /** The last inspected frame is a TSO segment (the fallback cuts it; else it only completes the checksum). */
  get gso(): boolean {
    return (this.needs & (RX_TSO4 | RX_TSO6)) !== 0;
  }

  /**
   * Start the fallback for the last inspected frame (in res, total bytes):
   * next() then writes its frames. caps: the receiver's offloadCaps; one
   * that takes open checksums (GUEST_CSUM) gets its segments with the TCP
   * checksum left open (NEEDS_CSUM, the pseudo-header's sum in the field,
   * as a TSO sender hands it over), which spares the switch a pass over
   * every payload byte.
   */
  begin(res: ResolvedChain, total: number, caps = 0): void {
    gather(res, this.pkt, total);
    this.index = 0;
    this.openCsum = (caps & RX_CSUM) !== 0;
    if (!this.gso) {
      this.pos = -1;
      return;
    }
    const p = this.pkt;
    const f = VIRTIO_NET_HDR_SIZE;
    this.pos = this.l4End;
    this.seq = u32be(p, f + this.l4 + 4);
    this.ipId = this.v6 ? 0 : (p[f + this.l3 + 4] << 8) | p[f + this.l3 + 5];
  }

  /** Write the next frame (header + frame) into out; its total bytes, or 0 when there is none left. */
  next(): number {
    if (this.pos === -1) {
      this.pos = -2;
      return this.completeChecksum();
    }
    // A segment with no payload still goes out once (a bare ACK someone flagged for TSO).
    if (this.pos < 0 || (this.index > 0 && this.pos >= this.frameLen)) return 0;
    const p = this.pkt;
    const o = this.outBuf;
    const f = VIRTIO_NET_HDR_SIZE;
    const { l3, l4, l4End } = this;
    const n = Math.min(this.gsoSize, this.frameLen - this.pos);
    const last = this.pos + n >= this.frameLen;
    const first = this.index === 0;
    o.fill(0, 0, f);
    o.set(p.subarray(f, f + l4End), f);
    o.set(p.subarray(f + this.pos, f + this.pos + n), f + l4End);
    const tcpLen = l4End - l4 + n;
    if (this.v6) {
      putU16be(o, f + l3 + 4, tcpLen);
    } else {
      putU16be(o, f + l3 + 2, l4 - l3 + tcpLen);
      putU16be(o, f + l3 + 4, (this.ipId + this.index) & 0xffff);
      putU16be(o, f + l3 + 10, 0);
      putU16be(o, f + l3 + 10, foldChecksum(sumBytes(o, f + l3, f + l4, 0)));
    }
    const seq = (this.seq + this.pos - l4End) >>> 0;
    o[f + l4 + 4] = seq >>> 24;
    o[f + l4 + 5] = (seq >>> 16) & 0xff;
    o[f + l4 + 6] = (seq >>> 8) & 0xff;
    o[f + l4 + 7] = seq & 0xff;
    let tcpFlags = o[f + l4 + 13];
    if (!last) tcpFlags &= ~(TCP_FIN | TCP_PSH);
    if (!first) tcpFlags &= ~TCP_CWR;
    o[f + l4 + 13] = tcpFlags;
    putU16be(o, f + l4 + TCP_CHECK, 0);
    const pseudo = this.v6 ? pseudoSumV6(o, f + l3, IPPROTO_TCP, tcpLen) : pseudoSumV4(o, f + l3, IPPROTO_TCP, tcpLen);
    if (this.openCsum) {
      // The field holds the folded pseudo-header sum, not complemented; the receiver sums from csum_start over it.
      putU16be(o, f + l4 + TCP_CHECK, ~foldChecksum(pseudo) & 0xffff);
      o[NET_HDR_FLAGS] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      putU16le(o, NET_HDR_CSUM_START, l4);
      putU16le(o, NET_HDR_CSUM_OFFSET, TCP_CHECK);
    } else {
      putU16be(o, f + l4 + TCP_CHECK, foldChecksum(sumBytesWide(o, this.out32, f + l4, f + l4End + n, pseudo)));
    }
    this.pos += n;
    this.index++;
    return this.emit(o, f + l4End + n);
  }

  /**
   * The one frame of a NEEDS_CSUM packet: the checksum field holds the
   * pseudo-header's sum (the sender's part); summing from csum_start to the
   * end over it and storing the complement completes it.
   */
  private completeChecksum(): number {
    const total = this.frameLen + VIRTIO_NET_HDR_SIZE;
    // In place: the gathered packet is ours.
    const o = this.pkt;
    o.fill(0, 0, VIRTIO_NET_HDR_SIZE);
    const f = VIRTIO_NET_HDR_SIZE;
    const at = f + this.csumStart + this.csumOffset;
    let c = foldChecksum(sumBytesWide(o, this.pkt32, f + this.csumStart, total, 0));
    if (c === 0 && this.csumOffset === UDP_CHECK) c = 0xffff;
    putU16be(o, at, c);
    return this.emit(o, total);
  }

  private emit(mem: Uint8Array, total: number): number {
    this.out.mem[0] = mem;
    this.out.len[0] = total;
    this.out.total = total;
    return total;
  }
}

/** Copy the first n bytes of a resolved chain's stream into dst; the count copied (less when the chain is shorter). */
function gather(res: ResolvedChain, dst: Uint8Array, n: number): number {
  let w = 0;
  for (let i = 0; i < res.count && w < n; i++) {
    const k = Math.min(res.len[i], n - w);
    dst.set(res.mem[i].subarray(res.off[i], res.off[i] + k), w);
    w += k;
  }
  return w;
}
