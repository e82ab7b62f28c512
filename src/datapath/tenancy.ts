/**
 * The bridges of one switch (`ports[].bridge`): each its own L2 domain with
 * its own MAC table (learning per VLAN inside it), so one tenant filling its
 * table cannot evict another's entries; and every port's policy by id.
 * Bridges are added as ports name them and never removed (a name costs one
 * table). A port not configured is on the first bridge, VLAN 1, unlimited. Typed arrays on the data path; the lists here allocate only on the
 * control plane.
 */
import type { PortPolicyConfig } from '../config/schema';
import { DEFAULTS } from '../config/schema';
import { MAX_PORTS } from '../shm/ledger';
import { type MacEntry, MacTable } from './mac-table';
import { PortPolicy } from './port-policy';

/** The bridge of a port that names none (VALE's first switch). */
export const FIRST_BRIDGE = DEFAULTS.bridgeName;

export interface BridgeMacEntry extends MacEntry {
  bridge: string;
}

export class Tenancy {
  readonly names: string[] = [];
  readonly tables: MacTable[] = [];
  /** Every port's policy by id (the same ids as the forwarder's ports), one for every possible id. */
  readonly policies: PortPolicy[] = Array.from({ length: MAX_PORTS }, () => new PortPolicy());
  /** Each port's bridge and VLANs as last configured: a change forgets its learned MACs. */
  private readonly placed: (string | undefined)[] = [];

  constructor(private readonly macTableSize: number, private readonly ageingMs: number) {
    this.bridgeIndex(FIRST_BRIDGE);
  }

  /** The index of the bridge of that name (made on first use). */
  bridgeIndex(name: string): number {
    let i = this.names.indexOf(name);
    if (i < 0) {
      i = this.names.length;
      this.names.push(name);
      this.tables.push(new MacTable(this.macTableSize, this.ageingMs));
    }
    return i;
  }

  /** Set port id's policy (between rounds); a changed bridge or VLAN set forgets what it had learned. */
  configure(id: number, cfg: PortPolicyConfig, now: number): void {
    const where = `${cfg.bridge} ${cfg.vlan} ${cfg.trunk.join(',')}`;
    if (this.placed[id] !== undefined && this.placed[id] !== where) this.forgetPort(id);
    this.placed[id] = where;
    this.policies[id].configure(cfg, this.bridgeIndex(cfg.bridge), now);
  }

  forgetPort(id: number): void {
    for (const t of this.tables) t.forgetPort(id);
  }

  /** Learned MACs of every bridge, or of the one named. */
  entries(now: number, bridge?: string): BridgeMacEntry[] {
    const out: BridgeMacEntry[] = [];
    this.tables.forEach((t, i) => {
      if (bridge !== undefined && this.names[i] !== bridge) return;
      for (const e of t.entries(now)) out.push({ bridge: this.names[i], ...e });
    });
    return out;
  }
}
