#!/usr/bin/env node
/**
 * The bench's command line (`npm run bench`, also `zcswitch bench`, which
 * runs this program): option parsing here, everything else in harness.ts.
 * The bench drives switches and peers from outside, as processes; src/
 * never imports bench/.
 */
import { Command, Option } from 'commander';
import { intArg, listArg, numArg } from '../src/cli/args';
import type { PollMode } from '../src/config';
import { type BenchOptions, parseGroups, parsePollModes, rerender, resolveSettings, runBench } from './harness';

/** testpmd's largest burst (MAX_PKT_BURST): every scenario's peers must run at the same burst. */
const TESTPMD_MAX_BURST = 512;

/** The harness's options as the command line gives them: names still unchecked strings. */
export type BenchCliOptions = Omit<BenchOptions, 'pollModes' | 'only' | 'skip' | 'peers'> & {
  pollModes?: string[];
  only?: string[];
  skip?: string[];
  peers: boolean;
  /** Re-render an earlier result instead of running. */
  report?: string;
};

async function benchCommand(o: BenchCliOptions): Promise<void> {
  if (o.report) {
    try {
      rerender(o.report);
      process.exit(0);
    } catch (e) {
      process.stderr.write(`zcswitch bench: ${(e as Error).message}\n`);
      process.exit(1);
    }
  }
  let opts: BenchOptions;
  try {
    opts = {
      quick: o.quick, runs: o.runs, warmup: o.warmup, duration: o.duration, sizes: o.sizes, burst: o.burst, bursts: o.bursts,
      pollModes: o.pollModes ? (parsePollModes(o.pollModes) as PollMode[]) : undefined,
      only: o.only ? parseGroups(o.only) : undefined, skip: o.skip ? parseGroups(o.skip) : undefined,
      peers: o.peers, testpmd: o.testpmd, out: o.out, progress: o.progress, bufCount: o.bufCount, bufSize: o.bufSize,
      pin: o.pin, cpus: o.cpus, workers: o.workers, pairs: o.pairs, pairExchange: o.pairExchange,
    };
    resolveSettings(opts); // a usage error (--buf-size too small for the sizes) before anything starts
  } catch (e) {
    process.stderr.write(`zcswitch bench: ${(e as Error).message}\n`);
    process.exit(2);
  }
  try {
    const res = await runBench(opts);
    process.exit(res.aborted ? 130 : 0);
  } catch (e) {
    process.stderr.write(`zcswitch bench: ${(e as Error).message}\n`);
    process.exit(1);
  }
}

export function buildBenchCli(): Command {
  return new Command('zcswitch bench')
    .description('packet-rate benchmark: zero-copy vs copy vs peers (kernel UDP, DPDK vhost-user, memif, OVS-DPDK); see docs/PERFORMANCE.md')
    .showHelpAfterError()
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
    .option('--quick', 'smoke run under a minute: 64 and 1500 B, zero-copy + copy one-way, kernel peer, 1 short run each')
    .option('--runs <n>', 'runs per scenario (default 5; --quick 1)', intArg('--runs', 1, 1000))
    .option('--warmup <sec>', 'warm-up once traffic reaches the receiver, before the measured window (default 0.5)', numArg('--warmup', 0))
    .option('--duration <sec>', 'measured window per run (default 2; --quick 1)', numArg('--duration', 0.1))
    .option('--sizes <list>', 'packet sizes, comma-separated (default 64,128,256,512,1500,9000,65535)', listArg('--sizes', 60, 65535))
    .option('--burst <n>', 'burst of every scenario outside the sweep, zcswitch and peers alike (default 64)', intArg('--burst', 1, TESTPMD_MAX_BURST))
    .option('--bursts <list>', 'burst sweep at 64 B (default 1,8,32,256; a size equal to --burst is left out)', listArg('--bursts', 1, TESTPMD_MAX_BURST))
    .option('--poll-modes <list>', 'poll-mode sweep at 64 B (default busy-poll,eventfd)', (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean))
    .option('--only <groups>', 'only these scenario groups: zc-oneway,zc-bidir,zc-bridge,copy-oneway,classic-flood,zc-burst,zc-poll,zc-gso,kernel,dpdk-vhost,memif,memif-zc,ovs-dpdk, and qemu-zc (only this way: two QEMU guests)',
      (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean))
    .option('--skip <groups>', 'leave these scenario groups out', (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean))
    .option('--buf-count <n>', 'zcswitch sharedBuffers.bufCount (default: the switch default, fewer for 64 KiB frames so the region stays <= 512 MiB)',
      intArg('--buf-count', 1, 32768))
    .option('--buf-size <n>', 'zcswitch sharedBuffers.bufSize for every scenario: a multiple of 64 >= the largest frame + 12 (default per size: the smallest such, at least 128)',
      intArg('--buf-size', 128, 262144))
    .option('--no-peers', 'zcswitch scenarios only')
    .option('--pin', 'one CPU per process (the switch, or a peer\'s receiver, alone on CPU 0; the others round robin on the rest; needs taskset)')
    .option('--cpus <list>', 'CPUs of each scenario\'s processes in --pin\'s order (the switch or a peer\'s receiver, then the receiver, then the sender; the last CPU for any beyond the list), e.g. 1,1,0: the sender alone on CPU 0; implies --pin',
      listArg('--cpus', 0, 4095))
    .option('--workers <n>', 'zcswitch forwarding.workers: data-path worker threads (default: none, the main thread forwards)', intArg('--workers', 0, 64))
    .option('--pair-exchange <swap|gift>', 'zcswitch forwarding.pairExchange (default: the switch default, gift)', (v: string) => {
      if (v !== 'swap' && v !== 'gift') throw new Error(`--pair-exchange must be swap or gift, got ${v}`);
      return v;
    })
    .option('--pairs <n>', 'zc-oneway with N pairs at once (N senders, N receivers, one switch; also N = 1): the aggregate rate; with --pin the workers get CPUs 1..W', intArg('--pairs', 1, 32))
    .option('--testpmd <path>', 'dpdk-testpmd binary or wrapper (default: $ZC_DPDK_TESTPMD, then PATH)')
    .option('--out <dir>', 'where to write <timestamp>.json/.md/.svg (default bench/results)')
    .option('--report <json>', 'do not run: re-render the .md and .svg of an earlier results JSON')
    .addOption(new Option('--progress <mode>', 'live progress on stderr').choices(['auto', 'bar', 'lines', 'none']).default('auto'))
    .action((o) => benchCommand(o));
}

if (require.main === module) {
  buildBenchCli().parseAsync(process.argv).catch((e: Error) => {
    process.stderr.write(`zcswitch bench: ${e.message}\n`);
    process.exit(1);
  });
}
