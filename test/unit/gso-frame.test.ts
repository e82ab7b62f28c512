/**
 * The --gso test frame's writers (src/guest/gso-frame.ts): the word-wise
 * header writer against the byte-wise one and a frame spelled out here,
 * leaving the test header after it alone; the sink's check by the headers
 * alone (--no-verify); the word-wise header check
 * agreeing with the byte-wise one; and the driver's three-word offload
 * header (src/virtio/net-hdr.ts) read back field by field.
 */
import t from 'tap';
import { GSO_HEADERS, GSO_OFFLOAD, GsoFrameChecker, GsoHeaderWriter, gsoHeaderIntact, gsoHeaderIntactWords } from '../../src/guest/gso-frame';
import { Verdict } from '../../src/guest/test-packet';
import { writeNetHdrOffloadWords } from '../../src/virtio/net-hdr';

const MACS = Uint8Array.of(2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1);

const STREAM = 0x01020304;
const RUN = 0xbeef;

t.test('the word-wise writer lays out Ethernet, IPv4 and TCP, and stops at byte 54', async (t) => {
  const w = new GsoHeaderWriter(MACS, STREAM, RUN);
  const mem = new Uint8Array(256);
  const m32 = new Uint32Array(mem.buffer);
  const off = 12;
  mem.fill(0xaa);
  const seq = 0x12345678;
  w.write(m32, mem, off, 65535, seq);
  const f = mem.subarray(off);
  const dv = new DataView(mem.buffer, off);
  t.same(f.subarray(0, 12), MACS, 'destination then source MAC');
  t.equal(dv.getUint16(12), 0x0800, 'IPv4 ethertype');
  t.equal(f[14], 0x45, 'IPv4, IHL 5');
  t.equal(dv.getUint16(16), 65535 - 14, 'IPv4 total length');
  t.equal(dv.getUint16(18), RUN, 'IPv4 id: the run id');
  t.equal(dv.getUint16(20), 0x4000, 'DF');
  t.equal(f[22], 64, 'TTL');
  t.equal(f[23], 6, 'TCP');
  t.same([...f.subarray(26, 34)], [10, 0, 0, 1, 10, 0, 0, 2], 'addresses');
  t.equal(dv.getUint16(34), 40000, 'source port');
  t.equal(dv.getUint16(36), 5201, 'destination port');
  t.equal(dv.getUint32(38), seq, 'TCP sequence');
  t.equal(dv.getUint32(42), STREAM, 'ack: the stream id');
  t.equal(f[46] >> 4, 5, 'data offset 5');
  t.equal(f[47], 0x18, 'ACK|PSH');
  t.equal(dv.getUint16(48), 0xffff, 'window');
  t.equal(dv.getUint32(50), 0, 'checksum and urgent pointer 0');
  t.equal(f[GSO_HEADERS], 0xaa, 'the byte after the headers untouched');
  t.equal(mem[off - 1], 0xaa, 'the byte before untouched');

  // An unaligned frame goes byte by byte, to the same bytes.
  const odd = new Uint8Array(256).fill(0xaa);
  w.write(new Uint32Array(odd.buffer), odd, off + 1, 65535, seq);
  t.same(odd.subarray(off + 1, off + 1 + GSO_HEADERS + 1), f.subarray(0, GSO_HEADERS + 1), 'unaligned: the same bytes');
  t.equal(odd[off], 0xaa, 'unaligned: the byte before untouched');

  // Each frame gets its own length, id and sequence (nothing left over from the last).
  w.write(m32, mem, off, 1000, 0xff);
  t.equal(dv.getUint16(16), 1000 - 14, 'the next frame\'s length');
  t.equal(dv.getUint16(18), RUN, 'the same id');
  t.equal(dv.getUint32(38), 0xff, 'its sequence');
  t.equal(dv.getUint32(42), STREAM, 'the same ack');

  // The urgent pointer is written only when it is not 0 already, and then it is.
  mem[off + 52] = 7;
  mem[off + 53] = 9;
  w.write(m32, mem, off, 1000, 1);
  t.equal(dv.getUint16(52), 0, 'a stale urgent pointer is cleared');
});

t.test('the driver\'s offload header and the sink\'s word-wise check agree with the byte-wise one', async (t) => {
  const mem = new Uint8Array(64);
  const m32 = new Uint32Array(mem.buffer);
  writeNetHdrOffloadWords(m32, 1, 0, 1, GSO_OFFLOAD);
  const dv = new DataView(mem.buffer, 4);
  t.equal(mem[4], GSO_OFFLOAD.flags, 'flags');
  t.equal(mem[5], GSO_OFFLOAD.gsoType, 'gso_type');
  t.equal(dv.getUint16(2, true), GSO_OFFLOAD.hdrLen, 'hdr_len');
  t.equal(dv.getUint16(4, true), GSO_OFFLOAD.gsoSize, 'gso_size');
  t.equal(dv.getUint16(6, true), GSO_OFFLOAD.csumStart, 'csum_start');
  t.equal(dv.getUint16(8, true), GSO_OFFLOAD.csumOffset, 'csum_offset');
  t.equal(dv.getUint16(10, true), 1, 'num_buffers');
  t.ok(gsoHeaderIntact(mem, 4) && gsoHeaderIntactWords(m32, 1), 'intact, both ways');
  dv.setUint16(10, 3, true);
  t.ok(gsoHeaderIntactWords(m32, 1), 'num_buffers is not compared');
  for (let i = 0; i < 10; i++) {
    mem[4 + i] ^= 0x40;
    t.notOk(gsoHeaderIntact(mem, 4) || gsoHeaderIntactWords(m32, 1), `byte ${i} changed: not intact, both ways`);
    mem[4 + i] ^= 0x40;
  }
});

t.test('the sink\'s header check (--gso --no-verify) reads back what the writer wrote, and refuses what is not one of ours', async (t) => {
  const w = new GsoHeaderWriter(MACS, STREAM, RUN);
  const mem = new Uint8Array(256);
  const m32 = new Uint32Array(mem.buffer);
  const off = 12;
  const c = new GsoFrameChecker();
  w.write(m32, mem, off, 65000, 0xdeadbeef);
  t.equal(c.verify(mem, off, 65000), Verdict.Ok, 'our frame');
  t.same([c.lastStream, c.lastSeq, c.lastRun], [STREAM, 0xdeadbeef, RUN], 'stream, sequence and run from the headers');
  t.equal(c.verify(mem, off, 64999), Verdict.BadLength, 'the IPv4 length must match what arrived');
  t.equal(c.verify(mem, off, 40), Verdict.NotTest, 'shorter than the headers');
  // Any of the identifying bytes changed: not a test frame.
  for (const i of [12, 13, 23, 34, 35, 36, 37]) {
    mem[off + i] ^= 1;
    t.equal(c.verify(mem, off, 65000), Verdict.NotTest, `byte ${i} changed: not ours`);
    mem[off + i] ^= 1;
  }
  // The checker reads the first 52 bytes of the frame only: the payload and the urgent pointer may be anything.
  mem.fill(0x55, off + 52, off + 200);
  t.equal(c.verify(mem, off, 65000), Verdict.Ok, 'bytes from 52 on are not read');
});
