/**
 * `zcswitch start`: load the config, start the switch, print where each
 * port's socket is, and shut down cleanly on SIGINT/SIGTERM.
 */
import { ConfigError, DEFAULTS, SocketDirError, SocketGroupError, type SwitchConfig, loadConfig, type LogLevel } from '../config';
import path from 'node:path';
import { createLogger } from '../log';
import { Switch } from '../switch/switch';
import { sdNotify } from './notify';
import { qemuIvshmemArgs, regionFilePath } from '../switch/region-file';
import { regionSizeFor } from '../shm/region-header';

export interface StartOptions {
  config: string;
  logLevel?: LogLevel;
}

export async function startCommand(o: StartOptions): Promise<void> {
  let cfg;
  try {
    cfg = loadConfig(o.config);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`zcswitch: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  const log = createLogger(o.logLevel ?? cfg.log.level);
  const sw = new Switch(cfg, log);
  sw.configPath = o.config;
  try {
    await sw.start();
  } catch (e) {
    // socketDir unusable or unsafe, a socket group unknown: a config problem (status 2, like an invalid config), named with the file it came from.
    const bad = e instanceof SocketDirError || e instanceof SocketGroupError;
    process.stderr.write(`zcswitch: cannot start: ${(e as Error).message}${bad ? ` (config ${o.config})` : ''}\n`);
    process.exit(bad ? 2 : 1);
  }
  const sb = cfg.sharedBuffers;
  const nd = sw.domains.length;
  const mib = (nd * sb.bufCount * sb.bufSize) / 2 ** 20;
  process.stdout.write(
    `zcswitch: ${cfg.mode} mode, shared buffers ${sb.bufCount} x ${sb.bufSize} B at 0x${sb.base.toString(16)} per sharing domain, ` +
      `${nd} domain${nd === 1 ? '' : 's'} (${Number.isInteger(mib) ? mib : mib.toFixed(1)} MiB in all), ` +
      `poll ${cfg.forwarding.pollMode}, burst ${cfg.forwarding.burst}\n`,
  );
  for (const line of portLines(cfg)) process.stdout.write(`  ${line}\n`);
  for (const line of ivshmemLines(cfg)) process.stdout.write(`  ${line}\n`);
  process.stdout.write(`  control: ${cfg.controlSocket}\n`);
  // Every port listens (or, client mode, is connecting), the control socket too: ready (Type=notify units; contrib/zcswitch.service).
  const clients = cfg.ports.filter((p) => p.connect !== undefined).length;
  sdNotify(
    `READY=1\nMAINPID=${process.pid}\nSTATUS=${cfg.ports.length} port(s) set up` +
      `${clients > 0 ? ` (${clients} in client mode, connecting)` : ''}, control ${cfg.controlSocket}`,
    log,
  );
  const shutdown = (sig: string) => {
    log.info({ signal: sig }, 'shutting down');
    sdNotify('STOPPING=1', log);
    sw.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  // SIGHUP: reload the config file (the same as `zcswitch reload`); a refusal is logged and changes nothing.
  process.on('SIGHUP', () => {
    try {
      sw.reload();
    } catch (e) {
      log.error({ signal: 'SIGHUP' }, (e as Error).message);
    }
  });
  // The last line, not the mechanism: errors while serving a port are caught
  // at that port's fault boundary (Port.fault, DataPath.round, VhostChannel,
  // the accept loop, the control socket) and cost that port its connection.
  // An exception that still gets here is a bug in the switch itself, with
  // state we can no longer vouch for (the ownership ledger), so the switch
  // logs it and exits 1 (fail-stop; a supervisor restarts it) rather than
  // forward on from unknown state. docs/operations.md, "Faults".
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e }, 'uncaught exception (a bug in the switch, not a front-end); stopping');
    sw.stop();
    process.exit(1);
  });
}

/** A bridge port's tenant settings that differ from the defaults, for its banner line ("; VLAN 10, isolated"). */
function tenantNote(p: SwitchConfig['ports'][number]): string {
  const t = p.policy;
  const parts: string[] = [];
  if (t.bridge !== DEFAULTS.bridgeName) parts.push(`bridge ${t.bridge}`);
  if (t.trunk.length > 0) parts.push(`trunk ${t.trunk.join(',')}`);
  else if (t.vlan !== DEFAULTS.vlan) parts.push(`VLAN ${t.vlan}`);
  if (t.macs.length > 0) parts.push(`${t.macs.length} allowed MAC${t.macs.length > 1 ? 's' : ''}`);
  if (t.isolated) parts.push('isolated');
  const l = t.limit;
  if (l.rx.pps || l.rx.bps || l.tx.pps || l.tx.bps) parts.push('rate-limited');
  return parts.length > 0 ? `; ${parts.join(', ')}` : '';
}

/** The banner's line for each port, in config order: where it is and what it is. */
export function portLines(cfg: SwitchConfig): string[] {
  const peerOf = new Map<string, string>();
  for (const [a, b] of cfg.pairs) {
    peerOf.set(a, b);
    peerOf.set(b, a);
  }
  const domainOf = new Map(cfg.ports.map((p) => [p.name, p.domain]));
  return cfg.ports.map((p) => {
    if (p.type === 'tap') return `port ${p.name}: TAP interface ${p.ifname} (bridge uplink to the host stack${tenantNote(p)})`;
    const sock = p.connect !== undefined
      ? `connects to ${p.connect} (client mode: the front-end listens; no socket of its own)`
      : path.join(cfg.socketDir, `${p.name}.sock`);
    const dom = `domain ${p.domain}`;
    if (cfg.mode === 'bridge') return `port ${p.name}: ${sock} (bridge port, ${dom}${tenantNote(p)})`;
    const peer = peerOf.get(p.name);
    if (peer === undefined) return `port ${p.name}: ${sock} (unpaired: it has no peer, frames it sends are dropped; ${dom})`;
    const cross = domainOf.get(peer) !== p.domain ? `; ${peer} is in domain ${domainOf.get(peer)}: every frame is copied` : '';
    return `port ${p.name}: ${sock} (paired with ${peer}, ${dom}${cross})`;
  });
}

/**
 * Per vhost port, the QEMU options that map its domain's region as an
 * ivshmem BAR (docs/qemu.md): zero-copy for a guest that drives its buffers
 * there, the copy path for anything else.
 */
export function ivshmemLines(cfg: SwitchConfig): string[] {
  const size = regionSizeFor(cfg.sharedBuffers.bufCount, cfg.sharedBuffers.bufSize);
  return cfg.ports.filter((p) => p.type === 'vhost' && p.domain !== null)
    .map((p) => `port ${p.name} ivshmem: ${qemuIvshmemArgs(p.name, regionFilePath(cfg.socketDir, p.domain!), size)}`);
}
