/**
 * What a running switch reports about itself: the reply to the control
 * socket's `stats` command, read by `zcswitch stats`, the Prometheus
 * endpoint, the bench and the tests. A contract between processes, so it
 * lives apart from the Switch that fills it in.
 */
import type { PortPolicyConfig } from '../config/schema';
import type { LedgerCheck } from '../shm/ledger';

export interface PortStats {
  name: string;
  /** The port's socket path; `tap:<ifname>` for a TAP uplink; `connect:<path>` for a client-mode port (the front-end's socket). */
  socket: string;
  /** The port's sharing domain (null: a TAP uplink, which maps no shared buffers). */
  domain: string | null;
  attached: boolean;
  /** Both queues running: the port can carry traffic. */
  ready: boolean;
  zeroCopy: boolean;
  /** Guest-physical address of the port's ivshmem BAR holding its domain's region ("0x..."), or null (none recognised). */
  sharedBar: string | null;
  peer: string | null;
  buffersOwned: number;
  /** Bridge mode: MAC addresses learned on this port. */
  macs: string[];
  /** Bridge mode: the port's bridge, VLAN or trunk, allowed MACs, isolation and rate limits (`ports[]`, after defaults). */
  policy?: PortPolicyConfig;
  /** Per running queue pair: what the switch took from (rx) and gave to (tx) the VM. */
  queues: { index: number; rxPackets: number; rxBytes: number; txPackets: number; txBytes: number }[];
  counters: Record<string, unknown>;
}

export interface SwitchStats {
  mode: string;
  uptimeSec: number;
  /**
   * bufCount is per domain (each domain has its own region of bufCount ×
   * bufSize); pool, domains and totalBytes are over all domains.
   */
  sharedBuffers: {
    bufCount: number; bufSize: number; base: string; pool: number; hugePages: boolean; domains: number; totalBytes: number;
  };
  /** Every domain's ledger in one: ok only when all balance; problems name the domain. */
  ledger: LedgerCheck;
  /**
   * Each sharing domain: its ports, buffers, pool and whether its ledger
   * balances; regionFile is the path QEMU opens as mem-path (null: not
   * published), regionSize the region's bytes (buffers + header, a power of two).
   */
  domains: { name: string; ports: string[]; bufCount: number; pool: number; ledgerOk: boolean; regionFile: string | null; regionSize: number }[];
  ports: PortStats[];
  /**
   * The data path's own work since the switch started (not cleared by
   * reset-counters; take differences): busySec is the wall time of the
   * poll rounds that moved at least one descriptor, busyRounds how many
   * there were. Busy time ÷ packets is the switch's cost per packet without
   * its idle spinning (the bench's "switch busy ns/pkt").
   */
  dataPath: { busySec: number; busyRounds: number };
  /**
   * forwarding.workers > 0: each data-path worker thread, its CPU
   * (forwarding.cpus; null: not pinned) and the CPUs it may run on, its
   * ports and sharing domains, and its own busy time (dataPath is the sum).
   * Empty when the main thread forwards.
   */
  workers: WorkerInfo[];
}

export interface WorkerInfo {
  index: number;
  cpu: number | null;
  cpus: number[];
  ports: string[];
  domains: string[];
  busySec: number;
  busyRounds: number;
}
