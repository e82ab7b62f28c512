/**
 * Checksum and segmentation offloads (src/datapath/segment.ts, checksum.ts):
 * packets built by hand, checked against an independent checksum routine
 * written here; header validation (each drop reason); and the pair
 * forwarder carrying a TSO frame unchanged to a receiver that negotiated
 * GUEST_TSO4, cutting it for one that did not, and dropping a lying header
 * while the next frame still goes through.
 */
import t from 'tap';
import { ResolvedChain } from '../../src/datapath/copy';
import { Drop } from '../../src/datapath/counters';
import { BridgeForwarder } from '../../src/datapath/bridge-forwarder';
import { PairForwarder } from '../../src/datapath/pair-forwarder';
import { Offloads, RX_CSUM, RX_ECN, RX_TSO4, RX_TSO6, rxOffloadsOf } from '../../src/datapath/segment';
import { foldChecksum, sumBytes, sumBytesWide } from '../../src/datapath/checksum';
import {
  VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_SIZE, bit,
} from '../../src/virtio/defs';
import { BROADCAST, Rig, mac } from '../helpers/datapath-rig';

const HDR = VIRTIO_NET_HDR_SIZE;

/** The reference: RFC 1071 the slow, obvious way (a Buffer, 16-bit reads, fold at the end). */
function refChecksum(bytes: Uint8Array): number {
  const b = Buffer.from(bytes.length % 2 ? [...bytes, 0] : bytes);
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += b.readUInt16BE(i);
  while (s > 0xffff) s = (s >>> 16) + (s & 0xffff);
  return ~s & 0xffff;
}

/** The TCP/UDP checksum of an L4 segment over its pseudo-header, computed from scratch (the field taken as 0). */
function refL4Checksum(src: Uint8Array, dst: Uint8Array, proto: number, l4: Uint8Array, checkAt: number): number {
  const seg = Uint8Array.from(l4);
  seg[checkAt] = seg[checkAt + 1] = 0;
  const len = seg.length;
  const pseudo = src.length === 4
    ? [...src, ...dst, 0, proto, len >> 8, len & 0xff]
    : [...src, ...dst, (len >>> 24) & 0xff, (len >>> 16) & 0xff, len >> 8, len & 0xff, 0, 0, 0, proto];
  return refChecksum(Uint8Array.from([...pseudo, ...seg]));
}

interface Built {
  pkt: Uint8Array;
  payload: Uint8Array;
}

/** virtio_net_hdr (little-endian fields) + Ethernet + IPv4 or IPv6 + TCP + payload, as a TSO sender hands it over. */
function tcpPacket(o: { v6?: boolean; payload: number; mss: number; flags?: number; gsoType?: number; seq?: number; ipId?: number; hdrLen?: number }): Built {
  const v6 = o.v6 ?? false;
  const ipLen = v6 ? 40 : 20;
  const l4 = 14 + ipLen;
  const frameLen = l4 + 20 + o.payload;
  const pkt = new Uint8Array(HDR + frameLen);
  const dv = new DataView(pkt.buffer);
  pkt[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  pkt[1] = o.gsoType ?? (v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4);
  dv.setUint16(2, o.hdrLen ?? l4 + 20, true);
  dv.setUint16(4, o.mss, true);
  dv.setUint16(6, l4, true);
  dv.setUint16(8, 16, true);
  const f = HDR;
  pkt.set(mac(2), f);
  pkt.set(mac(1), f + 6);
  dv.setUint16(f + 12, v6 ? 0x86dd : 0x0800);
  const ip = f + 14;
  if (v6) {
    pkt[ip] = 0x60;
    dv.setUint16(ip + 4, 20 + o.payload);
    pkt[ip + 6] = 6;
    pkt[ip + 7] = 64;
    for (let i = 0; i < 16; i++) pkt[ip + 8 + i] = 0x20 + i;
    for (let i = 0; i < 16; i++) pkt[ip + 24 + i] = 0x40 + i;
  } else {
    pkt[ip] = 0x45;
    dv.setUint16(ip + 2, 20 + 20 + o.payload);
    dv.setUint16(ip + 4, o.ipId ?? 0xfffe);
    dv.setUint16(ip + 6, 0x4000); // DF
    pkt[ip + 8] = 64;
    pkt[ip + 9] = 6;
    pkt.set([10, 0, 0, 1, 10, 0, 0, 2], ip + 12);
  }
  const tcp = f + l4;
  dv.setUint16(tcp, 40000);
  dv.setUint16(tcp + 2, 5201);
  dv.setUint32(tcp + 4, o.seq ?? 0xfffff000);
  dv.setUint32(tcp + 8, 12345);
  pkt[tcp + 12] = 5 << 4;
  pkt[tcp + 13] = o.flags ?? 0x10;
  dv.setUint16(tcp + 14, 65535);
  const payload = pkt.subarray(tcp + 20);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 8)) & 0xff;
  return { pkt, payload: Uint8Array.from(payload) };
}

/** A resolved chain over pkt cut into pieces of the given sizes (the header may straddle them). */
function chainOf(pkt: Uint8Array, cuts: number[]): ResolvedChain {
  const r = new ResolvedChain();
  let at = 0;
  const sizes = [...cuts, pkt.length - cuts.reduce((a, b) => a + b, 0)];
  sizes.forEach((n, i) => {
    r.mem[i] = pkt;
    r.off[i] = at;
    r.len[i] = n;
    at += n;
  });
  r.count = sizes.length;
  r.total = pkt.length;
  return r;
}

/** Every frame next() writes, copied out. */
function drain(off: Offloads): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let n = off.next(); n > 0; n = off.next()) out.push(off.out.mem[0].slice(off.out.off[0], off.out.off[0] + n));
  return out;
}

t.test('sumBytes + foldChecksum agree with the reference on odd lengths, odd starts and long runs', async (t) => {
  const data = new Uint8Array(70000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 17) & 0xff;
  for (const [from, to] of [[0, 1], [0, 20], [1, 21], [3, 1500], [0, 70000], [5, 65541]]) {
    t.equal(foldChecksum(sumBytes(data, from, to, 0)), refChecksum(data.subarray(from, to)), `[${from}, ${to})`);
  }
  const data32 = new Uint32Array(data.buffer, 0, data.length >>> 2);
  for (const [from, to] of [[0, 1], [1, 2], [1, 3], [2, 7], [3, 1500], [0, 69999], [5, 65541], [6, 70000], [7, 8]]) {
    t.equal(foldChecksum(sumBytesWide(data, data32, from, to, 0)), refChecksum(data.subarray(from, to)), `wide: [${from}, ${to})`);
  }
  // A sum continued across two ranges, the second starting mid-word.
  const whole = refChecksum(data.subarray(0, 301));
  t.equal(foldChecksum(sumBytes(data, 101, 301, sumBytes(data, 0, 101, 0), true)), whole, 'continued at an odd offset');
});

t.test('rxOffloadsOf: TSO only with GUEST_CSUM', async (t) => {
  t.equal(rxOffloadsOf(0n), 0);
  t.equal(rxOffloadsOf(bit(VIRTIO_NET_F_GUEST_TSO4)), 0, 'TSO without GUEST_CSUM is not taken');
  t.equal(rxOffloadsOf(bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4)), RX_CSUM | RX_TSO4);
});

t.test('IPv4 TSO cut into MSS frames: lengths, IDs, sequence numbers, flags, checksums, payload', async (t) => {
  const mss = 1000;
  // Sequence and IP ID both wrap inside the segment.
  const { pkt, payload } = tcpPacket({ payload: 3500, mss, flags: 0x80 | 0x10 | 0x08 | 0x01, seq: 0xfffffc18, ipId: 0xfffe });
  const off = new Offloads();
  t.equal(off.inspect(chainOf(pkt, [5, 40, 1000]), pkt.length), -1, 'a valid header');
  t.equal(off.needs, RX_CSUM | RX_TSO4);
  t.notOk(off.fits(RX_CSUM, 1500), 'a receiver with GUEST_CSUM only cannot take it');
  t.ok(off.fits(RX_CSUM | RX_TSO4, 1500), 'one with GUEST_TSO4 can');
  off.begin(chainOf(pkt, [7, 2000]), pkt.length);
  const frames = drain(off);
  t.equal(frames.length, 4, '3500 bytes at MSS 1000: 4 frames');
  const got: number[] = [];
  frames.forEach((fr, i) => {
    const dv = new DataView(fr.buffer, fr.byteOffset);
    const n = i < 3 ? 1000 : 500;
    t.equal(fr.length, HDR + 54 + n, `frame ${i}: length`);
    t.same([...fr.subarray(0, HDR)], new Array(HDR).fill(0), `frame ${i}: a plain virtio_net_hdr`);
    const ip = fr.subarray(HDR + 14, HDR + 34);
    t.equal(dv.getUint16(HDR + 14 + 2), 40 + n, `frame ${i}: IPv4 total length`);
    t.equal(dv.getUint16(HDR + 14 + 4), (0xfffe + i) & 0xffff, `frame ${i}: IPv4 ID`);
    t.equal(refChecksum(ip), 0, `frame ${i}: IPv4 header checksum verifies`);
    t.equal(dv.getUint32(HDR + 34 + 4), (0xfffffc18 + i * 1000) >>> 0, `frame ${i}: sequence number`);
    const flags = fr[HDR + 34 + 13];
    t.equal(flags & 0x10, 0x10, `frame ${i}: ACK kept`);
    t.equal((flags & 0x80) !== 0, i === 0, `frame ${i}: CWR on the first only`);
    t.equal((flags & 0x09) !== 0, i === 3, `frame ${i}: FIN and PSH on the last only`);
    t.equal((flags & 0x09), i === 3 ? 0x09 : 0, `frame ${i}: both FIN and PSH on the last`);
    const l4 = fr.subarray(HDR + 34);
    t.equal(dv.getUint16(HDR + 34 + 16), refL4Checksum(ip.subarray(12, 16), ip.subarray(16, 20), 6, l4, 16), `frame ${i}: TCP checksum`);
    got.push(...fr.subarray(HDR + 54));
  });
  t.same(Uint8Array.from(got), payload, 'the payload, in order, intact');
});

t.test('IPv6 TSO cut into MSS frames: payload length and TCP checksum over the IPv6 pseudo-header', async (t) => {
  const { pkt, payload } = tcpPacket({ v6: true, payload: 2900, mss: 1440 });
  const off = new Offloads();
  t.equal(off.inspect(chainOf(pkt, []), pkt.length), -1);
  t.equal(off.needs, RX_CSUM | RX_TSO6);
  off.begin(chainOf(pkt, []), pkt.length);
  const frames = drain(off);
  t.equal(frames.length, 3);
  const got: number[] = [];
  frames.forEach((fr, i) => {
    const dv = new DataView(fr.buffer, fr.byteOffset);
    const n = [1440, 1440, 20][i];
    t.equal(dv.getUint16(HDR + 14 + 4), 20 + n, `frame ${i}: payload length`);
    const ip = fr.subarray(HDR + 14, HDR + 54);
    t.equal(dv.getUint16(HDR + 54 + 16), refL4Checksum(ip.subarray(8, 24), ip.subarray(24, 40), 6, fr.subarray(HDR + 54), 16), `frame ${i}: TCP checksum`);
    got.push(...fr.subarray(HDR + 74));
  });
  t.same(Uint8Array.from(got), payload);
});

t.test('ECN: a TSO frame with the ECN bit needs GUEST_ECN too', async (t) => {
  const { pkt } = tcpPacket({ payload: 2000, mss: 1000, gsoType: VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN });
  const off = new Offloads();
  t.equal(off.inspect(chainOf(pkt, []), pkt.length), -1);
  t.notOk(off.fits(RX_CSUM | RX_TSO4, 1500));
  t.ok(off.fits(RX_CSUM | RX_TSO4 | RX_ECN, 1500));
});

t.test('NEEDS_CSUM alone: the switch completes a UDP checksum seeded with the pseudo-header', async (t) => {
  const len = 8 + 333;
  const pkt = new Uint8Array(HDR + 14 + 20 + len);
  const dv = new DataView(pkt.buffer);
  pkt[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  dv.setUint16(6, 34, true);
  dv.setUint16(8, 6, true);
  dv.setUint16(HDR + 12, 0x0800);
  const ip = HDR + 14;
  pkt[ip] = 0x45;
  dv.setUint16(ip + 2, 20 + len);
  pkt[ip + 8] = 64;
  pkt[ip + 9] = 17;
  pkt.set([192, 168, 1, 1, 192, 168, 1, 200], ip + 12);
  const udp = ip + 20;
  dv.setUint16(udp, 1234);
  dv.setUint16(udp + 2, 5678);
  dv.setUint16(udp + 4, len);
  for (let i = 8; i < len; i++) pkt[udp + i] = (i * 13) & 0xff;
  // What a Linux sender leaves in the field: the folded pseudo-header sum, not complemented.
  const seed = ~foldChecksum(192 * 256 + 168 + 1 * 256 + 1 + 192 * 256 + 168 + 1 * 256 + 200 + 17 + len) & 0xffff;
  dv.setUint16(udp + 6, seed);
  const off = new Offloads();
  t.equal(off.inspect(chainOf(pkt, [3]), pkt.length), -1);
  t.equal(off.needs, RX_CSUM);
  t.ok(off.fits(RX_CSUM, 1500));
  off.begin(chainOf(pkt, [3]), pkt.length);
  const frames = drain(off);
  t.equal(frames.length, 1, 'one frame');
  const fr = frames[0];
  t.equal(fr[0], 0, 'NEEDS_CSUM cleared');
  const want = refL4Checksum(pkt.subarray(ip + 12, ip + 16), pkt.subarray(ip + 16, ip + 20), 17, pkt.subarray(udp), 6);
  t.equal(new DataView(fr.buffer, fr.byteOffset).getUint16(HDR + 34 + 6), want, 'the UDP checksum');
  t.same(fr.subarray(HDR + 34 + 8), pkt.subarray(udp + 8), 'the payload unchanged');
});

t.test('lying headers are refused with their own reason', async (t) => {
  const off = new Offloads();
  const check = (name: string, edit: (p: Uint8Array, dv: DataView) => void, want: Drop): void => {
    const { pkt } = tcpPacket({ payload: 3000, mss: 1000 });
    edit(pkt, new DataView(pkt.buffer));
    t.equal(off.inspect(chainOf(pkt, []), pkt.length), want, name);
    // The same verdict from the headers gathered out of a chain, and read in place from a whole buffer (a shared one's path).
    t.equal(off.inspect(chainOf(pkt, [5, 40]), pkt.length), want, `${name} (chained)`);
    t.equal(off.inspectAt(pkt, 0, pkt.length), want, `${name} (in place)`);
  };
  check('csum_start past the frame', (_p, dv) => dv.setUint16(6, 60000, true), Drop.BadCsumOffset);
  check('csum_offset past the frame', (_p, dv) => dv.setUint16(8, 3100, true), Drop.BadCsumOffset);
  check('gso_size 0', (_p, dv) => dv.setUint16(4, 0, true), Drop.BadGsoSize);
  check('gso_type UDP (UFO, not offered)', (p) => (p[1] = VIRTIO_NET_HDR_GSO_UDP), Drop.BadGsoType);
  check('gso_type unknown', (p) => (p[1] = 9), Drop.BadGsoType);
  check('hdr_len past the frame', (_p, dv) => dv.setUint16(2, 40000, true), Drop.BadHdrLen);
  check('TSO without NEEDS_CSUM', (p) => (p[0] = 0), Drop.BadGsoFrame);
  check('TCPV4 on an IPv6 frame', (p) => (p[1] = VIRTIO_NET_HDR_GSO_TCPV6), Drop.BadGsoFrame);
  check('not TCP', (p) => (p[HDR + 14 + 9] = 17), Drop.BadGsoFrame);
  check('an IPv4 fragment', (p) => (p[HDR + 14 + 6] = 0x20), Drop.BadGsoFrame);
  check('csum_start not at the TCP header', (_p, dv) => dv.setUint16(6, 30, true), Drop.BadGsoFrame);
  const short = tcpPacket({ payload: 0, mss: 1000 }).pkt.subarray(0, HDR + 40);
  t.equal(off.inspect(chainOf(short, []), short.length), Drop.BadCsumOffset, 'a frame too short for the checksum it asks for');
  const longTcp = tcpPacket({ payload: 0, mss: 1000 }).pkt;
  longTcp[HDR + 34 + 12] = 0xf0;
  t.equal(off.inspect(chainOf(longTcp, []), longTcp.length), Drop.BadGsoFrame, 'a TCP data offset past the frame');
});

t.test('pair forwarder: TSO frame carried unchanged to GUEST_TSO4, cut for a plain receiver, a lie dropped', async (t) => {
  const rig = new Rig({ bufCount: 64 });
  t.teardown(() => rig.close());
  const a = rig.addVm({ partition: [0, 32], zeroCopy: false, slotSize: 8192, privSlots: 8 });
  const tso = rig.addVm({ partition: [32, 32], zeroCopy: false, slotSize: 8192, privSlots: 8,
    features: bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) });
  const plain = rig.addVm({ zeroCopy: false, slotSize: 2048, privSlots: 8 });
  const fw = new PairForwarder(32);
  const send = (k: number, pkt: Uint8Array): void => {
    const o = a.mem.slotOffset(k);
    a.mem.mem.set(pkt, o);
    // Two descriptors: the header and the first bytes, then the rest.
    a.sendChain([{ addr: a.mem.gpa(o), len: 40 }, { addr: a.mem.gpa(o + 40), len: pkt.length - 40 }]);
  };
  const { pkt, payload } = tcpPacket({ payload: 3500, mss: 1000, flags: 0x18 });

  tso.postCopyTarget(0);
  tso.port.ingestRx();
  send(0, pkt);
  t.equal(fw.forward(a.port, 0, tso.port), 1);
  const rx = tso.flushAndReap().rx;
  t.equal(rx.length, 1, 'one frame');
  t.equal(rx[0].len, pkt.length, 'the whole 64 KiB-style segment, not cut');
  const got = tso.slotBytes(0, 0, pkt.length);
  t.same(got.subarray(0, 10), pkt.subarray(0, 10), 'flags, gso_type, hdr_len, gso_size, csum_start, csum_offset unchanged');
  t.same(got.subarray(HDR), pkt.subarray(HDR), 'the frame unchanged');
  t.equal(a.port.counters.gsoFrames, 1, 'counted as a GSO frame at the sender');
  t.equal(tso.port.counters.segmented, 0);

  for (let k = 0; k < 8; k++) plain.postCopyTarget(k);
  plain.port.ingestRx();
  send(1, pkt);
  t.equal(fw.forward(a.port, 0, plain.port), 1);
  const rx2 = plain.flushAndReap().rx;
  t.equal(rx2.length, 4, 'cut into 4 frames');
  t.equal(plain.port.counters.segmented, 4, 'segmented count matches');
  const joined: number[] = [];
  rx2.forEach((u, i) => {
    const fr = plain.slotBytes(i, 0, u.len);
    t.equal(fr[0], 0, `frame ${i}: no NEEDS_CSUM`);
    const l4 = fr.subarray(HDR + 34);
    t.equal(new DataView(fr.buffer).getUint16(HDR + 34 + 16), refL4Checksum(fr.subarray(HDR + 26, HDR + 30), fr.subarray(HDR + 30, HDR + 34), 6, l4, 16), `frame ${i}: TCP checksum`);
    joined.push(...fr.subarray(HDR + 54));
  });
  t.same(Uint8Array.from(joined), payload, 'the stream arrives intact');

  // A lie, then a good frame: the lie is counted, the good one still goes through.
  const bad = Uint8Array.from(pkt);
  new DataView(bad.buffer).setUint16(4, 0, true);
  tso.postCopyTarget(1);
  tso.port.ingestRx();
  send(2, bad);
  send(3, pkt);
  t.equal(fw.forward(a.port, 0, tso.port), 2);
  t.equal(a.port.counters.drops[Drop.BadGsoSize], 1, 'gso_size 0 counted');
  t.equal(tso.flushAndReap().rx.length, 1, 'the next frame delivered');
});

t.test('MTU: a frame over the receiver\'s MTU is dropped as over-mtu unless it can be cut to fit', async (t) => {
  const rig = new Rig({ bufCount: 64 });
  t.teardown(() => rig.close());
  const a = rig.addVm({ partition: [0, 32], zeroCopy: false, slotSize: 16384, privSlots: 8 });
  const b = rig.addVm({ partition: [32, 32], zeroCopy: false, slotSize: 16384, privSlots: 8 });
  const fw = new PairForwarder(32);
  const send = (k: number, pkt: Uint8Array): void => {
    const o = a.mem.slotOffset(k);
    a.mem.mem.set(pkt, o);
    a.sendChain([{ addr: a.mem.gpa(o), len: pkt.length }]);
  };
  const plain = (frameLen: number): Uint8Array => {
    const p = new Uint8Array(HDR + frameLen);
    p.set(mac(2), HDR);
    p.set(mac(1), HDR + 6);
    return p;
  };
  for (let k = 0; k < 8; k++) b.postCopyTarget(k);
  b.port.ingestRx();
  t.equal(b.port.mtu, 1500, 'the default MTU');
  send(0, plain(1518));
  send(1, plain(1519));
  // A TSO frame whose MSS is larger than the receiver's MTU cannot be cut to fit it.
  send(2, tcpPacket({ payload: 16000, mss: 8000 }).pkt);
  t.equal(fw.forward(a.port, 0, b.port), 3);
  t.equal(b.flushAndReap().rx.length, 1, 'only the frame within MTU + 18 arrived');
  t.equal(a.port.counters.drops[Drop.OverMtu], 2, 'the others counted as over-mtu');
  b.port.mtu = 9000;
  send(3, plain(9018));
  send(4, tcpPacket({ payload: 16000, mss: 8000 }).pkt);
  t.equal(fw.forward(a.port, 0, b.port), 2);
  t.equal(b.flushAndReap().rx.length, 3, 'with MTU 9000: the jumbo frame and both 8000-byte segments');
  t.equal(b.port.counters.segmented, 2);
  t.equal(a.port.counters.drops[Drop.OverMtu], 2, 'no new over-mtu drop');
});

t.test('bridge: a TSO frame swaps whole to a GUEST_TSO4 VM, is copied whole to another, and cut for a plain one', async (t) => {
  const rig = new Rig({ bufCount: 48, bufSize: 8192, swap: true });
  t.teardown(() => rig.close());
  const tsoFeatures = bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4);
  const a = rig.addVm({ partition: [0, 16], features: tsoFeatures });
  const b = rig.addVm({ partition: [16, 16], features: tsoFeatures });
  const c = rig.addVm({ zeroCopy: false, slotSize: 2048, privSlots: 8 });
  for (const [vm, first] of [[a, 0], [b, 16]] as const) {
    for (let k = 0; k < 4; k++) vm.postShared(first + k);
    vm.port.ingestRx();
  }
  for (let k = 0; k < 8; k++) c.postCopyTarget(k);
  c.port.ingestRx();
  const fw = new BridgeForwarder(32, [a.port, b.port, c.port], 64, 300_000);
  const sendTso = (b0: number, dst: number[]): Uint8Array => {
    const { pkt } = tcpPacket({ payload: 3500, mss: 1000 });
    pkt.set(dst, HDR);
    const off = a.shared.offsetOf(b0);
    a.region.set(pkt, off);
    a.sendChain([{ addr: a.shared.addrOf(b0), len: pkt.length }]);
    return pkt;
  };

  // Flood: b (all but the last target) gets a copy, header intact; c (last, classic) gets the segments.
  const flooded = sendTso(8, BROADCAST);
  t.equal(fw.forward(a.port, 0, 1), 1);
  const rb = b.flushAndReap().rx;
  t.equal(rb.length, 1, 'b: one frame');
  t.same(b.bufBytes(16, 0, flooded.length).subarray(0, 10), flooded.subarray(0, 10), 'b: offload fields unchanged');
  t.equal(c.flushAndReap().rx.length, 4, 'c: 4 segments');
  t.equal(c.port.counters.segmented, 4);

  // b announces itself; then a's TSO frame to b moves by a swap, header intact.
  b.sendShared(20, Uint8Array.from([...BROADCAST, ...mac(2), 0x08, 0x00, ...new Array(50).fill(0)]));
  fw.forward(b.port, 0, 2);
  a.flushAndReap();
  c.flushAndReap();
  const before = a.port.counters.zeroCopy;
  const sent = sendTso(9, mac(2));
  t.equal(fw.forward(a.port, 0, 3), 1);
  const rb2 = b.flushAndReap().rx;
  t.equal(rb2.length, 1);
  t.equal(a.port.counters.zeroCopy, before + 1, 'moved by a swap');
  t.equal(rig.ledger.owner[9], b.id, 'b owns the buffer now');
  t.same(b.bufBytes(9, 0, sent.length), sent, 'the whole packet, header included, as sent');
  t.equal(rig.ledgerProblems(), '', 'ledger conserved');
});

t.test('segments for a receiver with GUEST_CSUM only leave the TCP checksum open, and completing it gives the right one', async (t) => {
  const { pkt, payload } = tcpPacket({ payload: 2500, mss: 1000 });
  const off = new Offloads();
  t.equal(off.inspect(chainOf(pkt, []), pkt.length), -1);
  off.begin(chainOf(pkt, []), pkt.length, RX_CSUM);
  const frames = drain(off);
  t.equal(frames.length, 3);
  const done = new Offloads();
  const got: number[] = [];
  frames.forEach((fr, i) => {
    const dv = new DataView(fr.buffer, fr.byteOffset);
    t.equal(fr[0], VIRTIO_NET_HDR_F_NEEDS_CSUM, `frame ${i}: NEEDS_CSUM`);
    t.equal(fr[1], 0, `frame ${i}: no gso_type`);
    t.same([dv.getUint16(6, true), dv.getUint16(8, true)], [34, 16], `frame ${i}: csum_start / csum_offset at the TCP checksum`);
    t.equal(done.inspect(chainOf(fr, []), fr.length), -1, `frame ${i}: a valid header`);
    done.begin(chainOf(fr, []), fr.length);
    const [c] = drain(done);
    const ip = c.subarray(HDR + 14, HDR + 34);
    t.equal(new DataView(c.buffer, c.byteOffset).getUint16(HDR + 34 + 16), refL4Checksum(ip.subarray(12, 16), ip.subarray(16, 20), 6, c.subarray(HDR + 34), 16),
      `frame ${i}: the completed TCP checksum`);
    t.equal(refChecksum(ip), 0, `frame ${i}: IPv4 header checksum (always complete)`);
    got.push(...fr.subarray(HDR + 54));
  });
  t.same(Uint8Array.from(got), payload);
});
