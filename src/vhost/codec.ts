/**
 * Encoding and decoding of vhost-user messages and payloads. Every decoder
 * checks the payload size against the layout in protocol.ts and throws a
 * ProtocolError naming the request and the problem.
 */
import {
  FLAG_REPLY, FLAG_VERSION, HDR_SIZE, MAX_MEM_REGIONS, MEM_HDR_SIZE, MEM_REGION_SIZE,
  SHARED_BUFFERS_SIZE, U64_SIZE, VRING_ADDR_SIZE, VRING_STATE_SIZE, reqName,
} from './protocol';

export class ProtocolError extends Error {}

export interface VhostMessage {
  request: number;
  flags: number;
  payload: Buffer;
  /** File descriptors that arrived with the message; the handler owns them. */
  fds: number[];
}

export interface VringState { index: number; num: number }
export interface VringAddr { index: number; flags: number; desc: bigint; used: bigint; avail: bigint; log: bigint }
export interface MemRegionDesc { guestPhysAddr: bigint; memorySize: bigint; userspaceAddr: bigint; mmapOffset: bigint }
export interface SharedBuffersInfo {
  base: bigint; size: bigint; bufSize: number; bufCount: number;
  partitionStart: number; partitionCount: number; giftHigh: number; giftLow: number; flags: number;
}

function expectSize(msg: VhostMessage, size: number): void {
  if (msg.payload.length !== size) {
    throw new ProtocolError(`${reqName(msg.request)}: payload is ${msg.payload.length} bytes, expected ${size}`);
  }
}

export function encodeHeader(request: number, flags: number, size: number): Buffer {
  const b = Buffer.alloc(HDR_SIZE);
  b.writeUInt32LE(request, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(size, 8);
  return b;
}

export function encodeMessage(request: number, flags: number, payload: Buffer): Buffer {
  return Buffer.concat([encodeHeader(request, flags, payload.length), payload]);
}

export function encodeReply(request: number, payload: Buffer): Buffer {
  return encodeMessage(request, FLAG_VERSION | FLAG_REPLY, payload);
}

export function u64(v: bigint): Buffer {
  const b = Buffer.alloc(U64_SIZE);
  b.writeBigUInt64LE(v);
  return b;
}

export function decodeU64(msg: VhostMessage): bigint {
  expectSize(msg, U64_SIZE);
  return msg.payload.readBigUInt64LE(0);
}

export function vringState(index: number, num: number): Buffer {
  const b = Buffer.alloc(VRING_STATE_SIZE);
  b.writeUInt32LE(index, 0);
  b.writeUInt32LE(num, 4);
  return b;
}

export function decodeVringState(msg: VhostMessage): VringState {
  expectSize(msg, VRING_STATE_SIZE);
  return { index: msg.payload.readUInt32LE(0), num: msg.payload.readUInt32LE(4) };
}

export function vringAddr(a: VringAddr): Buffer {
  const b = Buffer.alloc(VRING_ADDR_SIZE);
  b.writeUInt32LE(a.index, 0);
  b.writeUInt32LE(a.flags, 4);
  b.writeBigUInt64LE(a.desc, 8);
  b.writeBigUInt64LE(a.used, 16);
  b.writeBigUInt64LE(a.avail, 24);
  b.writeBigUInt64LE(a.log, 32);
  return b;
}

export function decodeVringAddr(msg: VhostMessage): VringAddr {
  expectSize(msg, VRING_ADDR_SIZE);
  const p = msg.payload;
  return {
    index: p.readUInt32LE(0), flags: p.readUInt32LE(4), desc: p.readBigUInt64LE(8),
    used: p.readBigUInt64LE(16), avail: p.readBigUInt64LE(24), log: p.readBigUInt64LE(32),
  };
}

export function memTable(regions: MemRegionDesc[]): Buffer {
  const b = Buffer.alloc(MEM_HDR_SIZE + MEM_REGION_SIZE * regions.length);
  b.writeUInt32LE(regions.length, 0);
  regions.forEach((r, i) => {
    const o = MEM_HDR_SIZE + i * MEM_REGION_SIZE;
    b.writeBigUInt64LE(r.guestPhysAddr, o);
    b.writeBigUInt64LE(r.memorySize, o + 8);
    b.writeBigUInt64LE(r.userspaceAddr, o + 16);
    b.writeBigUInt64LE(r.mmapOffset, o + 24);
  });
  return b;
}

export function decodeMemTable(msg: VhostMessage): MemRegionDesc[] {
  const p = msg.payload;
  if (p.length < MEM_HDR_SIZE) throw new ProtocolError(`SET_MEM_TABLE: payload is ${p.length} bytes, shorter than its header`);
  const n = p.readUInt32LE(0);
  if (n === 0 || n > MAX_MEM_REGIONS) throw new ProtocolError(`SET_MEM_TABLE: ${n} regions (1..${MAX_MEM_REGIONS} allowed)`);
  // QEMU sends only the used regions; some front-ends send all 8 slots.
  if (p.length !== MEM_HDR_SIZE + n * MEM_REGION_SIZE && p.length !== MEM_HDR_SIZE + MAX_MEM_REGIONS * MEM_REGION_SIZE) {
    throw new ProtocolError(`SET_MEM_TABLE: payload is ${p.length} bytes for ${n} regions`);
  }
  if (msg.fds.length !== n) throw new ProtocolError(`SET_MEM_TABLE: ${n} regions but ${msg.fds.length} fds`);
  const out: MemRegionDesc[] = [];
  for (let i = 0; i < n; i++) {
    const o = MEM_HDR_SIZE + i * MEM_REGION_SIZE;
    out.push({
      guestPhysAddr: p.readBigUInt64LE(o), memorySize: p.readBigUInt64LE(o + 8),
      userspaceAddr: p.readBigUInt64LE(o + 16), mmapOffset: p.readBigUInt64LE(o + 24),
    });
  }
  return out;
}

export function sharedBuffersInfo(s: SharedBuffersInfo): Buffer {
  const b = Buffer.alloc(SHARED_BUFFERS_SIZE);
  b.writeBigUInt64LE(s.base, 0);
  b.writeBigUInt64LE(s.size, 8);
  b.writeUInt32LE(s.bufSize, 16);
  b.writeUInt32LE(s.bufCount, 20);
  b.writeUInt32LE(s.partitionStart, 24);
  b.writeUInt32LE(s.partitionCount, 28);
  b.writeUInt32LE(s.giftHigh, 32);
  b.writeUInt32LE(s.giftLow, 36);
  b.writeUInt32LE(s.flags, 40);
  return b;
}

export function decodeSharedBuffersInfo(msg: VhostMessage): SharedBuffersInfo {
  expectSize(msg, SHARED_BUFFERS_SIZE);
  const p = msg.payload;
  return {
    base: p.readBigUInt64LE(0), size: p.readBigUInt64LE(8), bufSize: p.readUInt32LE(16),
    bufCount: p.readUInt32LE(20), partitionStart: p.readUInt32LE(24), partitionCount: p.readUInt32LE(28),
    giftHigh: p.readUInt32LE(32), giftLow: p.readUInt32LE(36), flags: p.readUInt32LE(40),
  };
}
