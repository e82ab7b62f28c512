/**
 * Unit tests for src/guest/shared-bar.ts: the guest driver's view of a
 * region reached as a BAR. A header written by the switch's writer
 * (writeRegionHeader) into real anonymous memory; the driver finds its
 * entry by name or MAC, translates buffers at the BAR's own base, takes
 * bridge semantics and watermarks from the entry, and refuses what it
 * cannot use with an error that says why.
 */
import t from 'tap';
import { type RegionHeader, regionSizeFor, writeRegionHeader } from '../../src/shm/region-header';
import { findPortEntry, regionFromBar } from '../../src/guest/shared-bar';

const BUF_SIZE = 2048;
const BUF_COUNT = 64;
const SIZE = regionSizeFor(BUF_COUNT, BUF_SIZE);
const mac = (last: number) => Uint8Array.of(0x52, 0x54, 0, 0, 0, last);

function header(over: Partial<RegionHeader> = {}): RegionHeader {
  return {
    regionSize: SIZE, bufSize: BUF_SIZE, bufCount: BUF_COUNT, buffersOffset: 0, generation: 1, domain: 'pair:a+b',
    ports: [
      { name: 'a', mac: mac(1), partitionStart: 0, partitionCount: 32, giftHigh: 24, giftLow: 16, flags: 0 },
      { name: 'b', mac: new Uint8Array(6), partitionStart: 32, partitionCount: 32, giftHigh: 0, giftLow: 0, flags: 1 },
    ],
    ...over,
  };
}

function regionWith(h: RegionHeader): ArrayBuffer {
  const buf = new ArrayBuffer(h.regionSize);
  writeRegionHeader(new Uint8Array(buf), h);
  return buf;
}

t.test('by name: partition, watermarks and addresses at the BAR base', async (t) => {
  const bar = 0xfe00_0000;
  const r = regionFromBar(regionWith(header()), bar, { port: 'a' });
  t.equal(r.entry.name, 'a');
  t.equal(r.region.bufCount, BUF_COUNT);
  t.equal(r.region.partitionStart, 0);
  t.equal(r.region.partitionCount, 32);
  t.equal(r.region.swap, false);
  t.equal(r.giftHigh, 24);
  t.equal(r.giftLow, 16);
  t.equal(r.region.addrOf(5), bar + 5 * BUF_SIZE, 'descriptor address = BAR base + buffer offset');
  t.equal(r.region.indexAt(bar + 63 * BUF_SIZE), 63);
  t.equal(r.region.indexOf(bar + 64 * BUF_SIZE), -1, 'the header is not a buffer');
  t.equal(r.region.mem.byteLength, BUF_COUNT * BUF_SIZE, 'the driver sees the buffers, not the header');
});

t.test('by MAC when no name is given; options override the watermarks; swap entries never gift', async (t) => {
  const r = regionFromBar(regionWith(header()), 0, { mac: mac(1) }, { giftHigh: 10, giftLow: 5 });
  t.equal(r.entry.name, 'a');
  t.equal(r.giftHigh, 10);
  t.equal(r.giftLow, 5);
  const b = regionFromBar(regionWith(header()), 0, { port: 'b' });
  t.equal(b.region.swap, true);
  t.equal(b.giftHigh, Infinity);
  // A name that is not listed falls back to the MAC.
  t.equal(findPortEntry(header(), { port: 'zz', mac: mac(1) }).name, 'a');
});

t.test('what cannot be used is refused, saying why', async (t) => {
  t.throws(() => findPortEntry(header(), { port: 'c' }), /lists no port with name "c" \(ports: a, b\)/);
  // An all-zero MAC (the config gave none) never matches.
  t.throws(() => findPortEntry(header(), { mac: new Uint8Array(6) }), /lists no port with MAC 00:00:00:00:00:00/);
  t.throws(() => findPortEntry(header(), {}), /give --port/);
  t.throws(() => regionFromBar(new ArrayBuffer(SIZE), 0, { port: 'a' }), /region header: magic/);
  const scribbled = regionWith(header());
  new DataView(scribbled).setUint32(SIZE - 65536 + 28, 1_000_000, true); // bufCount past the header
  t.throws(() => regionFromBar(scribbled, 0, { port: 'a' }), /region header: bufCount/);
  t.throws(() => regionFromBar(regionWith(header({ buffersOffset: 4096 })), 0, { port: 'a' }), /buffersOffset 4096 is not 0/);
});
