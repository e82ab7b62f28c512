/**
 * A switch port, control side: one vhost-user socket `<socketDir>/<name>.sock`,
 * at most one front-end at a time, its vhost-user session, the kick
 * watchers that wake the data path, and the port's static partition of its
 * sharing domain's Shared Buffers region (ctx.domain). Everything per packet lives in `queues`
 * (src/datapath/port-queues.ts), which this class keeps in step with the
 * session.
 */
import { FdWatcher, closeFd, dupFd, eventfdDrain } from '../../bindings';
import { type DataPathContext, PortQueues } from '../datapath/port-queues';
import type { Logger } from '../log';
import { VhostUserBackend } from '../vhost/session';
import type { SharedBuffersInfo } from '../vhost/codec';
import { SHARED_BUFFERS_F_SWAP } from '../vhost/protocol';

/** What every port shares: the data path's context, the offer to front-ends, and the switch's wake-up. */
export interface PortContext extends DataPathContext {
  log: Logger;
  features: bigint;
  protocolFeatures: bigint;
  giftHigh: number;
  giftLow: number;
  /** A kick arrived or queues changed: run the data path. */
  wake(): void;
  /** A front-end attached or went away (for pair bookkeeping and logs). */
  attached(port: Port): void;
  detached(port: Port, reason: string): void;
}

export class Port {
  readonly isTap = false;
  backend: VhostUserBackend | null = null;
  readonly queues: PortQueues;
  private readonly kick: ({ watcher: FdWatcher; fd: number; gen: number } | undefined)[] = [];

  constructor(
    readonly id: number,
    readonly name: string,
    readonly socketPath: string,
    readonly partition: { start: number; count: number },
    private readonly ctx: PortContext,
  ) {
    this.queues = new PortQueues(id, name, partition.count, ctx, (reason) => this.disconnect(reason));
  }

  get attached(): boolean {
    return this.backend !== null;
  }

  /** Queue pair 0 runs both ways: the port can carry traffic. */
  get ready(): boolean {
    return this.queues.ready;
  }

  /** Start serving a newly accepted front-end connection. */
  accept(fd: number): void {
    const ctx = this.ctx;
    ctx.log.info({ port: this.name }, 'front-end connected');
    this.backend = new VhostUserBackend(
      fd,
      { port: this.name, log: ctx.log, features: ctx.features, protocolFeatures: ctx.protocolFeatures, queuePairs: ctx.queuePairs },
      {
        queuesChanged: () => this.syncQueues(),
        sharedBuffers: () => this.sharedBuffersReply(),
        sharedWindow: () => ({ base: ctx.domain.shared.base, size: ctx.domain.shared.size }),
        closed: (reason) => this.detach(reason),
      },
    );
    ctx.attached(this);
  }

  /** Hand the session's running queues to the data path and watch its kick fds. */
  private syncQueues(): void {
    const b = this.backend;
    this.queues.sync(b);
    for (let i = 0; i < 2 * this.ctx.queuePairs; i++) {
      const slot = b ? b.vrings[i] : null;
      const cur = this.kick[i];
      const gen = slot && slot.kickFd >= 0 ? slot.kickGen : -1;
      if (cur && cur.gen === gen) continue;
      if (cur) this.stopKick(i);
      if (slot && gen >= 0) {
        // Our own dup: the session may close its fd whenever the front-end replaces it.
        const fd = dupFd(slot.kickFd);
        const counters = this.queues.counters;
        const watcher = new FdWatcher(fd, () => {
          eventfdDrain(fd);
          counters.kicks++;
          this.ctx.wake();
        });
        watcher.start();
        this.kick[i] = { watcher, fd, gen };
      }
    }
    this.ctx.wake();
  }

  private stopKick(i: number): void {
    const k = this.kick[i];
    if (!k) return;
    k.watcher.close();
    closeFd(k.fd);
    this.kick[i] = undefined;
  }

  private sharedBuffersReply(): { info: SharedBuffersInfo; fd: number } | string {
    // Only this port's own domain: its region's fd and geometry, its ledger (docs/protocol.md, GET_SHARED_BUFFERS).
    const { shared, ledger } = this.ctx.domain;
    const p = this.partition;
    // The static partition is handed out whole when all of it is in the pool;
    // otherwise (a re-attach after traffic) the port starts empty and the
    // pool gifts it buffers as it posts them (PortQueues.ingestRx).
    const given = ledger.owned[this.id] === 0 && ledger.assignRange(p.start, p.count, this.id);
    this.queues.zeroCopy = true;
    this.ctx.log.info(
      { port: this.name, domain: this.ctx.domain.name, partition: given ? p : null, owned: ledger.owned[this.id] }, 'shared buffers mapped by front-end',
    );
    return {
      fd: shared.fd,
      info: {
        base: BigInt(shared.base), size: BigInt(shared.size), bufSize: shared.bufSize, bufCount: shared.bufCount,
        partitionStart: given ? p.start : 0, partitionCount: given ? p.count : 0,
        giftHigh: Math.ceil(this.ctx.giftHigh * p.count), giftLow: Math.ceil(this.ctx.giftLow * p.count),
        flags: this.ctx.swap ? SHARED_BUFFERS_F_SWAP : 0,
      },
    };
  }

  private detach(reason: string): void {
    const { log } = this.ctx;
    const ledger = this.ctx.domain.ledger;
    for (let i = 0; i < this.kick.length; i++) this.stopKick(i);
    this.queues.sync(null);
    const reclaimed = ledger.reclaim(this.id);
    this.backend = null;
    log.info({ port: this.name, reason, reclaimed }, 'front-end disconnected');
    this.ctx.detached(this, reason);
  }

  /** Drop the front-end (misbehaviour or shutdown). */
  disconnect(reason: string): void {
    this.backend?.disconnect(reason);
  }
}
