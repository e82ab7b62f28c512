#!/usr/bin/env node
/**
 * The fuzzer's command line (`npm run fuzz`): option parsing and the final
 * report here, the run in harness.ts, the case generators in cases.ts.
 * Like bench/, it drives the switch from outside as processes; src/ never
 * imports fuzz/. See fuzz/README.md.
 */
import { Command } from 'commander';
import { intArg, numArg } from '../src/cli/args';
import { KIND_HELP, KINDS, type Kind } from './cases';
import { type FuzzSummary, SHAPES, type Shape, runFuzz } from './harness';

interface CliOptions {
  cases: number;
  seed: number;
  connections: number;
  batch: number;
  kinds: string;
  onlyCase?: number;
  socketDir?: string;
  control?: string;
  pid?: number;
  ports?: string;
  bystanderRate: number;
  shape: string;
  workers: number;
  churn?: boolean;
  maxFdGrowth: number;
  maxFdFinal: number;
  maxRssGrowth: number;
  stopOnFailure?: boolean;
  json?: boolean;
  verbose?: boolean;
}

function parseKinds(s: string): Kind[] {
  if (s === 'all') return [...KINDS];
  const ks = s.split(',').map((x) => x.trim()).filter(Boolean);
  for (const k of ks) {
    if (!(KINDS as readonly string[]).includes(k)) throw new Error(`--kinds: unknown kind '${k}' (known: ${KINDS.join(', ')}, or all)`);
  }
  if (ks.length === 0) throw new Error('--kinds: name at least one kind');
  return ks as Kind[];
}

function report(s: FuzzSummary): string {
  const g = (v: number | null, unit = '') => (v === null ? 'n/a' : `${v >= 0 ? '+' : ''}${Number.isInteger(v) ? v : v.toFixed(1)}${unit}`);
  const lines = [
    `fuzz: ${s.cases} cases (seed ${s.seed}, ${s.shape}${s.workers > 0 ? `, ${s.workers} worker${s.workers > 1 ? 's' : ''}` : ''}) in ${s.seconds.toFixed(1)} s: ${s.casesPerSec.toFixed(0)} cases/s, ${s.connected} attached; ` +
      Object.entries(s.byKind).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', '),
    `fuzz: crashes ${s.crashes}, restarts ${s.restarts}, failures ${s.failures.length}${s.churned > 0 ? `, ports churned ${s.churned}` : ''}; ` +
      `switch fd growth ${g(s.fdGrowth.final)} (max ${g(s.fdGrowth.max)}, bound ${s.fdGrowth.bound}, after the last batch ${s.fdGrowth.finalBound}), ` +
      `RSS growth ${g(s.rssGrowthMb.final, ' MiB')} (max ${g(s.rssGrowthMb.max, ' MiB')}, bound ${s.rssGrowthMb.bound} MiB); bystander verified ${s.bystanderVerified}, lost 0 unless reported`,
  ];
  for (const f of s.failures) {
    lines.push(`FAIL ${f.check} (batch ${f.batch}, kinds ${f.kinds.join(',')}): ${f.detail.split('\n')[0]}`);
    if (f.culprit) lines.push(`  case ${f.culprit.index} (${f.culprit.kind}): ${f.culprit.what}\n  replay: ${f.culprit.replay}`);
  }
  lines.push(s.ok ? 'fuzz: OK' : 'fuzz: FAILED');
  return lines.join('\n');
}

export function buildFuzzCli(): Command {
  return new Command('zcswitch-fuzz')
    .description('drive a switch with structured hostile input from many connections, checking it after every batch (fuzz/README.md)')
    .showHelpAfterError()
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
    .option('--cases <n>', 'cases to run', intArg('--cases', 1), 2000)
    .option('--seed <s>', 'PRNG seed: the same seed runs the same cases', intArg('--seed', 0, 0xffffffff), 1)
    .option('--only-case <i>', 'replay one case of --seed (printed with a failure)', intArg('--only-case', 0))
    .option('--connections <n>', 'hostile connections in parallel (one port each)', intArg('--connections', 1, 62), 16)
    .option('--batch <n>', 'cases between checks', intArg('--batch', 1), 100)
    .option('--kinds <list>', `case kinds, comma-separated, or all: ${KINDS.map((k) => `${k} (${KIND_HELP[k]})`).join('; ')}`, 'all')
    .option('--socket-dir <dir>', 'fuzz a running switch in this socket dir (default: start a private one in a temp dir)')
    .option('--control <path>', 'with --socket-dir: its control socket (default <dir>/zcswitch.ctl)')
    .option('--pid <pid>', 'with --socket-dir: the switch pid, for the fd and RSS checks', intArg('--pid', 1))
    .option('--ports <list>', 'with --socket-dir: hostile ports (default fz0..fzN-1); the bystander pair is by-a -> by-b')
    .option('--bystander-rate <pps>', 'bystander generator rate', intArg('--bystander-rate', 1), 2000)
    .option('--shape <shape>', `its own switch's forwarding: ${SHAPES.join(', ')} (pairs with gifts, pairs with swaps, a bridge; fuzz/README.md)`, 'pair')
    .option('--workers <n>', 'its own switch\'s data-path worker threads (forwarding.workers)', intArg('--workers', 0, 64), 0)
    .option('--churn', 'its own switch: remove and add hostile ports again while each batch runs (fuzz/README.md)')
    .option('--max-fd-growth <n>', 'switch fds allowed above the start after a batch', intArg('--max-fd-growth', 0), 16)
    .option('--max-fd-final <n>', 'switch fds allowed above the start after the last batch (a leak)', intArg('--max-fd-final', 0), 4)
    .option('--max-rss-growth <MiB>', 'switch RSS allowed above the start after a batch', numArg('--max-rss-growth', 0), 128)
    .option('--stop-on-failure', 'stop at the first failure (default: restart the switch, find the culprit, go on)')
    .option('--json', 'print the summary as one JSON line')
    .option('-v, --verbose', 'a line per case and per batch')
    .action(async (c: CliOptions) => {
      let kinds: Kind[];
      try {
        kinds = parseKinds(c.kinds);
      } catch (e) {
        process.stderr.write(`zcswitch-fuzz: ${(e as Error).message}\n`);
        process.exit(2);
      }
      if (!(SHAPES as readonly string[]).includes(c.shape)) {
        process.stderr.write(`zcswitch-fuzz: --shape: unknown shape '${c.shape}' (known: ${SHAPES.join(', ')})\n`);
        process.exit(2);
      }
      if (c.socketDir !== undefined && (c.shape !== 'pair' || c.workers > 0 || c.churn)) {
        process.stderr.write('zcswitch-fuzz: --shape, --workers and --churn are for the fuzzer\'s own switch; a running one (--socket-dir) is fuzzed as it is\n');
        process.exit(2);
      }
      if (c.churn && c.connections < 2) {
        process.stderr.write('zcswitch-fuzz: --churn needs --connections 2 or more (it churns a pair of hostile ports at a time)\n');
        process.exit(2);
      }
      const s = await runFuzz({
        cases: c.cases, seed: c.seed, connections: c.connections, batch: c.batch, kinds, onlyCase: c.onlyCase,
        socketDir: c.socketDir, control: c.control, pid: c.pid, ports: c.ports?.split(',').map((x) => x.trim()).filter(Boolean),
        bystanderRate: c.bystanderRate, shape: c.shape as Shape, workers: c.workers, churn: !!c.churn, maxFdGrowth: c.maxFdGrowth, maxFdFinal: c.maxFdFinal,
        maxRssGrowthMb: c.maxRssGrowth,
        stopOnFailure: !!c.stopOnFailure, json: !!c.json, verbose: !!c.verbose,
      });
      process.stdout.write(c.json ? `${JSON.stringify(s)}\n` : `${report(s)}\n`);
      process.exit(s.ok ? 0 : 1);
    });
}

if (require.main === module) {
  buildFuzzCli().parseAsync(process.argv).catch((e: Error) => {
    process.stderr.write(`zcswitch-fuzz: ${e.message}\n`);
    process.exit(1);
  });
}
