/**
 * What the control plane and a data-path worker say to each other
 * (docs/design.md, "Threads"). Requests go main -> worker on the worker's
 * control port and are answered on its reply port (rpc.ts); events go
 * worker -> main on the worker's parentPort. Fds travel as numbers: the
 * threads share the process's fd table. An fd the worker keeps (a TAP
 * uplink's, a ring's call fd) is a dup the main thread made for it and
 * closes itself (lent-fds.ts): the worker never closes one. Any other fd
 * (a region's memfd, the memory table's) is used only while the main
 * thread waits for the answer, so the number is valid then.
 */
import type { MemRegionDesc } from '../vhost/codec';
import type { LedgerCheck } from '../shm/ledger';
import type { PollMode, PortPolicyConfig } from '../config';
import type { BridgeMacEntry } from '../datapath/tenancy';
import type { PostingsSnapshot } from '../datapath/rx-postings';

/** One running vring as the worker rebuilds it: user addresses of its parts, indices, call fd. */
export interface VringState {
  /** The control plane's queue object, by number: a new number is a new (or remapped) ring. */
  gen: number;
  num: number;
  desc: number;
  avail: number;
  used: number;
  lastAvail: number;
  usedIdx: number;
  eventIdx: boolean;
  /** Lent to the worker (lent-fds.ts): it signals it and never closes it. */
  callFd: number;
  /** The call fd by number (VringSlot.callGen): a new one is a new fd even when its number was reused. */
  callGen: number;
  /** The kick fd (a dup lent like the call fd; -1: none), which the worker watches itself, and its number (VringSlot.kickGen). */
  kickFd: number;
  kickGen: number;
}

/** A port's queues and memory as the worker must mirror them (null: the front-end went away). */
export interface PortState {
  ackedFeatures: bigint;
  /** Acked protocol features (PROTOCOL_F_RX_BY_BUFFER, PROTOCOL_F_SWAP_IN_USED, PROTOCOL_F_RETURNED_IN_USED). */
  ackedProtocol: bigint;
  /** NET_SET_MTU from the front-end (0: none). */
  mtu: number;
  zeroCopy: boolean;
  /** Guest address of the port's window (an ivshmem BAR), or null: the domain's base. */
  window: number | null;
  /** The memory table by number (a new number: map again), its regions and (main's kept) fds. */
  mem: { gen: number; regions: MemRegionDesc[]; fds: number[] } | null;
  vrings: (VringState | null)[];
}

export interface DomainSetup {
  id: number;
  name: string;
  bufCount: number;
  bufSize: number;
  base: number;
  /** The region's memfd (the worker maps it while the main thread waits, and keeps no fd). */
  fd: number;
  ledger: SharedArrayBuffer;
  /** The control plane put the buffers on 2 MiB pages: the worker's mapping asks for them too. */
  hugePages: boolean;
}

export interface Settings {
  burst: number;
  pollMode: PollMode;
  spinUs: number;
  rxWaitMs: number;
}

export type Request =
  | { op: 'domain'; domain: DomainSetup }
  /** mtu: the port's configured `mtu`. */
  /** counters: a port moved from another worker keeps counting from there. */
  | { op: 'port'; id: number; name: string; partitionCount: number; domain: number; mtu: number; counters?: PortCounterSnapshot }
  /**
   * Bridge mode: a TAP uplink the main thread opened and configured; the
   * worker serves fd, a dup lent to it (lent-fds.ts), until port-del.
   * offloads: TUNSETOFFLOAD took CSUM and TSO; mtu: the interface's.
   */
  | { op: 'tap'; id: number; name: string; ifname: string; fd: number; offloads: boolean; mtu: number }
  /** The port (or TAP uplink) leaves this worker (removed, or moved to another): answers its counters. */
  | { op: 'port-del'; id: number }
  /** The domain leaves this worker (its last port went): its mapping goes. */
  | { op: 'domain-del'; id: number }
  | { op: 'peer'; id: number; peer: number | null }
  /** Bridge mode: the port's tenant settings (its bridge, VLANs, MACs, limits). */
  | { op: 'policy'; id: number; policy: PortPolicyConfig }
  /** Bridge mode: the port's front-end went away; its learned MACs go. */
  | { op: 'forget'; id: number }
  /** Bridge mode: the learned MAC tables. */
  | { op: 'macs' }
  /** postings: the port moved here from another worker (hand-over): what it held there, restored once its rings run here. */
  | { op: 'sync'; id: number; state: PortState | null; postings?: PostingsSnapshot }
  /**
   * The port moves to another worker (docs/design.md, "Data-path workers"):
   * it leaves this one as port-del does (its mirror too), after publishing
   * its used entries and calls and turning its kicks on; answers what its
   * next worker needs.
   */
  | { op: 'hand-over'; id: number }
  /** Stop forwarding for the port until its next sync, and report its rings' indices (GET_VRING_BASE and friends). */
  | { op: 'freeze'; id: number }
  | { op: 'assign'; domain: number; start: number; count: number; port: number }
  | { op: 'reclaim'; domain: number; port: number }
  | { op: 'check'; domain: number }
  | { op: 'stats' }
  | { op: 'reset' }
  | { op: 'settings'; settings: Settings }
  /** Capture: mirror the port's frames into this ring (src/workers/mirror-ring.ts), or stop (null). */
  | { op: 'mirror'; id: number; ring: SharedArrayBuffer | null }
  /** Guest-memory faults the main thread took for this worker's mappings. */
  | { op: 'faults'; ids: number[] }
  | { op: 'stop' }
  /** Test hook (ZCSWITCH_TEST_HOOKS=1, docs/operations.md): the worker thread dies of an uncaught error. */
  /** Test hook: die of an uncaught error now, or (onNextRequest) while handling the next request. */
  | { op: 'test-crash'; onNextRequest?: boolean }
  /** Kicks arrived for the worker's ports (no answer; coalesced by SIG_WAKE). */
  | { op: 'wake' };

/** What each request answers. */
export interface Replies {
  freeze: RingIndices;
  assign: boolean;
  reclaim: number;
  check: LedgerCheck;
  stats: WorkerStats;
  macs: BridgeMacEntry[];
  'port-del': PortCounterSnapshot;
  'hand-over': Handover;
}

/** Ring indices as a worker left them (freeze, hand-over); null: the ring was not running there. */
export type RingIndices = ({ lastAvail: number; usedIdx: number } | null)[];

/** What a port's next worker needs from its last one (hand-over). */
export interface Handover {
  counters: PortCounterSnapshot;
  /** Where each ring stopped: the control plane's queue objects take these, so the next worker's rings resume there. */
  rings: RingIndices;
  /** The rx postings it held (src/datapath/rx-postings.ts). */
  postings: PostingsSnapshot;
}

export interface PortCounterSnapshot {
  id: number;
  /** PortCounters' numeric fields the data path counts (not guestMemoryFaults: the control plane counts those). */
  fields: Record<string, number>;
  drops: number[];
  queueCounters: number[];
}

export interface WorkerStats {
  busyMs: number;
  busyRounds: number;
  ports: PortCounterSnapshot[];
}

export type WorkerEvent =
  | { ev: 'ready'; cpu: number | null; cpus: number[] }
  /** A ring broke or the call fd saturated: disconnect the port (PortQueues' broken). */
  | { ev: 'broken'; id: number; reason: string }
  /** A throw in the port's part of a round (the fault boundary). */
  | { ev: 'fault'; id: number; where: string; message: string }
  | { ev: 'guest-fault'; id: number }
  /** The port's mirror ring is no longer empty and the main thread asked to be told. */
  | { ev: 'mirror'; id: number }
  /** Faults this worker took for other threads' mappings. */
  | { ev: 'foreign-faults'; ids: number[] }
  /** An uncaught error: the thread exits next (SIG_DEAD is set). */
  | { ev: 'crashed'; message: string };

/** The wake flag's index in the worker's signal array: set by the main thread, cleared by the worker. */
export const SIG_REPLY = 0;
export const SIG_WAKE = 1;
/** Set by a worker that crashed (an uncaught error): a request it was sent will never be answered. */
export const SIG_DEAD = 2;
export const SIG_LENGTH = 3;

/** Port counters the data path keeps (copied from the worker on stats). */
export const WORKER_COUNTER_FIELDS = [
  'rxPackets', 'rxBytes', 'txPackets', 'txBytes', 'zeroCopy', 'copied', 'copiedBytes', 'giftsIn', 'giftsOut', 'returned', 'calls',
  'gsoFrames', 'segmented', 'checksummed', 'kicks',
] as const;
