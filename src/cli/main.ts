#!/usr/bin/env node
/**
 * zcswitch command line: start | vm | stats | macs | capture | port | pair | reload, and bench (its own program, bench/main.ts). Argument errors name the bad
 * option and exit with status 2.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import path from 'node:path';
import { DEFAULTS, LIMITS, LOG_LEVELS, type LogLevel } from '../config';
import { addrArg, intArg, macArg, numArg } from './args';
import { captureCommand } from './capture';
import { macsCommand } from './macs';
import { type PortAddOptions, pairCommand, portAddCommand, portDelCommand, portListCommand, reloadCommand } from './manage';
import { startCommand } from './start';
import { statsCommand } from './stats';
import { vmCommand } from './vm';

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
    .option('-p, --port <name>', 'port to attach to (its socket is <socket-dir>/<name>.sock); required unless --pci')
    .option('--socket-dir <dir>', 'the switch socket directory', DEFAULTS.socketDir)
    .option('--socket <path>', 'vhost-user socket path (overrides --socket-dir/--port)')
    .addOption(new Option('-m, --mode <mode>', 'traffic role').choices(['gen', 'sink', 'echo']).default('sink'))
    .option('-s, --size <bytes>', 'Ethernet frame size', intArg('--size', 1, 65535), 64)
    .option('-n, --count <n>', 'gen: packets to send; sink/echo: stop after receiving n test frames (0 = no limit)', intArg('--count', 0), 0)
    .option('-r, --rate <pps>', 'gen: packets per second (0 = as fast as possible)', intArg('--rate', 0), 0)
    .option('-d, --duration <sec>', 'stop after this many seconds (0 = no limit)', numArg('--duration', 0), 0)
    .option('-b, --burst <n>', 'packets per batch', intArg('--burst', 1, LIMITS.maxBurst), 64)
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
    .option('--allow-unsealed', 'map a Shared Buffers region that is not sealed against shrinking (default: refuse it)')
    .option('--no-rx-by-buffer', 'post every buffer on rx before sending it ourselves (default: let the switch do it, RX_BY_BUFFER, where offered)')
    .option('--no-swap-in-used', 'with swaps, read the buffer got in exchange from each tx descriptor (default: from the used element, SWAP_IN_USED, where offered)')
    .option('--no-returned-in-used', 'with gifts, tell a gift from a buffer handed back by its header (default: by the used element, RETURNED_IN_USED, where offered)')
    .option('--shared-bar-file <path>', 'attach as a classic front-end with this region file in the memory table, as QEMU does for an ivshmem BAR (geometry from its header)')
    .option('--shared-bar-gpa <addr>', 'guest-physical address of --shared-bar-file (default 0x800000000)', addrArg('--shared-bar-gpa'))
    .option('--pci [bdf]', 'inside a VM: drive this virtio-net PCI device from user space (no value: the only unbound one)')
    .option('--shared-bar <bdf>', 'with --pci: the ivshmem device of the region (default: the one carrying the region header)')
    .option('--ring-bar <bdf>', 'with --pci: the ivshmem device for rings and private slots (default: the other ivshmem device)')
    .option('--copy', 'send from private memory (the copy path) even with shared buffers')
    .option('--gso', 'TSO: negotiate offloads and send / check each frame as a TCP segment with a TSO header (gen, sink; the peer needs --gso too)')
    .option('--reconnect', 'when the switch goes away, keep reattaching (default for sink, echo, and gen without --count)')
    .option('--no-reconnect', 'exit (status 1) when the switch goes away')
    .option('--json', 'print the final summary as one JSON line (SIGUSR2 prints the counters so far as one JSON line, any time)')
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

  const control = () => new Option('--control <path>', 'control socket of the switch').default(path.join(DEFAULTS.socketDir, DEFAULTS.controlSocketName));
  const port = program.command('port').description('add, remove or list ports of a running switch');
  port
    .command('add')
    .description('add a vhost-user port (socket <socketDir>/<name>.sock)')
    .argument('<name>', 'port name')
    .option('--pair <peer>', 'pair it with this unpaired port (pair mode); it joins the peer\'s sharing domain unless --domain says otherwise')
    .option('--domain <name>', 'sharing domain (a new one gets its own region)')
    .option('--connect <path>', 'client mode: connect to a front-end listening at this path instead of listening (QEMU server=on, DPDK server=1)')
    .option('--bridge <name>', 'bridge mode: the bridge to put it on (default vale0)')
    .option('--vlan <id>', 'bridge mode: access port of this VLAN (default 1)', intArg('--vlan', 1, 4094))
    .option('--trunk <ids>', 'bridge mode: a trunk carrying these VLANs, comma-separated', (v: string) => v.split(',').map((x) => Number(x)))
    .option('--macs <list>', 'bridge mode: the source MACs it may send from, comma-separated', (v: string) => v.split(','))
    .option('--isolated', 'bridge mode: it may talk only to non-isolated ports')
    .addOption(control())
    .option('--json', 'the new port as JSON')
    .action((name: string, o: PortAddOptions) => portAddCommand(name, o));
  port
    .command('del')
    .description('remove a port: its VM is disconnected, its buffers return to the pool, its socket is removed')
    .argument('<name>', 'port name')
    .addOption(control())
    .action((name: string, o: { control: string }) => portDelCommand(name, o));
  port
    .command('list')
    .description('list the ports of a running switch')
    .addOption(control())
    .option('--json', 'raw JSON')
    .action((o: { control: string; json?: boolean }) => portListCommand(o));
  const pair = program.command('pair').description('pair or unpair two ports of a running switch (pair mode)');
  for (const action of ['add', 'del'] as const) {
    pair
      .command(action)
      .description(action === 'add' ? 'pair two unpaired ports' : 'unpair two paired ports')
      .argument('<a>', 'first port')
      .argument('<b>', 'second port')
      .addOption(control())
      .action((a: string, b: string, o: { control: string }) => pairCommand(action, a, b, o));
  }
  program
    .command('macs')
    .description('list the learned MAC table of a running bridge: bridge, VLAN, MAC, port, age')
    .addOption(control())
    .option('--bridge <name>', 'only this bridge')
    .option('--json', 'raw JSON')
    .action((o: { control: string; bridge?: string; json?: boolean }) => macsCommand(o));
  program
    .command('reload')
    .description('re-read the config file the switch was started with and apply what changed (same as SIGHUP)')
    .addOption(control())
    .option('--json', 'raw JSON')
    .action((o: { control: string; json?: boolean }) => reloadCommand(o));

  // The bench is its own program (bench/main.ts): it drives switches and peers from outside.
  program.command('bench', 'packet-rate benchmark: zero-copy vs copy vs peers; see docs/PERFORMANCE.md', {
    executableFile: path.join(__dirname, '..', '..', 'bench', 'main.js'),
  });

  return program;
}

if (require.main === module) {
  buildCli().parseAsync(process.argv).catch((e: Error) => {
    process.stderr.write(`zcswitch: ${e.message}\n`);
    process.exit(1);
  });
}
