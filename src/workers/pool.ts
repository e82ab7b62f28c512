/**
 * The control plane's side of the data-path workers (docs/design.md,
 * "Threads"): starts them, places shards (shard.ts), and turns every change
 * that used to reach the data path between rounds into a request to the
 * owning worker. Requests are synchronous for the main thread: it posts,
 * then waits on a shared counter (Atomics.wait) for the answer, which the
 * worker sends between two slices of rounds (at most a few ms). The main
 * thread never waits for anything else from a worker, and a worker never
 * waits for the main thread, so they cannot deadlock; a worker that does
 * not answer within REPLY_TIMEOUT_MS is an error, and one that crashes says
 * so where the main thread waits (SIG_DEAD), which stops waiting at once.
 */
import path from 'node:path';
import { MessageChannel, type MessagePort, Worker, receiveMessageOnPort } from 'node:worker_threads';
import type { PairExchange } from '../config/schema';
import type { Logger, LogLevel } from '../log';
import type { SharingDomain } from '../shm/domain';
import type { LedgerCheck } from '../shm/ledger';
import { ID_THREAD_SHIFT, dispatchGuestFaults, setGuardThread } from '../vhost/guest-faults';
import type { VhostUserBackend } from '../vhost/session';
import type { PortQueues } from '../datapath/port-queues';
import type { Counted } from '../datapath/counters';
import {
  type PortState, type Replies, type Request, type RingIndices, SIG_DEAD, SIG_LENGTH, SIG_REPLY, SIG_WAKE, type Settings, WORKER_COUNTER_FIELDS, type WorkerEvent,
  type WorkerStats,
} from './messages';
import type { WorkerInit } from './worker-main';
import { LentFds } from './lent-fds';

const REPLY_TIMEOUT_MS = 10_000;

/** What the worker threads report to the control plane about a port (by id). */
export interface WorkerEvents {
  broken(id: number, reason: string): void;
  fault(id: number, where: string, message: string): void;
  guestFault(id: number): void;
  /** The port's mirror ring has records and the main thread asked to be told (capture). */
  mirror(id: number): void;
  /** A worker thread died: its ports cannot be served any more. */
  died(index: number, reason: string): void;
}

export class DataPathWorker {
  private readonly worker: Worker;
  private readonly control: MessagePort;
  private readonly replies: MessagePort;
  private readonly signal: Int32Array;
  private seq = 0;
  private dead: string | null = null;
  /** Ports by name and sharing domains this worker forwards for. */
  readonly ports: string[] = [];
  readonly domains: string[] = [];
  /** The CPUs the worker thread reported it may run on (after pinning). */
  cpus: number[] = [];
  /** The fds this worker keeps, lent by this thread, which closes them (lent-fds.ts). */
  readonly fds = new LentFds();

  constructor(readonly index: number, readonly cpu: number | null, init: Omit<WorkerInit, 'index' | 'cpu' | 'control' | 'replies' | 'signal'>,
    private readonly events: WorkerEvents, private readonly route: (ids: number[]) => void, private readonly log: Logger) {
    const control = new MessageChannel();
    const replies = new MessageChannel();
    const signal = new SharedArrayBuffer(4 * SIG_LENGTH);
    this.signal = new Int32Array(signal);
    this.control = control.port1;
    this.replies = replies.port1;
    const data: WorkerInit = { ...init, index, cpu, control: control.port2, replies: replies.port2, signal };
    this.worker = new Worker(path.join(__dirname, 'worker-main.js'), { workerData: data, transferList: [control.port2, replies.port2] });
    this.worker.on('message', (e: WorkerEvent) => this.event(e));
    this.worker.on('error', (e) => this.died(`uncaught error: ${e.message}`));
    this.worker.on('exit', (code) => {
      this.died(`exited with code ${code}`);
      // Only now: the thread is gone, and nothing there watches or uses them any more.
      this.fds.closeAll();
    });
  }

  private event(e: WorkerEvent): void {
    switch (e.ev) {
      case 'ready':
        this.cpus = e.cpus;
        return;
      case 'broken':
        return this.events.broken(e.id, e.reason);
      case 'fault':
        return this.events.fault(e.id, e.where, e.message);
      case 'guest-fault':
        return this.events.guestFault(e.id);
      case 'mirror':
        return this.events.mirror(e.id);
      case 'foreign-faults':
        return this.route(e.ids);
      case 'crashed':
        return this.died(`uncaught error: ${e.message}`);
    }
  }

  /** Still running: requests reach it (a crash is known here as soon as the thread signals it, before its events arrive). */
  get alive(): boolean {
    return this.dead === null && Atomics.load(this.signal, SIG_DEAD) === 0;
  }

  private died(reason: string): void {
    if (this.dead !== null) return;
    this.dead = reason;
    this.control.close();
    this.replies.close();
    this.events.died(this.index, reason);
  }

  /** A request answered before this returns (the main thread blocks until then). */
  call<K extends Request['op']>(req: Extract<Request, { op: K }>): K extends keyof Replies ? Replies[K] : null {
    return this.answer(this.ask(req), req.op) as never;
  }

  /** Post a request; answer() waits for it (several workers then work on theirs at once). */
  ask(req: Request): number {
    if (this.dead !== null) throw new Error(`data-path worker ${this.index} is gone (${this.dead})`);
    const seq = ++this.seq;
    this.control.postMessage({ ...req, seq });
    return seq;
  }

  /** The answer to request seq (posted by ask), waiting for it. */
  answer(seq: number, op: string): unknown {
    const deadline = Date.now() + REPLY_TIMEOUT_MS;
    for (;;) {
      const seen = Atomics.load(this.signal, SIG_REPLY);
      let m: { message: { seq: number; ok: boolean; value?: unknown; error?: string } } | undefined;
      while ((m = receiveMessageOnPort(this.replies)) !== undefined) {
        const r = m.message;
        // Answers to requests nobody waits for (fault routing) are skipped.
        if (r.seq !== seq) continue;
        if (!r.ok) throw new Error(`data-path worker ${this.index}: ${op}: ${r.error}`);
        return r.value;
      }
      if (Atomics.load(this.signal, SIG_DEAD) !== 0) throw new Error(`data-path worker ${this.index} died before answering ${op}`);
      const left = deadline - Date.now();
      if (left <= 0 || this.dead !== null) throw new Error(`data-path worker ${this.index} did not answer ${op} within ${REPLY_TIMEOUT_MS} ms`);
      Atomics.wait(this.signal, SIG_REPLY, seen, left);
    }
  }

  /** Posted without waiting (guest faults for its mappings). */
  send(req: Request): void {
    if (this.dead === null) this.control.postMessage({ ...req, seq: -1 });
  }

  /** Wake it (a control change, the safety net): one wake message until the worker has taken it. Kicks wake it directly (worker-ring.ts). */
  wake(): void {
    if (this.dead !== null) return;
    if (Atomics.exchange(this.signal, SIG_WAKE, 1) === 0) this.control.postMessage({ op: 'wake' });
  }

  /** Stop forwarding, unmap, close the fds it holds, then end the thread. */
  async stop(): Promise<void> {
    if (this.dead === null) {
      try {
        this.call({ op: 'stop' });
      } catch (e) {
        this.log.error({ worker: this.index, err: e }, `stopping a data-path worker: ${(e as Error).message}`);
      }
    }
    this.dead ??= 'stopped';
    await this.worker.terminate();
    this.fds.closeAll();
  }
}

/** Every worker, and the routing of guest-memory faults between threads. */
export class DataPathWorkers {
  readonly workers: DataPathWorker[] = [];
  /** Numbers for the control plane's queue and memory-table objects, so a worker sees which ones are new. */
  private readonly gens = new WeakMap<object, number>();
  private nextGen = 1;

  constructor(count: number, cpus: readonly number[] | undefined,
    init: { logLevel: LogLevel; queuePairs: number; settings: Settings; mode: 'pair' | 'bridge'; pairExchange: PairExchange; bridge: { macTableSize: number; ageingMs: number } },
    events: WorkerEvents, private readonly log: Logger) {
    const route = (ids: number[]) => this.routeFaults(ids);
    setGuardThread(0, route);
    for (let i = 0; i < count; i++) {
      const cpu = cpus === undefined ? null : cpus[i % cpus.length];
      this.workers.push(new DataPathWorker(i, cpu, init, events, route, log));
    }
  }

  /** Guard faults a thread took for another thread's mappings: to their owner (thread 0 is the main one). */
  private routeFaults(ids: number[]): void {
    const byThread = new Map<number, number[]>();
    for (const id of ids) {
      const t = Math.floor(id / 2 ** ID_THREAD_SHIFT);
      let l = byThread.get(t);
      if (l === undefined) byThread.set(t, (l = []));
      l.push(id);
    }
    for (const [t, l] of byThread) {
      if (t === 0) dispatchGuestFaults(l);
      else this.workers[t - 1]?.send({ op: 'faults', ids: l });
    }
  }

  addDomain(w: DataPathWorker, d: SharingDomain): void {
    w.domains.push(d.name);
    w.call({
      op: 'domain',
      domain: {
        id: d.id, name: d.name, bufCount: d.shared.bufCount, bufSize: d.shared.bufSize, base: d.shared.base, fd: d.shared.fd,
        ledger: d.ledger.memory as SharedArrayBuffer, hugePages: d.shared.hugePages,
      },
    });
  }

  private gen(o: object): number {
    let g = this.gens.get(o);
    if (g === undefined) this.gens.set(o, (g = this.nextGen++));
    return g;
  }

  /** The port's queues and memory as the worker must mirror them. */
  portState(b: VhostUserBackend | null, q: PortQueues, window: number | null): PortState | null {
    if (b === null) return null;
    const mem = b.mem;
    return {
      ackedFeatures: b.ackedFeatures,
      ackedProtocol: b.ackedProtocol,
      mtu: b.mtu,
      zeroCopy: q.zeroCopy,
      window,
      mem: mem === null ? null : { gen: this.gen(mem), regions: mem.regions, fds: mem.fds },
      vrings: b.vrings.map((s) => {
        const dq = s.queue;
        if (dq === null || s.addr === null) return null;
        return {
          gen: this.gen(dq), num: s.num, desc: Number(s.addr.desc), avail: Number(s.addr.avail), used: Number(s.addr.used),
          lastAvail: dq.lastAvail, usedIdx: dq.usedIdx, eventIdx: dq.eventIdx, callFd: s.callFd, callGen: s.callGen,
          kickFd: s.kickFd, kickGen: s.kickGen,
        };
      }),
    };
  }

  /** Freeze the port in its worker and bring the control plane's queue objects' indices up to date. */
  readRings(w: DataPathWorker, id: number, b: VhostUserBackend | null): void {
    this.takeIndices(b, w.call({ op: 'freeze', id }));
  }

  /** The control plane's queue objects take the indices a worker's rings reached (freeze, hand-over). */
  takeIndices(b: VhostUserBackend | null, idx: RingIndices): void {
    if (b === null) return;
    idx.forEach((x, i) => {
      const q = b.vrings[i]?.queue;
      if (x === null || !q) return;
      q.lastAvail = x.lastAvail;
      q.usedIdx = x.usedIdx;
    });
  }

  /** Every worker's counters into the control plane's view of its ports and TAP uplinks (guest faults are counted here). */
  collect(queuesById: (id: number) => Counted | undefined): { busyMs: number; busyRounds: number; perWorker: WorkerStats[] } {
    let busyMs = 0;
    let busyRounds = 0;
    const perWorker: WorkerStats[] = [];
    // Asked of every worker first, so the main thread waits for the slowest, not for the sum.
    const asked = this.workers.map((w) => {
      try {
        return w.alive ? w.ask({ op: 'stats' }) : -1;
      } catch {
        return -1;
      }
    });
    for (const [i, w] of this.workers.entries()) {
      let s: WorkerStats;
      if (asked[i] < 0) s = { busyMs: 0, busyRounds: 0, ports: [] };
      else try {
        s = w.answer(asked[i], 'stats') as WorkerStats;
      } catch (e) {
        this.log.error({ worker: w.index, err: e }, `no stats from a data-path worker: ${(e as Error).message}`);
        s = { busyMs: 0, busyRounds: 0, ports: [] };
      }
      perWorker.push(s);
      busyMs += s.busyMs;
      busyRounds += s.busyRounds;
      for (const p of s.ports) {
        const q = queuesById(p.id);
        if (q === undefined) continue;
        const c = q.counters as unknown as Record<string, number>;
        for (const f of WORKER_COUNTER_FIELDS) c[f] = p.fields[f];
        q.counters.drops.set(p.drops);
        q.queueCounters.set(p.queueCounters);
      }
    }
    return { busyMs, busyRounds, perWorker };
  }

  /** A ledger check done by the worker that writes the ledger (a recount here could race its moves). */
  check(w: DataPathWorker, domainId: number): LedgerCheck {
    return w.call({ op: 'check', domain: domainId });
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop()));
  }
}
