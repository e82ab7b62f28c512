/**
 * Aggregate rate of N pairs (`--pairs N`, with `--workers W`): one switch
 * with N pairs, N guest-driver senders and N receivers, all at once; the
 * rate is the sum over the receivers of what the switch delivered to them
 * in the measured window. With --pin the switch's main thread gets CPU 0,
 * its workers CPUs 1..W (forwarding.cpus) and the VMs the CPUs after those,
 * in turn (docs/PERFORMANCE.md, "Data-path workers").
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { controlRequest } from '../../src/switch/control';
import type { SwitchStats } from '../../src/switch/stats';
import { type Child, startChild } from '../lib/child';
import { onCpu } from '../lib/pin';
import { processCpuSec, sleep, waitFor } from '../lib/util';
import type { RunMetrics, Scenario } from '../types';
import { type RunContext, bufCountFor, bufSizeFor, checkLength, processCosts, windowRates } from './common';

type PortCounters = Record<string, number> & { drops: Record<string, number> };

export async function runZcswitchPairs(s: Scenario, ctx: RunContext, pairs: number): Promise<RunMetrics> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zcbp-'));
  const cfgPath = path.join(dir, 'switch.json');
  const bufCount = bufCountFor(s.size, ctx.bufCount, ctx.bufSize ?? null);
  const workers = ctx.workers ?? 0;
  const ncpu = os.cpus().length;
  const names = Array.from({ length: pairs }, (_, i) => [`tx${i}`, `rx${i}`] as const);
  const vmCpu = (k: number): number | null => (ctx.pin ? (ncpu > workers + 1 ? workers + 1 + (k % (ncpu - workers - 1)) : k % ncpu) : null);
  const cfg = {
    socketDir: dir,
    sharedBuffers: { bufCount, bufSize: bufSizeFor(s.size, ctx.bufSize ?? null) },
    ports: names.flat().map((name) => ({ name })),
    pairs: names.map(([a, b]) => [a, b]),
    forwarding: {
      burst: s.burst, pollMode: s.pollMode ?? 'spin-then-sleep', workers,
      ...(ctx.pairExchange ? { pairExchange: ctx.pairExchange } : {}),
      ...(ctx.pin && workers > 0 ? { cpus: Array.from({ length: workers }, (_, i) => (1 + i) % ncpu) } : {}),
    },
    log: { level: 'warn' },
  };
  fs.writeFileSync(cfgPath, JSON.stringify(cfg, null, 2));
  const control = path.join(dir, 'zcswitch.ctl');
  const node = process.execPath;
  const safety = String(Math.ceil(ctx.warmupSec + ctx.durationSec + 60));
  const vmArgs = (port: string, mode: string) => [
    ctx.cli, 'vm', '--socket-dir', dir, '--port', port, '--mode', mode, '--size', String(s.size), '--burst', String(s.burst),
    '--duration', safety, '--no-verify', '--json', '--quiet',
  ];
  ctx.setup({ config: cfg, pairs, workers, switch: 'zcswitch start -c <config>', vms: `${pairs} x (zcswitch vm --mode gen -> zcswitch vm --mode sink)` });
  const children: Child[] = [];
  const warnings: string[] = [];
  try {
    const sw = startChild('switch', ...onCpu(ctx.pin ? 0 : null, node, [ctx.cli, 'start', '-c', cfgPath]));
    children.push(sw);
    await waitFor('the switch to start', () => sw.stdout().includes('control:') || !sw.running(), 15000);
    if (!sw.running()) throw new Error(`switch exited at start:\n${sw.tail()}`);
    const stats = async () => (await controlRequest(control, { cmd: 'stats' })) as SwitchStats;
    const counters = (st: SwitchStats, name: string) => st.ports.find((p) => p.name === name)!.counters as PortCounters;
    const sinks = names.map(([, rx], i) => startChild(`${rx} sink`, ...onCpu(vmCpu(2 * i), node, vmArgs(rx, 'sink'))));
    children.push(...sinks);
    await waitFor('every receiver to attach', async () => {
      const st = await stats();
      return sinks.some((c) => !c.running()) || names.every(([, rx]) => st.ports.find((p) => p.name === rx)!.ready);
    }, 30000);
    if (sinks.some((c) => !c.running())) throw new Error('a receiver exited at start');
    await controlRequest(control, { cmd: 'reset-counters' });
    const gens = names.map(([tx], i) => startChild(`${tx} gen`, ...onCpu(vmCpu(2 * i + 1), node, vmArgs(tx, 'gen'))));
    children.push(...gens);
    await waitFor('traffic on every pair', async () => {
      const st = await stats();
      return gens.some((c) => !c.running()) || names.every(([, rx]) => counters(st, rx).txPackets > 0);
    }, 30000);
    if (gens.some((c) => !c.running())) throw new Error('a sender exited at start');
    await sleep(ctx.warmupSec * 1000);
    const snap = async () => {
      const t0 = performance.now();
      const cpu = processCpuSec(sw.pid);
      const st = await stats();
      return { at: (t0 + performance.now()) / 2, cpu, st };
    };
    const a = await snap();
    await sleep(ctx.durationSec * 1000);
    const b = await snap();
    if ([...gens, ...sinks].some((c) => !c.running())) throw new Error('a VM exited during the measurement');
    const d = (name: string, key: string) => (counters(b.st, name)[key] as number) - (counters(a.st, name)[key] as number);
    const packets = names.reduce((n, [, rx]) => n + d(rx, 'txPackets'), 0);
    const bytes = names.reduce((n, [, rx]) => n + d(rx, 'txBytes'), 0);
    let drops = 0;
    for (const n of names.flat()) {
      const da = counters(a.st, n).drops;
      for (const [k, v] of Object.entries(counters(b.st, n).drops)) drops += v - (da[k] ?? 0);
    }
    const windowSec = (b.at - a.at) / 1000;
    const swCpu = a.cpu !== null && b.cpu !== null ? b.cpu - a.cpu : null;
    const swBusy = b.st.dataPath.busySec - a.st.dataPath.busySec;
    if (!b.st.ledger.ok) warnings.push(`ledger unbalanced: ${b.st.ledger.problems.join('; ')}`);
    const avgLen = packets > 0 ? bytes / packets : null;
    checkLength(avgLen, s.size, warnings);
    if (!(packets > 0)) throw new Error('no packets delivered in the measured window');
    const none = { cpuSec: null, busySec: null };
    return {
      ...windowRates(ctx.run, windowSec, packets, bytes),
      avgLen,
      // Busy time summed over the workers: per packet it is the data path's work whichever thread did it.
      ...processCosts(packets, windowSec, { switch: { cpuSec: swCpu, busySec: swBusy }, vm1: none, vm2: none }),
      totalCpuNsPerPkt: null,
      copiedBytesPerPkt: names.flat().reduce((n, p) => n + d(p, 'copiedBytes'), 0) / packets,
      giftsPer1000: (names.flat().reduce((n, p) => n + d(p, 'giftsIn'), 0) / packets) * 1000,
      drops,
      extra: {
        pairs, workers,
        perPair: Object.fromEntries(names.map(([tx, rx]) => [`${tx}->${rx}`, d(rx, 'txPackets') / windowSec / 1e6])),
        perWorker: b.st.workers.map((w, i) => ({ index: w.index, cpus: w.cpus, ports: w.ports, busyLoad: (w.busySec - (a.st.workers[i]?.busySec ?? 0)) / windowSec })),
      },
      warnings,
    };
  } finally {
    for (const c of children.reverse()) await c.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
