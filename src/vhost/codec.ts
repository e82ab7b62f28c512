/**
 * Encoding and decoding of vhost-user messages and payloads, derived from
 * the field tables in protocol.ts. Every decoder checks the payload size
 * against its table and throws a ProtocolError naming the request and the
 * problem.
 */
import type { Field, StructValue, WireStruct } from './layout';
import {
  FLAG_REPLY, FLAG_VERSION, HEADER, MAX_MEM_REGIONS, MEMORY_HEADER, MEMORY_REGION, SHARED_BUFFERS_REPLY, U64_PAYLOAD,
  VRING_ADDR, VRING_STATE, reqName,
} from './protocol';

export class ProtocolError extends Error {}

export interface VhostMessage {
  request: number;
  flags: number;
  payload: Buffer;
  /** File descriptors that arrived with the message; the handler owns them. */
  fds: number[];
}

export type VringState = StructValue<typeof VRING_STATE.fields>;
export type VringAddr = StructValue<typeof VRING_ADDR.fields>;
export type MemRegionDesc = StructValue<typeof MEMORY_REGION.fields>;
export type SharedBuffersInfo = StructValue<typeof SHARED_BUFFERS_REPLY.fields>;

/** The whole payload as one struct, or a ProtocolError naming the request. */
function decodeWhole<F extends readonly Field[]>(s: WireStruct<F>, msg: VhostMessage): StructValue<F> {
  if (msg.payload.length !== s.size) {
    throw new ProtocolError(`${reqName(msg.request)}: payload is ${msg.payload.length} bytes, expected ${s.size}`);
  }
  return s.read(msg.payload, 0);
}

export function encodeHeader(request: number, flags: number, size: number): Buffer {
  return HEADER.encode({ request, flags, size });
}

export function encodeMessage(request: number, flags: number, payload: Buffer): Buffer {
  return Buffer.concat([encodeHeader(request, flags, payload.length), payload]);
}

export function encodeReply(request: number, payload: Buffer): Buffer {
  return encodeMessage(request, FLAG_VERSION | FLAG_REPLY, payload);
}

export function u64(value: bigint): Buffer {
  return U64_PAYLOAD.encode({ value });
}

export function decodeU64(msg: VhostMessage): bigint {
  return decodeWhole(U64_PAYLOAD, msg).value;
}

export function vringState(index: number, num: number): Buffer {
  return VRING_STATE.encode({ index, num });
}

export function decodeVringState(msg: VhostMessage): VringState {
  return decodeWhole(VRING_STATE, msg);
}

export function vringAddr(a: VringAddr): Buffer {
  return VRING_ADDR.encode(a);
}

export function decodeVringAddr(msg: VhostMessage): VringAddr {
  return decodeWhole(VRING_ADDR, msg);
}

export function memTable(regions: MemRegionDesc[]): Buffer {
  const b = Buffer.alloc(MEMORY_HEADER.size + MEMORY_REGION.size * regions.length);
  MEMORY_HEADER.write(b, 0, { nregions: regions.length });
  regions.forEach((r, i) => MEMORY_REGION.write(b, MEMORY_HEADER.size + i * MEMORY_REGION.size, r));
  return b;
}

export function decodeMemTable(msg: VhostMessage): MemRegionDesc[] {
  const p = msg.payload;
  if (p.length < MEMORY_HEADER.size) throw new ProtocolError(`SET_MEM_TABLE: payload is ${p.length} bytes, shorter than its header`);
  const n = MEMORY_HEADER.read(p, 0).nregions;
  if (n === 0 || n > MAX_MEM_REGIONS) throw new ProtocolError(`SET_MEM_TABLE: ${n} regions (1..${MAX_MEM_REGIONS} allowed)`);
  // QEMU sends only the used regions; some front-ends send all 8 slots.
  const sizeFor = (regions: number) => MEMORY_HEADER.size + regions * MEMORY_REGION.size;
  if (p.length !== sizeFor(n) && p.length !== sizeFor(MAX_MEM_REGIONS)) {
    throw new ProtocolError(`SET_MEM_TABLE: payload is ${p.length} bytes for ${n} regions`);
  }
  if (msg.fds.length !== n) throw new ProtocolError(`SET_MEM_TABLE: ${n} regions but ${msg.fds.length} fds`);
  return Array.from({ length: n }, (_, i) => MEMORY_REGION.read(p, sizeFor(i)));
}

export function sharedBuffersInfo(s: SharedBuffersInfo): Buffer {
  return SHARED_BUFFERS_REPLY.encode(s);
}

export function decodeSharedBuffersInfo(msg: VhostMessage): SharedBuffersInfo {
  return decodeWhole(SHARED_BUFFERS_REPLY, msg);
}
