/**
 * DPDK peers, all driven through dpdk-testpmd with --no-huge --no-pci
 * --no-shconf (ordinary process memory; no hugepages, no devices, no shared
 * config files):
 *
 *   dpdk-vhost  three processes, DPDK's own switch topology: a testpmd with
 *               two net_vhost ports (vhost-user back-ends) in io forwarding
 *               between two testpmd "VMs" on net_virtio_user, one txonly and
 *               one rxonly.
 *   memif       two processes: a memif server (rxonly) and a memif client
 *               (txonly); zero-copy off, or on (client side, which needs
 *               --single-file-segments).
 *   ovs-dpdk    OVS-DPDK (bench/runners/ovs.ts) as the switch between the
 *               same two testpmd VMs as dpdk-vhost, here vhost-user
 *               servers (virtio-user server=1) that OVS connects to.
 *
 * The rate is the receiver's own Rx-pps from `--stats-period 1` (testpmd
 * times its periods with the TSC), averaged over the periods that end in the
 * measured window; RX-bytes / RX-packets checks the received length.
 * testpmd's stdout is a pipe here, so it runs under `stdbuf -oL`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { type Child, startChild } from '../lib/child';
import { cpuPlan } from '../lib/pin';
import { sleep, threadsCpuSec, treeCpuSec, waitFor, which } from '../lib/util';
import type { RunMetrics, Scenario } from '../types';
import { type RunContext, checkLength, processCosts } from './common';
import { OVS_MAX_MTU, OvsSwitch, type OvsTools, ovsMtu } from './ovs';

export interface DpdkTools {
  testpmd: string;
  stdbuf: string;
}

export type DpdkLookup = { ok: true; tools: DpdkTools } | { ok: false; reason: string };

/** testpmd from --testpmd, env ZC_DPDK_TESTPMD (a binary or a wrapper), or PATH (dpdk-testpmd, testpmd). */
export function findDpdk(explicit?: string): DpdkLookup {
  const want = explicit || process.env.ZC_DPDK_TESTPMD;
  let testpmd: string | null;
  if (want) {
    testpmd = which(want);
    if (!testpmd) return { ok: false, reason: `${explicit ? '--testpmd' : 'ZC_DPDK_TESTPMD'}=${want} is not an executable file` };
  } else {
    testpmd = which('dpdk-testpmd') ?? which('testpmd');
    if (!testpmd) return { ok: false, reason: 'dpdk-testpmd is not installed (not on PATH, ZC_DPDK_TESTPMD unset); apt-get install dpdk dpdk-dev' };
  }
  const stdbuf = which('stdbuf');
  if (!stdbuf) return { ok: false, reason: 'stdbuf (coreutils) is not on PATH: testpmd output to a pipe would be block-buffered' };
  return { ok: true, tools: { testpmd, stdbuf } };
}

/** Mbuf geometry for a frame size: everything sized to keep each process near 256 MiB of mbufs. */
export interface Geometry {
  /** --mbuf-size (data room incl. 128 B headroom), null for testpmd's default 2176. */
  mbufSize: number | null;
  /** --txpkts segments. */
  segments: number[];
  mbufs: number;
  /** Ring size (--rxd/--txd, virtio-user queue_size, memif 2^rsize). */
  queue: number;
  /** -m, MiB. */
  memMb: number;
  /** memif bsize. */
  memifBsize: number;
}

const HEADROOM = 128;
const pow2floor = (n: number) => 2 ** Math.floor(Math.log2(n));

export function geometry(size: number): Geometry {
  let mbufSize: number | null = null;
  let segments = [size];
  if (size > 2048) {
    if (size + HEADROOM <= 65535) {
      mbufSize = Math.ceil((size + HEADROOM) / 64) * 64;
    } else {
      // A 64 KiB frame does not fit one mbuf (16-bit data room): send it in segments.
      const n = Math.ceil(size / 32768);
      const base = Math.floor(size / n);
      segments = Array.from({ length: n }, (_, i) => (i < size % n ? base + 1 : base));
      mbufSize = Math.max(...segments) + HEADROOM;
    }
  }
  const elt = (mbufSize ?? 2176) + 256;
  const mbufs = Math.min(32768, Math.max(2048, pow2floor((256 << 20) / elt)));
  const queue = Math.min(8192, mbufs / 4);
  const memMb = Math.ceil((mbufs * elt * 1.1) / (1 << 20)) + 160;
  const memifBsize = size <= 2048 ? 2048 : Math.min(65535, Math.ceil(size / 1024) * 1024);
  return { mbufSize, segments, mbufs, queue, memMb, memifBsize };
}

export interface Block {
  port: number;
  at: number;
  rxPackets: number;
  rxMissed: number;
  rxBytes: number;
  txPackets: number;
  txErrors: number;
  txBytes: number;
  rxPps: number;
  txPps: number;
}

/** Parses testpmd's periodic "NIC statistics for port N" blocks (`--stats-period`, or `show port stats all`). */
export class StatsParser {
  readonly blocks: Block[] = [];
  private cur: Partial<Block> | null = null;

  constructor(c?: Child) {
    c?.onLine((raw, at) => this.feed(raw, at));
  }

  /** One line of testpmd's stdout, and when it arrived. */
  feed(raw: string, at: number): void {
    const line = raw.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
    let m = /NIC statistics for port (\d+)/.exec(line);
    if (m) {
      this.cur = { port: Number(m[1]) };
      return;
    }
    const c = this.cur;
    if (!c) return;
    if ((m = /RX-packets:\s*(\d+)\s+RX-missed:\s*(\d+)\s+RX-bytes:\s*(\d+)/.exec(line))) {
      c.rxPackets = Number(m[1]);
      c.rxMissed = Number(m[2]);
      c.rxBytes = Number(m[3]);
    } else if ((m = /TX-packets:\s*(\d+)\s+TX-errors:\s*(\d+)\s+TX-bytes:\s*(\d+)/.exec(line))) {
      c.txPackets = Number(m[1]);
      c.txErrors = Number(m[2]);
      c.txBytes = Number(m[3]);
    } else if ((m = /Rx-pps:\s*(\d+)/.exec(line))) {
      c.rxPps = Number(m[1]);
    } else if ((m = /Tx-pps:\s*(\d+)/.exec(line))) {
      c.txPps = Number(m[1]);
      c.at = at;
      if (c.rxPackets !== undefined && c.txPackets !== undefined && c.rxPps !== undefined) this.blocks.push(c as Block);
      this.cur = null;
    }
  }

  port(p: number): Block[] {
    return this.blocks.filter((b) => b.port === p);
  }

  /** The last block of port p that arrived at or before t. */
  at(p: number, t: number): Block | null {
    let r: Block | null = null;
    for (const b of this.blocks) if (b.port === p && b.at <= t) r = b;
    return r;
  }
}

let seq = 0;

export function eal(prefix: string, memMb: number, extra: string[] = [], cpu: number | null = null): string[] {
  const n = Math.max(1, os.cpus().length);
  // Two lcores (main + one forwarding) that may run on any CPU: the scheduler
  // shares the cores among all processes, as it does for zcswitch. --pin: both on one CPU.
  const cpus = cpu !== null ? String(cpu) : `(${Array.from({ length: n }, (_, i) => i).join(',')})`;
  return ['--no-huge', '--no-pci', '--no-shconf', '-m', String(memMb), '--file-prefix', prefix, '--lcores', `0@${cpus},1@${cpus}`, ...extra];
}

export function app(s: Scenario, g: Geometry, mode: 'io' | 'rxonly' | 'txonly'): string[] {
  return [
    // --mbuf-size first: testpmd checks --txpkts against the mbuf size known at that point.
    ...(g.mbufSize ? [`--mbuf-size=${g.mbufSize}`] : []),
    `--total-num-mbufs=${g.mbufs}`, `--rxd=${g.queue}`, `--txd=${g.queue}`, `--burst=${s.burst}`, '--nb-cores=1',
    `--forward-mode=${mode}`, ...(mode === 'txonly' ? [`--txpkts=${g.segments.join(',')}`] : []),
    '--auto-start', '--stats-period', '1',
  ];
}

interface Proc {
  role: string;
  child: Child;
  stats: StatsParser;
  args: string[];
}

function startPmd(tools: DpdkTools, role: string, args: string[]): Proc {
  const child = startChild(`testpmd ${role}`, tools.stdbuf, ['-oL', '-eL', tools.testpmd, ...args]);
  return { role, child, stats: new StatsParser(child), args };
}

function ensureRunning(procs: Proc[]): void {
  for (const p of procs) {
    if (!p.child.running()) throw new Error(`testpmd ${p.role} exited (status ${p.child.child.exitCode}):\n${p.child.tail(6)}`);
  }
}

export async function runDpdk(s: Scenario, ctx: RunContext, tools: DpdkTools, ovsTools: OvsTools | null = null): Promise<RunMetrics> {
  const g = geometry(s.size);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zcb-dpdk-'));
  const prefix = `zcb${process.pid}x${++seq}`;
  const procs: Proc[] = [];
  const warnings: string[] = [];
  const memif = s.system === 'dpdk-memif';
  let ovs: OvsSwitch | null = null;
  let ovsPorts: [number, number] = [0, 0];
  // --pin: vhost switch, rx VM, tx VM; memif: rx, tx.
  const cores = ctx.pin ? cpuPlan(memif ? 2 : 3, undefined, ctx.cpus) : [null, null, null];
  const t0 = performance.now();
  const dbg = (m: string) => {
    if (process.env.ZC_BENCH_DEBUG) process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(2)}] ${s.id}: ${m}\n`);
  };
  try {
    let rx: Proc;
    let tx: Proc;
    let sw: Proc | null = null;
    if (s.system === 'ovs-dpdk') {
      if (!ovsTools) throw new Error('OVS-DPDK is not available');
      const mtu = ovsMtu(s.size);
      if (mtu === null) throw new Error(`OVS-DPDK carries frames up to ${OVS_MAX_MTU + 14} B`);
      const sock: [string, string] = [path.join(dir, 'vh0.sock'), path.join(dir, 'vh1.sock')];
      // The VMs are the vhost-user servers; OVS's dpdkvhostuserclient ports connect to them.
      const vuser = (p: string) => `net_virtio_user0,path=${p},server=1,queues=1,queue_size=${g.queue}`;
      rx = startPmd(tools, 'rx VM', [...eal(`${prefix}rx`, g.memMb, [], cores[1]), '--vdev', vuser(sock[1]), '--', ...app(s, g, 'rxonly')]);
      tx = startPmd(tools, 'tx VM', [...eal(`${prefix}tx`, g.memMb, [], cores[2]), '--vdev', vuser(sock[0]), '--', ...app(s, g, 'txonly')]);
      procs.push(rx, tx);
      await waitFor('the testpmd VMs to listen', () => {
        ensureRunning(procs);
        return sock.every((p) => fs.existsSync(p));
      }, 30000, 50);
      ovs = new OvsSwitch(ovsTools, dir);
      await ovs.start(cores[0], `${prefix}sw`);
      await ovs.connect(sock, mtu);
      ovsPorts = await ovs.portNumbers();
      dbg('ovs-vswitchd connected');
    } else if (!memif) {
      const sock = [path.join(dir, 'vhost0.sock'), path.join(dir, 'vhost1.sock')];
      sw = startPmd(tools, 'switch', [
        ...eal(`${prefix}sw`, g.memMb, [], cores[0]),
        '--vdev', `net_vhost0,iface=${sock[0]},queues=1`, '--vdev', `net_vhost1,iface=${sock[1]},queues=1`,
        '--', ...app(s, g, 'io'),
      ]);
      procs.push(sw);
      await waitFor('the testpmd vhost switch to listen', () => {
        ensureRunning(procs);
        return sock.every((p) => fs.existsSync(p)) && /Port 1: /.test(sw!.child.stdout());
      }, 30000, 50);
      const vuser = (p: string) => `net_virtio_user0,path=${p},queues=1,queue_size=${g.queue}`;
      rx = startPmd(tools, 'rx VM', [...eal(`${prefix}rx`, g.memMb, [], cores[1]), '--vdev', vuser(sock[1]), '--', ...app(s, g, 'rxonly')]);
      tx = startPmd(tools, 'tx VM', [...eal(`${prefix}tx`, g.memMb, [], cores[2]), '--vdev', vuser(sock[0]), '--', ...app(s, g, 'txonly')]);
      procs.push(rx, tx);
    } else {
      const sock = path.join(dir, 'memif.sock');
      const zc = s.group === 'memif-zc';
      const dev = (role: string) => `net_memif0,role=${role},socket=${sock},id=0,rsize=${Math.log2(Math.min(g.queue, 4096))},bsize=${g.memifBsize}`;
      rx = startPmd(tools, 'memif server (rx)', [...eal(`${prefix}rx`, g.memMb, [], cores[0]), '--vdev', dev('server'), '--', ...app(s, g, 'rxonly')]);
      procs.push(rx);
      await waitFor('the memif server to start', () => {
        ensureRunning(procs);
        return /Port 0: /.test(rx.child.stdout());
      }, 30000, 50);
      // memif zero-copy (client side) needs its memory in one file segment.
      tx = startPmd(tools, 'memif client (tx)', [
        ...eal(`${prefix}tx`, g.memMb, zc ? ['--single-file-segments'] : [], cores[1]),
        '--vdev', `${dev('client')},zero-copy=${zc ? 'yes' : 'no'}`, '--', ...app(s, g, 'txonly'),
      ]);
      procs.push(tx);
    }
    dbg('all processes started');
    ctx.setup({
      geometry: g,
      processes: Object.fromEntries(procs.map((p) => [p.role, `dpdk-testpmd ${p.args.join(' ').split(dir).join('<dir>')}`])),
      ...(ovs ? {
        ovs: 'ovs-vswitchd-dpdk in its own network namespace; dpdk-extra "--no-huge -m 1024 --legacy-mem --no-pci --file-prefix <prefix>", per-port-memory=true' +
          `${cores[0] !== null ? `, pmd-cpu-mask=0x${(1 << cores[0]).toString(16)}` : ''}; netdev bridge br0, dpdkvhostuserclient vh0 (tx VM) and vh1 ` +
          `(rx VM), mtu_request=${ovsMtu(s.size)}; flows in_port=vh0,actions=output:vh1 and back`,
      } : {}),
      ...(ctx.pin ? { cpus: memif ? { rx: cores[0], tx: cores[1] } : { switch: cores[0], rx: cores[1], tx: cores[2] } } : {}),
    });
    await waitFor('DPDK traffic to reach the receiver', () => {
      ensureRunning(procs);
      if (ovs && !ovs.vswitchd!.running()) throw new Error(`ovs-vswitchd exited:\n${ovs.logTail()}`);
      return rx.stats.port(0).some((b) => b.rxPackets > 0);
    }, 60000, 50);
    dbg('traffic flowing');
    await sleep(ctx.warmupSec * 1000);
    const cpu = () => procs.map((p) => treeCpuSec(p.child.pid));
    const ovsCpu = () => (ovs ? treeCpuSec(ovs.vswitchd!.pid) : null);
    const pmdCpu = () => (ovs ? threadsCpuSec(ovs.vswitchd!.pid, 'pmd') : null);
    const ovsPortsA = ovs ? await ovs.dumpPorts() : null;
    if (ovs) await ovs.clearPmdStats();
    const o0 = ovsCpu();
    const p0 = pmdCpu();
    const c0 = cpu();
    const tStart = performance.now();
    await sleep(ctx.durationSec * 1000);
    let tEnd = performance.now();
    const c1 = cpu();
    const o1 = ovsCpu();
    const p1 = pmdCpu();
    const pmd = ovs ? await ovs.pmdStats() : null;
    const ovsPortsB = ovs ? await ovs.dumpPorts() : null;
    ensureRunning(procs);
    let inWin = rx.stats.port(0).filter((b) => b.at > tStart && b.at <= tEnd);
    if (inWin.length === 0) {
      // Window shorter than a stats period: take the first period that ends after it starts.
      await waitFor('a testpmd stats period', () => rx.stats.port(0).some((b) => b.at > tStart), 3000);
      inWin = [rx.stats.port(0).find((b) => b.at > tStart)!];
      tEnd = inWin[0].at;
    }
    const a = rx.stats.at(0, tStart);
    const b = inWin[inWin.length - 1];
    if (!a) throw new Error('no testpmd stats before the measured window');
    const pps = inWin.reduce((x, y) => x + y.rxPps, 0) / inWin.length;
    const dPkts = b.rxPackets - a.rxPackets;
    const cumWindow = (b.at - a.at) / 1000;
    const avgLen = dPkts > 0 ? (b.rxBytes - a.rxBytes) / dPkts : null;
    checkLength(avgLen, s.size, warnings);
    if (!(pps > 0)) throw new Error(`the receiver reported 0 pps in the measured window:\n${rx.child.tail(4)}`);
    const cumPps = cumWindow > 0 ? dPkts / cumWindow : 0;
    if (cumPps > 0 && Math.abs(cumPps - pps) / pps > 0.25) {
      warnings.push(`testpmd Rx-pps ${pps.toFixed(0)} and RX-packets/time ${cumPps.toFixed(0)} disagree`);
    }
    const windowSec = (tEnd - tStart) / 1000;
    const packets = pps * windowSec;
    const len = avgLen ?? s.size;
    const cpuDelta = c0.map((x, i) => (x !== null && c1[i] !== null ? c1[i]! - x : null));
    const ovsCpuSec = ovs && o0 !== null && o1 !== null ? o1 - o0 : null;
    const testpmdCpu = cpuDelta.every((x) => x !== null) ? cpuDelta.reduce((x, y) => x! + y!, 0)! : null;
    const totalCpu = testpmdCpu === null ? null : ovs ? (ovsCpuSec === null ? null : testpmdCpu + ovsCpuSec) : testpmdCpu;
    const swCpu = sw ? cpuDelta[0] : ovsCpuSec;
    // OVS: its PMDs' processing share of the cycles since pmd-stats-clear, times the CPU time
    // the PMD threads had (the cycles also run on while a PMD has lost its core; on a core of
    // its own that CPU time is the window).
    const pmdCycles = pmd ? pmd.idleCycles + pmd.processingCycles : 0;
    const pmdSec = p0 !== null && p1 !== null ? Math.min(p1 - p0, pmd!.pmds * windowSec) : null;
    const swBusy = pmd && pmdCycles > 0 && pmdSec !== null ? (pmd.processingCycles / pmdCycles) * pmdSec : null;
    // Drops: what the vhost switch failed to deliver (TX-errors towards the rx VM) and what a receiver missed.
    let drops = 0;
    const rxA = rx.stats.at(0, tStart);
    const rxB = rx.stats.at(0, tEnd);
    if (rxA && rxB) drops += rxB.rxMissed - rxA.rxMissed;
    if (sw) {
      const p1a = sw.stats.at(1, tStart), p1b = sw.stats.at(1, tEnd);
      const p0a = sw.stats.at(0, tStart), p0b = sw.stats.at(0, tEnd);
      if (p1a && p1b) drops += p1b.txErrors - p1a.txErrors;
      if (p0a && p0b) drops += p0b.rxMissed - p0a.rxMissed;
    }
    if (ovsPortsA && ovsPortsB) {
      // What OVS could not hand to the rx VM (its ring full) and what it dropped on input.
      const d = (port: number, k: 'txDrops' | 'rxDrops') => (ovsPortsB.get(port)?.[k] ?? 0) - (ovsPortsA.get(port)?.[k] ?? 0);
      drops += d(ovsPorts[1], 'txDrops') + d(ovsPorts[0], 'rxDrops');
    }
    const txA = tx.stats.at(0, tStart), txB = tx.stats.at(0, tEnd);
    return {
      run: ctx.run,
      windowSec,
      packets,
      bytes: packets * len,
      mpps: pps / 1e6,
      gbps: (pps * len * 8) / 1e9,
      avgLen,
      ...processCosts(packets, windowSec, {
        switch: sw || ovs ? { cpuSec: swCpu, busySec: swBusy } : undefined,
        vm1: { cpuSec: cpuDelta[procs.indexOf(tx)], busySec: null },
        vm2: { cpuSec: cpuDelta[procs.indexOf(rx)], busySec: null },
      }),
      totalCpuNsPerPkt: totalCpu !== null && packets > 0 ? (totalCpu / packets) * 1e9 : null,
      copiedBytesPerPkt: null,
      giftsPer1000: null,
      drops,
      extra: {
        testpmdRxPpsPeriods: inWin.map((x) => x.rxPps),
        rxPacketsPerSec: cumPps,
        senderTxPps: txA && txB && txB.at > txA.at ? (txB.txPackets - txA.txPackets) / ((txB.at - txA.at) / 1000) : null,
        cpuSec: Object.fromEntries(procs.map((p, i) => [p.role, cpuDelta[i]])),
        ...(ovs ? { ovsCpuSec, pmdCpuSec: pmdSec, pmdProcessingShare: pmdCycles > 0 ? pmd!.processingCycles / pmdCycles : null } : {}),
      },
      warnings,
    };
  } finally {
    // testpmd takes about a second to leave its stats loop: stop all at once.
    dbg('stopping');
    await ovs?.stop();
    await Promise.all(procs.map((p) => p.child.stop(3000)));
    dbg('stopped');
    fs.rmSync(dir, { recursive: true, force: true });
    for (const role of ['sw', 'rx', 'tx']) {
      for (const base of ['/var/run/dpdk', path.join(process.env.XDG_RUNTIME_DIR ?? '/nonexistent', 'dpdk')]) {
        fs.rmSync(path.join(base, `${prefix}${role}`), { recursive: true, force: true });
      }
    }
  }
}
