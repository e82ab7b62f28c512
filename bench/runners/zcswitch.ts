/**
 * One zcswitch run: a switch (`zcswitch start`) and two guest-driver VMs
 * (`zcswitch vm ... --json --quiet --no-verify --duration`) as separate
 * processes. Rates come from the switch's per-port counters for what it
 * delivered to the receiving VM (its rx queue), i.e. the sink's received
 * count, over the measured window; the sink's own final count is checked
 * against it. Switch CPU is utime+stime from /proc/<pid>/stat.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { defaultMacs } from '../../src/guest/test-packet';
import { controlRequest } from '../../src/switch/control';
import type { SwitchStats } from '../../src/switch/stats';
import { MTU_DEFAULT, MTU_MAX } from '../../src/virtio/defs';
import { type Child, startChild } from '../lib/child';
import { allowedCpus, cpuPlan, onCpu } from '../lib/pin';
import { processCpuSec, sleep, waitFor } from '../lib/util';
import type { RunMetrics, Scenario, VmStalls, VmStallsByVm } from '../types';
import { type PortCounters, type RunContext, bufCountFor, bufSizeFor, checkLength, dropsBetween, perPacket, processCosts, windowRates } from './common';
import { app, eal, geometry } from './dpdk';

/** The destination address a `zcswitch vm --mode gen` writes by default (test-packet.ts, defaultMacs). */
const GEN_DEFAULT_DST = [...defaultMacs(1).subarray(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');

/** What `zcswitch vm` prints on SIGUSR2 (src/cli/vm.ts snapshotLine): the fields the bench reads. */
interface VmSnapshot {
  snapshot: true;
  elapsedSec: number;
  busySec: number;
  cpuSec: number;
  sent: number;
  received: number;
  busyTurns: number;
  sendPasses: number;
  shortOfBuffers: number;
  shortOfRoom: number;
}

interface Snap {
  at: number;
  sw: number | null;
  vm1: number | null;
  vm2: number | null;
  stats: SwitchStats;
  vm1Snap: VmSnapshot | null;
  vm2Snap: VmSnapshot | null;
}

/**
 * A VM's snapshots: returns a function that sends SIGUSR2 and resolves
 * with the line it prints (null if none comes within 2 s: an older build,
 * or the VM is gone).
 */
function vmSnapshots(c: Child): () => Promise<VmSnapshot | null> {
  const seen: VmSnapshot[] = [];
  c.onLine((line) => {
    if (!line.startsWith('{"snapshot":true')) return;
    try {
      seen.push(JSON.parse(line) as VmSnapshot);
    } catch {
      /* a torn line: that snapshot is lost */
    }
  });
  return async () => {
    const n = seen.length;
    if (!c.running()) return null;
    c.child.kill('SIGUSR2');
    try {
      await waitFor('a VM snapshot', () => seen.length > n || !c.running(), 2000, 2);
    } catch {
      return null;
    }
    return seen[n] ?? null;
  };
}

/** A VM's VmStalls over the window, from two snapshots (null without them, or from a build that does not count them). */
function vmStalls(a: VmSnapshot | null, b: VmSnapshot | null): VmStalls | null {
  if (!a || !b || typeof a.busyTurns !== 'number' || typeof b.busyTurns !== 'number') return null;
  const turns = b.busyTurns - a.busyTurns;
  const packets = b.sent - a.sent + (b.received - a.received);
  const passes = b.sendPasses - a.sendPasses;
  const share = (k: 'shortOfBuffers' | 'shortOfRoom') => (passes > 0 ? (b[k] - a[k]) / passes : null);
  return { packetsPerBusyTurn: turns > 0 ? packets / turns : 0, shortOfBuffers: share('shortOfBuffers'), shortOfRoom: share('shortOfRoom') };
}

/** A VM's busy seconds over the bench's window: its busy share of its own window between two snapshots, times the bench's window. */
function vmBusySec(a: VmSnapshot | null, b: VmSnapshot | null, windowSec: number): number | null {
  if (!a || !b || typeof a.busySec !== 'number' || typeof b.busySec !== 'number') return null;
  const el = b.elapsedSec - a.elapsedSec;
  return el > 0 ? ((b.busySec - a.busySec) / el) * windowSec : null;
}

export function zcswitchConfig(
  s: Scenario, socketDir: string, bufCount: number, workers: number | null = null, bufSize: number | null = null, pairExchange: 'swap' | 'gift' | null = null,
): Record<string, unknown> {
  return {
    socketDir,
    sharedBuffers: { bufCount, bufSize: bufSizeFor(s.size, bufSize) },
    // Each port's MTU admits the scenario's frames (an Ethernet frame of s.size bytes; 1500 at least).
    ports: ['vm1', 'vm2'].map((name) => ({ name, mtu: Math.min(MTU_MAX, Math.max(MTU_DEFAULT, s.size - 14)) })),
    // A bridge learns vm2's address from its announcement (runZcswitch) and vm1's from its frames.
    ...(s.bridge ? { mode: 'bridge' } : { pairs: [['vm1', 'vm2']] }),
    forwarding: { burst: s.burst, pollMode: s.pollMode ?? 'spin-then-sleep', ...(workers === null ? {} : { workers }), ...(pairExchange === null ? {} : { pairExchange }) },
    log: { level: 'warn' },
  };
}

export async function runZcswitch(s: Scenario, ctx: RunContext): Promise<RunMetrics> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zcb-'));
  const cfgPath = path.join(dir, 'switch.json');
  const bufSize = ctx.bufSize ?? s.bufSize ?? null;
  const bufCount = bufCountFor(s.size, ctx.bufCount, bufSize);
  const cfg = zcswitchConfig(s, dir, bufCount, ctx.workers ?? null, bufSize, ctx.pairExchange ?? null);
  fs.writeFileSync(cfgPath, JSON.stringify(cfg, null, 2));
  const control = path.join(dir, 'zcswitch.ctl');
  const node = process.execPath;
  const safety = String(Math.ceil(ctx.warmupSec + ctx.durationSec + 60));
  const vmArgs = (port: string, mode: string, extra: string[] = []) => [
    ctx.cli, 'vm', '--socket-dir', dir, '--port', port, '--mode', mode, '--size', String(s.size), '--burst', String(s.burst),
    '--duration', safety, '--no-verify', '--json', '--quiet', ...extra,
  ];
  const rxMode = s.bidirectional ? 'echo' : 'sink';
  const gsoExtra = s.gso ? ['--gso'] : [];
  // On a bridge the receiver has the generator's default destination address and announces it before any frame.
  const rxExtra = [...gsoExtra, ...(s.bridge ? ['--announce', '--mac', GEN_DEFAULT_DST] : [])];
  const genExtra = [...(s.copy ? ['--copy'] : []), ...gsoExtra];
  // classic-flood: testpmd txonly on virtio-user sends instead of a zcswitch vm gen (a classic front-end, as fast as it can).
  const pmdPrefix = `zcbf${process.pid}x${ctx.run}`;
  const genCmd = (cpu: number | null): [string, string[]] => {
    if (s.sender !== 'testpmd') return onCpu(cpu, node, vmArgs('vm1', 'gen', genExtra));
    if (!ctx.dpdk) throw new Error('classic-flood needs dpdk-testpmd');
    const g = geometry(s.size);
    // A ring of 1024 as in the DPDK tests: back-pressure leaves at most this much on it.
    const geo = { ...g, queue: Math.min(g.queue, 1024) };
    const vdev = `net_virtio_user0,path=${path.join(dir, 'vm1.sock')},queues=1,queue_size=${geo.queue}`;
    return [ctx.dpdk.stdbuf, ['-oL', '-eL', ctx.dpdk.testpmd, ...eal(pmdPrefix, geo.memMb, ['--vdev', vdev], cpu), '--', ...app(s, geo, 'txonly')]];
  };
  // --pin: switch, receiver, generator.
  const cores = ctx.pin ? cpuPlan(3, undefined, ctx.cpus) : [null, null, null];
  ctx.setup({
    config: cfg,
    ...(ctx.pin ? { cpus: { switch: cores[0], vm2: cores[1], vm1: cores[2] } } : {}),
    switch: `zcswitch start -c <config>`,
    vm2: `zcswitch ${vmArgs('vm2', rxMode, rxExtra).slice(1).join(' ').replace(dir, '<dir>')}`,
    vm1: s.sender === 'testpmd'
      ? genCmd(null).flat().join(' ').replaceAll(dir, '<dir>')
      : `zcswitch ${vmArgs('vm1', 'gen', genExtra).slice(1).join(' ').replace(dir, '<dir>')}`,
  });
  const children: Child[] = [];
  const warnings: string[] = [];
  try {
    const sw = startChild('switch', ...onCpu(cores[0], node, [ctx.cli, 'start', '-c', cfgPath]));
    children.push(sw);
    await waitFor('the switch to start', () => sw.stdout().includes('control:') || !sw.running(), 15000);
    if (!sw.running()) throw new Error(`switch exited at start:\n${sw.tail()}`);
    const stats = async () => (await controlRequest(control, { cmd: 'stats' })) as SwitchStats;
    const port = (st: SwitchStats, name: string) => st.ports.find((p) => p.name === name)!;
    const counters = (st: SwitchStats, name: string) => port(st, name).counters as PortCounters;

    const rx = startChild(`vm2 ${rxMode}`, ...onCpu(cores[1], node, vmArgs('vm2', rxMode, rxExtra)));
    children.push(rx);
    const rxSnap = vmSnapshots(rx);
    await waitFor(`vm2 (${rxMode}) to attach`, async () => !rx.running() || port(await stats(), 'vm2').ready, 15000);
    if (!rx.running()) throw new Error(`vm2 exited at start:\n${rx.tail()}`);
    // Counters from zero before any traffic: the receiver's own final count must equal the switch's.
    await controlRequest(control, { cmd: 'reset-counters' });
    const gen = startChild(s.sender === 'testpmd' ? 'vm1 testpmd txonly' : 'vm1 gen', ...genCmd(cores[2]));
    children.push(gen);
    // Only a zcswitch vm answers SIGUSR2 with a snapshot; it would kill testpmd (classic-flood's sender).
    const genSnap = s.sender === 'testpmd' ? async () => null : vmSnapshots(gen);
    await waitFor('traffic to flow', async () => !gen.running() || counters(await stats(), 'vm2').txPackets > 0, 15000);
    if (!gen.running()) throw new Error(`vm1 (gen) exited at start:\n${gen.tail()}`);

    await sleep(ctx.warmupSec * 1000);
    const snap = async (): Promise<Snap> => {
      const t0 = performance.now();
      const cpu = { sw: processCpuSec(sw.pid), vm1: processCpuSec(gen.pid), vm2: processCpuSec(rx.pid) };
      const [st, vm1Snap, vm2Snap] = await Promise.all([stats(), genSnap(), rxSnap()]);
      return { at: (t0 + performance.now()) / 2, ...cpu, stats: st, vm1Snap, vm2Snap };
    };
    const a = await snap();
    await sleep(ctx.durationSec * 1000);
    const b = await snap();
    // What the kernel allowed each process (checks --pin).
    const cpusAllowed = ctx.pin ? { switch: allowedCpus(sw.pid), vm2: allowedCpus(rx.pid), vm1: allowedCpus(gen.pid) } : undefined;
    if (!gen.running() || !rx.running()) throw new Error(`a VM exited during the measurement:\n${gen.tail(4)}\n${rx.tail(4)}`);

    const d = (name: string, key: string) => (counters(b.stats, name)[key] as number) - (counters(a.stats, name)[key] as number);
    const names = ['vm1', 'vm2'];
    const recv = s.bidirectional ? names : ['vm2'];
    const packets = recv.reduce((n, p) => n + d(p, 'txPackets'), 0);
    const bytes = recv.reduce((n, p) => n + d(p, 'txBytes'), 0);
    const copied = names.reduce((n, p) => n + d(p, 'copiedBytes'), 0);
    const gifts = names.reduce((n, p) => n + d(p, 'giftsIn'), 0);
    const dropReasons = dropsBetween(a.stats, b.stats, names);
    const drops = Object.values(dropReasons).reduce((x, y) => x + y, 0);
    const windowSec = (b.at - a.at) / 1000;
    const cpuDelta = (k: 'sw' | 'vm1' | 'vm2') => (a[k] !== null && b[k] !== null ? b[k]! - a[k]! : null);
    const swCpu = cpuDelta('sw');
    // The switch's busy time (stats.dataPath; absent from a switch without it).
    const swBusy = a.stats.dataPath && b.stats.dataPath ? b.stats.dataPath.busySec - a.stats.dataPath.busySec : null;
    const busyRounds = a.stats.dataPath && b.stats.dataPath ? b.stats.dataPath.busyRounds - a.stats.dataPath.busyRounds : null;
    const allCpu = [cpuDelta('sw'), cpuDelta('vm1'), cpuDelta('vm2')];
    const totalCpu = allCpu.every((x) => x !== null) ? allCpu.reduce((x, y) => x! + y!, 0) : null;

    // Stop the sender, let the receiver drain, then compare its own count with the switch's.
    const g = await gen.stop();
    await sleep(150);
    const fin = await stats();
    await rx.stop();
    const rxSummary = lastJson(rx.stdout());
    const genSummary = lastJson(gen.stdout());
    const delivered = counters(fin, 'vm2').txPackets;
    if (rxSummary && typeof rxSummary.received === 'number' && Math.abs(rxSummary.received - delivered) > bufCount) {
      warnings.push(`vm2 counted ${rxSummary.received} received packets, the switch delivered ${delivered}`);
    }
    if (!fin.ledger.ok) warnings.push(`ledger unbalanced after the run: ${fin.ledger.problems.join('; ')}`);
    // Without huge pages every buffer of a big region is a TLB miss for the VMs: say so next to the number.
    if (!fin.sharedBuffers.hugePages && fin.sharedBuffers.bufCount * fin.sharedBuffers.bufSize >= 2 ** 21) {
      warnings.push('the shared region is on 4 KiB pages (the kernel refused huge pages: see the switch log)');
    }
    if (g.code !== 0 && g.signal === null) warnings.push(`gen exited with status ${g.code}`);
    const avgLen = packets > 0 ? bytes / packets : null;
    checkLength(avgLen, s.size, warnings);
    if (!(packets > 0)) throw new Error('no packets delivered in the measured window');
    return {
      ...windowRates(ctx.run, windowSec, packets, bytes),
      avgLen,
      ...processCosts(packets, windowSec, {
        switch: { cpuSec: swCpu, busySec: swBusy },
        vm1: { cpuSec: cpuDelta('vm1'), busySec: vmBusySec(a.vm1Snap, b.vm1Snap, windowSec) },
        vm2: { cpuSec: cpuDelta('vm2'), busySec: vmBusySec(a.vm2Snap, b.vm2Snap, windowSec) },
      }),
      totalCpuNsPerPkt: perPacket(totalCpu, packets, 1e9),
      copiedBytesPerPkt: copied / packets,
      giftsPer1000: (gifts / packets) * 1000,
      drops,
      dropReasons,
      extra: {
        perDirection: s.bidirectional ? { 'vm1->vm2': d('vm2', 'txPackets'), 'vm2->vm1': d('vm1', 'txPackets') } : undefined,
        zeroCopyPackets: names.reduce((n, p) => n + d(p, 'zeroCopy'), 0),
        copiedPackets: names.reduce((n, p) => n + d(p, 'copied'), 0),
        hugePages: fin.sharedBuffers.hugePages,
        packetsPerBusyRound: busyRounds ? packets / busyRounds : null,
        vmStalls: { vm1: vmStalls(a.vm1Snap, b.vm1Snap), vm2: vmStalls(a.vm2Snap, b.vm2Snap) } satisfies VmStallsByVm,
        kicks: names.reduce((n, p) => n + d(p, 'kicks'), 0),
        cpusAllowed,
        calls: names.reduce((n, p) => n + d(p, 'calls'), 0),
        vmCpuSec: { vm1: cpuDelta('vm1'), vm2: cpuDelta('vm2') },
        sinkReceivedTotal: rxSummary?.received ?? null,
        switchDeliveredTotal: delivered,
        genSentTotal: genSummary?.sent ?? null,
      },
      warnings,
    };
  } finally {
    for (const c of children.reverse()) await c.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    if (s.sender === 'testpmd') {
      for (const base of ['/var/run/dpdk', path.join(process.env.XDG_RUNTIME_DIR ?? '/nonexistent', 'dpdk')]) {
        fs.rmSync(path.join(base, pmdPrefix), { recursive: true, force: true });
      }
    }
  }
}

function lastJson(out: string): Record<string, number> | null {
  const lines = out.trim().split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i].trim();
    if (!l.startsWith('{')) continue;
    try {
      return JSON.parse(l) as Record<string, number>;
    } catch {
      return null;
    }
  }
  return null;
}
