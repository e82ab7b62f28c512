/**
 * Unit tests for the vhost-user codec (src/vhost/codec.ts) and wire
 * constants (src/vhost/protocol.ts): round trips, size checks with errors
 * that name the request, SET_MEM_TABLE edge cases, request names, and the
 * struct sizes of qemu's docs/interop/vhost-user.rst.
 */
import t, { type Test } from 'tap';
import {
  ProtocolError, type VhostMessage, decodeMemTable, decodeSharedBuffersInfo, decodeU64, decodeVringAddr,
  decodeVringState, encodeHeader, encodeMessage, encodeReply, memTable, sharedBuffersInfo, u64, vringAddr, vringState,
  type MemRegionDesc, type SharedBuffersInfo, type VringAddr,
} from '../../src/vhost/codec';
import {
  FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, FLAG_VERSION_MASK, HDR_SIZE, MAX_MEM_REGIONS, MAX_PAYLOAD, MEM_HDR_SIZE,
  MEM_REGION_SIZE, PROTOCOL_F_CONFIG, PROTOCOL_F_MQ, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_SHARED_BUFFERS, PROTOCOL_F_STATUS,
  REPLIES, Req, SHARED_BUFFERS_SIZE, U64_SIZE, VRING_ADDR_SIZE, VRING_IDX_MASK, VRING_NOFD_MASK, VRING_STATE_SIZE, reqName,
} from '../../src/vhost/protocol';
import { VHOST_USER_GET_SHARED_BUFFERS } from '../../src/virtio/defs';

const msg = (request: number, payload: Buffer, fds: number[] = []): VhostMessage => ({ request, flags: FLAG_VERSION, payload, fds });

/** The error a function throws (fails the test if it throws nothing). */
function thrown(t: Test, fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  t.fail('expected an exception');
  return new Error('nothing thrown');
}

t.test('wire sizes match the vhost-user spec structs', async (t) => {
  t.equal(HDR_SIZE, 12, 'header: u32 request, u32 flags, u32 size');
  t.equal(U64_SIZE, 8);
  t.equal(VRING_STATE_SIZE, 8, 'vhost_vring_state');
  t.equal(VRING_ADDR_SIZE, 40, 'vhost_vring_addr');
  t.equal(MEM_HDR_SIZE, 8, 'vhost_user_memory header');
  t.equal(MEM_REGION_SIZE, 32, 'vhost_user_memory_region');
  t.equal(SHARED_BUFFERS_SIZE, 48, 'GET_SHARED_BUFFERS reply');
  t.equal(MAX_MEM_REGIONS, 8, 'VHOST_MEMORY_BASELINE_NREGIONS');
  t.ok(MAX_PAYLOAD >= MEM_HDR_SIZE + MAX_MEM_REGIONS * MEM_REGION_SIZE, 'the largest legal payload fits MAX_PAYLOAD');
  t.equal(FLAG_VERSION, 1);
  t.equal(FLAG_VERSION_MASK, 3);
  t.equal(FLAG_REPLY, 1 << 2);
  t.equal(FLAG_NEED_REPLY, 1 << 3);
  t.equal(VRING_IDX_MASK, 0xff);
  t.equal(VRING_NOFD_MASK, 0x100);
  t.equal(PROTOCOL_F_MQ, 0n);
  t.equal(PROTOCOL_F_REPLY_ACK, 3n);
  t.equal(PROTOCOL_F_CONFIG, 9n);
  t.equal(PROTOCOL_F_STATUS, 16n);
  t.ok(PROTOCOL_F_SHARED_BUFFERS > 20n && PROTOCOL_F_SHARED_BUFFERS < 64n, 'SHARED_BUFFERS bit is above the spec bits and fits u64');

  // encoded sizes agree with the constants
  t.equal(encodeHeader(1, 1, 0).length, HDR_SIZE);
  t.equal(u64(1n).length, U64_SIZE);
  t.equal(vringState(0, 0).length, VRING_STATE_SIZE);
  t.equal(vringAddr({ index: 0, flags: 0, desc: 0n, used: 0n, avail: 0n, log: 0n }).length, VRING_ADDR_SIZE);
  t.equal(memTable([]).length, MEM_HDR_SIZE);
  t.equal(memTable([{ guestPhysAddr: 0n, memorySize: 1n, userspaceAddr: 0n, mmapOffset: 0n }]).length, MEM_HDR_SIZE + MEM_REGION_SIZE);
  t.equal(
    sharedBuffersInfo({ base: 0n, size: 0n, bufSize: 0, bufCount: 0, partitionStart: 0, partitionCount: 0, giftHigh: 0, giftLow: 0, flags: 0 }).length,
    SHARED_BUFFERS_SIZE,
  );
});

t.test('request ids and names', async (t) => {
  t.equal(Req.GET_FEATURES, 1);
  t.equal(Req.SET_MEM_TABLE, 5);
  t.equal(Req.SET_VRING_KICK, 12);
  t.equal(Req.GET_PROTOCOL_FEATURES, 15);
  t.equal(Req.GET_QUEUE_NUM, 17);
  t.equal(Req.SET_VRING_ENABLE, 18);
  t.equal(Req.GET_MAX_MEM_SLOTS, 36);
  t.equal(Req.SET_STATUS, 39);
  t.equal(Req.GET_STATUS, 40);
  t.equal(Req.GET_SHARED_BUFFERS, VHOST_USER_GET_SHARED_BUFFERS);
  t.ok(VHOST_USER_GET_SHARED_BUFFERS > 1000, 'GET_SHARED_BUFFERS is far outside the spec range');

  t.equal(reqName(1), 'GET_FEATURES');
  t.equal(reqName(8), 'SET_VRING_NUM');
  t.equal(reqName(9), 'SET_VRING_ADDR');
  t.equal(reqName(40), 'GET_STATUS');
  t.equal(reqName(VHOST_USER_GET_SHARED_BUFFERS), 'GET_SHARED_BUFFERS');
  t.equal(reqName(99), 'UNKNOWN_99');
  t.equal(reqName(0), 'UNKNOWN_0');
  t.equal(reqName(41), 'UNKNOWN_41');
  const names = new Set<string>();
  for (let i = 1; i <= 40; i++) {
    const n = reqName(i);
    t.notMatch(n, /^UNKNOWN/, `request ${i} has a name`);
    names.add(n);
  }
  t.equal(names.size, 40, 'names are distinct');

  for (const r of [Req.GET_FEATURES, Req.GET_PROTOCOL_FEATURES, Req.GET_VRING_BASE, Req.GET_QUEUE_NUM, Req.GET_SHARED_BUFFERS, Req.GET_STATUS]) {
    t.ok(REPLIES.has(r), `${reqName(r)} answers with a reply`);
  }
  for (const r of [Req.SET_FEATURES, Req.SET_OWNER, Req.SET_MEM_TABLE, Req.SET_VRING_NUM, Req.SET_VRING_KICK, Req.SET_VRING_ENABLE]) {
    t.notOk(REPLIES.has(r), `${reqName(r)} takes REPLY_ACK`);
  }
});

t.test('header and message encoding', async (t) => {
  const h = encodeHeader(0xdeadbeef, FLAG_VERSION | FLAG_NEED_REPLY, 0x1234);
  t.equal(h.readUInt32LE(0), 0xdeadbeef);
  t.equal(h.readUInt32LE(4), 9);
  t.equal(h.readUInt32LE(8), 0x1234);

  const payload = Buffer.from([1, 2, 3, 4, 5]);
  const m = encodeMessage(Req.SET_VRING_NUM, FLAG_VERSION, payload);
  t.equal(m.length, HDR_SIZE + 5);
  t.equal(m.readUInt32LE(0), Req.SET_VRING_NUM);
  t.equal(m.readUInt32LE(4), FLAG_VERSION);
  t.equal(m.readUInt32LE(8), 5, 'size field is the payload length');
  t.same([...m.subarray(HDR_SIZE)], [1, 2, 3, 4, 5]);

  const r = encodeReply(Req.GET_FEATURES, u64(0x1_0000_0001n));
  t.equal(r.readUInt32LE(0), Req.GET_FEATURES);
  t.equal(r.readUInt32LE(4), FLAG_VERSION | FLAG_REPLY, 'reply flags: version 1 + REPLY');
  t.equal(r.readUInt32LE(8), 8);
  t.equal(r.readBigUInt64LE(HDR_SIZE), 0x1_0000_0001n);

  const empty = encodeMessage(Req.SET_OWNER, FLAG_VERSION, Buffer.alloc(0));
  t.equal(empty.length, HDR_SIZE);
  t.equal(empty.readUInt32LE(8), 0);
});

t.test('u64 round trip and size check', async (t) => {
  for (const v of [0n, 1n, 0x1_0000_0000n, (1n << 64n) - 1n, 1n << 63n, 0x1234_5678_9abc_def0n]) {
    t.equal(decodeU64(msg(Req.SET_FEATURES, u64(v))), v, `0x${v.toString(16)}`);
  }
  t.same([...u64(0x0102030405060708n)], [8, 7, 6, 5, 4, 3, 2, 1], 'little-endian');
  for (const [req, name] of [[Req.SET_FEATURES, 'SET_FEATURES'], [Req.SET_PROTOCOL_FEATURES, 'SET_PROTOCOL_FEATURES'], [Req.SET_VRING_KICK, 'SET_VRING_KICK']] as const) {
    for (const len of [0, 4, 7, 9, 16]) {
      const e = thrown(t, () => decodeU64(msg(req, Buffer.alloc(len))));
      t.type(e, ProtocolError);
      t.match(e.message, new RegExp(`^${name}: payload is ${len} bytes, expected 8$`), `${name} with ${len} bytes`);
    }
  }
});

t.test('vring state round trip and size check', async (t) => {
  const cases: [number, number][] = [[0, 256], [1, 0xffff], [0xffffffff, 0], [7, 0x8000_0001]];
  for (const [index, num] of cases) {
    const b = vringState(index, num);
    t.equal(b.readUInt32LE(0), index, 'index at byte 0');
    t.equal(b.readUInt32LE(4), num, 'num at byte 4');
    t.same(decodeVringState(msg(Req.SET_VRING_NUM, b)), { index, num });
  }
  for (const [req, name] of [[Req.SET_VRING_NUM, 'SET_VRING_NUM'], [Req.SET_VRING_BASE, 'SET_VRING_BASE'], [Req.GET_VRING_BASE, 'GET_VRING_BASE'], [Req.SET_VRING_ENABLE, 'SET_VRING_ENABLE']] as const) {
    for (const len of [0, 3, 7, 9, 40]) {
      const e = thrown(t, () => decodeVringState(msg(req, Buffer.alloc(len))));
      t.type(e, ProtocolError);
      t.match(e.message, `${name}: payload is ${len} bytes, expected 8`);
    }
  }
});

t.test('vring addr round trip and size check', async (t) => {
  const a: VringAddr = {
    index: 1, flags: 1, desc: 0x7f00_1234_5000n, used: 0x7f00_1234_6000n, avail: 0x7f00_1234_5800n, log: (1n << 64n) - 1n,
  };
  const b = vringAddr(a);
  t.equal(b.readUInt32LE(0), 1, 'index');
  t.equal(b.readUInt32LE(4), 1, 'flags');
  t.equal(b.readBigUInt64LE(8), a.desc, 'desc_user_addr at 8');
  t.equal(b.readBigUInt64LE(16), a.used, 'used_user_addr at 16');
  t.equal(b.readBigUInt64LE(24), a.avail, 'avail_user_addr at 24');
  t.equal(b.readBigUInt64LE(32), a.log, 'log_guest_addr at 32');
  t.same(decodeVringAddr(msg(Req.SET_VRING_ADDR, b)), a);
  for (const len of [0, 8, 32, 39, 41, 48]) {
    const e = thrown(t, () => decodeVringAddr(msg(Req.SET_VRING_ADDR, Buffer.alloc(len))));
    t.type(e, ProtocolError);
    t.match(e.message, `SET_VRING_ADDR: payload is ${len} bytes, expected 40`);
  }
});

t.test('shared buffers info round trip and size check', async (t) => {
  const s: SharedBuffersInfo = {
    base: 0x40_0000_0000n, size: 0x20_0000n, bufSize: 2048, bufCount: 1024,
    partitionStart: 512, partitionCount: 256, giftHigh: 320, giftLow: 256, flags: 1,
  };
  const b = sharedBuffersInfo(s);
  t.equal(b.readBigUInt64LE(0), s.base);
  t.equal(b.readBigUInt64LE(8), s.size);
  t.same([16, 20, 24, 28, 32, 36, 40, 44].map((o) => b.readUInt32LE(o)), [2048, 1024, 512, 256, 320, 256, 1, 0]);
  t.same(decodeSharedBuffersInfo(msg(Req.GET_SHARED_BUFFERS, b)), s);
  for (const len of [0, 8, 32, 40, 47, 49]) {
    const e = thrown(t, () => decodeSharedBuffersInfo(msg(Req.GET_SHARED_BUFFERS, Buffer.alloc(len))));
    t.type(e, ProtocolError);
    t.match(e.message, `GET_SHARED_BUFFERS: payload is ${len} bytes, expected 48`);
  }
});

t.test('memory table', async (t) => {
  const region = (i: number): MemRegionDesc => ({
    guestPhysAddr: BigInt(i) * 0x1000_0000n,
    memorySize: 0x20_0000n + BigInt(i),
    userspaceAddr: 0x7f00_0000_0000n + BigInt(i) * 0x1000_0000n,
    mmapOffset: BigInt(i) * 0x1000n,
  });
  const fds = (n: number) => Array.from({ length: n }, (_, i) => 100 + i);

  for (const n of [1, 2, 8]) {
    const regions = Array.from({ length: n }, (_, i) => region(i));
    const p = memTable(regions);
    t.equal(p.length, MEM_HDR_SIZE + n * MEM_REGION_SIZE);
    t.equal(p.readUInt32LE(0), n, 'nregions');
    t.equal(p.readUInt32LE(4), 0, 'padding');
    t.same(decodeMemTable(msg(Req.SET_MEM_TABLE, p, fds(n))), regions, `${n} regions round-trip`);
  }
  // field order inside a region
  const one = memTable([region(3)]);
  t.equal(one.readBigUInt64LE(8), region(3).guestPhysAddr, 'guest_phys_addr first');
  t.equal(one.readBigUInt64LE(16), region(3).memorySize, 'memory_size');
  t.equal(one.readBigUInt64LE(24), region(3).userspaceAddr, 'userspace_addr');
  t.equal(one.readBigUInt64LE(32), region(3).mmapOffset, 'mmap_offset');

  // both accepted sizes: n regions, or all 8 slots with n used
  const full = Buffer.alloc(MEM_HDR_SIZE + MAX_MEM_REGIONS * MEM_REGION_SIZE);
  memTable([region(1), region(2)]).copy(full);
  full.writeBigUInt64LE(0xdeadn, MEM_HDR_SIZE + 2 * MEM_REGION_SIZE); // junk in an unused slot
  t.same(decodeMemTable(msg(Req.SET_MEM_TABLE, full, fds(2))), [region(1), region(2)], '8-slot payload with 2 regions');

  const err = (p: Buffer, nfds: number) => {
    const e = thrown(t, () => decodeMemTable(msg(Req.SET_MEM_TABLE, p, fds(nfds))));
    t.type(e, ProtocolError);
    return e.message;
  };
  t.match(err(memTable([]), 0), /^SET_MEM_TABLE: 0 regions/, '0 regions');
  const nine = Buffer.alloc(MEM_HDR_SIZE + 9 * MEM_REGION_SIZE);
  nine.writeUInt32LE(9, 0);
  t.match(err(nine, 9), /^SET_MEM_TABLE: 9 regions \(1\.\.8 allowed\)/, '9 regions');
  const huge = Buffer.alloc(MEM_HDR_SIZE);
  huge.writeUInt32LE(0xffffffff, 0);
  t.match(err(huge, 0), /^SET_MEM_TABLE: 4294967295 regions/, '2^32-1 regions');
  t.match(err(Buffer.alloc(4), 0), /^SET_MEM_TABLE: payload is 4 bytes, shorter than its header/, 'short payload');
  t.match(err(Buffer.alloc(0), 0), /^SET_MEM_TABLE: payload is 0 bytes/, 'empty payload');
  t.match(err(memTable([region(0), region(1)]), 1), /^SET_MEM_TABLE: 2 regions but 1 fds/, 'fewer fds than regions');
  t.match(err(memTable([region(0)]), 2), /^SET_MEM_TABLE: 1 regions but 2 fds/, 'more fds than regions');
  const truncated = memTable([region(0), region(1)]).subarray(0, MEM_HDR_SIZE + MEM_REGION_SIZE + 16);
  t.match(err(truncated, 2), /^SET_MEM_TABLE: payload is 56 bytes for 2 regions/, 'truncated region');
  const claimsMore = memTable([region(0)]);
  claimsMore.writeUInt32LE(3, 0);
  t.match(err(claimsMore, 3), /^SET_MEM_TABLE: payload is 40 bytes for 3 regions/, 'count larger than the payload');
  const between = Buffer.alloc(MEM_HDR_SIZE + 5 * MEM_REGION_SIZE);
  between.writeUInt32LE(2, 0);
  t.match(err(between, 2), /payload is 168 bytes for 2 regions/, 'neither n nor 8 slots');
});
