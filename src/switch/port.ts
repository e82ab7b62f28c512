/**
 * A switch port, control side: one vhost-user socket `<socketDir>/<name>.sock`,
 * at most one front-end at a time, its vhost-user session, the kick
 * watchers that wake the data path, and the port's static partition of its
 * sharing domain's Shared Buffers region (ctx.domain). Everything per packet lives in `queues`
 * (src/datapath/port-queues.ts), which this class keeps in step with the
 * session.
 */
import { type DataPathContext, PortQueues } from '../datapath/port-queues';
import type { Logger } from '../log';
import { pollGuestFaults } from '../vhost/guest-faults';
import type { MemoryTable } from '../vhost/memory-table';
import { type KickWatch, stopKick, watchKick } from '../vhost/notifier-fd';
import { VhostUserBackend } from '../vhost/session';
import type { SharedBuffersInfo } from '../vhost/codec';
import { SHARED_BUFFERS_F_HUGE_PAGES, SHARED_BUFFERS_F_SWAP } from '../vhost/protocol';
import { REGION_PORT_F_SWAP, type RegionPort } from '../shm/region-header';
import { MTU_DEFAULT } from '../virtio/defs';

/** What every port shares: the data path's context, the offer to front-ends, and the switch's wake-up. */
export interface PortContext extends DataPathContext {
  log: Logger;
  features: bigint;
  protocolFeatures: bigint;
  giftHigh: number;
  giftLow: number;
  /** A front-end that has neither sent SET_OWNER nor made queue pair 0 ready this long after connecting is disconnected (limits.handshakeSec). */
  handshakeMs: number;
  /** A kick arrived or queues changed: run the data path. */
  wake(): void;
  /** A front-end attached or went away (for pair bookkeeping and logs). */
  attached(port: Port): void;
  detached(port: Port, reason: string): void;
  /** A data-path worker thread forwards for this port (src/workers/): what changes here is sent to it. */
  worker?: PortWorkerLink;
}

/** How a port reaches the worker thread that forwards for it (src/workers/pool.ts). */
export interface PortWorkerLink {
  /** Queues, memory, window or zero-copy changed (gone: the front-end went away). */
  sync(port: Port, gone?: boolean): void;
  /** Ring indices are about to be read: the worker stops serving the port until the next sync and reports them. */
  readRings(port: Port): void;
}

export class Port {
  readonly isTap = false;
  backend: VhostUserBackend | null = null;
  readonly queues: PortQueues;
  private readonly kick: ((KickWatch & { gen: number }) | undefined)[] = [];
  /**
   * Guest-physical address where this port's VM maps its domain's region as
   * an ivshmem BAR (recognised in its memory table), or null.
   */
  sharedBar: number | null = null;
  /** The memory table last looked at for the region (recognition runs once per table). */
  private barSeenIn: MemoryTable | null = null;
  /** A table carried the region at an unusable size or offset: logged once per connection. */
  private barRefusalLogged = false;
  /** Armed from accept until queue pair 0 is ready: a silent or stalled front-end cannot hold the port. */
  private handshakeTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly socketPath: string,
    /**
     * Config ports: the static range handed out whole at first attach. Ports
     * added at run time (staticRange false): start is unused and count is the
     * quota the pool gifts them up to as they post (docs/operations.md,
     * "Adding and removing ports").
     */
    readonly partition: { start: number; count: number },
    private readonly ctx: PortContext,
    readonly staticRange = true,
  ) {
    this.queues = new PortQueues(id, name, partition.count, ctx, (reason) => {
      // A ring that reads as garbage may be memory the guard zero-filled: name the real cause first.
      pollGuestFaults();
      this.disconnect(reason);
    });
    this.queues.onFault = (where, e) => this.fault(where, e);
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
      {
        port: this.name, log: ctx.log, features: ctx.features, protocolFeatures: ctx.protocolFeatures, queuePairs: ctx.queuePairs,
        keepMemoryFds: ctx.worker !== undefined,
        mtu: ctx.mtu ?? MTU_DEFAULT,
      },
      {
        queuesChanged: () => this.syncQueues(),
        sharedBuffers: () => this.sharedBuffersReply(),
        sharedWindow: () => ({ base: ctx.domain.shared.base, size: ctx.domain.shared.size }),
        closed: (reason) => this.detach(reason),
        guestMemoryFault: () => this.guestMemoryFault(),
        beforeRingRead: () => this.ctx.worker?.readRings(this),
      },
    );
    const secs = ctx.handshakeMs / 1000;
    this.handshakeTimer = setTimeout(() => {
      this.handshakeTimer = null;
      // A front-end that claimed the device (SET_OWNER) waits for its guest,
      // which may boot for minutes before its driver starts the rings: only
      // a connection that never got that far is dropped.
      if (this.backend === null || this.ready || this.backend.ownerClaimed) return;
      ctx.log.warn({ port: this.name, handshakeSec: secs }, 'handshake not completed in time; disconnecting');
      this.disconnect(`handshake not completed within ${secs} s (limits.handshakeSec)`);
    }, ctx.handshakeMs);
    ctx.attached(this);
  }

  /** Hand the session's running queues to the data path and watch its kick fds (here, or in its worker). */
  private syncQueues(): void {
    const b = this.backend;
    this.queues.sync(b);
    if (b !== null && b.mem !== this.barSeenIn) this.recognizeBar(b.mem, b.sharedBuffersNegotiated);
    this.ctx.worker?.sync(this);
    // A worker watches its ports' kick fds itself (src/workers/worker-ring.ts).
    for (let i = 0; i < 2 * this.ctx.queuePairs; i++) {
      const slot = b !== null && this.ctx.worker === undefined ? b.vrings[i] : null;
      const cur = this.kick[i];
      const gen = slot && slot.kickFd >= 0 ? slot.kickGen : -1;
      if (cur && cur.gen === gen) continue;
      if (cur) this.stopKick(i);
      if (slot && gen >= 0) {
        const counters = this.queues.counters;
        const k = watchKick(slot.kickFd, i, () => {
          counters.kicks++;
          this.ctx.wake();
        }, (where, e) => this.fault(where, e));
        this.kick[i] = { ...k, gen };
      }
    }
    if (this.handshakeTimer !== null && this.ready) {
      clearTimeout(this.handshakeTimer);
      this.handshakeTimer = null;
    }
    this.ctx.wake();
  }

  /**
   * The fault boundary of this port: an error while serving it (a watcher
   * callback, its part of a forwarding round) is logged with the port's name
   * and costs this front-end its connection, never the switch.
   */
  fault(where: string, e: unknown): void {
    // As for a broken ring: an exception on zero-filled memory is the guest-memory fault's doing; that goes first.
    pollGuestFaults();
    const err = e as Error;
    this.ctx.log.error({ port: this.name, where, err }, `fault while serving this port; disconnecting: ${err?.message ?? String(e)}`);
    try {
      this.disconnect(`fault in ${where}: ${err?.message ?? String(e)}`);
    } catch (e2) {
      this.ctx.log.error({ port: this.name, err: e2 }, 'disconnecting after a fault failed too');
    }
  }

  private stopKick(i: number): void {
    const k = this.kick[i];
    if (!k) return;
    stopKick(k);
    this.kick[i] = undefined;
  }


  /**
   * Look for the domain's region in a new memory table (docs/design.md,
   * "Per-port windows"): a region whose file is the region's memfd, mapped
   * from offset 0 over at least the buffers, is this VM's ivshmem BAR. The
   * port's window moves to its guest-physical address and the port becomes
   * zero-copy, with its partition as on GET_SHARED_BUFFERS. Any other region
   * of that file is ordinary guest memory (copy path), logged once.
   */
  private recognizeBar(mem: MemoryTable | null, sharedBuffers: boolean): void {
    this.barSeenIn = mem;
    // A SHARED_BUFFERS front-end sees the region at the configured base: a BAR in its table is ordinary memory.
    if (mem === null || sharedBuffers) return;
    const { log } = this.ctx;
    const domain = this.ctx.domain;
    const window = domain.shared.size;
    let base: number | null = null;
    for (let i = 0; i < mem.count; i++) {
      if (mem.fileIds[i] !== domain.fileId) continue;
      const size = mem.gpaEnd[i] - mem.gpaStart[i];
      if (mem.mmapOffsets[i] === 0 && size >= window) {
        base = mem.gpaStart[i];
        break;
      }
      if (!this.barRefusalLogged) {
        this.barRefusalLogged = true;
        log.warn(
          { port: this.name, domain: domain.name, region: i, gpa: hex(mem.gpaStart[i]), size, mmapOffset: mem.mmapOffsets[i], window },
          'memory region maps the shared region but not from offset 0 over the whole buffers window; treated as ordinary guest memory (copy path)',
        );
      }
    }
    if (base === this.sharedBar) return;
    if (base === null) {
      // The guest turned the BAR off (PCI memory decoding) or QEMU dropped it: the buffers, postings and
      // ownership it holds stay as they are (by index, in our own mapping), ready for when it comes back.
      log.warn({ port: this.name, domain: domain.name, gpa: hex(this.sharedBar!) }, 'the new memory table does not map the shared region; keeping the port\'s window');
      return;
    }
    const first = this.sharedBar === null;
    this.sharedBar = base;
    this.queues.setWindow(base);
    this.queues.zeroCopy = true;
    const given = first && this.claimPartition();
    log.info(
      { port: this.name, domain: domain.name, gpa: hex(base), partition: given ? this.partition : null, owned: domain.ledger.owned[this.id] },
      'shared region recognised in the memory table (ivshmem BAR): zero-copy at the VM\'s own address',
    );
  }

  /**
   * Hand the static partition out whole when all of it is in the pool;
   * otherwise (a re-attach after traffic) the port starts empty and the
   * pool gifts it buffers as it posts them (PortQueues.ingestRx). A port
   * added at run time has no range: it is always gifted from the pool.
   */
  private claimPartition(): boolean {
    const { ledger } = this.ctx.domain;
    const p = this.partition;
    return this.staticRange && ledger.owned[this.id] === 0 && ledger.assignRange(p.start, p.count, this.id);
  }

  private sharedBuffersReply(): { info: SharedBuffersInfo; fd: number } | string {
    // Only this port's own domain: its region's fd and geometry, its ledger (docs/protocol.md, GET_SHARED_BUFFERS).
    const { shared, ledger } = this.ctx.domain;
    const p = this.partition;
    const given = this.claimPartition();
    this.sharedBar = null;
    this.queues.setWindow(null);
    this.queues.zeroCopy = true;
    this.ctx.worker?.sync(this);
    this.ctx.log.info(
      { port: this.name, domain: this.ctx.domain.name, partition: given ? p : null, owned: ledger.owned[this.id] }, 'shared buffers mapped by front-end',
    );
    return {
      fd: shared.fd,
      info: {
        base: BigInt(shared.base), size: BigInt(shared.size), bufSize: shared.bufSize, bufCount: shared.bufCount,
        partitionStart: given ? p.start : 0, partitionCount: given ? p.count : 0,
        giftHigh: Math.ceil(this.ctx.giftHigh * p.count), giftLow: Math.ceil(this.ctx.giftLow * p.count),
        flags: (this.ctx.swap ? SHARED_BUFFERS_F_SWAP : 0) | (shared.hugePages ? SHARED_BUFFERS_F_HUGE_PAGES : 0),
      },
    };
  }

  /** This port's entry in its domain's region header (src/shm/region-header.ts). */
  regionEntry(): RegionPort {
    const p = this.partition;
    return {
      name: this.name, mac: new Uint8Array(6),
      partitionStart: this.staticRange ? p.start : 0, partitionCount: this.staticRange ? p.count : 0,
      giftHigh: Math.ceil(this.ctx.giftHigh * p.count), giftLow: Math.ceil(this.ctx.giftLow * p.count),
      flags: this.ctx.swap ? REGION_PORT_F_SWAP : 0,
    };
  }

  private detach(reason: string): void {
    const { log } = this.ctx;
    const ledger = this.ctx.domain.ledger;
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    for (let i = 0; i < this.kick.length; i++) this.stopKick(i);
    this.queues.sync(null);
    this.queues.setWindow(null);
    this.ctx.worker?.sync(this, true);
    this.sharedBar = null;
    this.barSeenIn = null;
    this.barRefusalLogged = false;
    const reclaimed = ledger.reclaim(this.id);
    this.backend = null;
    log.info({ port: this.name, reason, reclaimed }, 'front-end disconnected');
    this.ctx.detached(this, reason);
  }

  /**
   * The front-end's memory vanished under the switch (it shrank its memfd;
   * the SIGBUS guard zero-filled the mapping): count it, log it, drop it.
   * The other ports never noticed.
   */
  guestMemoryFault(): void {
    this.queues.counters.guestMemoryFaults++;
    this.ctx.log.error(
      { port: this.name, reason: 'guest-memory-fault' },
      'guest-memory-fault: the front-end\'s memory vanished under a mapping (its file shrank); disconnecting it',
    );
    this.disconnect('guest-memory-fault');
  }

  /** Drop the front-end (misbehaviour or shutdown). */
  disconnect(reason: string): void {
    this.backend?.disconnect(reason);
  }
}

const hex = (n: number): string => `0x${n.toString(16)}`;
