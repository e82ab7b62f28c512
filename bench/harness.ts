/**
 * `npm run bench` / `zcswitch bench`: plan the scenarios, check which peers
 * are installed, run every scenario `runs` times (round-robin, so that noise
 * from other load spreads over all scenarios instead of hitting one), and
 * write bench/results/<timestamp>.{json,md,svg}.
 *
 * Needs only the built project and local programs: no network, no registry.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { POLL_MODES, type PollMode } from '../src/config';
import { killAll } from './lib/child';
import { cpusProblem, pinProblem } from './lib/pin';
import { fmtDuration, setClockTicks, sig, spread } from './lib/util';
import { clockTicksPerSec, machineInfo } from './machine';
import { Progress, type ProgressMode } from './progress';
import { renderMarkdown, renderSummaryTable } from './report/markdown';
import { renderSvg } from './report/svg';
import { type RunContext, bufSizeFor, bufSizeProblem } from './runners/common';
import { findDpdk, runDpdk } from './runners/dpdk';
import { OVS_MAX_MTU, findOvs, ovsMtu } from './runners/ovs';
import { buildKernelHelper, runKernel } from './runners/kernel';
import { runZcswitch } from './runners/zcswitch';
import { runZcswitchPairs } from './runners/zcswitch-pairs';
import { qemuProblem, runQemuGuests } from './runners/qemu';
import {
  type BenchResults, type BenchSettings, GROUP_LABELS, GSO_REFERENCE_ID, type Group, OPT_IN_GROUPS, PEER_GROUPS, type PeerStatus, type RunMetrics,
  type Scenario, type ScenarioResult, type ScenarioSummary, ZC_GROUPS,
} from './types';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const CLI_PATH = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

export const FULL_SIZES = [64, 128, 256, 512, 1500, 9000, 65535];
export const ALL_GROUPS: Group[] = [...ZC_GROUPS, ...PEER_GROUPS, ...OPT_IN_GROUPS];

export interface BenchOptions {
  quick?: boolean;
  runs?: number;
  warmup?: number;
  duration?: number;
  sizes?: number[];
  /** Burst of every scenario outside the burst sweep (zcswitch and peers). */
  burst?: number;
  bursts?: number[];
  pollModes?: PollMode[];
  /** Only these groups. */
  only?: Group[];
  /** Leave these groups out. */
  skip?: Group[];
  /** false: no peers at all. */
  peers?: boolean;
  testpmd?: string;
  /** Output folder (default bench/results in the repository). */
  out?: string;
  progress?: ProgressMode;
  bufCount?: number;
  /** zcswitch sharedBuffers.bufSize for every scenario (the stride experiment of docs/PERFORMANCE.md). */
  bufSize?: number;
  workers?: number;
  pairs?: number;
  /** zcswitch forwarding.pairExchange (--pair-exchange). */
  pairExchange?: 'swap' | 'gift';
  /** One CPU per process (bench/lib/pin.ts). */
  pin?: boolean;
  /** The CPUs of each scenario's processes, in --pin's order (implies pin). */
  cpus?: number[];
}

const DEFAULT_BURST = 64;
/** zc-gso's frame size (an Ethernet frame of a 64 KiB IP packet, as zc-oneway's largest). */
const GSO_BENCH_SIZE = 65535;
const DEFAULT_POLL: PollMode = 'spin-then-sleep';

export function resolveSettings(o: BenchOptions): BenchSettings {
  const quick = !!o.quick;
  let groups: Group[] = quick ? ['zc-oneway', 'copy-oneway', 'kernel'] : ALL_GROUPS.filter((g) => !OPT_IN_GROUPS.includes(g));
  if (o.only?.length) groups = o.only.filter((g) => ALL_GROUPS.includes(g));
  if (o.skip?.length) groups = groups.filter((g) => !o.skip!.includes(g));
  if (o.peers === false) groups = groups.filter((g) => !PEER_GROUPS.includes(g));
  const st: BenchSettings = {
    quick,
    runs: o.runs ?? (quick ? 1 : 5),
    warmupSec: o.warmup ?? 0.5,
    durationSec: o.duration ?? (quick ? 1 : 2),
    sizes: o.sizes?.length ? [...new Set(o.sizes)].sort((a, b) => a - b) : quick ? [64, 1500] : FULL_SIZES,
    bursts: o.bursts ?? (quick ? [] : [1, 8, 32, 256]),
    burstSize: 64,
    pollModes: o.pollModes ?? (quick ? [] : ['busy-poll', 'eventfd']),
    pollSize: 64,
    groups,
    defaultBurst: o.burst ?? DEFAULT_BURST,
    defaultPollMode: DEFAULT_POLL,
    bufCount: o.bufCount ?? null,
    bufSize: o.bufSize ?? null,
    workers: o.workers ?? null,
    pairs: o.pairs ?? null,
    pairExchange: o.pairExchange ?? null,
    pin: !!o.pin || (o.cpus?.length ?? 0) > 0,
    cpus: o.cpus?.length ? o.cpus : null,
  };
  if (st.cpus) {
    const problem = cpusProblem(st.cpus);
    if (problem) throw new Error(problem);
    // --pairs places its many processes itself (zcswitch-pairs.ts).
    if (st.pairs !== null) throw new Error('--cpus places the processes of one pair; --pairs places its own');
  }
  if (st.bufSize !== null && st.bufSize !== undefined) {
    // --buf-size applies to every zcswitch scenario: it must hold the largest frame among them.
    const sizes = planScenarios(st).filter((s) => s.system === 'zcswitch').map((s) => s.size);
    const problem = bufSizeProblem(st.bufSize, Math.max(0, ...sizes));
    if (problem) throw new Error(problem);
  }
  return st;
}

export function planScenarios(st: BenchSettings): Scenario[] {
  const out: Scenario[] = [];
  const base = { burst: st.defaultBurst, bidirectional: false, copy: false };
  const has = (g: Group) => st.groups.includes(g);
  for (const size of st.sizes) {
    if (has('zc-oneway')) out.push({ ...base, id: `zc-oneway/${size}`, group: 'zc-oneway', system: 'zcswitch', size, pollMode: st.defaultPollMode });
    if (has('zc-bidir')) out.push({ ...base, id: `zc-bidir/${size}`, group: 'zc-bidir', system: 'zcswitch', size, pollMode: st.defaultPollMode, bidirectional: true });
    if (has('zc-bridge')) out.push({ ...base, id: `zc-bridge/${size}`, group: 'zc-bridge', system: 'zcswitch', size, pollMode: st.defaultPollMode, bridge: true });
    if (has('copy-oneway')) out.push({ ...base, id: `copy-oneway/${size}`, group: 'copy-oneway', system: 'zcswitch', size, pollMode: st.defaultPollMode, copy: true });
    if (has('classic-flood')) {
      out.push({ ...base, id: `classic-flood/${size}`, group: 'classic-flood', system: 'zcswitch', size, pollMode: st.defaultPollMode, copy: true, sender: 'testpmd' });
    }
  }
  // One TSO size: the largest frame a 64 KiB buffer holds whole, next to zc-oneway / copy-oneway at 65535; and its
  // reference, plain 64-byte frames in the same 64 KiB buffers (same switch config), so that the ratio says what the
  // frame's size and its TSO header cost, apart from the buffer stride (docs/PERFORMANCE.md, "64 KiB frames").
  if (has('zc-gso')) {
    out.push({ ...base, id: `zc-gso/${GSO_BENCH_SIZE}`, group: 'zc-gso', system: 'zcswitch', size: GSO_BENCH_SIZE, pollMode: st.defaultPollMode, gso: true });
    out.push({ ...base, id: GSO_REFERENCE_ID, group: 'zc-gso', system: 'zcswitch', size: 64, pollMode: st.defaultPollMode, bufSize: bufSizeFor(GSO_BENCH_SIZE) });
  }
  if (has('zc-burst')) {
    for (const b of st.bursts) {
      if (b === st.defaultBurst && has('zc-oneway') && st.sizes.includes(st.burstSize)) continue; // that is zc-oneway itself
      out.push({ ...base, id: `zc-burst/${st.burstSize}/b${b}`, group: 'zc-burst', system: 'zcswitch', size: st.burstSize, burst: b, pollMode: st.defaultPollMode });
    }
  }
  if (has('zc-poll')) {
    for (const m of st.pollModes) {
      if (m === st.defaultPollMode && has('zc-oneway') && st.sizes.includes(st.pollSize)) continue;
      out.push({ ...base, id: `zc-poll/${st.pollSize}/${m}`, group: 'zc-poll', system: 'zcswitch', size: st.pollSize, pollMode: m });
    }
  }
  for (const size of st.sizes) {
    if (has('kernel')) out.push({ ...base, id: `kernel/${size}`, group: 'kernel', system: 'kernel', size });
    if (has('dpdk-vhost')) out.push({ ...base, id: `dpdk-vhost/${size}`, group: 'dpdk-vhost', system: 'dpdk-vhost', size });
    if (has('memif')) out.push({ ...base, id: `memif/${size}`, group: 'memif', system: 'dpdk-memif', size });
    if (has('memif-zc')) out.push({ ...base, id: `memif-zc/${size}`, group: 'memif-zc', system: 'dpdk-memif', size });
    if (has('ovs-dpdk')) out.push({ ...base, id: `ovs-dpdk/${size}`, group: 'ovs-dpdk', system: 'ovs-dpdk', size });
    // Guest buffers come from a 512-buffer region; jumbo frames add nothing under TCG.
    if (has('qemu-zc') && size <= 1500) out.push({ ...base, id: `qemu-zc/${size}`, group: 'qemu-zc', system: 'qemu-guests', size, pollMode: st.defaultPollMode });
  }
  return out;
}

/** Rough seconds a run costs beyond warm-up + measurement (process start-up, attach, teardown). */
function overheadSec(s: Scenario): number {
  return s.system === 'zcswitch' ? 0.5 : s.system === 'kernel' ? 0.4 : s.system === 'dpdk-vhost' ? 4.5 : s.system === 'ovs-dpdk' ? 9 : s.system === 'qemu-guests' ? 60 : 2.5;
}

function timestamp(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

function summarize(runs: RunMetrics[]): ScenarioSummary {
  const pick = (k: keyof RunMetrics) => spread(runs.map((r) => r[k] as number | null));
  return {
    mpps: pick('mpps'), gbps: pick('gbps'), switchCpuNsPerPkt: pick('switchCpuNsPerPkt'), switchCpuLoad: pick('switchCpuLoad'),
    switchBusyNsPerPkt: pick('switchBusyNsPerPkt'), switchBusyLoad: pick('switchBusyLoad'),
    vm1CpuNsPerPkt: pick('vm1CpuNsPerPkt'), vm1BusyNsPerPkt: pick('vm1BusyNsPerPkt'), vm1BusyLoad: pick('vm1BusyLoad'),
    vm2CpuNsPerPkt: pick('vm2CpuNsPerPkt'), vm2BusyNsPerPkt: pick('vm2BusyNsPerPkt'), vm2BusyLoad: pick('vm2BusyLoad'),
    totalCpuNsPerPkt: pick('totalCpuNsPerPkt'), copiedBytesPerPkt: pick('copiedBytesPerPkt'), giftsPer1000: pick('giftsPer1000'),
    drops: pick('drops'), avgLen: pick('avgLen'),
  };
}

export async function runBench(o: BenchOptions = {}): Promise<BenchResults> {
  const settings = resolveSettings(o);
  setClockTicks(clockTicksPerSec());
  const started = new Date();
  const machine = machineInfo();
  const outDir = path.resolve(o.out ?? path.join(REPO_ROOT, 'bench', 'results'));
  fs.mkdirSync(outDir, { recursive: true });
  const base = path.join(outDir, timestamp(started));
  const files = { json: `${base}.json`, markdown: `${base}.md`, svg: `${base}.svg` };
  if (!fs.existsSync(CLI_PATH)) throw new Error(`${CLI_PATH} is missing: run \`npm run build\` first`);
  const pinErr = settings.pin ? pinProblem() : null;
  if (pinErr) throw new Error(pinErr);

  const log = (m: string) => process.stderr.write(m + '\n');
  const scenarios = planScenarios(settings);

  // Which peers can run here. Each missing one gets one clear line.
  const peers: PeerStatus[] = [];
  const wanted = new Set(scenarios.map((s) => s.group));
  let kernelBin: string | null = null;
  if (wanted.has('kernel')) {
    const b = await buildKernelHelper(REPO_ROOT);
    if (b.ok) {
      kernelBin = b.bin;
      peers.push({ group: 'kernel', status: 'ok', program: `${b.bin} (built with ${b.cc})` });
    } else peers.push({ group: 'kernel', status: 'skipped', reason: b.reason });
  }
  const dpdkGroups = (['classic-flood', 'dpdk-vhost', 'memif', 'memif-zc', 'ovs-dpdk'] as Group[]).filter((g) => wanted.has(g));
  const dpdk = dpdkGroups.length ? findDpdk(o.testpmd) : null;
  const ovs = wanted.has('ovs-dpdk') ? findOvs() : null;
  for (const g of dpdkGroups) {
    if (!dpdk!.ok) peers.push({ group: g, status: 'skipped', reason: dpdk!.reason });
    else if (g !== 'ovs-dpdk') peers.push({ group: g, status: 'ok', program: dpdk!.tools.testpmd });
    else if (!ovs!.ok) peers.push({ group: g, status: 'skipped', reason: ovs!.reason });
    else peers.push({ group: g, status: 'ok', program: `${ovs!.tools.vswitchd}, VMs ${dpdk!.tools.testpmd}` });
  }
  if (wanted.has('qemu-zc')) {
    const problem = qemuProblem();
    peers.push(problem ? { group: 'qemu-zc', status: 'skipped', reason: problem } : { group: 'qemu-zc', status: 'ok', program: 'qemu-system-x86_64 + the Node guest image' });
  }
  if (settings.quick) {
    for (const g of ['dpdk-vhost', 'memif', 'memif-zc', 'ovs-dpdk'] as Group[]) {
      if (!wanted.has(g) && !o.only?.length) peers.push({ group: g, status: 'skipped', reason: '--quick runs the kernel peer only' });
    }
  }
  const skippedGroups = new Set(peers.filter((p) => p.status === 'skipped').map((p) => p.group));

  const skipReason = (s: Scenario): string | undefined => {
    if (skippedGroups.has(s.group)) return peers.find((p) => p.group === s.group)!.reason;
    if (s.group === 'ovs-dpdk' && ovsMtu(s.size) === null) return `OVS-DPDK carries frames up to ${OVS_MAX_MTU + 14} B (MTU ${OVS_MAX_MTU})`;
    return undefined;
  };
  const results: ScenarioResult[] = scenarios.map((s) => {
    const reason = skipReason(s);
    return { ...s, label: GROUP_LABELS[s.group], status: reason ? 'skipped' : 'ok', reason, runs: [], errors: [], summary: summarize([]), ratios: {} };
  });
  const active = results.filter((r) => r.status !== 'skipped');
  const totalRuns = active.length * settings.runs;
  const plannedSec = active.reduce((t, s) => t + settings.runs * (settings.warmupSec + settings.durationSec + overheadSec(s)), 0);

  log(`zcswitch bench: ${active.length} scenarios x ${settings.runs} runs, warm-up ${settings.warmupSec} s + ${settings.durationSec} s measured each; ` +
    `about ${fmtDuration(plannedSec)} on an idle machine (${machine.cpus} CPUs, load ${machine.loadAvgStart.join(' ')})`);
  for (const p of peers) {
    if (p.status === 'skipped') log(`bench: peer ${p.group} skipped: ${p.reason}`);
    else log(`bench: peer ${p.group}: ${p.program}`);
  }

  const progress = new Progress(totalRuns, (remaining, el, done) => {
    const perRun = done > 0 ? el / done : plannedSec / Math.max(1, totalRuns);
    return remaining * perRun;
  }, o.progress ?? 'auto');

  let aborted = false;
  const onSignal = () => {
    aborted = true;
    killAll();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // However the harness ends, no switch or testpmd outlives it.
  process.once('exit', killAll);

  try {
    for (let run = 1; run <= settings.runs && !aborted; run++) {
      for (const r of active) {
        if (aborted) break;
        if (r.status === 'failed') {
          progress.skip();
          continue;
        }
        const what = `${r.id} run ${run}/${settings.runs}`;
        progress.start(what);
        const ctx: RunContext = {
          run, warmupSec: settings.warmupSec, durationSec: settings.durationSec, cli: CLI_PATH, bufCount: settings.bufCount, bufSize: settings.bufSize ?? null, pin: settings.pin, cpus: settings.cpus ?? null,
          workers: settings.workers ?? null, pairs: settings.pairs ?? null, pairExchange: settings.pairExchange ?? null,
          dpdk: dpdk?.ok ? dpdk.tools : null,
          setup: (info) => {
            r.setup ??= info;
          },
        };
        try {
          let m: RunMetrics;
          if (r.system === 'zcswitch' && r.group === 'zc-oneway' && ctx.pairs !== null && ctx.pairs !== undefined) m = await runZcswitchPairs(r, ctx, ctx.pairs!);
          else if (r.system === 'zcswitch') m = await runZcswitch(r, ctx);
          else if (r.system === 'qemu-guests') m = await runQemuGuests(r, ctx);
          else if (r.system === 'kernel') m = await runKernel(r, ctx, kernelBin!);
          else if (dpdk?.ok) m = await runDpdk(r, ctx, dpdk.tools, ovs?.ok ? ovs.tools : null);
          else throw new Error('DPDK is not available');
          r.runs.push(m);
          const extras = [
            m.switchCpuNsPerPkt !== null ? `switch ${sig(m.switchCpuNsPerPkt)} ns/pkt` : null,
            m.switchBusyNsPerPkt !== null ? `busy ${sig(m.switchBusyNsPerPkt)} ns/pkt` : null,
            m.copiedBytesPerPkt !== null ? `copied ${sig(m.copiedBytesPerPkt)} B/pkt` : null,
            m.drops ? `drops ${m.drops}` : null,
          ].filter(Boolean).join(', ');
          progress.finish(what, `${sig(m.mpps)} Mpps, ${sig(m.gbps)} Gbit/s${extras ? ', ' + extras : ''}`);
          for (const w of m.warnings) progress.log(`bench: ${what}: warning: ${w}`);
        } catch (e) {
          if (aborted) break;
          const msg = (e as Error).message;
          r.errors.push(`run ${run}: ${msg}`);
          progress.finish(what, 'FAILED');
          progress.log(`bench: ${what} failed: ${msg.split('\n').join('\n    ')}`);
          // A scenario that fails is not retried: its remaining runs are skipped.
          r.status = 'failed';
          r.reason = msg.split('\n')[0];
        }
      }
    }
  } finally {
    progress.end();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', killAll);
  }

  for (const r of results) {
    r.summary = summarize(r.runs);
    // A scenario with some good runs before a failure keeps them, marked in errors.
    if (r.status === 'failed' && r.runs.length > 0) r.status = 'ok';
  }
  computeRatios(results);
  machine.loadAvgEnd = os.loadavg().map((x) => Math.round(x * 100) / 100);
  const finished = new Date();
  const res: BenchResults = {
    schema: 'zcswitch-bench/1',
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    elapsedSec: (finished.getTime() - started.getTime()) / 1000,
    aborted,
    machine,
    settings,
    peers,
    scenarios: results,
    files,
  };
  fs.writeFileSync(files.json, JSON.stringify(res, null, 2) + '\n');
  fs.writeFileSync(files.markdown, renderMarkdown(res));
  fs.writeFileSync(files.svg, renderSvg(res));
  process.stdout.write(renderSummaryTable(res) + '\n');
  process.stdout.write(`results: ${files.json}\n         ${files.markdown}\n         ${files.svg}\n`);
  if (aborted) process.stderr.write('bench: interrupted; partial results written\n');
  return res;
}

/**
 * Re-render the markdown and SVG of a results JSON (after the report format
 * changed, or to rebuild a lost file). Writes <base>.md and <base>.svg next to it.
 */
export function rerender(jsonPath: string): BenchResults {
  const res = JSON.parse(fs.readFileSync(jsonPath, 'utf8')) as BenchResults;
  if (res.schema !== 'zcswitch-bench/1') throw new Error(`${jsonPath} is not a zcswitch bench result (schema ${String(res.schema)})`);
  computeRatios(res.scenarios);
  const base = jsonPath.replace(/\.json$/, '');
  res.files = { json: jsonPath, markdown: `${base}.md`, svg: `${base}.svg` };
  fs.writeFileSync(res.files.markdown, renderMarkdown(res));
  fs.writeFileSync(res.files.svg, renderSvg(res));
  process.stdout.write(renderSummaryTable(res) + '\n');
  process.stdout.write(`wrote ${res.files.markdown}\n      ${res.files.svg}\n`);
  return res;
}

/** Peer groups a zcswitch scenario is compared with: every peer that ran at the same packet size. */
export function computeRatios(results: ScenarioResult[]): void {
  const peerAt = (g: Group, size: number) => results.find((r) => r.group === g && r.size === size && r.summary.mpps);
  for (const r of results) {
    if (r.system !== 'zcswitch') continue;
    r.ratios = {};
    for (const g of PEER_GROUPS) {
      const p = peerAt(g, r.size);
      if (!p) continue;
      r.ratios[g] = r.summary.mpps && p.summary.mpps ? r.summary.mpps.median / p.summary.mpps.median : null;
    }
  }
}

export function parseGroups(list: string[]): Group[] {
  for (const g of list) {
    if (!ALL_GROUPS.includes(g as Group)) throw new Error(`unknown scenario group "${g}" (known: ${ALL_GROUPS.join(', ')})`);
  }
  return list as Group[];
}

export function parsePollModes(list: string[]): PollMode[] {
  for (const m of list) {
    if (!(POLL_MODES as readonly string[]).includes(m)) throw new Error(`unknown poll mode "${m}" (known: ${POLL_MODES.join(', ')})`);
  }
  return list as PollMode[];
}
