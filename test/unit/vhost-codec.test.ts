/**
 * Unit tests for the vhost-user codec (src/vhost/codec.ts), the field
 * tables it is derived from (src/vhost/layout.ts, src/vhost/protocol.ts)
 * and the request table: sizes against qemu's docs/interop/vhost-user.rst,
 * round trips, size checks with errors that name the request,
 * SET_MEM_TABLE edge cases, request names and which requests reply.
 */
import t, { type Test } from 'tap';
import {
  ProtocolError, type VhostMessage, decodeMemTable, decodeSharedBuffersInfo, decodeU64, decodeVringAddr,
  decodeVringState, encodeHeader, encodeMessage, encodeReply, memTable, sharedBuffersInfo, u64, vringAddr, vringState,
  type MemRegionDesc, type SharedBuffersInfo, type VringAddr,
} from '../../src/vhost/codec';
import { FIELD_WIDTH, type Field, type WireStruct, wireStruct } from '../../src/vhost/layout';
import {
  FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, FLAG_VERSION_MASK, HEADER, MAX_MEM_REGIONS, MAX_PAYLOAD, MEMORY_HEADER,
  MEMORY_REGION, PROTOCOL_F_CONFIG, PROTOCOL_F_MQ, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_SHARED_BUFFERS, PROTOCOL_F_STATUS,
  REPLIES, Req, SHARED_BUFFERS_REPLY, U64_PAYLOAD, VHOST_USER_F_PROTOCOL_FEATURES, VRING_ADDR, VRING_IDX_MASK,
  VRING_NOFD_MASK, VRING_STATE, reqName,
} from '../../src/vhost/protocol';

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

/** A WireStruct of any field table (their value types differ). */
type AnyStruct = Pick<WireStruct<readonly Field[]>, 'name' | 'fields' | 'size'> & {
  encode(v: never): Buffer;
  write(b: Buffer, at: number, v: never): void;
  read(b: Buffer, at: number): object;
};

/** Every wire struct with its size in the spec (qemu docs/interop/vhost-user.rst, docs/protocol.md). */
const SPEC_SIZES: [AnyStruct, number][] = [
  [HEADER, 12], [U64_PAYLOAD, 8], [VRING_STATE, 8], [VRING_ADDR, 40], [MEMORY_HEADER, 8], [MEMORY_REGION, 32],
  [SHARED_BUFFERS_REPLY, 48],
];

t.test('every wire struct: packed fields, the spec size, encode/decode from one table', async (t) => {
  for (const [s, specSize] of SPEC_SIZES) {
    const widths = s.fields.map((f) => FIELD_WIDTH[f.type]);
    t.equal(s.size, widths.reduce((a, w) => a + w, 0), `${s.name}: size is the sum of its fields`);
    t.equal(s.size, specSize, `${s.name}: ${specSize} bytes as in the spec`);
    let end = 0;
    s.fields.forEach((f, i) => {
      t.equal(f.offset, end, `${s.name}.${f.name} follows the field before it`);
      end += widths[i];
    });
    t.equal(new Set(s.fields.map((f) => f.name)).size, s.fields.length, `${s.name}: field names are distinct`);
    // a distinct value per field survives a round trip; padding is written as 0 and not decoded
    const v: Record<string, number | bigint> = {};
    s.fields.forEach((f, i) => {
      if (f.type === 'u64') v[f.name] = 0x1_0000_0000n * BigInt(i + 1) + BigInt(i);
      else if (f.type === 'u32') v[f.name] = 0x1000 * (i + 1) + i;
    });
    const b = s.encode(v as never);
    t.equal(b.length, s.size, `${s.name}: encode writes size bytes`);
    t.same(s.read(b, 0), v, `${s.name}: round trip`);
    const dirty = Buffer.alloc(s.size, 0xff);
    s.write(dirty, 0, v as never);
    t.same(dirty, b, `${s.name}: write covers every byte, padding as 0`);
  }
  const gap = [{ name: 'a', offset: 0, type: 'u32' }, { name: 'b', offset: 8, type: 'u64' }] as const;
  t.throws(() => wireStruct('gap', gap), /gap\.b: offset 8/, 'a gap is refused');
  const overlap = [{ name: 'a', offset: 0, type: 'u64' }, { name: 'b', offset: 4, type: 'u32' }] as const;
  t.throws(() => wireStruct('overlap', overlap), /overlap\.b: offset 4/, 'an overlap is refused');
});

t.test('wire numbers match the vhost-user spec', async (t) => {
  t.equal(MAX_MEM_REGIONS, 8, 'VHOST_MEMORY_BASELINE_NREGIONS');
  t.ok(MAX_PAYLOAD >= MEMORY_HEADER.size + MAX_MEM_REGIONS * MEMORY_REGION.size, 'the largest legal payload fits MAX_PAYLOAD');
  t.equal(FLAG_VERSION, 1);
  t.equal(FLAG_VERSION_MASK, 3);
  t.equal(FLAG_REPLY, 1 << 2);
  t.equal(FLAG_NEED_REPLY, 1 << 3);
  t.equal(VRING_IDX_MASK, 0xff);
  t.equal(VRING_NOFD_MASK, 0x100);
  t.equal(VHOST_USER_F_PROTOCOL_FEATURES, 30n);
  t.equal(PROTOCOL_F_MQ, 0n);
  t.equal(PROTOCOL_F_REPLY_ACK, 3n);
  t.equal(PROTOCOL_F_CONFIG, 9n);
  t.equal(PROTOCOL_F_STATUS, 16n);
  t.ok(PROTOCOL_F_SHARED_BUFFERS > 20n && PROTOCOL_F_SHARED_BUFFERS < 64n, 'SHARED_BUFFERS bit is above the spec bits and fits u64');

  // the codec's encoders produce the tables' sizes
  t.equal(encodeHeader(1, 1, 0).length, HEADER.size);
  t.equal(u64(1n).length, U64_PAYLOAD.size);
  t.equal(vringState(0, 0).length, VRING_STATE.size);
  t.equal(vringAddr({ index: 0, flags: 0, desc: 0n, used: 0n, avail: 0n, log: 0n }).length, VRING_ADDR.size);
  t.equal(memTable([]).length, MEMORY_HEADER.size);
  t.equal(memTable([{ guestPhysAddr: 0n, memorySize: 1n, userspaceAddr: 0n, mmapOffset: 0n }]).length, MEMORY_HEADER.size + MEMORY_REGION.size);
  t.equal(
    sharedBuffersInfo({ base: 0n, size: 0n, bufSize: 0, bufCount: 0, partitionStart: 0, partitionCount: 0, giftHigh: 0, giftLow: 0, flags: 0 }).length,
    SHARED_BUFFERS_REPLY.size,
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
  t.equal(Req.GET_SHARED_BUFFERS, 0x5a00);
  t.ok(Req.GET_SHARED_BUFFERS > 1000, 'GET_SHARED_BUFFERS is far outside the spec range');

  t.equal(reqName(1), 'GET_FEATURES');
  t.equal(reqName(8), 'SET_VRING_NUM');
  t.equal(reqName(9), 'SET_VRING_ADDR');
  t.equal(reqName(40), 'GET_STATUS');
  t.equal(reqName(Req.GET_SHARED_BUFFERS), 'GET_SHARED_BUFFERS');
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

  for (const [name, id] of Object.entries(Req)) t.equal(reqName(id), name, `Req.${name} is named ${name}`);
  t.equal(new Set(Object.values(Req)).size, Object.keys(Req).length, 'request ids are distinct');
  t.same(
    [...REPLIES].sort((a, b) => a - b),
    [Req.GET_FEATURES, Req.GET_VRING_BASE, Req.GET_PROTOCOL_FEATURES, Req.GET_QUEUE_NUM, Req.GET_CONFIG, Req.GET_INFLIGHT_FD,
      Req.GET_MAX_MEM_SLOTS, Req.GET_STATUS, Req.GET_SHARED_BUFFERS],
    'exactly these requests answer with a reply message',
  );
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
  t.equal(m.length, HEADER.size + 5);
  t.equal(m.readUInt32LE(0), Req.SET_VRING_NUM);
  t.equal(m.readUInt32LE(4), FLAG_VERSION);
  t.equal(m.readUInt32LE(8), 5, 'size field is the payload length');
  t.same([...m.subarray(HEADER.size)], [1, 2, 3, 4, 5]);

  const r = encodeReply(Req.GET_FEATURES, u64(0x1_0000_0001n));
  t.equal(r.readUInt32LE(0), Req.GET_FEATURES);
  t.equal(r.readUInt32LE(4), FLAG_VERSION | FLAG_REPLY, 'reply flags: version 1 + REPLY');
  t.equal(r.readUInt32LE(8), 8);
  t.equal(r.readBigUInt64LE(HEADER.size), 0x1_0000_0001n);

  const empty = encodeMessage(Req.SET_OWNER, FLAG_VERSION, Buffer.alloc(0));
  t.equal(empty.length, HEADER.size);
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
    t.equal(p.length, MEMORY_HEADER.size + n * MEMORY_REGION.size);
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
  const full = Buffer.alloc(MEMORY_HEADER.size + MAX_MEM_REGIONS * MEMORY_REGION.size);
  memTable([region(1), region(2)]).copy(full);
  full.writeBigUInt64LE(0xdeadn, MEMORY_HEADER.size + 2 * MEMORY_REGION.size); // junk in an unused slot
  t.same(decodeMemTable(msg(Req.SET_MEM_TABLE, full, fds(2))), [region(1), region(2)], '8-slot payload with 2 regions');

  const err = (p: Buffer, nfds: number) => {
    const e = thrown(t, () => decodeMemTable(msg(Req.SET_MEM_TABLE, p, fds(nfds))));
    t.type(e, ProtocolError);
    return e.message;
  };
  t.match(err(memTable([]), 0), /^SET_MEM_TABLE: 0 regions/, '0 regions');
  const nine = Buffer.alloc(MEMORY_HEADER.size + 9 * MEMORY_REGION.size);
  nine.writeUInt32LE(9, 0);
  t.match(err(nine, 9), /^SET_MEM_TABLE: 9 regions \(1\.\.8 allowed\)/, '9 regions');
  const huge = Buffer.alloc(MEMORY_HEADER.size);
  huge.writeUInt32LE(0xffffffff, 0);
  t.match(err(huge, 0), /^SET_MEM_TABLE: 4294967295 regions/, '2^32-1 regions');
  t.match(err(Buffer.alloc(4), 0), /^SET_MEM_TABLE: payload is 4 bytes, shorter than its header/, 'short payload');
  t.match(err(Buffer.alloc(0), 0), /^SET_MEM_TABLE: payload is 0 bytes/, 'empty payload');
  t.match(err(memTable([region(0), region(1)]), 1), /^SET_MEM_TABLE: 2 regions but 1 fds/, 'fewer fds than regions');
  t.match(err(memTable([region(0)]), 2), /^SET_MEM_TABLE: 1 regions but 2 fds/, 'more fds than regions');
  const truncated = memTable([region(0), region(1)]).subarray(0, MEMORY_HEADER.size + MEMORY_REGION.size + 16);
  t.match(err(truncated, 2), /^SET_MEM_TABLE: payload is 56 bytes for 2 regions/, 'truncated region');
  const claimsMore = memTable([region(0)]);
  claimsMore.writeUInt32LE(3, 0);
  t.match(err(claimsMore, 3), /^SET_MEM_TABLE: payload is 40 bytes for 3 regions/, 'count larger than the payload');
  const between = Buffer.alloc(MEMORY_HEADER.size + 5 * MEMORY_REGION.size);
  between.writeUInt32LE(2, 0);
  t.match(err(between, 2), /payload is 168 bytes for 2 regions/, 'neither n nor 8 slots');
});
