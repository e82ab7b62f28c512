/**
 * The region header (docs/protocol.md, "The region header"): the last 64 KiB
 * of a sharing domain's region, written by the switch only, so that a VM
 * that maps the region as an ivshmem BAR (no vhost-user request of its own)
 * learns the geometry and its port's partition from the region itself. The
 * same header is in the memfd a SHARED_BUFFERS front-end gets.
 *
 * A VM can write the header (the BAR is read-write): that reaches only the
 * VMs of the same sharing domain, which trust each other, and the switch
 * never reads it back. So the reader below validates every field and names
 * the first bad one; a guest uses nothing from it without bounds checks.
 */
import { wireStruct } from '../vhost/layout';

export const REGION_MAGIC = 'zcswitch';
export const REGION_HEADER_VERSION = 1;
/** Bytes of the header, at the end of the region. */
export const REGION_HEADER_SIZE = 65536;
export const REGION_PORT_ENTRY_SIZE = 64;
/** Where port entry 0 starts in the header. */
export const REGION_PORTS_OFFSET = 128;
export const REGION_MAX_PORTS = (REGION_HEADER_SIZE - REGION_PORTS_OFFSET) / REGION_PORT_ENTRY_SIZE;
/** Port entry flag: bridge semantics (the same bit as SHARED_BUFFERS_F_SWAP). */
export const REGION_PORT_F_SWAP = 1;

export const regionHeaderStruct = wireStruct('region header', [
  { name: 'magic', offset: 0, type: 'text8' },
  { name: 'version', offset: 8, type: 'u32' },
  { name: 'headerSize', offset: 12, type: 'u32' },
  { name: 'regionSize', offset: 16, type: 'u64' },
  { name: 'bufSize', offset: 24, type: 'u32' },
  { name: 'bufCount', offset: 28, type: 'u32' },
  { name: 'buffersOffset', offset: 32, type: 'u64' },
  { name: 'portCount', offset: 40, type: 'u32' },
  { name: 'portEntrySize', offset: 44, type: 'u32' },
  { name: 'generation', offset: 48, type: 'u32' },
  { name: 'reserved0', offset: 52, type: 'pad32' },
  { name: 'reserved1', offset: 56, type: 'pad32' },
  { name: 'reserved2', offset: 60, type: 'pad32' },
  { name: 'domain', offset: 64, type: 'text32' },
  { name: 'reserved3', offset: 96, type: 'pad32' },
  { name: 'reserved4', offset: 100, type: 'pad32' },
  { name: 'reserved5', offset: 104, type: 'pad32' },
  { name: 'reserved6', offset: 108, type: 'pad32' },
  { name: 'reserved7', offset: 112, type: 'pad32' },
  { name: 'reserved8', offset: 116, type: 'pad32' },
  { name: 'reserved9', offset: 120, type: 'pad32' },
  { name: 'reserved10', offset: 124, type: 'pad32' },
] as const);

export const regionPortStruct = wireStruct('region port entry', [
  { name: 'name', offset: 0, type: 'text32' },
  { name: 'mac', offset: 32, type: 'bytes6' },
  { name: 'reserved0', offset: 38, type: 'pad16' },
  { name: 'partitionStart', offset: 40, type: 'u32' },
  { name: 'partitionCount', offset: 44, type: 'u32' },
  { name: 'giftHigh', offset: 48, type: 'u32' },
  { name: 'giftLow', offset: 52, type: 'u32' },
  { name: 'flags', offset: 56, type: 'u32' },
  { name: 'reserved1', offset: 60, type: 'pad32' },
] as const);

if (regionHeaderStruct.size !== REGION_PORTS_OFFSET || regionPortStruct.size !== REGION_PORT_ENTRY_SIZE) {
  throw new Error(`region header layout: ${regionHeaderStruct.size}/${regionPortStruct.size} bytes, expected ${REGION_PORTS_OFFSET}/${REGION_PORT_ENTRY_SIZE}`);
}

/** One port of the domain as the header lists it. */
export interface RegionPort {
  name: string;
  /** Six bytes; all zero when the config gives none. */
  mac: Uint8Array;
  /** The buffers the port owns when it attaches with its partition in the pool. */
  partitionStart: number;
  partitionCount: number;
  giftHigh: number;
  giftLow: number;
  flags: number;
}

export interface RegionHeader {
  regionSize: number;
  bufSize: number;
  bufCount: number;
  buffersOffset: number;
  generation: number;
  domain: string;
  ports: RegionPort[];
}

/** The region's size for a geometry: the next power of two (an ivshmem BAR is one) that holds the buffers and the header. */
export function regionSizeFor(bufCount: number, bufSize: number): number {
  const need = bufCount * bufSize + REGION_HEADER_SIZE;
  let size = REGION_HEADER_SIZE;
  while (size < need) size *= 2;
  return size;
}

/** Byte offset of the header in a region of `regionSize` bytes. */
export const regionHeaderOffset = (regionSize: number): number => regionSize - REGION_HEADER_SIZE;

function view(mem: Uint8Array): Buffer {
  return Buffer.from(mem.buffer, mem.byteOffset, mem.byteLength);
}

/**
 * Write the header into the last 64 KiB of `region` (the whole mapping).
 * The port table goes first and the generation last, so a reader that sees
 * the generation change re-reads a table that is already complete.
 */
export function writeRegionHeader(region: Uint8Array, h: RegionHeader): void {
  if (region.byteLength !== h.regionSize) throw new RangeError(`region header: regionSize ${h.regionSize} but the mapping has ${region.byteLength} bytes`);
  if (h.ports.length > REGION_MAX_PORTS) throw new RangeError(`region header: ${h.ports.length} ports, at most ${REGION_MAX_PORTS} fit`);
  const b = view(region);
  const at = regionHeaderOffset(h.regionSize);
  const fields = {
    magic: REGION_MAGIC, version: REGION_HEADER_VERSION, headerSize: REGION_HEADER_SIZE, regionSize: BigInt(h.regionSize),
    bufSize: h.bufSize, bufCount: h.bufCount, buffersOffset: BigInt(h.buffersOffset), portCount: h.ports.length,
    portEntrySize: REGION_PORT_ENTRY_SIZE, generation: h.generation, domain: h.domain,
  };
  b.fill(0, at + REGION_PORTS_OFFSET, at + REGION_HEADER_SIZE);
  h.ports.forEach((p, k) => regionPortStruct.write(b, at + REGION_PORTS_OFFSET + k * REGION_PORT_ENTRY_SIZE, p));
  // Everything but the generation, then the generation (a 4-byte aligned store).
  regionHeaderStruct.write(b, at, { ...fields, generation: b.readUInt32LE(at + 48) });
  b.writeUInt32LE(h.generation >>> 0, at + 48);
}

/**
 * Read and check the header of `region` (the whole mapping: the header is
 * its last 64 KiB). Throws an Error naming the first field that is wrong;
 * what it returns is consistent: every partition lies inside bufCount, and
 * the buffers lie inside the region before the header.
 */
export function readRegionHeader(region: Uint8Array): RegionHeader {
  const size = region.byteLength;
  const bad = (field: string, why: string): Error => new Error(`region header: ${field} ${why}`);
  if (size < REGION_HEADER_SIZE) throw bad('regionSize', `cannot hold the header: the mapping has ${size} bytes, less than ${REGION_HEADER_SIZE}`);
  const b = view(region);
  const at = size - REGION_HEADER_SIZE;
  const h = regionHeaderStruct.read(b, at);
  if (h.magic !== REGION_MAGIC) throw bad('magic', `is ${JSON.stringify(h.magic)}, expected "${REGION_MAGIC}" (not a zcswitch region?)`);
  if (h.version !== REGION_HEADER_VERSION) throw bad('version', `is ${h.version}, this reader knows ${REGION_HEADER_VERSION}`);
  if (h.headerSize !== REGION_HEADER_SIZE) throw bad('headerSize', `is ${h.headerSize}, expected ${REGION_HEADER_SIZE}`);
  if (h.regionSize !== BigInt(size)) throw bad('regionSize', `is ${h.regionSize}, but the mapping has ${size} bytes`);
  if (h.bufSize === 0 || h.bufSize % 64 !== 0) throw bad('bufSize', `is ${h.bufSize}, expected a non-zero multiple of 64`);
  if (h.bufCount === 0) throw bad('bufCount', 'is 0');
  if (h.buffersOffset % 64n !== 0n) throw bad('buffersOffset', `is ${h.buffersOffset}, expected a multiple of 64`);
  if (h.buffersOffset + BigInt(h.bufCount) * BigInt(h.bufSize) > BigInt(at)) {
    throw bad('bufCount', `${h.bufCount} × bufSize ${h.bufSize} from buffersOffset ${h.buffersOffset} runs into the header at ${at}`);
  }
  if (h.portEntrySize !== REGION_PORT_ENTRY_SIZE) throw bad('portEntrySize', `is ${h.portEntrySize}, expected ${REGION_PORT_ENTRY_SIZE}`);
  if (h.portCount > REGION_MAX_PORTS) throw bad('portCount', `is ${h.portCount}, at most ${REGION_MAX_PORTS} fit`);
  const ports: RegionPort[] = [];
  for (let k = 0; k < h.portCount; k++) {
    let p: RegionPort;
    try {
      p = regionPortStruct.read(b, at + REGION_PORTS_OFFSET + k * REGION_PORT_ENTRY_SIZE);
    } catch (e) {
      throw bad(`ports[${k}]`, (e as Error).message);
    }
    if (p.partitionStart + p.partitionCount > h.bufCount) {
      throw bad(`ports[${k}].partitionCount`, `${p.partitionStart} + ${p.partitionCount} exceeds bufCount ${h.bufCount}`);
    }
    ports.push(p);
  }
  return {
    regionSize: size, bufSize: h.bufSize, bufCount: h.bufCount, buffersOffset: Number(h.buffersOffset),
    generation: h.generation, domain: h.domain, ports,
  };
}

/** The generation alone (cheap to poll: a reader re-reads the header when it changes). */
export function regionHeaderGeneration(region: Uint8Array): number {
  return view(region).readUInt32LE(region.byteLength - REGION_HEADER_SIZE + 48);
}
