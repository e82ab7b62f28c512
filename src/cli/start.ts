/**
 * `zcswitch start`: load the config, start the switch, print where each
 * port's socket is, and shut down cleanly on SIGINT/SIGTERM.
 */
import { ConfigError, loadConfig, type LogLevel } from '../config';
import { createLogger } from '../log';
import { Switch } from '../switch/switch';

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
  try {
    await sw.start();
  } catch (e) {
    process.stderr.write(`zcswitch: cannot start: ${(e as Error).message}\n`);
    process.exit(1);
  }
  const peerOf = new Map<string, string>();
  for (const [a, b] of cfg.pairs) {
    peerOf.set(a, b);
    peerOf.set(b, a);
  }
  const sb = cfg.sharedBuffers;
  process.stdout.write(
    `zcswitch: ${cfg.mode} mode, shared buffers ${sb.bufCount} x ${sb.bufSize} B at 0x${sb.base.toString(16)}, ` +
      `poll ${cfg.forwarding.pollMode}, burst ${cfg.forwarding.burst}\n`,
  );
  for (const p of sw.ports) {
    const peer = peerOf.get(p.name);
    process.stdout.write(`  port ${p.name}: ${p.socketPath}${peer ? ` (paired with ${peer})` : ' (unpaired)'}\n`);
  }
  for (const tap of sw.taps) process.stdout.write(`  port ${tap.name}: TAP interface ${tap.ifname} (uplink to the host stack)\n`);
  process.stdout.write(`  control: ${cfg.controlSocket}\n`);
  const shutdown = (sig: string) => {
    log.info({ signal: sig }, 'shutting down');
    sw.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e }, 'uncaught exception; stopping');
    sw.stop();
    process.exit(1);
  });
}
