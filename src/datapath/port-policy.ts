/**
 * A bridge port's tenant settings as the data path checks them
 * (`ports[].bridge`, `vlan`, `trunk`, `macs`, `isolated`, `limit`): typed
 * arrays and numbers only, set by the control plane between rounds.
 *
 * On the way in (admit): VLAN classification, the allowed source MACs,
 * then the rx rate limit, in that order, so a frame that is not the port's
 * to send never spends its tokens. On the way out (mayReach): same bridge,
 * the VLAN carried, isolation, then the destination's tx rate limit.
 */
import { LIMITS, type PortPolicyConfig } from '../config/schema';
import { Drop } from './counters';
import { TokenBucket } from './rate-limit';
import { TPID_8021Q } from './vlan';

/** Allowed source MACs per port (the config's limit). */
export const MAX_PORT_MACS = LIMITS.maxPortMacs;
/** 802.1Q VLAN ids are 12 bits. */
const VLAN_IDS = 4096;
/** The VLAN set of every access port: none carried (shared, never written). */
const NO_VLANS = new Uint8Array(VLAN_IDS);

export class PortPolicy {
  /** Index of the port's bridge (src/datapath/tenancy.ts). */
  bridge = 0;
  /** Access VLAN; 0 on a trunk. */
  vlan = 1;
  isTrunk = false;
  /** Trunk: carried[v] = 1 for each VLAN v it carries (its own array once it is a trunk; until then all 0). */
  carried = NO_VLANS;
  /** Allowed source MACs as (hi16, lo32); macCount 0 = any. */
  private readonly macHi = new Uint16Array(MAX_PORT_MACS);
  private readonly macLo = new Uint32Array(MAX_PORT_MACS);
  private macCount = 0;
  isolated = false;
  readonly rx = new TokenBucket();
  readonly tx = new TokenBucket();
  /**
   * Nothing to check on the way in but an untagged frame's VLAN (an access
   * port, any source MAC, no rx limit) / on the way out but bridge and VLAN
   * (an access port, not isolated, no tx limit): the forwarder's fast path
   * skips admit() / mayReach() for such ports.
   */
  plainIn = true;
  plainOut = true;

  configure(cfg: PortPolicyConfig, bridge: number, now: number): void {
    this.bridge = bridge;
    this.vlan = cfg.vlan;
    this.isTrunk = cfg.trunk.length > 0;
    if (this.isTrunk) {
      if (this.carried === NO_VLANS) this.carried = new Uint8Array(VLAN_IDS);
      this.carried.fill(0);
      for (const v of cfg.trunk) this.carried[v] = 1;
    }
    this.macCount = 0;
    for (const m of cfg.macs) {
      const b = m.split(':').map((x) => parseInt(x, 16));
      this.macHi[this.macCount] = (b[0] << 8) | b[1];
      this.macLo[this.macCount] = ((b[2] << 24) | (b[3] << 16) | (b[4] << 8) | b[5]) >>> 0;
      this.macCount++;
    }
    this.isolated = cfg.isolated;
    this.rx.set(cfg.limit.rx, now);
    this.tx.set(cfg.limit.tx, now);
    this.plainIn = !this.isTrunk && this.macCount === 0 && !this.rx.on;
    this.plainOut = !this.isTrunk && !this.isolated && !this.tx.on;
  }

  carries(vlan: number): boolean {
    return this.isTrunk ? this.carried[vlan] === 1 : this.vlan === vlan;
  }

  /**
   * A frame arriving from this port: its VLAN (> 0), or -1 - the Drop
   * reason. `eth` holds the frame's first 16 bytes (MACs, then the
   * ethertype and, when tagged, the TCI); `bytes` is the frame's length.
   */
  admit(eth: Uint8Array, bytes: number, now: number): number {
    const tagged = ((eth[12] << 8) | eth[13]) === TPID_8021Q;
    let vlan: number;
    if (this.isTrunk) {
      vlan = ((eth[14] << 8) | eth[15]) & 0xfff;
      if (!tagged || this.carried[vlan] !== 1) return -1 - Drop.VlanNotAllowed;
    } else {
      if (tagged) return -1 - Drop.VlanTagged;
      vlan = this.vlan;
    }
    if (this.macCount > 0) {
      const hi = (eth[6] << 8) | eth[7];
      const lo = ((eth[8] << 24) | (eth[9] << 16) | (eth[10] << 8) | eth[11]) >>> 0;
      let i = 0;
      while (i < this.macCount && (this.macHi[i] !== hi || this.macLo[i] !== lo)) i++;
      if (i === this.macCount) return -1 - Drop.SpoofedMac;
    }
    if (!this.rx.take(bytes, now)) return -1 - Drop.RxLimit;
    return vlan;
  }

  /**
   * May a frame of `vlan` from port `from` go out of this port? -1: yes (its
   * tx tokens are taken); else the Drop reason, or Drop.Count when the frame
   * is simply not for this port (another bridge or VLAN: no drop).
   */
  mayReach(from: PortPolicy, vlan: number, bytes: number, now: number): number {
    if (this.bridge !== from.bridge || !this.carries(vlan)) return Drop.Count;
    if (this.isolated && from.isolated) return Drop.Isolated;
    if (!this.tx.take(bytes, now)) return Drop.TxLimit;
    return -1;
  }
}
