/**
 * A data-path worker thread (docs/design.md, "Threads"): runs DataPath
 * rounds in its own PollLoop for the ports of its shard, over its own
 * mappings of their memory (the regions' memfds, each front-end's memory
 * table), made again from the fds the control plane sends. Everything the
 * control plane changes arrives as a request on the control port, handled
 * between slices of rounds (never during one), and answered when the main
 * thread waits for it (rpc.ts). A port's fault costs that port only: the
 * worker stops serving it and tells the main thread, which disconnects it.
 * The fds it keeps (call and kick fds, TAP uplinks) are lent by the main thread,
 * which closes them (lent-fds.ts): nothing here closes one.
 */
import { performance } from 'node:perf_hooks';
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { dupFd, pinThisThread, thisThreadCpus } from '../../bindings';
import type { PairExchange } from '../config/schema';
import { BridgeForwarder, type BridgePort } from '../datapath/bridge-forwarder';
import { DataPath } from '../datapath/data-path';
import { FlowControl } from '../datapath/flow-control';
import { PairForwarder } from '../datapath/pair-forwarder';
import { PollLoop } from '../datapath/poll-loop';
import { PortQueues } from '../datapath/port-queues';
import { TapPort } from '../datapath/tap-port';
import type { Counted } from '../datapath/counters';
import { type LogLevel, createLogger } from '../log';
import { SharingDomain } from '../shm/domain';
import { dispatchGuestFaults, pollGuestFaults, setGuardThread } from '../vhost/guest-faults';
import { MemoryTable } from '../vhost/memory-table';
import { DeviceQueue } from '../virtio/device-queue';
import { MirrorRingWriter } from './mirror-ring';
import { WorkerRing } from './worker-ring';
import { SplitRing, availRingBytes, descTableBytes, usedRingBytes } from '../virtio/ring';
import type { PostingsSnapshot } from '../datapath/rx-postings';
import {
  type Handover, type PortCounterSnapshot, type PortState, type Replies, type Request, SIG_DEAD, SIG_REPLY, SIG_WAKE, type Settings, WORKER_COUNTER_FIELDS,
  type WorkerEvent, type WorkerStats,
} from './messages';

export interface WorkerInit {
  index: number;
  /** The switch's mode; bridge: its MAC table size and ageing (bridge.*). */
  mode: 'pair' | 'bridge';
  /** Pair mode: how shared buffers move (forwarding.pairExchange). */
  pairExchange: PairExchange;
  bridge: { macTableSize: number; ageingMs: number };
  cpu: number | null;
  logLevel: LogLevel;
  queuePairs: number;
  settings: Settings;
  control: MessagePort;
  replies: MessagePort;
  signal: SharedArrayBuffer;
}

/** A port as this worker serves it. */
interface WorkerPort {
  queues: PortQueues;
  /** This worker's own mapping of the front-end's memory, and the main thread's number for it. */
  mem: MemoryTable | null;
  memGen: number;
  /** Per running vring: this worker's queue, the call fd lent for it and its kick watcher (worker-ring.ts). */
  rings: (WorkerRing | null)[];
  /** A kick for one of its rings arrived: counted, and the loop wakes. */
  kicked: () => void;
  peer: number | null;
  /** Out of the data path: frozen for a ring read, or broken until the control plane syncs it. */
  out: boolean;
}

const init = workerData as WorkerInit;
const log = createLogger(init.logLevel).child({ worker: init.index });
const signal = new Int32Array(init.signal);
const post = (e: WorkerEvent): void => parentPort!.postMessage(e);

// Guard ids of this thread's mappings; faults of others' go to the main thread, which routes them.
setGuardThread(init.index + 1, (ids) => post({ ev: 'foreign-faults', ids }));
if (init.cpu !== null) pinThisThread(init.cpu);

const domains = new Map<number, SharingDomain>();
const ports = new Map<number, WorkerPort>();
/** Bridge mode: the TAP uplinks this worker serves, each over a dup of the main thread's fd lent to it. */
const taps = new Map<number, TapPort>();
const flow = new FlowControl(init.settings.rxWaitMs);
/** Bridge mode: this worker's ports by id (the forwarder's destinations). */
const bridgeById: BridgePort[] = [];
/** Other threads' port ids in bridgeById: never running (nq 0), so never a destination. */
const NOT_HERE = Object.freeze({ nq: 0, isTap: false, id: -1 }) as unknown as BridgePort;
const pair = init.mode === 'pair' ? new PairForwarder(init.settings.burst, flow, init.pairExchange === 'swap') : null;
const bridge = init.mode === 'bridge' ? new BridgeForwarder(init.settings.burst, bridgeById, init.bridge.macTableSize, init.bridge.ageingMs, flow) : null;
const dataPath = new DataPath(pair, bridge);
const loop = new PollLoop(dataPath, init.settings.pollMode, init.settings.spinUs);

function portOf(id: number): WorkerPort {
  const p = ports.get(id);
  if (p === undefined) throw new Error(`worker ${init.index}: no port with id ${id}`);
  return p;
}

function domainOf(id: number): SharingDomain {
  const d = domains.get(id);
  if (d === undefined) throw new Error(`worker ${init.index}: no domain with id ${id}`);
  return d;
}

/** Take the port out of the data path (its peer sees it as down) until it is put back; found broken mid-round, at the round's end. */
function takeOut(p: WorkerPort): void {
  if (p.out) return;
  p.out = true;
  dataPath.removePortAfterRound(p.queues);
}

function putBack(p: WorkerPort): void {
  if (!p.out) return;
  p.out = false;
  dataPath.addPort(p.queues);
  if (pair === null) return;
  if (p.peer !== null) dataPath.setPeer(p.queues, portOf(p.peer).queues);
  // Whoever has this port as its peer forwards to it again.
  for (const [, o] of ports) if (o.peer === p.queues.id && !o.out) dataPath.setPeer(o.queues, p.queues);
}

function addPort(id: number, name: string, partitionCount: number, domain: number, mtu: number): void {
  const ctx = { domain: domainOf(domain), log, queuePairs: init.queuePairs, swap: bridge !== null || init.pairExchange === 'swap', mtu };
  const queues = new PortQueues(id, name, partitionCount, ctx, (reason) => {
    // A ring that reads as garbage may be memory the guard zero-filled: report the fault first, so the
    // control plane names the real cause (before its disconnect makes this thread forget the mapping).
    pollGuestFaults();
    // Stop serving it now; the control plane disconnects it and syncs it empty.
    const p = ports.get(id);
    if (p !== undefined) takeOut(p);
    post({ ev: 'broken', id, reason });
  });
  queues.onFault = (where, e) => {
    pollGuestFaults();
    const p = ports.get(id);
    if (p !== undefined) takeOut(p);
    post({ ev: 'fault', id, where, message: (e as Error)?.message ?? String(e) });
  };
  const kicked = (): void => {
    queues.counters.kicks++;
    loop.wake();
  };
  const p: WorkerPort = { queues, mem: null, memGen: -1, rings: new Array(2 * init.queuePairs).fill(null), kicked, peer: null, out: true };
  ports.set(id, p);
  for (let i = bridgeById.length; i < id; i++) bridgeById[i] = NOT_HERE;
  bridgeById[id] = queues;
  putBack(p);
}

/** The port leaves this worker: out of the data path, its rings, fds and mapping gone, nobody's peer; answers its counters. */
function removePort(id: number): PortCounterSnapshot {
  const tap = taps.get(id);
  if (tap !== undefined) return removeTap(tap);
  const p = portOf(id);
  takeOut(p);
  const counters = snapshot(id, p.queues);
  dropRings(p);
  p.queues.sync(null);
  p.queues.mirror = null;
  p.mem?.unmap();
  p.mem = null;
  for (const [, o] of ports) {
    if (o.peer !== id) continue;
    o.peer = null;
    if (!o.out && pair !== null) dataPath.setPeer(o.queues, null);
  }
  bridge?.tenancy.forgetPort(id);
  bridgeById[id] = NOT_HERE;
  ports.delete(id);
  return counters;
}

/**
 * A TAP uplink the main thread opened: this worker reads and writes the dup
 * of its fd lent to it and sleeps on it like on a kick (the port's FdWatcher
 * on this thread's loop wakes this thread's PollLoop).
 */
function addTap(m: Extract<Request, { op: 'tap' }>): void {
  if (bridge === null) throw new Error(`worker ${init.index}: TAP uplink ${m.name} on a switch in pair mode`);
  if (taps.has(m.id) || ports.has(m.id)) throw new Error(`worker ${init.index}: port id ${m.id} is taken`);
  const tap = new TapPort(m.id, m.name, m.ifname, log, () => loop.wake(), m.offloads, m.mtu);
  tap.adopt(m.fd);
  taps.set(m.id, tap);
  dataPath.taps.push(tap);
  for (let i = bridgeById.length; i < m.id; i++) bridgeById[i] = NOT_HERE;
  bridgeById[m.id] = tap;
}

/** The uplink leaves this worker: out of the rounds, its fd no longer watched (the main thread closes it); answers its counters. */
function removeTap(tap: TapPort): PortCounterSnapshot {
  const counters = snapshot(tap.id, tap);
  dataPath.taps.splice(dataPath.taps.indexOf(tap), 1);
  tap.close();
  tap.mirror = null;
  bridge?.tenancy.forgetPort(tap.id);
  bridgeById[tap.id] = NOT_HERE;
  taps.delete(tap.id);
  return counters;
}

/** Port id's data side in this worker: a vhost-user port's queues or a TAP uplink. */
function dataPortOf(id: number): BridgePort {
  return taps.get(id) ?? portOf(id).queues;
}

function snapshot(id: number, p: Counted): PortCounterSnapshot {
  const c = p.counters as unknown as Record<string, number>;
  const fields: Record<string, number> = {};
  for (const f of WORKER_COUNTER_FIELDS) fields[f] = c[f];
  return { id, fields, drops: Array.from(p.counters.drops), queueCounters: Array.from(p.queueCounters) };
}

function setPeer(id: number, peer: number | null): void {
  const p = portOf(id);
  p.peer = peer;
  if (!p.out && pair !== null) dataPath.setPeer(p.queues, peer === null || portOf(peer).out ? null : portOf(peer).queues);
}

/**
 * Mirror the control plane's view of the port: memory, running rings, call
 * fds; postings: what the port's last worker held (it moved here).
 */
function sync(id: number, state: PortState | null, postings?: PostingsSnapshot): void {
  const p = portOf(id);
  try {
    syncPort(id, p, state, postings);
  } catch (e) {
    // Never leave queues over a mapping that is gone: the port stops here; the control plane disconnects it.
    takeOut(p);
    dropRings(p);
    p.queues.sync(null);
    throw e;
  }
}

function syncPort(id: number, p: WorkerPort, state: PortState | null, postings?: PostingsSnapshot): void {
  if (state === null || state.mem === null || state.mem.gen !== p.memGen) {
    // Rings over the old mapping go first; the port's queues still point at them until the sync below
    // (no round runs in between: requests are handled between slices).
    dropRings(p);
    if (state === null) p.queues.sync(null);
    p.mem?.unmap();
    p.mem = null;
    p.memGen = -1;
  }
  if (state === null) {
    p.queues.setWindow(null);
    putBack(p);
    return;
  }
  if (state.mem !== null && p.mem === null) {
    const fds = state.mem.fds.map((fd) => dupFd(fd));
    // MemoryTable closes the fds it is given (our dups); a fault in our mapping costs the port.
    p.mem = new MemoryTable(state.mem.regions, fds, () => post({ ev: 'guest-fault', id }));
    p.memGen = state.mem.gen;
  }
  for (let i = 0; i < p.rings.length; i++) {
    const want = state.vrings[i] ?? null;
    const have = p.rings[i];
    if (want !== null && have !== null && have.gen === want.gen) {
      // Same ring, maybe a new call or kick fd (QEMU swaps the call fd when the guest sets up its interrupts): ours follow.
      have.adopt(want, i);
      continue;
    }
    have?.close();
    p.rings[i] = null;
    if (want === null || p.mem === null) continue;
    const part = (addr: number, bytes: number) => {
      const r = p.mem!.translateUser(addr, bytes);
      if (r === null) throw new Error(`vring ${i}: address 0x${addr.toString(16)} is not in this worker's mapping`);
      return r;
    };
    const ring = new SplitRing(want.num, {
      desc: part(want.desc, descTableBytes(want.num)), avail: part(want.avail, availRingBytes(want.num)), used: part(want.used, usedRingBytes(want.num)),
    });
    const r = new WorkerRing(want.gen, new DeviceQueue(ring, want.eventIdx, want.lastAvail, want.usedIdx), p.kicked, p.queues.onFault);
    p.rings[i] = r;
    r.adopt(want, i);
  }
  p.queues.zeroCopy = state.zeroCopy;
  p.queues.setWindow(state.window);
  p.queues.sync({
    vrings: p.rings.map((r) => ({ queue: r === null ? null : r.queue, callFd: r === null ? -1 : r.callFd })),
    mem: p.mem,
    ackedFeatures: state.ackedFeatures,
    ackedProtocol: state.ackedProtocol,
    mtu: state.mtu,
  });
  if (postings !== undefined) p.queues.postings.restore(postings, (q) => p.queues.rxqs[q] !== null);
  putBack(p);
}

/** Forget the port's rings: their kick watchers stop (their fds are the main thread's to close). */
function dropRings(p: WorkerPort): void {
  for (const r of p.rings) r?.close();
  p.rings.fill(null);
}

function freeze(id: number): Replies['freeze'] {
  const p = portOf(id);
  takeOut(p);
  return ringIndices(p);
}

/** Where each ring stands, its used entries published. */
function ringIndices(p: WorkerPort): Replies['freeze'] {
  return p.rings.map((r) => {
    if (r === null) return null;
    r.queue.publishUsed();
    return { lastAvail: r.queue.lastAvail, usedIdx: r.queue.usedIdx };
  });
}

/**
 * The port moves to another worker: everything its data path holds that
 * the next one needs (docs/design.md, "Data-path workers"). Between rounds,
 * so no packet is half done. What it did is published first with the calls
 * the VM asked for (the next worker's queues start with nothing to call
 * for), and kicks are turned on (its queues start asking for them).
 */
function handOver(id: number): Handover {
  const p = portOf(id);
  if (!p.out) {
    p.queues.flush();
    p.queues.setKicks(true);
  }
  const rings = ringIndices(p);
  const postings = p.queues.postings.snapshot();
  return { counters: removePort(id), rings, postings };
}

function resetCounters(p: Counted): void {
  p.counters.reset();
  p.queueCounters.fill(0);
}

function stats(): WorkerStats {
  const out: WorkerStats = { busyMs: loop.busyMs, busyRounds: loop.busyRounds, ports: [] };
  for (const [id, p] of ports) out.ports.push(snapshot(id, p.queues));
  for (const [id, tap] of taps) out.ports.push(snapshot(id, tap));
  return out;
}

function stop(): void {
  loop.stop();
  for (const [, p] of ports) {
    dropRings(p);
    p.queues.sync(null);
    p.mem?.unmap();
    p.mem = null;
  }
  for (const [, d] of domains) d.close();
  for (const [, tap] of taps) tap.close();
}

function handle(m: Request): unknown {
  switch (m.op) {
    case 'domain': {
      const d = m.domain;
      const domain = new SharingDomain(d.id, d.name, d.bufCount, d.bufSize, d.base, { fd: d.fd, ledger: d.ledger });
      // Our own mapping of the region: PMD entries as in the control plane's, else part of it stays on 4 KiB ones.
      if (d.hugePages) domain.shared.useHugePages();
      domains.set(d.id, domain);
      return null;
    }
    case 'tap':
      addTap(m);
      return null;
    case 'port':
      addPort(m.id, m.name, m.partitionCount, m.domain, m.mtu);
      if (m.counters !== undefined) {
        const q = portOf(m.id).queues;
        const c = q.counters as unknown as Record<string, number>;
        for (const f of WORKER_COUNTER_FIELDS) c[f] = m.counters.fields[f];
        q.counters.drops.set(m.counters.drops);
        q.queueCounters.set(m.counters.queueCounters);
      }
      return null;
    case 'port-del':
      return removePort(m.id);
    case 'domain-del': {
      const d = domainOf(m.id);
      for (const [, p] of ports) if (p.queues.domain === d) throw new Error(`worker ${init.index}: domain ${d.name} still has port ${p.queues.name}`);
      d.close();
      domains.delete(m.id);
      return null;
    }
    case 'peer':
      setPeer(m.id, m.peer);
      return null;
    case 'sync':
      sync(m.id, m.state, m.postings);
      return null;
    case 'hand-over':
      return handOver(m.id);
    case 'freeze':
      return freeze(m.id);
    case 'policy':
      bridge?.tenancy.configure(m.id, m.policy, performance.now());
      return null;
    case 'forget':
      bridge?.tenancy.forgetPort(m.id);
      return null;
    case 'macs':
      return bridge === null ? [] : bridge.tenancy.entries(performance.now());
    case 'assign':
      return domainOf(m.domain).ledger.assignRange(m.start, m.count, m.port);
    case 'reclaim':
      return domainOf(m.domain).ledger.reclaim(m.port);
    case 'check':
      return domainOf(m.domain).ledger.check();
    case 'stats':
      return stats();
    case 'reset':
      for (const [, p] of ports) resetCounters(p.queues);
      for (const [, tap] of taps) resetCounters(tap);
      return null;
    case 'settings':
      if (pair !== null) pair.burst = m.settings.burst;
      if (bridge !== null) bridge.burst = m.settings.burst;
      flow.waitMs = m.settings.rxWaitMs;
      loop.mode = m.settings.pollMode;
      loop.spinUs = m.settings.spinUs;
      return null;
    case 'mirror': {
      const id = m.id;
      dataPortOf(id).mirror = m.ring === null ? null : new MirrorRingWriter(m.ring, () => post({ ev: 'mirror', id }));
      return null;
    }
    case 'faults':
      dispatchGuestFaults(m.ids);
      return null;
    case 'stop':
      stop();
      return null;
    case 'test-crash':
      if (m.onNextRequest === true) {
        crashOnNextRequest = true;
        return null;
      }
      // Outside any handler: an uncaught error, as a bug would be.
      setImmediate(() => {
        throw new Error('test hook: this worker crashes');
      });
      return null;
    case 'wake':
      return null;
  }
}

/** Test hook (test-crash onNextRequest): the next request kills this worker before it is answered. */
let crashOnNextRequest = false;

/**
 * A crash (an uncaught error: a bug) ends this thread. The main thread may
 * be waiting for an answer to a request it sent (pool.ts answer()): it is
 * told at once, where it waits, so it never waits out the reply timeout
 * with the whole control plane stopped. The error goes to the log and to
 * the main thread, then the thread exits.
 */
process.on('uncaughtException', (e) => {
  Atomics.store(signal, SIG_DEAD, 1);
  Atomics.add(signal, SIG_REPLY, 1);
  Atomics.notify(signal, SIG_REPLY);
  log.error({ err: e }, `data-path worker crashed: ${e.message}`);
  post({ ev: 'crashed', message: e.message });
  process.exit(1);
});

init.control.on('message', (m: Request & { seq?: number }) => {
  if (crashOnNextRequest && m.op !== 'wake') throw new Error(`test hook: this worker crashes while handling ${m.op}`);
  if (m.op === 'wake') {
    Atomics.store(signal, SIG_WAKE, 0);
    loop.wake();
    return;
  }
  let reply: { seq: number; ok: true; value: unknown } | { seq: number; ok: false; error: string };
  try {
    reply = { seq: m.seq!, ok: true, value: handle(m) };
  } catch (e) {
    log.error({ op: m.op, err: e }, `control request failed: ${(e as Error).message}`);
    reply = { seq: m.seq!, ok: false, error: (e as Error).message };
  }
  init.replies.postMessage(reply);
  Atomics.add(signal, SIG_REPLY, 1);
  Atomics.notify(signal, SIG_REPLY);
  if (m.op === 'stop') {
    init.control.close();
    init.replies.close();
    return;
  }
  loop.wake();
});

post({ ev: 'ready', cpu: init.cpu, cpus: thisThreadCpus() });
