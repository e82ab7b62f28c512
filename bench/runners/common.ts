/** What every runner gets for one measured run. */
import { DEFAULTS } from '../../src/config';
import type { SwitchStats } from '../../src/switch/stats';
import type { Scenario, RunMetrics } from '../types';

export interface RunContext {
  run: number;
  warmupSec: number;
  durationSec: number;
  /** dist/src/cli/main.js */
  cli: string;
  /** zcswitch sharedBuffers.bufCount; null: bufCountFor(size). */
  bufCount: number | null;
  /** zcswitch sharedBuffers.bufSize (--buf-size); null: bufSizeFor(size). */
  bufSize?: number | null;
  /** One CPU per process (bench/lib/pin.ts). */
  pin: boolean;
  /** --cpus: the CPUs in --pin's order; null: --pin's plan. */
  cpus?: number[] | null;
  /** zcswitch forwarding.workers (--workers); null: the default (the main thread forwards). */
  workers?: number | null;
  /** --pairs N: zc-oneway runs N pairs at once and reports their sum (zcswitch-pairs.ts); null: the one-pair runner. */
  pairs?: number | null;
  /** zcswitch forwarding.pairExchange (--pair-exchange); null: the switch default. */
  pairExchange?: 'swap' | 'gift' | null;
  /** dpdk-testpmd and stdbuf, where found (the classic-flood sender); null: not available. */
  dpdk?: { testpmd: string; stdbuf: string } | null;
  /** Called once with how the processes were set up (recorded in the JSON). */
  setup(info: Record<string, unknown>): void;
}

export type Runner = (s: Scenario, ctx: RunContext) => Promise<RunMetrics>;

/** The zcswitch region buffer size for a frame size: the smallest multiple of 64 >= size + 12 (virtio-net header), at least 128. */
export function bufSizeFor(size: number, requested: number | null = null): number {
  if (requested) return requested;
  return Math.max(128, Math.ceil((size + 12) / 64) * 64);
}

/** Why --buf-size cannot hold frames of this size ('' when it can): a multiple of 64, at least size + 12. */
export function bufSizeProblem(bufSize: number, size: number): string {
  if (bufSize % 64 !== 0) return `--buf-size ${bufSize} is not a multiple of 64`;
  if (bufSize < size + 12) return `--buf-size ${bufSize} is below a ${size} B frame + 12 B header`;
  return '';
}

/** Largest shared region the harness asks for by default. */
export const REGION_CAP_BYTES = 512 * 2 ** 20;

/**
 * The zcswitch bufCount for a frame size: the project's default
 * (DEFAULTS.bufCount), but fewer (a power of two) where that would make the
 * region larger than REGION_CAP_BYTES (64 KiB frames).
 */
export function bufCountFor(size: number, requested: number | null = null, bufSize: number | null = null): number {
  if (requested) return requested;
  const cap = 2 ** Math.floor(Math.log2(REGION_CAP_BYTES / bufSizeFor(size, bufSize)));
  return Math.min(DEFAULTS.bufCount, cap);
}

export function perPacket(total: number | null, packets: number, scale = 1): number | null {
  if (total === null || !(packets > 0)) return null;
  return (total / packets) * scale;
}

export function checkLength(avgLen: number | null, size: number, warnings: string[]): void {
  if (avgLen === null) return;
  if (Math.abs(avgLen - size) > Math.max(1, size * 0.005)) {
    warnings.push(`average received length ${avgLen.toFixed(1)} B differs from the packet size ${size} B`);
  }
}

/** The window's identity and rates, the part every runner reports alike. */
export function windowRates(run: number, windowSec: number, packets: number, bytes: number) {
  return { run, windowSec, packets, bytes, mpps: packets / windowSec / 1e6, gbps: (bytes * 8) / windowSec / 1e9 };
}

/** One process's share of a measured window: CPU seconds (utime+stime) and busy seconds (work without idle polling), null when unknown. */
export interface ProcessCost {
  cpuSec: number | null;
  busySec: number | null;
}

const NONE: ProcessCost = { cpuSec: null, busySec: null };

/** The per-process cost fields of RunMetrics: seconds in the window ÷ packets (ns) and ÷ the window (load). */
export function processCosts(packets: number, windowSec: number, p: { switch?: ProcessCost; vm1: ProcessCost; vm2: ProcessCost }) {
  const sw = p.switch ?? NONE;
  const load = (sec: number | null) => (sec === null || !(windowSec > 0) ? null : sec / windowSec);
  return {
    switchCpuNsPerPkt: perPacket(sw.cpuSec, packets, 1e9),
    switchCpuLoad: load(sw.cpuSec),
    switchBusyNsPerPkt: perPacket(sw.busySec, packets, 1e9),
    switchBusyLoad: load(sw.busySec),
    vm1CpuNsPerPkt: perPacket(p.vm1.cpuSec, packets, 1e9),
    vm1BusyNsPerPkt: perPacket(p.vm1.busySec, packets, 1e9),
    vm1BusyLoad: load(p.vm1.busySec),
    vm2CpuNsPerPkt: perPacket(p.vm2.cpuSec, packets, 1e9),
    vm2BusyNsPerPkt: perPacket(p.vm2.busySec, packets, 1e9),
    vm2BusyLoad: load(p.vm2.busySec),
  };
}

/** A port's counters as `zcswitch stats` reports them: numbers, and drops by reason. */
export type PortCounters = Record<string, number> & { drops: Record<string, number> };

/** The given ports' drops between two stats snapshots, summed per reason (reasons that did not move left out). */
export function dropsBetween(a: SwitchStats, b: SwitchStats, names: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  const drops = (st: SwitchStats, name: string) => (st.ports.find((p) => p.name === name)!.counters as PortCounters).drops;
  for (const p of names) {
    const da = drops(a, p);
    for (const [k, v] of Object.entries(drops(b, p))) {
      const n = v - (da[k] ?? 0);
      if (n) out[k] = (out[k] ?? 0) + n;
    }
  }
  return out;
}
