/**
 * The Shared Buffers region reached as a "shared BAR": the region file
 * mapped whole (an ivshmem BAR inside a VM, or the file itself for the
 * host-side mode), with no GET_SHARED_BUFFERS. The geometry and this
 * port's partition come from the region header the switch wrote at the end
 * of the region (src/shm/region-header.ts); the port is found by name or by
 * MAC. Descriptors carry the guest-physical address at which this VM sees
 * the region (the BAR's base) plus the buffer's offset.
 *
 * The header is validated before use (readRegionHeader), and the mapping
 * must be exactly the size the header states: a VM of the same domain may
 * have scribbled on it, which reaches only VMs that already trust each
 * other (docs/design.md, "Trust model").
 */
import { type RegionHeader, type RegionPort, readRegionHeader } from '../shm/region-header';
import { REGION_PORT_F_SWAP } from '../shm/region-header';
import { type FetchedRegion, SharedRegion } from './shared-region';

/** Which port entry of the header is ours. */
export interface PortSelector {
  /** The port's name in the switch config (--port). */
  port?: string;
  /** The port's MAC (the virtio-net device's, inside a VM). */
  mac?: Uint8Array;
}

const macText = (m: Uint8Array): string => [...m].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** The header's entry for this port: by name first, else by a non-zero MAC. */
export function findPortEntry(h: RegionHeader, sel: PortSelector): RegionPort {
  if (sel.port !== undefined) {
    const p = h.ports.find((e) => e.name === sel.port);
    if (p) return p;
  }
  const mac = sel.mac;
  if (mac && mac.some((x) => x !== 0)) {
    const p = h.ports.find((e) => e.mac.length === 6 && e.mac.every((x, i) => x === mac[i]));
    if (p) return p;
  }
  const known = h.ports.map((e) => e.name).join(', ') || 'none';
  const want = [sel.port !== undefined ? `name "${sel.port}"` : '', mac ? `MAC ${macText(mac)}` : ''].filter(Boolean).join(' or ');
  throw new Error(`region header of domain "${h.domain}" lists no port with ${want || 'a name or MAC (give --port)'} (ports: ${known})`);
}

/**
 * The SharedRegion for a mapped region (`buffer`, the whole region) that
 * this VM sees at guest-physical `gpa`, with the port's watermarks.
 */
export function regionFromBar(
  buffer: ArrayBuffer, gpa: number, sel: PortSelector, opts: { giftHigh?: number; giftLow?: number } = {},
): FetchedRegion & { header: RegionHeader; entry: RegionPort } {
  const header = readRegionHeader(new Uint8Array(buffer));
  if (header.buffersOffset !== 0) throw new Error(`region header: buffersOffset ${header.buffersOffset} is not 0 (this driver expects buffer 0 at the region start)`);
  const entry = findPortEntry(header, sel);
  const swap = (entry.flags & REGION_PORT_F_SWAP) !== 0;
  const region = new SharedRegion(buffer, gpa, header.bufSize, header.bufCount, entry.partitionStart, entry.partitionCount, swap);
  if (swap) return { region, buffer, giftHigh: Infinity, giftLow: Infinity, header, entry };
  const giftHigh = opts.giftHigh ?? (entry.giftHigh || Infinity);
  return { region, buffer, giftHigh, giftLow: opts.giftLow ?? (entry.giftLow || giftHigh), header, entry };
}
