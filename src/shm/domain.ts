/**
 * A sharing domain (docs/design.md, "Trust model"): a set of ports that share
 * one Shared Buffers region and one ownership ledger. Within a domain frames
 * move zero-copy and the VMs can read and write each other's in-flight
 * packets; across domains nothing is shared, and a frame is copied into the
 * receiver's own buffers. Every domain's region starts at the same guest
 * address for SHARED_BUFFERS front-ends: a VM maps only its own domain's, so
 * the window means "my domain's buffers" for each of them (a VM that maps it
 * as an ivshmem BAR sees it at the BAR's address: per-port windows,
 * src/shm/geometry.ts). The region's last 64 KiB are its header
 * (region-header.ts), rewritten by publishPorts.
 */
import { type LedgerCheck, OwnershipLedger } from './ledger';
import { type RegionPort, REGION_MAX_PORTS, writeRegionHeader } from './region-header';
import { SharedBuffers } from './shared-buffers';
import { fileIdentity } from '../../bindings';

export class SharingDomain {
  readonly shared: SharedBuffers;
  readonly ledger: OwnershipLedger;

  constructor(
    /** Index of the domain in the switch (what per-packet code compares). */
    readonly id: number,
    readonly name: string,
    bufCount: number,
    bufSize: number,
    base: number,
    /**
     * Worker threads (src/workers/): on the control plane, 'shared' puts the
     * ledger in shared memory; in a worker, the control plane's domain as
     * the worker maps it again (its region's fd, its ledger's memory).
     */
    from?: 'shared' | { fd: number; ledger: SharedArrayBuffer },
  ) {
    const view = typeof from === 'object' ? from : null;
    this.shared = new SharedBuffers(bufCount, bufSize, base, view?.fd ?? -1);
    this.ledger = new OwnershipLedger(bufCount, view?.ledger ?? (from === 'shared' ? 'shared' : undefined));
    this.fileId = fileIdentity(view?.fd ?? this.shared.fd);
    // The header is the control plane's to write.
    if (view === null) this.publishPorts([]);
  }

  /** "dev:ino" of the region's memfd: a front-end's memory region with this identity is this region (an ivshmem BAR). */
  readonly fileId: string;

  /** The link QEMU opens as mem-path (src/switch/region-file.ts), once published. */
  regionFile: string | null = null;

  /** Bumped each time the header's port table is rewritten. */
  generation = 0;

  /**
   * Write the region header with this port table (the domain's ports, in
   * order) and a new generation. Names longer than 32 bytes are cut there;
   * ports beyond REGION_MAX_PORTS are left out (the switch has fewer).
   */
  publishPorts(ports: readonly RegionPort[]): void {
    const s = this.shared;
    this.generation = (this.generation + 1) >>> 0;
    writeRegionHeader(s.mem, {
      regionSize: s.regionSize, bufSize: s.bufSize, bufCount: s.bufCount, buffersOffset: 0,
      generation: this.generation, domain: cut32(this.name),
      ports: ports.slice(0, REGION_MAX_PORTS).map((p) => ({ ...p, name: cut32(p.name) })),
    });
  }

  close(): void {
    this.shared.close();
  }
}

/** A name as it fits a 32-byte header field (names are ASCII: config and control plane allow no more). */
function cut32(name: string): string {
  return Buffer.from(name, 'utf8').subarray(0, 32).toString('utf8');
}

/**
 * One ledger check over several domains: ok only when every domain balances;
 * counts are sums (port ids are unique across domains, and each port is in
 * one domain), problems are prefixed with the domain's name.
 */
export function checkDomains(domains: readonly SharingDomain[]): LedgerCheck {
  const out: LedgerCheck = { ok: true, bufCount: 0, pool: 0, owned: {}, problems: [] };
  for (const d of domains) {
    const c = d.ledger.check();
    out.ok &&= c.ok;
    out.bufCount += c.bufCount;
    out.pool += c.pool;
    for (const [p, n] of Object.entries(c.owned)) out.owned[Number(p)] = (out.owned[Number(p)] ?? 0) + n;
    for (const p of c.problems) out.problems.push(`domain ${d.name}: ${p}`);
  }
  return out;
}
