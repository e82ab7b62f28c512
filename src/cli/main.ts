#!/usr/bin/env node
/**
 * zcswitch command line: start | vm | stats. Argument errors name the bad
 * option and exit with status 2.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import path from 'node:path';
import { DEFAULTS, LOG_LEVELS, type LogLevel } from '../config';
import { parseMac } from '../guest/test-packet';
import { startCommand } from './start';
import { statsCommand } from './stats';
import { vmCommand } from './vm';

function intArg(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number, got "${v}"`);
    const n = Number(v);
    if (n < min || n > max) throw new InvalidArgumentError(`${name} must be within ${min}..${max}, got ${n}`);
    return n;
  };
}

function numArg(name: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new InvalidArgumentError(`${name} must be a number >= ${min}, got "${v}"`);
    return n;
  };
}

function macArg(name: string) {
  return (v: string): Uint8Array => {
    const m = parseMac(v);
    if (!m) throw new InvalidArgumentError(`${name} must look like 02:00:00:00:00:01, got "${v}"`);
    return m;
  };
}

const logLevel = () => new Option('--log-level <level>', 'log level').choices(LOG_LEVELS as unknown as string[]);

export function buildCli(): Command {
  const program = new Command('zcswitch')
    .description('Zero-copy VM-to-VM virtual switch (vhost-user back-end with a Shared Buffers region)')
    .showHelpAfterError()
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

  program
    .command('start')
    .description('start a switch from a JSON config')
    .requiredOption('-c, --config <file>', 'config file (see config/default.json)')
    .addOption(logLevel())
    .action((o: { config: string; logLevel?: LogLevel }) => startCommand(o));

  program
    .command('vm')
    .description('attach a test VM (guest driver) to a port: generate, sink or echo traffic')
    .requiredOption('-p, --port <name>', 'port to attach to (its socket is <socket-dir>/<name>.sock)')
    .option('--socket-dir <dir>', 'the switch socket directory', DEFAULTS.socketDir)
    .option('--socket <path>', 'vhost-user socket path (overrides --socket-dir/--port)')
    .addOption(new Option('-m, --mode <mode>', 'traffic role').choices(['gen', 'sink', 'echo']).default('sink'))
    .option('-s, --size <bytes>', 'Ethernet frame size', intArg('--size', 1, 65535), 64)
    .option('-n, --count <n>', 'gen: packets to send; sink/echo: stop after receiving n (0 = no limit)', intArg('--count', 0), 0)
    .option('-r, --rate <pps>', 'gen: packets per second (0 = as fast as possible)', intArg('--rate', 0), 0)
    .option('-d, --duration <sec>', 'stop after this many seconds (0 = no limit)', numArg('--duration', 0), 0)
    .option('-b, --burst <n>', 'packets per batch', intArg('--burst', 1, 1024), 64)
    .option('--spin-us <us>', 'poll this long after the last work before sleeping', intArg('--spin-us', 0, 1_000_000), 50)
    .option('--linger <ms>', 'gen: after the last send, wait this long for echoes', intArg('--linger', 0), 300)
    .option('--expect <n>', 'gen: finish as soon as n packets came back (an echo peer); --linger still bounds the wait', intArg('--expect', 0), 0)
    .option('--stream <id>', 'stream id written into generated frames', intArg('--stream', 0, 0xffffffff), 1)
    .option('--mac <mac>', 'our MAC address (default 02:00:00:00:00:<stream>)', macArg('--mac'))
    .option('--dst-mac <mac>', 'gen: destination MAC (default 02:00:00:00:00:ff)', macArg('--dst-mac'))
    .option('--announce', 'send one broadcast frame first so a bridge learns our MAC')
    .option('--no-verify', 'do not write/check payload patterns (pure packet rate)')
    .option('--no-zero-copy', 'do not negotiate SHARED_BUFFERS (classic virtio; everything is copied)')
    .option('--copy', 'send from private memory (the copy path) even with shared buffers')
    .option('--json', 'print the final summary as one JSON line')
    .option('-q, --quiet', 'no per-second rate lines')
    .addOption(logLevel().default('warn'))
    .action((o) => vmCommand({ ...o, announce: !!o.announce }));

  program
    .command('stats')
    .description('print per-port counters of a running switch')
    .option('--control <path>', 'control socket of the switch', path.join(DEFAULTS.socketDir, DEFAULTS.controlSocketName))
    .option('--json', 'raw JSON')
    .action((o: { control: string; json?: boolean }) => statsCommand({ control: o.control, json: !!o.json }));

  return program;
}

if (require.main === module) {
  buildCli().parseAsync(process.argv).catch((e: Error) => {
    process.stderr.write(`zcswitch: ${e.message}\n`);
    process.exit(1);
  });
}
