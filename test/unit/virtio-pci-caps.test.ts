/**
 * Unit tests for the capability walk of src/guest/pci/virtio-pci.ts: config
 * space bytes laid out as QEMU's virtio-net-pci presents them are parsed
 * into the common/notify/isr/device windows, and config space that lies
 * (a capability list that loops, a capability past the end, a short read)
 * ends the walk or fails with an error that says why, never an endless loop.
 */
import t from 'tap';
import { virtioCaps } from '../../src/guest/pci/virtio-pci';

/** 256 bytes of config space with the capability list bit set and these capabilities at 0x40, 0x50, ... */
function config(caps: { type: number; bar: number; offset: number; length: number; mult?: number; next?: number }[]): Uint8Array {
  const c = new Uint8Array(256);
  const dv = new DataView(c.buffer);
  dv.setUint16(0x06, 0x10, true);
  c[0x34] = caps.length ? 0x40 : 0;
  caps.forEach((k, i) => {
    const at = 0x40 + i * 0x14;
    c[at] = 0x09; // vendor specific
    c[at + 1] = k.next ?? (i + 1 < caps.length ? at + 0x14 : 0);
    c[at + 2] = k.mult !== undefined ? 20 : 16;
    c[at + 3] = k.type;
    c[at + 4] = k.bar;
    dv.setUint32(at + 8, k.offset, true);
    dv.setUint32(at + 12, k.length, true);
    if (k.mult !== undefined) dv.setUint32(at + 16, k.mult, true);
  });
  return c;
}

t.test('the four windows of a modern virtio-net device', async (t) => {
  const caps = virtioCaps(config([
    { type: 1, bar: 4, offset: 0x0, length: 0x1000 },
    { type: 3, bar: 4, offset: 0x1000, length: 0x1000 },
    { type: 4, bar: 4, offset: 0x2000, length: 0x1000 },
    { type: 2, bar: 4, offset: 0x3000, length: 0x1000, mult: 4 },
  ]));
  t.same(caps.map((c) => c.type), [1, 3, 4, 2]);
  t.match(caps[3], { bar: 4, offset: 0x3000, length: 0x1000, notifyMultiplier: 4 });
  t.equal(caps[0].notifyMultiplier, 0, 'only the notify capability has a multiplier');
});

t.test('lying config space: no capability list, a loop, a capability past the end, a short read', async (t) => {
  const none = config([{ type: 1, bar: 4, offset: 0, length: 0x1000 }]);
  none[0x06] = 0;
  t.same(virtioCaps(none), [], 'no capability list bit: no capabilities');
  const loop = virtioCaps(config([{ type: 1, bar: 4, offset: 0, length: 0x1000, next: 0x40 }]));
  t.ok(loop.length > 0 && loop.length <= 48, `a list that points at itself ends (${loop.length} hops)`);
  const past = config([{ type: 1, bar: 4, offset: 0, length: 0x1000 }]);
  past[0x34] = 0xfc;
  t.throws(() => virtioCaps(past), /capability at 0xfc runs past config space/);
  t.throws(() => virtioCaps(new Uint8Array(64 - 4)), /config space read returned 60 bytes \(need root/);
});
