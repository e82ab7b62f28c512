/**
 * Ports, pairs and reload of a running switch (docs/operations.md,
 * "Adding and removing ports"): `zcswitch port add|del|list`, `zcswitch pair
 * add|del`, `zcswitch reload`. Each sends one control request; a refusal
 * (unknown port, name taken, a pair on a bridge, an invalid config file)
 * is printed with its reason and exits 1.
 */
import { controlRequest } from '../switch/control';
import type { PortInfo } from '../switch/commands';

async function request(what: string, control: string, cmd: object, timeoutMs = 10000): Promise<Record<string, unknown>> {
  let r: Record<string, unknown>;
  try {
    r = (await controlRequest(control, cmd, timeoutMs)) as Record<string, unknown>;
  } catch (e) {
    process.stderr.write(`zcswitch ${what}: ${(e as Error).message}\n`);
    process.exit(1);
  }
  if (typeof r.error === 'string') {
    process.stderr.write(`zcswitch ${what}: ${r.error}\n`);
    process.exit(1);
  }
  return r;
}

export interface PortAddOptions {
  control: string;
  pair?: string;
  domain?: string;
  connect?: string;
  /** Bridge mode: the tenant settings of the config file's `ports[]` (limits only by reload). */
  bridge?: string;
  vlan?: number;
  trunk?: number[];
  macs?: string[];
  isolated?: boolean;
  json?: boolean;
}

export async function portAddCommand(name: string, o: PortAddOptions): Promise<void> {
  const r = await request('port add', o.control, {
    cmd: 'port-add', name, pair: o.pair, domain: o.domain, connect: o.connect,
    bridge: o.bridge, vlan: o.vlan, trunk: o.trunk, macs: o.macs, isolated: o.isolated,
  });
  const p = r.port as PortInfo;
  if (o.json) process.stdout.write(JSON.stringify(p) + '\n');
  else process.stdout.write(`port ${p.name}: ${p.socket} (domain ${p.domain}${p.peer ? `, paired with ${p.peer}` : ''})\n`);
}

export async function portDelCommand(name: string, o: { control: string }): Promise<void> {
  await request('port del', o.control, { cmd: 'port-del', name });
}

export async function portListCommand(o: { control: string; json?: boolean }): Promise<void> {
  const r = await request('port list', o.control, { cmd: 'port-list' });
  const ports = r.ports as PortInfo[];
  if (o.json) {
    process.stdout.write(JSON.stringify(ports) + '\n');
    return;
  }
  const head = ['port', 'id', 'domain', 'peer', 'attached', 'added', 'socket'];
  const rows = ports.map((p) => [p.name, String(p.id), p.domain ?? '-', p.peer ?? '-', p.attached ? 'yes' : 'no', p.runtime ? 'run time' : 'config', p.socket]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  for (const r of [head, ...rows]) process.stdout.write(r.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd() + '\n');
}

export async function pairCommand(action: 'add' | 'del', a: string, b: string, o: { control: string }): Promise<void> {
  await request(`pair ${action}`, o.control, { cmd: `pair-${action}`, a, b });
}

export async function reloadCommand(o: { control: string; json?: boolean }): Promise<void> {
  const r = await request('reload', o.control, { cmd: 'reload' }, 30000);
  if (o.json) {
    process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  const list = (xs: unknown[]) => (xs.length === 0 ? 'none' : xs.map((x) => (Array.isArray(x) ? x.join('+') : String(x))).join(', '));
  process.stdout.write(`reloaded ${String(r.file)}: ports added ${list(r.portsAdded as unknown[])}, removed ${list(r.portsRemoved as unknown[])}; ` +
    `pairs added ${list(r.pairsAdded as unknown[])}, removed ${list(r.pairsRemoved as unknown[])}\n`);
  for (const c of r.live as { path: string; from: unknown; to: unknown }[]) {
    process.stdout.write(`  applied: ${c.path} ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)}\n`);
  }
  for (const c of r.restart as { path: string; from: unknown; to: unknown }[]) {
    process.stdout.write(`  needs a restart: ${c.path} ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)}\n`);
  }
}
