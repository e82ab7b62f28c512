#!/usr/bin/env node
/**
 * zcswitch command line: start | vm | stats | bench | capture. Argument errors name the bad
 * option and exit with status 2.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import path from 'node:path';
import { DEFAULTS, LOG_LEVELS, type LogLevel } from '../config';
import { parseMac } from '../guest/test-packet';
import { captureCommand } from './capture';
import { benchCommand } from './bench';
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
    .option('-n, --count <n>', 'gen: packets to send; sink/echo: stop after receiving n test frames (0 = no limit)', intArg('--count', 0), 0)
    .option('-r, --rate <pps>', 'gen: packets per second (0 = as fast as possible)', intArg('--rate', 0), 0)
    .option('-d, --duration <sec>', 'stop after this many seconds (0 = no limit)', numArg('--duration', 0), 0)
    .option('-b, --burst <n>', 'packets per batch', intArg('--burst', 1, 1024), 64)
    .option('--spin-us <us>', 'poll this long after the last work before sleeping', intArg('--spin-us', 0, 1_000_000), 50)
    .option('--linger <ms>', 'gen: after the last send, wait this long for echoes', intArg('--linger', 0), 300)
    .option('--expect <n>', 'gen: finish as soon as n packets came back (an echo peer); --linger still bounds the wait', intArg('--expect', 0), 0)
    .option('--stream <id>', 'stream id written into generated frames', intArg('--stream', 0, 0xffffffff), 1)
    .option('--mac <mac>', 'our MAC address (default 02:00:00:00:00:<stream>)', macArg('--mac'))
    .option('--dst-mac <mac>', 'gen: destination MAC (default 02:00:00:00:00:ff)', macArg('--dst-mac'))
    .option('--queues <n>', 'queue pairs to open (multiqueue)', intArg('--queues', 1, 16), 1)
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

  program
    .command('capture')
    .description('mirror a port\'s traffic of a running switch into a pcap file (Wireshark/tcpdump format)')
    .requiredOption('-p, --port <name>', 'port to capture')
    .requiredOption('-w, --write <file>', 'pcap file to write ("-" = stdout)')
    .option('-c, --count <n>', 'stop after n frames (0 = until Ctrl-C or --duration)', intArg('--count', 0), 0)
    .option('-d, --duration <sec>', 'stop after this many seconds (0 = no limit)', numArg('--duration', 0), 0)
    .option('-s, --snaplen <bytes>', 'bytes kept per frame', intArg('--snaplen', 1, 262144), 262144)
    .addOption(new Option('--direction <dir>', 'frames the VM sent (from-vm), received (to-vm), or both').choices(['both', 'from-vm', 'to-vm']).default('both'))
    .option('-B, --buffer-size <KiB>', 'most the switch queues for this capture before dropping frames', intArg('--buffer-size', 64, 262144), 4096)
    .option('--control <path>', 'control socket of the switch', path.join(DEFAULTS.socketDir, DEFAULTS.controlSocketName))
    .option('-q, --quiet', 'no "capturing on" line')
    .action((o) => captureCommand({ ...o, quiet: !!o.quiet }));

  program
    .command('bench')
    .description('packet-rate benchmark: zero-copy vs copy vs peers (kernel UDP, DPDK vhost-user, memif); see docs/PERFORMANCE.md')
    .option('--quick', 'smoke run under a minute: 64 and 1500 B, zero-copy + copy one-way, kernel peer, 1 short run each')
    .option('--runs <n>', 'runs per scenario (default 5; --quick 1)', intArg('--runs', 1, 1000))
    .option('--warmup <sec>', 'warm-up once traffic reaches the receiver, before the measured window (default 0.5)', numArg('--warmup', 0))
    .option('--duration <sec>', 'measured window per run (default 2; --quick 1)', numArg('--duration', 0.1))
    .option('--sizes <list>', 'packet sizes, comma-separated (default 64,128,256,512,1500,9000,65535)', listArg('--sizes', 60, 65535))
    .option('--burst <n>', 'burst of every scenario outside the sweep, zcswitch and peers alike (default 64)', intArg('--burst', 1, 512))
    .option('--bursts <list>', 'burst sweep at 64 B (default 1,8,32,256; a size equal to --burst is left out)', listArg('--bursts', 1, 512))
    .option('--poll-modes <list>', 'poll-mode sweep at 64 B (default busy-poll,eventfd)', (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean))
    .option('--only <groups>', 'only these scenario groups: zc-oneway,zc-bidir,copy-oneway,zc-burst,zc-poll,kernel,dpdk-vhost,memif,memif-zc',
      (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean))
    .option('--skip <groups>', 'leave these scenario groups out', (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean))
    .option('--buf-count <n>', 'zcswitch sharedBuffers.bufCount (default: the switch default, fewer for 64 KiB frames so the region stays <= 512 MiB)',
      intArg('--buf-count', 1, 32768))
    .option('--no-peers', 'zcswitch scenarios only')
    .option('--pin', 'one CPU per process (the switch, or a peer\'s receiver, alone on CPU 0; the others round robin on the rest; needs taskset)')
    .option('--testpmd <path>', 'dpdk-testpmd binary or wrapper (default: $ZC_DPDK_TESTPMD, then PATH)')
    .option('--out <dir>', 'where to write <timestamp>.json/.md/.svg (default bench/results)')
    .option('--report <json>', 'do not run: re-render the .md and .svg of an earlier results JSON')
    .addOption(new Option('--progress <mode>', 'live progress on stderr').choices(['auto', 'bar', 'lines', 'none']).default('auto'))
    .action((o) => benchCommand(o));

  return program;
}

function listArg(name: string, min: number, max: number) {
  return (v: string): number[] => v.split(',').map((x) => intArg(name, min, max)(x.trim()));
}

if (require.main === module) {
  buildCli().parseAsync(process.argv).catch((e: Error) => {
    process.stderr.write(`zcswitch: ${e.message}\n`);
    process.exit(1);
  });
}
