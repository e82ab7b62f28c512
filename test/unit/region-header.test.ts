/**
 * Unit tests for src/shm/region-header.ts: the layout has the sizes and
 * offsets docs/protocol.md gives, the writer and the validating reader agree,
 * the reader names the bad field of a scribbled header, and a real domain's
 * memfd carries the header at its end (power-of-two size, header rewritten
 * with a new generation).
 */
import t from 'tap';
import { fdSize, mmapShared, munmap } from '../../bindings';
import { SharingDomain } from '../../src/shm/domain';
import {
  REGION_HEADER_SIZE, REGION_MAX_PORTS, type RegionHeader, readRegionHeader, regionHeaderGeneration, regionHeaderStruct,
  regionPortStruct, regionSizeFor, writeRegionHeader,
} from '../../src/shm/region-header';

const port = (name: string, start: number, count: number, flags = 0) => ({
  name, mac: Uint8Array.of(2, 0, 0, 0, 0, start & 0xff), partitionStart: start, partitionCount: count, giftHigh: count, giftLow: count >> 1, flags,
});

function sample(regionSize: number): RegionHeader {
  return {
    regionSize, bufSize: 2048, bufCount: 64, buffersOffset: 0, generation: 7, domain: 'pair:a+b',
    ports: [port('a', 0, 32), port('b', 32, 32, 1)],
  };
}

t.test('layout: 128-byte fixed part, 64-byte entries, 1022 entries, offsets as documented', async (t) => {
  t.equal(regionHeaderStruct.size, 128);
  t.equal(regionPortStruct.size, 64);
  t.equal(REGION_MAX_PORTS, 1022);
  const off = Object.fromEntries(regionHeaderStruct.fields.map((f) => [f.name, f.offset]));
  t.match(off, { magic: 0, version: 8, headerSize: 12, regionSize: 16, bufSize: 24, bufCount: 28, buffersOffset: 32, portCount: 40, portEntrySize: 44, generation: 48, domain: 64 });
  const poff = Object.fromEntries(regionPortStruct.fields.map((f) => [f.name, f.offset]));
  t.match(poff, { name: 0, mac: 32, partitionStart: 40, partitionCount: 44, giftHigh: 48, giftLow: 52, flags: 56 });
});

t.test('regionSizeFor: the next power of two holding the buffers and the 64 KiB header', async (t) => {
  t.equal(regionSizeFor(64, 2048), 256 * 1024);
  t.equal(regionSizeFor(4096, 2048), 16 * 1024 * 1024);
  t.equal(regionSizeFor(1, 64), 128 * 1024);
  t.equal(regionSizeFor(1024, 64), 128 * 1024, '64 KiB of buffers + 64 KiB header fit exactly');
});

t.test('write then read: the same header; bytes at the documented places', async (t) => {
  const size = regionSizeFor(64, 2048);
  const mem = new Uint8Array(size).fill(0xee);
  writeRegionHeader(mem, sample(size));
  const h = readRegionHeader(mem);
  t.same(h, sample(size));
  const at = size - REGION_HEADER_SIZE;
  const b = Buffer.from(mem.buffer);
  t.equal(b.toString('latin1', at, at + 8), 'zcswitch');
  t.equal(b.readUInt32LE(at + 8), 1, 'version');
  t.equal(b.readUInt32LE(at + 12), 65536, 'headerSize');
  t.equal(b.readBigUInt64LE(at + 16), BigInt(size), 'regionSize');
  t.equal(b.readUInt32LE(at + 48), 7, 'generation');
  t.equal(regionHeaderGeneration(mem), 7);
  t.equal(b.toString('latin1', at + 64, at + 72), 'pair:a+b');
  t.equal(b[at + 72], 0, 'domain NUL padded');
  t.equal(b.readUInt32LE(at + 128 + 64 + 40), 32, 'ports[1].partitionStart');
  t.equal(b.readUInt32LE(at + 128 + 64 + 56), 1, 'ports[1].flags');
  t.ok(b.subarray(at + 128 + 128, size).every((x) => x === 0), 'after the last entry: zeros');
  t.ok(b.subarray(at + 52, at + 64).every((x) => x === 0), 'reserved words: zero');
  t.ok(mem.subarray(0, at).every((x) => x === 0xee), 'nothing written before the header');
});

t.test('the reader names the bad field of a scribbled header', async (t) => {
  const size = regionSizeFor(64, 2048);
  const at = size - REGION_HEADER_SIZE;
  const cases: [string, (b: Buffer) => void, RegExp][] = [
    ['magic', (b) => b.write('zcswitcX', at, 'latin1'), /magic/],
    ['version', (b) => b.writeUInt32LE(2, at + 8), /version is 2/],
    ['headerSize', (b) => b.writeUInt32LE(4096, at + 12), /headerSize/],
    ['regionSize', (b) => b.writeBigUInt64LE(BigInt(size * 2), at + 16), /regionSize/],
    ['bufSize', (b) => b.writeUInt32LE(1000, at + 24), /bufSize is 1000/],
    ['bufCount zero', (b) => b.writeUInt32LE(0, at + 28), /bufCount is 0/],
    ['bufCount into header', (b) => b.writeUInt32LE(1_000_000, at + 28), /bufCount .* runs into the header/],
    ['buffersOffset', (b) => b.writeBigUInt64LE(BigInt(at), at + 32), /bufCount .* runs into the header/],
    ['portCount', (b) => b.writeUInt32LE(5000, at + 40), /portCount is 5000/],
    ['portEntrySize', (b) => b.writeUInt32LE(32, at + 44), /portEntrySize/],
    ['partition', (b) => b.writeUInt32LE(60, at + 128 + 64 + 44), /ports\[1\]\.partitionCount/],
    ['domain utf-8', (b) => b.writeUInt8(0xff, at + 64), /domain: not valid UTF-8/],
    ['port name utf-8', (b) => b.writeUInt8(0xc3, at + 128), /ports\[0\].*name: not valid UTF-8/],
  ];
  for (const [what, scribble, re] of cases) {
    const mem = new Uint8Array(size);
    writeRegionHeader(mem, sample(size));
    scribble(Buffer.from(mem.buffer));
    t.throws(() => readRegionHeader(mem), re, what);
  }
  t.throws(() => readRegionHeader(new Uint8Array(4096)), /regionSize cannot hold the header/, 'a mapping smaller than the header');
});

t.test('the writer refuses what does not fit', async (t) => {
  const size = regionSizeFor(64, 2048);
  t.throws(() => writeRegionHeader(new Uint8Array(size), { ...sample(size), domain: 'x'.repeat(33) }), /domain: 33 bytes/);
  t.throws(() => writeRegionHeader(new Uint8Array(size / 2), sample(size)), /regionSize/);
  const many = Array.from({ length: REGION_MAX_PORTS + 1 }, (_, i) => port(`p${i}`, 0, 0));
  t.throws(() => writeRegionHeader(new Uint8Array(size), { ...sample(size), ports: many }), /1023 ports/);
});

t.test('a domain\'s memfd: power-of-two size, header at its end, a new generation per port table', async (t) => {
  const d = new SharingDomain(0, 'bridge', 64, 2048, 0x1_0000_0000);
  t.teardown(() => d.close());
  t.equal(fdSize(d.shared.fd), 256 * 1024, 'the memfd has the region size');
  t.equal(d.shared.size, 64 * 2048, 'the buffers window is unchanged');
  // Another mapping of the fd (what QEMU or a SHARED_BUFFERS front-end gets) sees the header.
  const buf = mmapShared(d.shared.fd, d.shared.regionSize, 0);
  t.teardown(() => munmap(buf));
  const mem = new Uint8Array(buf);
  const h0 = readRegionHeader(mem);
  t.match(h0, { bufSize: 2048, bufCount: 64, buffersOffset: 0, domain: 'bridge', ports: [] });
  d.publishPorts([port('a', 0, 16), port('b', 16, 16)]);
  const h1 = readRegionHeader(mem);
  t.ok(h1.generation !== h0.generation, 'generation bumped');
  t.same(h1.ports.map((p) => [p.name, p.partitionStart, p.partitionCount]), [['a', 0, 16], ['b', 16, 16]]);
  d.publishPorts([port('b', 16, 16)]);
  t.same(readRegionHeader(mem).ports.map((p) => p.name), ['b'], 'a removed port leaves the table');
  d.publishPorts([port('a-port-with-a-name-longer-than-32-bytes', 0, 1)]);
  t.equal(readRegionHeader(mem).ports[0].name, 'a-port-with-a-name-longer-than-3', 'long names are cut at 32 bytes');
});
