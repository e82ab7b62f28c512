/**
 * Unit tests for src/virtio: split-ring layout, SplitRing accessors,
 * vring_need_event, a DriverQueue and a DeviceQueue sharing one piece of
 * memory (notification suppression both ways), ChainWalker validation and
 * the virtio_net_hdr helpers. Pure code over typed arrays: no processes.
 */
import t from 'tap';
import { prng } from '../helpers/prng';
import {
  CHAIN_BAD_HEAD, CHAIN_BAD_NEXT, CHAIN_BAD_ORDER, CHAIN_INDIRECT, CHAIN_LOOP, CHAIN_TOO_LONG,
  ChainSegments, ChainWalker, DeviceQueue, DriverQueue, NET_HDR_FLAGS, NET_HDR_NUM_BUFFERS, SplitRing,
  VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_RSC_INFO, VIRTIO_NET_HDR_SIZE, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE, VIRTQ_MAX_CHAIN, VIRTQ_MAX_SIZE, VIRTQ_USED_F_NO_NOTIFY, availRingBytes, descTableBytes,
  isValidQueueSize, needEvent, netHdrFlags, ringPartsProblem, setNetHdrFlags, setNumBuffers, usedRingBytes,
  writeNetHdr, writeNetHdrWords, type RingParts,
} from '../../src/virtio';
import { VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED } from '../../src/vhost/protocol';

/** One ArrayBuffer holding desc | avail | used, laid out as a driver would (used 4-aligned). */
function layout(num: number): { buf: ArrayBuffer; parts: RingParts; availOff: number; usedOff: number } {
  const availOff = descTableBytes(num);
  const usedOff = (availOff + availRingBytes(num) + 3) & ~3;
  const buf = new ArrayBuffer(usedOff + usedRingBytes(num));
  return {
    buf,
    availOff,
    usedOff,
    parts: { desc: { buffer: buf, byteOffset: 0 }, avail: { buffer: buf, byteOffset: availOff }, used: { buffer: buf, byteOffset: usedOff } },
  };
}

/** The spec's vring_need_event, written independently with explicit u16 casts. */
function specNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  const u16 = (x: number) => ((x % 65536) + 65536) % 65536;
  return u16(newIdx - eventIdx - 1) < u16(newIdx - oldIdx);
}


t.test('ring layout sizes follow virtio 1.2 §2.7', async (t) => {
  t.equal(descTableBytes(256), 4096);
  t.equal(descTableBytes(1), 16);
  t.equal(availRingBytes(256), 2 + 2 + 2 * 256 + 2);
  t.equal(availRingBytes(8), 22);
  t.equal(usedRingBytes(256), 2 + 2 + 8 * 256 + 2);
  t.equal(usedRingBytes(8), 70);
});

t.test('isValidQueueSize', async (t) => {
  for (const n of [1, 2, 4, 256, 1024, VIRTQ_MAX_SIZE]) t.ok(isValidQueueSize(n), `${n} is valid`);
  for (const n of [0, -1, 3, 6, 100, 255, VIRTQ_MAX_SIZE * 2, 65535, 1.5, NaN, Infinity]) t.notOk(isValidQueueSize(n), `${n} is invalid`);
  t.equal(VIRTQ_MAX_SIZE, 32768);
});

t.test('ringPartsProblem', async (t) => {
  const num = 8;
  const good = layout(num);
  t.equal(ringPartsProblem(num, good.parts), null, 'a proper layout has no problem');
  t.match(ringPartsProblem(6, good.parts), /queue size 6/, 'a bad size is reported first');

  const buf = new ArrayBuffer(4096);
  const at = (d: number, a: number, u: number): RingParts => ({
    desc: { buffer: buf, byteOffset: d }, avail: { buffer: buf, byteOffset: a }, used: { buffer: buf, byteOffset: u },
  });
  t.equal(ringPartsProblem(num, at(0, 1024, 2048)), null);
  t.match(ringPartsProblem(num, at(8, 1024, 2048)), /descriptor.*offset 8.*16-byte aligned/, 'descriptor table must be 16-aligned');
  t.match(ringPartsProblem(num, at(0, 1025, 2048)), /avail.*2-byte aligned/, 'avail ring must be 2-aligned');
  t.equal(ringPartsProblem(num, at(0, 1026, 2048)), null, 'avail at an even offset is fine');
  t.match(ringPartsProblem(num, at(0, 1024, 2050)), /used.*4-byte aligned/, 'used ring must be 4-aligned');
  // overruns: each part just fits, then one step too far
  t.equal(ringPartsProblem(num, at(4096 - 128, 0, 1024)), null, 'descriptor table ending exactly at the end fits');
  t.match(ringPartsProblem(num, at(4096 - 112, 0, 1024)), /descriptor.*past the end/);
  t.equal(ringPartsProblem(num, at(0, 4096 - 22, 1024)), null, 'avail ring ending exactly at the end fits');
  t.match(ringPartsProblem(num, at(0, 4096 - 20, 1024)), /avail.*past the end/);
  t.match(ringPartsProblem(num, at(0, 1024, 4096 - 68)), /used.*past the end/);
  const small = new ArrayBuffer(64);
  t.match(
    ringPartsProblem(num, { desc: { buffer: small, byteOffset: 0 }, avail: good.parts.avail, used: good.parts.used }),
    /descriptor.*past the end/,
    'each part is checked against its own buffer',
  );
});

t.test('SplitRing accessors and the spec byte layout', async (t) => {
  const num = 8;
  const { buf, parts, availOff, usedOff } = layout(num);
  const ring = new SplitRing(num, parts);
  const dv = new DataView(buf);
  t.equal(ring.num, 8);
  t.equal(ring.mask, 7);

  const addrs = [0x40_0000_1000, 0, 0xffff_ffff, 0x1_0000_0000, 2 ** 52 - 4096, 0x7f_ffff_f000];
  addrs.forEach((a, i) => ring.setDesc(i, a, 1000 + i, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, (i + 1) & 7));
  addrs.forEach((a, i) => {
    t.equal(ring.descAddr(i), a, `address 0x${a.toString(16)} round-trips`);
    t.equal(dv.getBigUint64(16 * i, true), BigInt(a), `desc[${i}].addr is a little-endian u64 in memory`);
    t.equal(ring.descLen(i), 1000 + i);
    t.equal(dv.getUint32(16 * i + 8, true), 1000 + i, 'len at byte 8');
    t.equal(ring.descFlags(i), VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE);
    t.equal(dv.getUint16(16 * i + 12, true), 3, 'flags at byte 12');
    t.equal(ring.descNext(i), (i + 1) & 7);
    t.equal(dv.getUint16(16 * i + 14, true), (i + 1) & 7, 'next at byte 14');
  });
  t.equal(ring.desc32[4 * 0], 0x1000, 'low half of 0x40_0000_1000');
  t.equal(ring.desc32[4 * 0 + 1], 0x40, 'high half of 0x40_0000_1000');

  ring.setDescAddr(7, 0x12_3456_7000);
  t.equal(ring.descAddr(7), 0x12_3456_7000, 'setDescAddr round-trips');
  t.equal(dv.getBigUint64(16 * 7, true), 0x12_3456_7000n);
  ring.setDescAddr(7, 0x2000);
  t.equal(dv.getUint32(16 * 7 + 4, true), 0, 'a small address clears the high half');

  dv.setUint16(availOff + 4 + 2 * num, 0xbeef, true);
  t.equal(ring.usedEventIdx, 0xbeef, 'used_event follows avail.ring[num]');
  dv.setUint16(usedOff + 4 + 8 * num, 0xcafe, true);
  t.equal(ring.availEventIdx, 0xcafe, 'avail_event follows used.ring[num]');
});

t.test('needEvent matches the spec formula, including u16 wrap-around', async (t) => {
  // hand-checked cases
  t.equal(needEvent(0, 1, 0), true, 'event 0 crossed by 0 -> 1');
  t.equal(needEvent(0, 2, 1), false, 'event 0 was already behind old index 1');
  t.equal(needEvent(5, 5, 0), false, 'event == new is not yet crossed');
  t.equal(needEvent(4, 5, 0), true, 'event == new-1 is crossed');
  t.equal(needEvent(0, 5, 0), true);
  t.equal(needEvent(0xffff, 0x0002, 0xfffe), true, 'window wraps past 0xffff and contains 0xffff');
  t.equal(needEvent(0x0001, 0x0002, 0xfffe), true, 'window wraps and contains 1');
  t.equal(needEvent(0x0002, 0x0002, 0xfffe), false, 'new index itself is outside the window');
  t.equal(needEvent(0xfffd, 0x0002, 0xfffe), false, 'event before the window');
  t.equal(needEvent(0xfffe, 0x0002, 0xfffe), true, 'old index itself is inside the window');
  t.equal(needEvent(7, 7, 7), false, 'nothing new: never');
  // random agreement with the independently written formula
  const rnd = prng(0x5eed);
  let mismatches = 0;
  for (let i = 0; i < 20000; i++) {
    const old = Math.floor(rnd() * 65536);
    const delta = Math.floor(rnd() * 300);
    const nw = (old + delta) & 0xffff;
    const ev = rnd() < 0.5 ? (old + Math.floor(rnd() * 400) - 50) & 0xffff : Math.floor(rnd() * 65536);
    if (needEvent(ev, nw, old) !== specNeedEvent(ev, nw, old)) mismatches++;
  }
  t.equal(mismatches, 0, 'agrees with the spec formula on 20000 random triples');
});

t.test('DriverQueue and DeviceQueue over the same memory', async (t) => {
  const num = 8;
  const { buf, parts, availOff, usedOff } = layout(num);
  const dv = new DataView(buf);
  const drv = new DriverQueue(new SplitRing(num, parts), false);
  const dev = new DeviceQueue(new SplitRing(num, parts), false, 0, 0);

  t.equal(drv.freeDescs, num);
  const a = drv.allocDesc();
  const b = drv.allocDesc();
  t.equal(a, 0, 'first allocated descriptor is 0');
  t.equal(b, 1);
  t.equal(drv.freeDescs, num - 2);
  drv.ring.setDesc(a, 0x40_0000_0000, 64, 0, 0);
  drv.ring.setDesc(b, 0x40_0000_0800, 2048, VIRTQ_DESC_F_WRITE, 0);
  drv.addAvail(a);
  drv.addAvail(b);
  t.equal(dev.availPending(), 0, 'nothing visible before publishAvail');
  t.equal(dv.getUint16(availOff + 2, true), 0, 'avail.idx untouched before publish');
  drv.publishAvail();
  t.equal(dv.getUint16(availOff + 2, true), 2, 'avail.idx at byte 2 of the avail ring');
  t.equal(dv.getUint16(availOff + 4, true), a, 'avail.ring[0]');
  t.equal(dv.getUint16(availOff + 6, true), b, 'avail.ring[1]');
  t.equal(dev.availPending(), 2);

  t.equal(dev.popAvail(), a);
  t.equal(dev.ring.descAddr(a), 0x40_0000_0000, 'device sees the driver descriptor');
  t.equal(dev.popAvail(), b);
  t.equal(dev.lastAvail, 2);
  t.equal(dev.availPending(), 0);

  dev.pushUsed(b, 1500);
  dev.pushUsed(a, 0);
  t.equal(drv.usedPending(), 0, 'nothing visible before publishUsed');
  dev.publishUsed();
  t.equal(dv.getUint16(usedOff + 2, true), 2, 'used.idx at byte 2 of the used ring');
  t.equal(dv.getUint32(usedOff + 4, true), b, 'used.ring[0].id');
  t.equal(dv.getUint32(usedOff + 8, true), 1500, 'used.ring[0].len');
  t.equal(drv.usedPending(), 2);
  t.equal(drv.popUsed(), b);
  t.equal(drv.lastUsedLen, 1500);
  t.equal(drv.popUsed(), a);
  t.equal(drv.lastUsedLen, 0);
  t.equal(drv.usedPending(), 0);
  drv.freeDesc(a);
  drv.freeDesc(b);
  t.equal(drv.freeDescs, num);

  // exhaust the descriptors
  const ids = new Set<number>();
  for (let i = 0; i < num; i++) ids.add(drv.allocDesc());
  t.equal(ids.size, num, 'every descriptor handed out once');
  t.equal(drv.allocDesc(), -1, 'then -1');
});

t.test('DriverQueue.skipUsed: every published used entry reaped unread, across the index wrap', async (t) => {
  const num = 8;
  const { parts } = layout(num);
  const drv = new DriverQueue(new SplitRing(num, parts), false);
  const dev = new DeviceQueue(new SplitRing(num, parts), false, 0, 0);
  t.equal(drv.skipUsed(), 0, 'nothing used yet');
  let total = 0;
  // Enough rounds to wrap the 16-bit indexes: 3 entries each.
  for (let round = 0; round < 30_000; round++) {
    for (let i = 0; i < 3; i++) {
      drv.addAvail(i);
      dev.pushUsed(i, 0);
    }
    drv.publishAvail();
    if (round % 2 === 0) continue; // two rounds' entries before the driver looks
    dev.publishUsed();
    const n = drv.skipUsed();
    if (n !== 6) t.fail(`round ${round}: ${n} reaped, not 6`);
    total += n;
  }
  t.equal(total, 90_000, 'every entry counted once');
  t.equal(drv.lastUsed, dev.usedIdx, 'the driver\'s used index is the device\'s');
  t.equal(drv.usedPending(), 0, 'nothing left pending');
});

t.test('DriverQueue.reserveLow: reserved descriptors are never allocated nor freed into the stack; setDescWords', async (t) => {
  const num = 16;
  const { parts } = layout(num);
  const drv = new DriverQueue(new SplitRing(num, parts), false);
  t.equal(drv.freeDescs, 16);
  drv.reserveLow(10);
  t.equal(drv.reserved, 10);
  t.equal(drv.freeDescs, 6, 'six left for allocDesc');
  const got = [drv.allocDesc(), drv.allocDesc(), drv.allocDesc(), drv.allocDesc(), drv.allocDesc(), drv.allocDesc(), drv.allocDesc()];
  t.same(got, [10, 11, 12, 13, 14, 15, -1], 'only ids 10..15, lowest first, then none');
  drv.freeDesc(3);
  t.equal(drv.freeDescs, 0, 'a reserved id freed is the caller\'s, not the stack\'s');
  drv.freeDesc(12);
  t.equal(drv.allocDesc(), 12);
  t.throws(() => drv.reserveLow(4), /in flight/, 'only before anything is in flight');
  drv.ring.setDescWords(3, 0x1234_5678, 0x40, 2048, 2, 0);
  t.equal(drv.ring.descAddr(3), 0x40_1234_5678, 'the two words make the address');
  t.same([drv.ring.descLen(3), drv.ring.descFlags(3), drv.ring.descNext(3)], [2048, 2, 0]);
});

t.test('indices wrap around u16 and entries land in the right slots', async (t) => {
  const num = 4;
  const { parts } = layout(num);
  const drv = new DriverQueue(new SplitRing(num, parts), false);
  drv.availIdx = 0xfffe;
  drv.lastUsed = 0xfffe;
  new Uint16Array(parts.used.buffer, parts.used.byteOffset, 2)[1] = 0xfffe;
  new Uint16Array(parts.avail.buffer, parts.avail.byteOffset, 2)[1] = 0xfffe;
  const dev = new DeviceQueue(new SplitRing(num, parts), false, 0xfffe, 0xfffe);
  for (const h of [3, 1, 2]) drv.addAvail(h);
  drv.publishAvail();
  t.equal(drv.availIdx, 1, 'avail index wrapped to 1');
  t.equal(dev.availPending(), 3);
  t.same([dev.popAvail(), dev.popAvail(), dev.popAvail()], [3, 1, 2]);
  t.equal(dev.lastAvail, 1);
  for (const h of [2, 3, 1]) dev.pushUsed(h, h * 10);
  dev.publishUsed();
  t.equal(drv.usedPending(), 3);
  const got: number[] = [];
  while (drv.usedPending() > 0) got.push(drv.popUsed(), drv.lastUsedLen);
  t.same(got, [2, 20, 3, 30, 1, 10]);
});

t.test('availPending returns -1 when avail.idx jumps more than num ahead', async (t) => {
  const num = 8;
  const { parts } = layout(num);
  const avail = new Uint16Array(parts.avail.buffer, parts.avail.byteOffset, 2);
  const dev = new DeviceQueue(new SplitRing(num, parts), false, 100, 0);
  avail[1] = 100 + num;
  t.equal(dev.availPending(), num, 'exactly num ahead is a full ring');
  avail[1] = 100 + num + 1;
  t.equal(dev.availPending(), -1, 'num+1 ahead is broken');
  avail[1] = 99;
  t.equal(dev.availPending(), -1, 'behind (0xffff ahead) is broken');
  const wrap = new DeviceQueue(new SplitRing(num, parts), false, 0xfffc, 0);
  avail[1] = 4;
  t.equal(wrap.availPending(), 8, 'across the wrap: 8 pending');
  avail[1] = 5;
  t.equal(wrap.availPending(), -1, 'across the wrap: 9 is broken');
});

t.test('EVENT_IDX: kicks', async (t) => {
  const num = 8;
  const { parts } = layout(num);
  const drv = new DriverQueue(new SplitRing(num, parts), true);
  const dev = new DeviceQueue(new SplitRing(num, parts), true, 0, 0);

  t.equal(drv.needsKick(), false, 'nothing published: no kick');
  t.equal(dev.setKicks(true), 0, 'setKicks returns the pending count');
  t.equal(dev.ring.availEventIdx, 0, 'avail_event armed at lastAvail');
  drv.addAvail(0);
  drv.publishAvail();
  t.equal(drv.needsKick(), true, 'first publish after arming needs a kick');
  drv.addAvail(1);
  drv.publishAvail();
  t.equal(drv.needsKick(), false, 'device did not re-arm: no second kick');
  drv.addAvail(2);
  drv.addAvail(3);
  drv.publishAvail();
  t.equal(drv.needsKick(), false, 'still not re-armed');
  t.equal(dev.availPending(), 4);
  dev.popAvail();
  dev.popAvail();
  t.equal(dev.setKicks(true), 2, 're-arming reports 2 still pending (closes the sleep race)');
  t.equal(dev.ring.availEventIdx, 2);
  drv.addAvail(4);
  drv.publishAvail();
  t.equal(drv.needsKick(), false, 'avail_event 2 lies before the new window (4, 5]: no kick; the device saw 2 pending itself');
  while (dev.availPending() > 0) dev.popAvail();
  t.equal(dev.setKicks(true), 0, 'drained');
  t.equal(dev.ring.availEventIdx, 5);
  drv.addAvail(5);
  drv.publishAvail();
  t.equal(drv.needsKick(), true, 'caught up and re-armed: kick');
});

t.test('EVENT_IDX: kick after re-arm when the device has caught up', async (t) => {
  const num = 8;
  const { parts } = layout(num);
  const drv = new DriverQueue(new SplitRing(num, parts), true);
  const dev = new DeviceQueue(new SplitRing(num, parts), true, 0, 0);
  dev.setKicks(true);
  for (let round = 0; round < 40; round++) {
    // driver publishes one, must kick; device drains and re-arms
    drv.addAvail(round & 7);
    drv.publishAvail();
    if (!drv.needsKick()) return t.fail(`round ${round}: no kick after re-arm`);
    drv.addAvail((round + 1) & 7);
    drv.publishAvail();
    if (drv.needsKick()) return t.fail(`round ${round}: kick although not re-armed`);
    while (dev.availPending() > 0) dev.popAvail();
    dev.setKicks(false);
    drv.addAvail(0);
    drv.publishAvail();
    if (drv.needsKick()) return t.fail(`round ${round}: kick while kicks are off`);
    while (dev.availPending() > 0) dev.popAvail();
    t.equal(dev.setKicks(true), 0);
  }
  t.equal(drv.availIdx, 120);
  t.equal(dev.lastAvail, 120);
});

t.test('no EVENT_IDX: USED_F_NO_NOTIFY', async (t) => {
  const num = 8;
  const { parts } = layout(num);
  const drv = new DriverQueue(new SplitRing(num, parts), false);
  const dev = new DeviceQueue(new SplitRing(num, parts), false, 0, 0);
  drv.addAvail(0);
  drv.publishAvail();
  t.equal(drv.needsKick(), true, 'flags 0: kick');
  drv.addAvail(1);
  drv.publishAvail();
  t.equal(drv.needsKick(), true, 'flags 0: kick every publish');
  t.equal(dev.setKicks(false), 2, 'setKicks(false) reports pending');
  t.equal(dev.ring.used16[0], VIRTQ_USED_F_NO_NOTIFY, 'used.flags = NO_NOTIFY');
  drv.addAvail(2);
  drv.publishAvail();
  t.equal(drv.needsKick(), false, 'NO_NOTIFY suppresses the kick');
  dev.setKicks(true);
  t.equal(dev.ring.used16[0], 0, 'used.flags cleared');
  drv.addAvail(3);
  drv.publishAvail();
  t.equal(drv.needsKick(), true);
  t.equal(drv.needsKick(), false, 'no new entries: no kick');
});

t.test('needsCall with and without EVENT_IDX', async (t) => {
  const num = 8;
  {
    const { parts } = layout(num);
    const drv = new DriverQueue(new SplitRing(num, parts), true);
    const dev = new DeviceQueue(new SplitRing(num, parts), true, 0, 0);
    t.equal(dev.needsCall(), false, 'nothing published: no call');
    t.equal(drv.setCalls(true), 0);
    t.equal(dev.ring.usedEventIdx, 0, 'used_event armed at lastUsed');
    dev.pushUsed(0, 1);
    dev.publishUsed();
    t.equal(dev.needsCall(), true, 'EVENT_IDX: first completion after arming calls');
    dev.pushUsed(1, 1);
    dev.publishUsed();
    t.equal(dev.needsCall(), false, 'EVENT_IDX: driver has not re-armed');
    drv.popUsed();
    t.equal(drv.setCalls(true), 1, 'setCalls reports the used entries still pending');
    t.equal(dev.ring.usedEventIdx, 1);
    dev.pushUsed(2, 1);
    dev.publishUsed();
    t.equal(dev.needsCall(), false, 'used_event 1 lies before the new window (2, 3]: no call (the driver saw 1 pending itself)');
    drv.popUsed();
    drv.popUsed();
    t.equal(drv.setCalls(true), 0, 'drained');
    t.equal(dev.ring.usedEventIdx, 3);
    dev.pushUsed(3, 1);
    dev.publishUsed();
    t.equal(dev.needsCall(), true, 'driver caught up and re-armed: call');
    t.equal(dev.needsCall(), false, 'no new entries: no call');
    drv.setCalls(false);
    t.equal(dev.ring.usedEventIdx, 3, 'EVENT_IDX off simply does not advance used_event');
    drv.popUsed();
    dev.pushUsed(4, 1);
    dev.publishUsed();
    t.equal(dev.needsCall(), false, 'calls off: no call');
  }
  {
    const { parts } = layout(num);
    const drv = new DriverQueue(new SplitRing(num, parts), false);
    const dev = new DeviceQueue(new SplitRing(num, parts), false, 0, 0);
    dev.pushUsed(0, 1);
    dev.publishUsed();
    t.equal(dev.needsCall(), true, 'flags 0: call');
    drv.setCalls(false);
    t.equal(drv.ring.avail[0], VIRTQ_AVAIL_F_NO_INTERRUPT, 'avail.flags = NO_INTERRUPT');
    dev.pushUsed(1, 1);
    dev.publishUsed();
    t.equal(dev.needsCall(), false, 'NO_INTERRUPT suppresses the call');
    drv.setCalls(true);
    t.equal(drv.ring.avail[0], 0);
    dev.pushUsed(2, 1);
    dev.publishUsed();
    t.equal(dev.needsCall(), true);
  }
});

/** Build a ring and set descriptors: [idx, addr, len, flags, next]. */
function chainRing(num: number, descs: [number, number, number, number, number][]): SplitRing {
  const ring = new SplitRing(num, layout(num).parts);
  for (const [i, addr, len, flags, next] of descs) ring.setDesc(i, addr, len, flags, next);
  return ring;
}

t.test('ChainWalker: a good chain', async (t) => {
  const N = VIRTQ_DESC_F_NEXT;
  const W = VIRTQ_DESC_F_WRITE;
  const ring = chainRing(16, [
    [5, 0x40_0000_0000, 12, N, 9],
    [9, 0x1_2345_6000, 100, N, 2],
    [2, 0x40_0000_0800, 2048, W, 0],
  ]);
  const walker = new ChainWalker(16);
  const seg = new ChainSegments();
  t.equal(walker.walk(ring, 5, seg), 3);
  t.equal(seg.count, 3);
  t.equal(seg.readable, 2, 'two readable segments first');
  t.equal(seg.totalLen, 12 + 100 + 2048);
  t.same(Array.from(seg.addr.subarray(0, 3)), [0x40_0000_0000, 0x1_2345_6000, 0x40_0000_0800]);
  t.same(Array.from(seg.len.subarray(0, 3)), [12, 100, 2048]);
  t.same(Array.from(seg.desc.subarray(0, 3)), [5, 9, 2]);

  t.equal(walker.walk(ring, 2, seg), 1, 'a single writable descriptor');
  t.equal(seg.readable, 0);
  t.equal(seg.totalLen, 2048);

  const all = chainRing(4, [[0, 0x1000, 10, N | W, 1], [1, 0x2000, 20, W, 0]]);
  t.equal(new ChainWalker(4).walk(all, 0, seg), 2, 'all-writable chain is fine');
  t.equal(seg.readable, 0);
  t.equal(seg.totalLen, 30);
});

t.test('ChainWalker: errors', async (t) => {
  const N = VIRTQ_DESC_F_NEXT;
  const W = VIRTQ_DESC_F_WRITE;
  const seg = new ChainSegments();
  const w8 = new ChainWalker(8);

  t.equal(w8.walk(chainRing(8, []), 8, seg), CHAIN_BAD_HEAD, 'head == num');
  t.equal(w8.walk(chainRing(8, []), 0xffff, seg), CHAIN_BAD_HEAD, 'head 0xffff');
  t.equal(w8.walk(chainRing(8, [[0, 0x1000, 1, N, 8]]), 0, seg), CHAIN_BAD_NEXT, 'next == num');
  t.equal(w8.walk(chainRing(8, [[0, 0x1000, 1, N, 1], [1, 0x1000, 1, N, 200]]), 0, seg), CHAIN_BAD_NEXT, 'next far out');
  t.equal(w8.walk(chainRing(8, [[3, 0x1000, 1, N, 3]]), 3, seg), CHAIN_LOOP, 'self loop');
  t.equal(
    w8.walk(chainRing(8, [[0, 0x1000, 1, N, 1], [1, 0x1000, 1, N, 2], [2, 0x1000, 1, N, 0]]), 0, seg),
    CHAIN_LOOP, '3-cycle',
  );
  t.equal(
    w8.walk(chainRing(8, [[4, 0x1000, 1, N, 5], [5, 0x1000, 1, N, 6], [6, 0x1000, 1, N, 5]]), 4, seg),
    CHAIN_LOOP, 'a tail into a 2-cycle',
  );
  t.equal(w8.walk(chainRing(8, [[0, 0x1000, 16, VIRTQ_DESC_F_INDIRECT, 0]]), 0, seg), CHAIN_INDIRECT, 'indirect head');
  t.equal(
    w8.walk(chainRing(8, [[0, 0x1000, 16, N, 1], [1, 0x1000, 16, VIRTQ_DESC_F_INDIRECT | W, 0]]), 0, seg),
    CHAIN_INDIRECT, 'indirect in the middle',
  );
  t.equal(w8.walk(chainRing(8, [[0, 0x1000, 10, N | W, 1], [1, 0x2000, 10, 0, 0]]), 0, seg), CHAIN_BAD_ORDER, 'writable then readable');
  t.equal(
    w8.walk(chainRing(8, [[0, 0x1000, 10, N, 1], [1, 0x1000, 10, N | W, 2], [2, 0x2000, 10, 0, 0]]), 0, seg),
    CHAIN_BAD_ORDER, 'readable, writable, readable',
  );

  // length: 64 descriptors are fine, 65 are too long (in a 128 ring)
  const long = new SplitRing(128, layout(128).parts);
  for (let i = 0; i < 128; i++) long.setDesc(i, 0x1000 * (i + 1), 1, N, i + 1);
  long.setDesc(63, 0x1000 * 64, 1, 0, 0); // chain 0..63: 64 descriptors
  const w128 = new ChainWalker(128);
  t.equal(VIRTQ_MAX_CHAIN, 64);
  t.equal(w128.walk(long, 0, seg), 64, '64 descriptors are accepted');
  t.equal(seg.totalLen, 64);
  long.setDesc(63, 0x1000 * 64, 1, N, 64);
  long.setDesc(64, 0x1000 * 65, 1, 0, 0); // chain 0..64: 65 descriptors
  t.equal(w128.walk(long, 0, seg), CHAIN_TOO_LONG, '65 descriptors are too long');
  t.equal(w128.walk(long, 1, seg), 64, 'starting one later it is 64 again');
});

t.test('ChainWalker: many walks in a row still detect loops (generation stamps)', async (t) => {
  const N = VIRTQ_DESC_F_NEXT;
  const num = 16;
  const ring = new SplitRing(num, layout(num).parts);
  // good chain 0 -> 1 -> 2 -> 3; loop 8 -> 9 -> 10 -> 8
  for (let i = 0; i < 3; i++) ring.setDesc(i, 0x1000, 1, N, i + 1);
  ring.setDesc(3, 0x1000, 1, 0, 0);
  ring.setDesc(8, 0x1000, 1, N, 9);
  ring.setDesc(9, 0x1000, 1, N, 10);
  ring.setDesc(10, 0x1000, 1, N, 8);
  const walker = new ChainWalker(num);
  const seg = new ChainSegments();
  let goodOk = 0;
  let loopsSeen = 0;
  for (let i = 0; i < 5000; i++) {
    if (walker.walk(ring, 0, seg) === 4) goodOk++;
    if (walker.walk(ring, 8, seg) === CHAIN_LOOP) loopsSeen++;
    if (walker.walk(ring, 2, seg) === 2) goodOk++;
  }
  t.equal(goodOk, 10000, 'a good chain is never mistaken for a loop by stale stamps');
  t.equal(loopsSeen, 5000, 'the loop is detected on every walk');

  // force the generation counter to wrap (private field) and walk across it
  (walker as unknown as { gen: number }).gen = 0xffff_fffc;
  const results: number[] = [];
  for (let i = 0; i < 6; i++) results.push(walker.walk(ring, 0, seg), walker.walk(ring, 8, seg));
  t.same(results, [4, CHAIN_LOOP, 4, CHAIN_LOOP, 4, CHAIN_LOOP, 4, CHAIN_LOOP, 4, CHAIN_LOOP, 4, CHAIN_LOOP], 'correct across the generation wrap');
});

t.test('virtio_net_hdr helpers', async (t) => {
  t.equal(VIRTIO_NET_HDR_SIZE, 12);
  t.equal(NET_HDR_FLAGS, 0);
  t.equal(NET_HDR_NUM_BUFFERS, 10);
  const specBits = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID | VIRTIO_NET_HDR_F_RSC_INFO;
  t.equal(specBits, 7, 'spec flags are 1, 2, 4');
  t.equal(VIRTIO_NET_HDR_F_GIFT_BUFFER & specBits, 0, 'GIFT_BUFFER is outside the spec bits');
  t.equal(VIRTIO_NET_HDR_F_RETURNED & specBits, 0, 'RETURNED is outside the spec bits');
  t.equal(VIRTIO_NET_HDR_F_RETURNED & VIRTIO_NET_HDR_F_GIFT_BUFFER, 0, 'the two extension bits differ');
  t.ok(VIRTIO_NET_HDR_F_GIFT_BUFFER < 0x100 && VIRTIO_NET_HDR_F_RETURNED < 0x100, 'both fit the u8 flags field');

  const mem = new Uint8Array(64).fill(0xaa);
  writeNetHdr(mem, 16, VIRTIO_NET_HDR_F_GIFT_BUFFER, 0x1234);
  t.same(Array.from(mem.subarray(16, 28)), [0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x34, 0x12], 'header bytes');
  t.ok(mem.subarray(0, 16).every((b) => b === 0xaa), 'bytes before untouched');
  t.ok(mem.subarray(28).every((b) => b === 0xaa), 'bytes after untouched');
  t.equal(netHdrFlags(mem, 16), VIRTIO_NET_HDR_F_GIFT_BUFFER);
  setNetHdrFlags(mem, 16, netHdrFlags(mem, 16) | VIRTIO_NET_HDR_F_RETURNED);
  t.equal(mem[16], 0xc0);
  t.equal(netHdrFlags(mem, 16), VIRTIO_NET_HDR_F_GIFT_BUFFER | VIRTIO_NET_HDR_F_RETURNED);
  setNumBuffers(mem, 16, 0xbeef);
  t.equal(new DataView(mem.buffer).getUint16(16 + 10, true), 0xbeef, 'num_buffers little-endian u16 at byte 10');
  t.equal(mem[15], 0xaa);
  t.equal(mem[28], 0xaa);
  writeNetHdr(mem, 0, 0, 1);
  t.same(Array.from(mem.subarray(0, 12)), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);

  // The word-wise writer gives the same bytes as the byte-wise one, and nothing else.
  const a = new Uint8Array(64).fill(0xaa);
  const b = new Uint8Array(64).fill(0xaa);
  writeNetHdr(a, 32, VIRTIO_NET_HDR_F_GIFT_BUFFER, 0x1234);
  writeNetHdrWords(new Uint32Array(b.buffer), 32 >>> 2, VIRTIO_NET_HDR_F_GIFT_BUFFER, 0x1234);
  t.same(Array.from(b), Array.from(a), 'writeNetHdrWords writes exactly what writeNetHdr writes');

  // writeNetHdrWords ends with the same bytes, whatever the header held before (it only skips words already right).
  for (const [flags, nb] of [[0, 1], [VIRTIO_NET_HDR_F_GIFT_BUFFER, 1], [VIRTIO_NET_HDR_F_RETURNED, 0xffff], [0, 0x8000]]) {
    for (const fill of [0x00, 0xaa, 0xff]) {
      const want = new Uint8Array(64).fill(fill);
      const got = new Uint8Array(64).fill(fill);
      writeNetHdr(want, 16, flags, nb);
      writeNetHdrWords(new Uint32Array(got.buffer), 16 >>> 2, flags, nb);
      t.same(Array.from(got), Array.from(want), `writeNetHdrWords: flags ${flags}, num_buffers ${nb}, over 0x${fill.toString(16)}`);
      writeNetHdrWords(new Uint32Array(got.buffer), 16 >>> 2, flags, nb);
      t.same(Array.from(got), Array.from(want), 'and again over itself');
    }
  }
});
