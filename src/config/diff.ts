/**
 * Config reload (docs/operations.md, "Reload"): what changed between the
 * config a switch last loaded and a new, already validated one, sorted
 * into what a running switch can apply and what needs a restart.
 *
 * Ports and pairs are diffed by name: a port only in the new file is
 * added, one only in the old file removed; a port in both whose domain,
 * type, interface or partition changed keeps running as it is and is
 * reported as needing a restart (or `port del` + `port add`); its tenant
 * settings (vlan, trunk, macs, isolated, limit) are live, its bridge not. Settings are
 * live (applied at once; some only to what is made from then on) or need a
 * restart. Pure: no I/O, nothing of the switch.
 */
import type { PortConfig, SwitchConfig } from './schema';

export interface SettingChange {
  /** Dotted field path, e.g. `forwarding.burst`, `ports[vm1].domain`. */
  path: string;
  from: unknown;
  to: unknown;
}

export interface ConfigDiff {
  addPorts: PortConfig[];
  removePorts: string[];
  addPairs: [string, string][];
  removePairs: [string, string][];
  /** Applied to the running switch. */
  live: SettingChange[];
  /** Only a restart applies these; the switch keeps running with the old values. */
  restart: SettingChange[];
}

/**
 * Settings a running switch can change. Socket permissions and the
 * handshake limit apply to what is made after the reload (new sockets, new
 * connections); the gift watermarks to the next GET_SHARED_BUFFERS.
 */
export const LIVE_SETTINGS = [
  'forwarding.burst', 'forwarding.pollMode', 'forwarding.spinUs', 'forwarding.rxWaitMs', 'gift.highWater', 'gift.lowWater', 'log.level',
  'stats.intervalMs', 'limits.handshakeSec', 'sockets.mode', 'sockets.group',
] as const;

/** Settings only a restart changes. */
export const RESTART_SETTINGS = [
  'mode', 'socketDir', 'controlSocket', 'sockets.controlMode', 'sharedBuffers.bufCount', 'sharedBuffers.bufSize',
  'sharedBuffers.base', 'sharedBuffers.hugePages', 'forwarding.queuePairs', 'forwarding.pairExchange', 'forwarding.workers', 'forwarding.cpus', 'bridge.ageingSec', 'bridge.macTableSize', 'metrics',
] as const;

function get(cfg: SwitchConfig, path: string): unknown {
  let v: unknown = cfg;
  for (const k of path.split('.')) v = v === undefined || v === null ? undefined : (v as Record<string, unknown>)[k];
  return v;
}

const same = (a: unknown, b: unknown): boolean =>
  JSON.stringify(a, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) ===
  JSON.stringify(b, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));

const pairKey = (a: string, b: string): string => (a < b ? `${a}\0${b}` : `${b}\0${a}`);

export function diffConfig(old: SwitchConfig, next: SwitchConfig): ConfigDiff {
  const out: ConfigDiff = { addPorts: [], removePorts: [], addPairs: [], removePairs: [], live: [], restart: [] };
  for (const path of LIVE_SETTINGS) {
    const from = get(old, path);
    const to = get(next, path);
    if (!same(from, to)) out.live.push({ path, from, to });
  }
  for (const path of RESTART_SETTINGS) {
    const from = get(old, path);
    const to = get(next, path);
    if (!same(from, to)) out.restart.push({ path, from, to });
  }
  const oldPorts = new Map(old.ports.map((p) => [p.name, p]));
  const newPorts = new Map(next.ports.map((p) => [p.name, p]));
  for (const p of old.ports) if (!newPorts.has(p.name)) out.removePorts.push(p.name);
  for (const p of next.ports) {
    const was = oldPorts.get(p.name);
    if (was === undefined) {
      out.addPorts.push(p);
      continue;
    }
    for (const k of ['type', 'ifname', 'domain', 'partition', 'offloads', 'mtu'] as const) {
      if (!same(was[k], p[k])) out.restart.push({ path: `ports[${p.name}].${k}`, from: was[k], to: p[k] });
    }
    // Tenant settings apply at once, but for the bridge (its sharing domain and MAC table go with it).
    if (!same(was.policy.bridge, p.policy.bridge)) out.restart.push({ path: `ports[${p.name}].bridge`, from: was.policy.bridge, to: p.policy.bridge });
    for (const k of ['vlan', 'trunk', 'macs', 'isolated', 'limit'] as const) {
      if (!same(was.policy[k], p.policy[k])) out.live.push({ path: `ports[${p.name}].${k}`, from: was.policy[k], to: p.policy[k] });
    }
    // A socket's mode and group are set when it is made: the running socket keeps its own.
    if (!same(was.socket, p.socket)) out.restart.push({ path: `ports[${p.name}].socket`, from: was.socket, to: p.socket });
  }
  const oldPairs = new Map(old.pairs.map(([a, b]) => [pairKey(a, b), [a, b] as [string, string]]));
  const newPairs = new Map(next.pairs.map(([a, b]) => [pairKey(a, b), [a, b] as [string, string]]));
  for (const [k, p] of oldPairs) if (!newPairs.has(k)) out.removePairs.push(p);
  for (const [k, p] of newPairs) if (!oldPairs.has(k)) out.addPairs.push(p);
  return out;
}
