/**
 * The bench harness's data model: what a scenario is, what one measured run
 * yields, and the JSON file written to bench/results/<timestamp>.json.
 */
import type { PollMode } from '../src/config';
import type { Spread } from './lib/util';

export type System = 'zcswitch' | 'kernel' | 'dpdk-vhost' | 'dpdk-memif' | 'ovs-dpdk' | 'qemu-guests';

/**
 * Scenario groups. zcswitch: zc-oneway (gen -> sink, shared buffers, gifts),
 * zc-bidir (gen <-> echo), copy-oneway (gen --copy -> sink), classic-flood
 * (DPDK testpmd txonly on virtio-user -> sink: a sender with no flow control
 * of its own, the copy path under back-pressure), zc-burst and zc-poll
 * (one-way sweeps at one size), zc-gso (one-way, 64 KiB TSO frames with
 * their virtio_net_hdr: `zcswitch vm --gso`), zc-bridge (zc-oneway on a
 * learning bridge instead of a pair: MAC learning, lookups and swaps). Peers: kernel, dpdk-vhost,
 * memif, memif-zc, ovs-dpdk. Opt-in (--only): qemu-zc, two QEMU guests (TCG)
 * with the guest driver inside, one way.
 */
export type Group = 'zc-oneway' | 'zc-bidir' | 'zc-bridge' | 'copy-oneway' | 'classic-flood' | 'zc-burst' | 'zc-poll' | 'zc-gso' | 'kernel' | 'dpdk-vhost' | 'memif' | 'memif-zc' | 'ovs-dpdk' | 'qemu-zc';

export const ZC_GROUPS: Group[] = ['zc-oneway', 'zc-bidir', 'zc-bridge', 'copy-oneway', 'classic-flood', 'zc-burst', 'zc-poll', 'zc-gso'];
export const PEER_GROUPS: Group[] = ['kernel', 'dpdk-vhost', 'memif', 'memif-zc', 'ovs-dpdk'];
/** Groups only --only runs: slow (guests boot for every run), and rates under TCG are for the record. */
export const OPT_IN_GROUPS: Group[] = ['qemu-zc'];
/** Groups drawn as lines over packet size in the SVG and summary table. */
export const SWEEP_GROUPS: Group[] = ['zc-oneway', 'zc-bidir', 'zc-bridge', 'copy-oneway', 'classic-flood', 'kernel', 'dpdk-vhost', 'memif', 'memif-zc', 'ovs-dpdk'];

export const GROUP_LABELS: Record<Group, string> = {
  'zc-oneway': 'zcswitch zero-copy one-way',
  'zc-bidir': 'zcswitch zero-copy bidirectional',
  'zc-bridge': 'zcswitch zero-copy one-way, bridge mode (two VMs on a learning bridge)',
  'copy-oneway': 'zcswitch copy one-way',
  'classic-flood': 'zcswitch copy one-way, DPDK testpmd txonly flood as the sender',
  'zc-burst': 'zcswitch zero-copy one-way, burst sweep',
  'zc-poll': 'zcswitch zero-copy one-way, poll-mode sweep',
  'zc-gso': 'zcswitch zero-copy one-way, 64 KiB TSO frames (vm --gso)',
  kernel: 'kernel UDP loopback (sendmmsg/recvmmsg)',
  'dpdk-vhost': 'DPDK testpmd vhost-user switch + 2 virtio-user VMs',
  memif: 'DPDK memif pair, copy',
  'memif-zc': 'DPDK memif pair, zero-copy',
  'ovs-dpdk': 'OVS-DPDK netdev bridge (two dpdkvhostuserclient ports) + 2 virtio-user VMs',
  'qemu-zc': 'zcswitch zero-copy one-way, two QEMU guests (TCG) with the guest driver inside',
};

/** zc-gso's reference scenario: 64-byte frames, no TSO, in zc-gso's 64 KiB buffers. */
export const GSO_REFERENCE_ID = 'zc-gso/64-plain';

export interface Scenario {
  /** Unique, stable: e.g. "zc-oneway/64", "zc-burst/64/b8", "zc-poll/64/busy-poll". */
  id: string;
  group: Group;
  system: System;
  /** Ethernet frame size in bytes (what the VM sends; the virtio-net header is extra). */
  size: number;
  /** Packets per batch (switch forwarding.burst and the VMs' --burst; testpmd --burst; sendmmsg batch). */
  burst: number;
  /** zcswitch only: forwarding.pollMode. */
  pollMode?: PollMode;
  bidirectional: boolean;
  /** The sender uses the copy path (zcswitch vm --copy). */
  copy: boolean;
  /** zcswitch only: who sends on vm1 (default a `zcswitch vm` gen; testpmd: DPDK txonly on virtio-user). */
  sender?: 'testpmd';
  /** zcswitch only: the two VMs on a learning bridge (mode "bridge": MAC learning and swaps) instead of a pair. */
  bridge?: boolean;
  /** Both VMs negotiate offloads and send / take TSO frames (zcswitch vm --gso). */
  gso?: boolean;
  /** zcswitch sharedBuffers.bufSize for this scenario (--buf-size still wins); else the smallest that holds its size. */
  bufSize?: number;
}

/** One measured window of one run. Rates are over the window only (after the warm-up). */
export interface RunMetrics {
  run: number;
  windowSec: number;
  /** Packets delivered to the receiver(s) in the window (both directions for bidirectional). */
  packets: number;
  /** Frame bytes delivered in the window. */
  bytes: number;
  mpps: number;
  /** Gbit/s of payload (Ethernet frame bytes; no virtio-net/UDP/IP header, no CRC). */
  gbps: number;
  /** Average delivered frame length; should equal the scenario's size. */
  avgLen: number | null;
  /** CPU time of the switch process (utime+stime) per delivered packet, ns; null where there is no switch process. */
  switchCpuNsPerPkt: number | null;
  /** Switch CPU seconds per wall second in the window (1.0 = one core busy). */
  switchCpuLoad: number | null;
  /**
   * The switch's busy time per delivered packet, ns: wall time of its poll
   * rounds that moved at least one descriptor (zcswitch's stats dataPath;
   * OVS-DPDK: its PMD's processing cycles), i.e. its work without idle
   * spinning. null where the switch does not report it.
   */
  switchBusyNsPerPkt: number | null;
  /** Switch busy seconds per wall second in the window (1.0: never idle, it sets the rate). */
  switchBusyLoad: number | null;
  /** The sending VM (vm1: gen, testpmd txonly, memif client): CPU per delivered packet, ns. */
  vm1CpuNsPerPkt: number | null;
  /** The sending VM's busy time (loop turns that moved packets) per delivered packet, ns; null where it does not report it. */
  vm1BusyNsPerPkt: number | null;
  vm1BusyLoad: number | null;
  /** The receiving VM (vm2: sink or echo, testpmd rxonly, memif server): CPU per delivered packet, ns. */
  vm2CpuNsPerPkt: number | null;
  vm2BusyNsPerPkt: number | null;
  vm2BusyLoad: number | null;
  /** CPU of every process of the scenario (switch and both VMs / both peers) per packet, ns. */
  totalCpuNsPerPkt: number | null;
  /** zcswitch only: payload bytes the switch copied per delivered packet. */
  copiedBytesPerPkt: number | null;
  /** zcswitch only: GIFT_BUFFER descriptors the switch moved per 1000 delivered packets. */
  giftsPer1000: number | null;
  /** Packets dropped in the window (switch drop counters; kernel socket overflows; testpmd sent - received). */
  drops: number | null;
  dropReasons?: Record<string, number>;
  /** Extra raw numbers per system (sender count, testpmd's own rx pps, ...). */
  extra?: Record<string, unknown>;
  warnings: string[];
}

/**
 * What held a zcswitch VM back in a run's window (extra.vmStalls.vm1 and
 * .vm2; null without snapshots): the packets (sent and received) a busy
 * turn of its loop moved, and for a sender the share of its send passes
 * that sent less than a burst for want of free buffers or of tx ring room.
 */
export interface VmStalls {
  packetsPerBusyTurn: number;
  shortOfBuffers: number | null;
  shortOfRoom: number | null;
}
export type VmStallsByVm = { vm1: VmStalls | null; vm2: VmStalls | null };

export interface ScenarioSummary {
  mpps: Spread | null;
  gbps: Spread | null;
  switchCpuNsPerPkt: Spread | null;
  switchCpuLoad: Spread | null;
  switchBusyNsPerPkt: Spread | null;
  switchBusyLoad: Spread | null;
  vm1CpuNsPerPkt: Spread | null;
  vm1BusyNsPerPkt: Spread | null;
  vm1BusyLoad: Spread | null;
  vm2CpuNsPerPkt: Spread | null;
  vm2BusyNsPerPkt: Spread | null;
  vm2BusyLoad: Spread | null;
  totalCpuNsPerPkt: Spread | null;
  copiedBytesPerPkt: Spread | null;
  giftsPer1000: Spread | null;
  drops: Spread | null;
  avgLen: Spread | null;
}

export interface ScenarioResult extends Scenario {
  label: string;
  status: 'ok' | 'failed' | 'skipped';
  /** Why it failed or was skipped. */
  reason?: string;
  /** How the processes were set up (config, command lines), for reproducing. */
  setup?: Record<string, unknown>;
  runs: RunMetrics[];
  errors: string[];
  summary: ScenarioSummary;
  /** zcswitch only: median Mpps of this scenario / median Mpps of each peer at the same size. */
  ratios: Record<string, number | null>;
}

export interface PeerStatus {
  group: Group;
  status: 'ok' | 'skipped' | 'failed';
  reason?: string;
  program?: string;
}

export interface BenchSettings {
  quick: boolean;
  runs: number;
  warmupSec: number;
  durationSec: number;
  sizes: number[];
  bursts: number[];
  burstSize: number;
  pollModes: PollMode[];
  pollSize: number;
  groups: Group[];
  defaultBurst: number;
  defaultPollMode: PollMode;
  /** zcswitch sharedBuffers.bufCount; null: the project default, capped per size (see bench/runners/common.ts). */
  bufCount: number | null;
  /** zcswitch sharedBuffers.bufSize (--buf-size); null: per size, the smallest multiple of 64 >= size + 12 (at least 128). */
  bufSize?: number | null;
  /** One CPU per process (bench/lib/pin.ts); false: the scheduler places them. */
  pin: boolean;
  /** --cpus: the CPUs of a scenario's processes in --pin's order (implies pin); null: --pin's plan. */
  cpus?: number[] | null;
  /** zcswitch forwarding.workers (--workers); null: the switch default (0, the main thread forwards). */
  workers?: number | null;
  /** --pairs N: zc-oneway with N pairs at once, the aggregate rate (null: one pair). */
  pairs?: number | null;
  /** zcswitch forwarding.pairExchange (--pair-exchange); null: the switch default (gift). */
  pairExchange?: 'swap' | 'gift' | null;
}

export interface MachineInfo {
  hostname: string;
  os: string;
  kernel: string;
  node: string;
  cpus: number;
  cpuModel: string;
  lscpu: Record<string, string>;
  memGiB: number;
  loadAvgStart: number[];
  loadAvgEnd?: number[];
}

export interface BenchResults {
  schema: 'zcswitch-bench/1';
  startedAt: string;
  finishedAt: string;
  elapsedSec: number;
  aborted: boolean;
  machine: MachineInfo;
  settings: BenchSettings;
  peers: PeerStatus[];
  scenarios: ScenarioResult[];
  files: { json: string; markdown: string; svg: string };
}
