/**
 * The control plane's view of which data-path worker forwards for which
 * port and sharing domain (forwarding.workers; docs/design.md, "Data-path
 * workers"), and what changes it while the switch runs: placing a port
 * added at run time, moving a lone port (attached or not) next to a new
 * pair peer, taking a removed port (and its domain) out of its worker,
 * captures of workers' ports (their mirror rings), and the fds lent to
 * workers (src/workers/lent-fds.ts). The switch decides what changes;
 * this file only knows where things run and how to tell the workers.
 */
import type { PortConfig } from '../config';
import type { Logger } from '../log';
import type { SharingDomain } from '../shm/domain';
import type { TapPort } from '../datapath/tap-port';
import type { DataPathWorker, DataPathWorkers } from '../workers/pool';
import type { PostingsSnapshot } from '../datapath/rx-postings';
import { type MirrorSink, MirrorRingReader, createMirrorRing } from '../workers/mirror-ring';
import type { Port, PortWorkerLink } from './port';

/** What this reads of the switch (Switch satisfies it). */
export interface WorkerPortsHost {
  readonly ports: readonly Port[];
  readonly domains: readonly SharingDomain[];
  readonly log: Logger;
  peerOf(p: Port): Port | null;
  /** Bridge mode: the port's bridge (undefined in pair mode). */
  bridgeOf(id: number): string | undefined;
}

/** A request the placement cannot satisfy; the switch turns it into its own refusal. */
export class PlacementRefused extends Error {}

export class WorkerPorts {
  /** Which worker forwards for each port (by id), TAP uplinks included. */
  readonly workerOf = new Map<number, DataPathWorker>();
  /** Which worker holds each sharing domain (its region, and its ledger's one writer). */
  private readonly domainWorker = new Map<SharingDomain, DataPathWorker>();
  /** Captures of workers' ports: the mirror ring each drains (by port id). */
  private readonly mirrorRings = new Map<number, MirrorRingReader>();
  /**
   * Ring fds lent to the worker of each port (by id): per vring i, its call
   * fd at 2i and its kick fd at 2i + 1, the lent dup and the number
   * (VringSlot.callGen, kickGen) of the fd it is a dup of; stale: lent for a
   * sync the worker did not answer, taken back at the next one.
   */
  private readonly ringFds = new Map<number, { w: DataPathWorker; bySlot: ({ gen: number; fd: number } | null)[]; stale: number[] }>();
  /** TAP uplinks: the dup of the interface's fd lent to its worker (by port id). */
  private readonly tapFds = new Map<number, number>();

  constructor(readonly pool: DataPathWorkers, private readonly host: WorkerPortsHost) {}

  /** How port id's session reaches its worker; looked up at each call, as a port may move (move) or leave (remove). */
  link(id: number): { wake(): void; worker: PortWorkerLink } {
    const pool = this.pool;
    const of = (): DataPathWorker | undefined => {
      const w = this.workerOf.get(id);
      return w?.alive ? w : undefined;
    };
    return {
      wake: () => of()?.wake(),
      worker: {
        sync: (port, gone = false) => {
          const w = of();
          if (w === undefined) return;
          this.sync(w, port, gone);
          w.wake();
        },
        readRings: (port) => {
          const w = of();
          if (w !== undefined) pool.readRings(w, port.id, port.backend);
        },
      },
    };
  }

  /**
   * Port p's state to its worker w (postings: what its last worker held: it
   * moved). The call and kick fds in it are dups lent to w; those the worker let go
   * of by answering are closed, those of a sync it did not answer stay
   * lent until a later one is answered (or w's thread exits).
   */
  private sync(w: DataPathWorker, p: Port, gone: boolean, postings?: PostingsSnapshot): void {
    const state = gone ? null : this.pool.portState(p.backend, p.queues, p.sharedBar);
    const had = this.ringFds.get(p.id);
    const before = had?.w === w ? had : { w, bySlot: [], stale: [] };
    const lent: ({ gen: number; fd: number } | null)[] = [];
    const now = { w, bySlot: lent, stale: before.stale };
    this.ringFds.set(p.id, now);
    /** Slot k's fd (of number gen) as a dup lent to w: the one lent before if it is the same fd. */
    const lend = (k: number, fd: number, gen: number): number => {
      lent[k] = null;
      if (fd < 0) return fd;
      const o = before.bySlot[k];
      lent[k] = o === null || o === undefined || o.gen !== gen ? { gen, fd: w.fds.lend(fd) } : o;
      return lent[k]!.fd;
    };
    try {
      state?.vrings.forEach((v, i) => {
        lent[2 * i] = lent[2 * i + 1] = null;
        if (v === null) return;
        v.callFd = lend(2 * i, v.callFd, v.callGen);
        v.kickFd = lend(2 * i + 1, v.kickFd, v.kickGen);
      });
    } catch (e) {
      // Not sent: what was lent for it goes back now, the rest stays with the worker.
      now.bySlot = before.bySlot;
      for (const [k, x] of lent.entries()) if (x !== null && x !== before.bySlot[k]) w.fds.takeBack(x.fd);
      throw e;
    }
    const released = before.bySlot.filter((o) => o !== null && !lent.includes(o)).map((o) => o!.fd);
    try {
      w.call({ op: 'sync', id: p.id, state, ...(postings === undefined ? {} : { postings }) });
    } catch (e) {
      // Unanswered (or failed there, having dropped the rings): it may still hold the old ones; keep them until a later answer.
      now.stale = [...now.stale, ...released];
      throw e;
    }
    for (const fd of [...released, ...now.stale]) w.fds.takeBack(fd);
    now.stale = [];
  }

  /** The worker answered that port id left it: the ring fds lent for it go back. */
  private releaseRingFds(id: number, w: DataPathWorker): void {
    const had = this.ringFds.get(id);
    if (had === undefined || had.w !== w) return;
    this.ringFds.delete(id);
    for (const o of had.bySlot) if (o !== null) w.fds.takeBack(o.fd);
    for (const fd of had.stale) w.fds.takeBack(fd);
  }

  /**
   * The domain's region and ledger go to worker w, which from then on is
   * the ledger's one writer: this thread's ledger requests go to whichever
   * worker holds the domain now (a pair add may move it: move).
   */
  addDomain(w: DataPathWorker, d: SharingDomain): void {
    const pool = this.pool;
    pool.addDomain(w, d);
    this.domainWorker.set(d, w);
    const ledger = d.ledger;
    // Once the worker is gone nobody else writes the ledger: this thread does it directly again.
    const owner = (): DataPathWorker | null => {
      const o = this.domainWorker.get(d);
      if (o !== undefined && o.alive) return o;
      ledger.remote = null;
      return null;
    };
    ledger.remote = {
      assignRange: (start, count, p) => {
        const o = owner();
        return o === null ? ledger.assignRange(start, count, p) : o.call({ op: 'assign', domain: d.id, start, count, port: p });
      },
      reclaim: (p) => {
        const o = owner();
        return o === null ? ledger.reclaim(p) : o.call({ op: 'reclaim', domain: d.id, port: p });
      },
      check: () => {
        const o = owner();
        return o === null ? ledger.check() : pool.check(o, d.id);
      },
    };
  }

  /** The domain's last port went: its worker lets go of the region (the switch closes it next). */
  private removeDomain(d: SharingDomain): void {
    const w = this.domainWorker.get(d);
    if (w === undefined) return;
    this.domainWorker.delete(d);
    w.domains.splice(w.domains.indexOf(d.name), 1);
    if (w.alive) w.call({ op: 'domain-del', id: d.id });
  }

  /**
   * The worker a port added at run time goes to: its domain's (a domain is
   * never split), else its bridge's (bridge mode), else its pair peer's,
   * else the one with the fewest ports (shard.ts's rule).
   */
  place(name: string, domain: SharingDomain | undefined, bridge: string | undefined, near: Port | null): DataPathWorker {
    const byDomain = domain === undefined ? undefined : this.domainWorker.get(domain);
    // Any port of the bridge, a TAP uplink too (a bridge of only an uplink has a worker).
    let byBridge: DataPathWorker | undefined;
    if (bridge !== undefined) for (const [id, w] of this.workerOf) if (this.host.bridgeOf(id) === bridge) byBridge ??= w;
    if (byDomain !== undefined && byBridge !== undefined && byDomain !== byBridge) {
      throw new PlacementRefused(
        `port ${name}: its domain "${domain!.name}" is forwarded by data-path worker ${byDomain.index} and its bridge "${bridge}" by worker ${byBridge.index}; a port needs both on one worker`,
      );
    }
    const w = byDomain ?? byBridge ?? (near === null ? undefined : this.workerOf.get(near.id))
      ?? this.pool.workers.reduce((a, b) => (b.alive && (!a.alive || b.ports.length < a.ports.length) ? b : a));
    if (!w.alive) throw new PlacementRefused(`port ${name}: data-path worker ${w.index}, which would forward for it, is gone; restart the switch`);
    return w;
  }

  /** A port placed by place() joins its worker (with its domain when that is new). */
  add(w: DataPathWorker, p: Port, newDomain: boolean): void {
    if (newDomain) this.addDomain(w, p.queues.domain);
    w.ports.push(p.name);
    w.call({ op: 'port', id: p.id, name: p.name, partitionCount: p.partition.count, domain: p.queues.domain.id, mtu: p.queues.mtu });
  }

  /**
   * A TAP uplink this thread opened (open(false): unwatched here) joins
   * worker w, which serves a dup of the fd lent to it from then on.
   */
  addTap(w: DataPathWorker, tap: TapPort, offloads: boolean): void {
    this.workerOf.set(tap.id, w);
    // At start the shard placement has listed it already.
    if (!w.ports.includes(tap.name)) w.ports.push(tap.name);
    const fd = w.fds.lend(tap.fdNumber);
    this.tapFds.set(tap.id, fd);
    w.call({ op: 'tap', id: tap.id, name: tap.name, ifname: tap.ifname, fd, offloads, mtu: tap.mtu });
  }

  /**
   * The uplink leaves its worker; once the worker answered (it stopped
   * watching the dup) the dup is closed, before this thread closes the
   * interface. A dead worker's is closed when its thread has exited.
   */
  removeTap(tap: TapPort): void {
    const w = this.workerOf.get(tap.id);
    if (w === undefined) return;
    this.setMirror(tap.id, null);
    this.workerOf.delete(tap.id);
    w.ports.splice(w.ports.indexOf(tap.name), 1);
    const fd = this.tapFds.get(tap.id);
    this.tapFds.delete(tap.id);
    if (!w.alive) return;
    w.call({ op: 'port-del', id: tap.id });
    if (fd !== undefined) w.fds.takeBack(fd);
  }

  /** Why port p cannot move to another worker (to be next to a new peer), or null; anyPeer: as if unpaired (a reload checks pairs apart). */
  unmovable(p: Port, anyPeer = false): string | null {
    const d = p.queues.domain;
    const mates = this.host.ports.filter((x) => x !== p && x.queues.domain === d);
    if (mates.length > 0) return `"${p.name}" shares domain "${d.name}" with ${mates.map((x) => `"${x.name}"`).join(', ')}`;
    const peer = this.host.peerOf(p);
    if (peer !== null && !anyPeer) return `"${p.name}" is paired with "${peer.name}"`;
    if (!this.workerOf.get(p.id)!.alive) return `"${p.name}"'s data-path worker is gone`;
    return null;
  }

  /** Pairing a and b needs them on one worker: which of them to move there, or why it cannot be done; null: nothing to move. */
  pairMove(a: Port, b: Port): { port: Port; to: DataPathWorker } | string | null {
    const wa = this.workerOf.get(a.id);
    const wb = this.workerOf.get(b.id);
    if (wa === undefined || wb === undefined || wa === wb) return null;
    if (!wa.alive || !wb.alive) return `ports "${a.name}" and "${b.name}" are on different data-path workers and one of them is gone; restart the switch`;
    const whyA = this.unmovable(a);
    if (whyA === null) return { port: a, to: wb };
    const whyB = this.unmovable(b);
    if (whyB === null) return { port: b, to: wa };
    return `ports "${a.name}" and "${b.name}" are forwarded by different data-path workers (${wa.index} and ${wb.index}) and neither can move to the other's: ${whyA}; ${whyB}`;
  }

  /** Put a and b on one worker, moving one (pairMove); a string says why it cannot be done. */
  join(a: Port, b: Port): string | null {
    const move = this.pairMove(a, b);
    if (typeof move === 'string') return move;
    if (move !== null) this.move(move.port, move.to);
    return null;
  }

  /**
   * Move a lone, unpaired port to worker `to`, with its domain, its
   * front-end staying attached (docs/design.md, "Data-path workers"): its
   * worker hands it over between rounds (used entries and calls published,
   * ring indices, the rx postings it holds, counters); this thread's queue
   * objects take the indices; the other worker takes the domain, the port
   * with its counters and a sync of the same state whose rings resume there,
   * with the postings. Kicks wake whichever worker holds the port (link),
   * so they reach the new one from now on. A capture's ring changes writer
   * between the old worker's last round and the new one's first, so every
   * frame is mirrored by one or the other. Nothing of it reaches the
   * front-end. This thread waits for each answer, so nothing else happens
   * to the port meanwhile.
   */
  private move(p: Port, to: DataPathWorker): void {
    const from = this.workerOf.get(p.id)!;
    const d = p.queues.domain;
    const capture = this.mirrorRings.get(p.id);
    // Its mirror goes with it, after its last round there.
    const h = from.call({ op: 'hand-over', id: p.id });
    this.releaseRingFds(p.id, from);
    this.pool.takeIndices(p.backend, h.rings);
    from.ports.splice(from.ports.indexOf(p.name), 1);
    this.removeDomain(d);
    this.addDomain(to, d);
    this.workerOf.set(p.id, to);
    to.ports.push(p.name);
    to.call({ op: 'port', id: p.id, name: p.name, partitionCount: p.partition.count, domain: d.id, mtu: p.queues.mtu, counters: h.counters });
    // Before its rings run there (the sync).
    if (capture !== undefined) to.call({ op: 'mirror', id: p.id, ring: capture.ring });
    if (p.backend !== null) this.sync(to, p, false, h.postings);
    to.wake();
    this.host.log.info(
      { port: p.name, domain: d.name, from: from.index, to: to.index, attached: p.attached }, 'port moved to another data-path worker, next to its new peer',
    );
  }

  /** Pair mode: p forwards to peer (null: unpaired), in its worker; false: no worker forwards for p. */
  setPeer(p: Port, peer: Port | null): boolean {
    const w = this.workerOf.get(p.id);
    if (w === undefined) return false;
    if (w.alive) w.call({ op: 'peer', id: p.id, peer: peer?.id ?? null });
    return true;
  }

  /** The port leaves its worker (after its buffers went back to the pool); the domain too when it was the last port. */
  remove(p: Port, lastOfDomain: boolean): void {
    const w = this.workerOf.get(p.id);
    if (w === undefined) return;
    this.workerOf.delete(p.id);
    w.ports.splice(w.ports.indexOf(p.name), 1);
    if (w.alive) {
      w.call({ op: 'port-del', id: p.id });
      this.releaseRingFds(p.id, w);
    }
    if (lastOfDomain) this.removeDomain(p.queues.domain);
  }

  /**
   * What a reload's new ports and pairs would meet when placed (place,
   * pairMove), found before anything changes. It judges by the ports
   * running now, so a port that the same reload removes may still be
   * counted as a domain mate: the refusal then says whom.
   */
  reloadProblems(removing: ReadonlySet<string>, adding: readonly PortConfig[], addPairs: readonly (readonly [string, string])[], bridgeMode: boolean): string[] {
    const problems: string[] = [];
    const staying = this.host.ports.filter((p) => !removing.has(p.name));
    const domainOf = (name: string | null) => this.host.domains.find((d) => d.name === name && staying.some((p) => p.queues.domain === d));
    for (const p of adding) {
      try {
        this.place(p.name, domainOf(p.domain), bridgeMode ? p.policy.bridge : undefined, null);
      } catch (e) {
        problems.push(`ports[${p.name}]: ${(e as Error).message}`);
      }
    }
    // Each side of a new pair: the worker it is fixed to (null: it goes where it is put), and why it cannot move.
    const side = (name: string): { w: DataPathWorker | null; why: string | null } => {
      const running = staying.find((p) => p.name === name);
      if (running !== undefined) return { w: this.workerOf.get(running.id) ?? null, why: this.unmovable(running, true) };
      const d = domainOf(adding.find((p) => p.name === name)?.domain ?? null);
      if (d === undefined) return { w: null, why: null };
      return { w: this.domainWorker.get(d) ?? null, why: `"${name}" joins domain "${d.name}", which has ports already` };
    };
    for (const [a, b] of addPairs) {
      const sa = side(a);
      const sb = side(b);
      if (sa.w === null || sb.w === null || sa.w === sb.w || sa.why === null || sb.why === null) continue;
      problems.push(`pairs: [${a}, ${b}]: forwarded by different data-path workers (${sa.w.index} and ${sb.w.index}) and neither can move to the other's: ${sa.why}; ${sb.why}`);
    }
    return problems;
  }

  /**
   * Capture of a worker's port: the worker mirrors into a ring this thread
   * drains into the sink (src/workers/mirror-ring.ts); false: no worker
   * forwards for the port. Detaching stops the worker's writes first, then
   * drains what it wrote before, so every frame is captured or counted as
   * dropped.
   */
  setMirror(id: number, sink: MirrorSink | null): boolean {
    const w = this.workerOf.get(id);
    if (w === undefined) return false;
    const old = this.mirrorRings.get(id);
    if (old !== undefined) {
      this.mirrorRings.delete(id);
      if (w.alive) {
        try {
          w.call({ op: 'mirror', id, ring: null });
        } catch (e) {
          this.host.log.error({ worker: w.index, err: e }, `detaching a capture: ${(e as Error).message}`);
        }
      }
      old.drain();
      old.closed = true;
    }
    if (sink === null || !w.alive) return true;
    const ring = createMirrorRing(sink);
    this.mirrorRings.set(id, new MirrorRingReader(ring, sink));
    w.call({ op: 'mirror', id, ring });
    return true;
  }

  /** The worker says the port's mirror ring has records (it posts that only when the reader asked). */
  drainMirror(id: number): void {
    this.mirrorRings.get(id)?.drain();
  }
}
