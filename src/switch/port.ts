/**
 * A switch port: one vhost-user socket `<socketDir>/<name>.sock`, at most
 * one front-end at a time, its running queues (virtio-net: vring 0 = the
 * VM's receive queue, vring 1 = its transmit queue), kick watchers, and the
 * table of shared buffers the VM has posted on its receive queue (DESIGN
 * §3: buffer index → rx descriptor head, O(1) lookup).
 */
import { FdWatcher, closeFd, dupFd, eventfdDrain, eventfdSignal } from '../../bindings';
import type { Logger } from '../log';
import { POOL, type OwnershipLedger } from '../shm/ledger';
import type { SharedBuffers } from '../shm/shared-buffers';
import { VhostUserBackend } from '../vhost/backend';
import type { SharedBuffersInfo } from '../vhost/codec';
import { SHARED_BUFFERS_F_SWAP } from '../vhost/protocol';
import { CHAIN_BAD_HEAD, CHAIN_BAD_NEXT, CHAIN_INDIRECT, CHAIN_LOOP, CHAIN_TOO_LONG, ChainSegments, ChainWalker } from '../virtio/chain';
import { VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED, VIRTIO_NET_HDR_SIZE } from '../virtio/defs';
import type { DeviceQueue } from '../virtio/device-queue';
import { netHdrFlags, setNetHdrFlags, writeNetHdr } from '../virtio/net-hdr';
import { Drop, PortCounters } from './counters';

export const RX_VRING = 0;
export const TX_VRING = 1;

/** What every port shares: the region, the ledger, logging, and the switch's wake-up. */
export interface PortContext {
  shared: SharedBuffers;
  ledger: OwnershipLedger;
  log: Logger;
  features: bigint;
  protocolFeatures: bigint;
  giftHigh: number;
  giftLow: number;
  /** Bridge mode: VMs post their own buffers and the switch swaps (DESIGN §4). */
  swap: boolean;
  /** A kick arrived or queues changed: run the data path. */
  wake(): void;
  /** A front-end attached or went away (for pair bookkeeping and logs). */
  attached(port: Port): void;
  detached(port: Port, reason: string): void;
}

/** Map a ChainWalker error to its drop reason. */
export function chainDrop(code: number): Drop {
  switch (code) {
    case CHAIN_BAD_HEAD: return Drop.BadHead;
    case CHAIN_BAD_NEXT: return Drop.BadNext;
    case CHAIN_LOOP: return Drop.ChainLoop;
    case CHAIN_TOO_LONG: return Drop.ChainTooLong;
    case CHAIN_INDIRECT: return Drop.Indirect;
    default: return Drop.BadOrder;
  }
}

export class Port {
  backend: VhostUserBackend | null = null;
  rxq: DeviceQueue | null = null;
  txq: DeviceQueue | null = null;
  rxWalker: ChainWalker | null = null;
  txWalker: ChainWalker | null = null;
  readonly counters = new PortCounters();
  /** rxSlot[b] = head of the rx descriptor posting shared buffer b, or -1. */
  readonly rxSlot: Int32Array;
  /** Posted rx chains outside the region: targets for copied packets (FIFO). */
  private readonly copyQ = new Int32Array(32768);
  private copyHead = 0;
  private copyCount = 0;
  /** Bridge mode: posted rx descriptors holding this port's own empty buffers (FIFO of head, buffer). */
  private readonly ownRxHead = new Int32Array(32768);
  private readonly ownRxBuf = new Int32Array(32768);
  private ownHead = 0;
  private ownCount = 0;
  private readonly seg = new ChainSegments();
  private readonly kick: { watcher: FdWatcher; fd: number; gen: number }[] = [];
  /** The region is usable by this front-end (SHARED_BUFFERS negotiated and fetched). */
  zeroCopy = false;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly socketPath: string,
    readonly partition: { start: number; count: number },
    private readonly ctx: PortContext,
  ) {
    this.rxSlot = new Int32Array(ctx.shared.bufCount).fill(-1);
  }

  get attached(): boolean {
    return this.backend !== null;
  }

  /** Start serving a newly accepted front-end connection. */
  accept(fd: number): void {
    const ctx = this.ctx;
    ctx.log.info({ port: this.name }, 'front-end connected');
    this.backend = new VhostUserBackend(
      fd,
      { port: this.name, log: ctx.log, features: ctx.features, protocolFeatures: ctx.protocolFeatures, queuePairs: 1 },
      {
        queuesChanged: () => this.syncQueues(),
        sharedBuffers: () => this.sharedBuffersReply(),
        sharedWindow: () => ({ base: ctx.shared.base, size: ctx.shared.size }),
        closed: (reason) => this.detach(reason),
      },
    );
    ctx.attached(this);
  }

  /** Re-read the backend's running queues and kick fds. */
  private syncQueues(): void {
    const b = this.backend;
    const rx = b ? b.vrings[RX_VRING].queue : null;
    const tx = b ? b.vrings[TX_VRING].queue : null;
    if (rx !== this.rxq) {
      if (!rx || !this.rxq) this.clearPostings(); // a fresh or stopped ring: old postings are void
      this.rxWalker = rx ? (this.rxWalker && this.rxq && this.rxq.ring.num === rx.ring.num ? this.rxWalker : new ChainWalker(rx.ring.num)) : null;
      this.rxq = rx;
    }
    if (tx !== this.txq) {
      this.txWalker = tx ? (this.txWalker && this.txq && this.txq.ring.num === tx.ring.num ? this.txWalker : new ChainWalker(tx.ring.num)) : null;
      this.txq = tx;
    }
    for (let i = 0; i < 2; i++) {
      const slot = b ? b.vrings[i] : null;
      const cur = this.kick[i];
      const gen = slot && slot.kickFd >= 0 ? slot.kickGen : -1;
      if (cur && cur.gen === gen) continue;
      if (cur) this.stopKick(i);
      if (slot && gen >= 0) {
        // Our own dup: the backend may close its fd whenever the front-end replaces it.
        const fd = dupFd(slot.kickFd);
        const watcher = new FdWatcher(fd, () => {
          eventfdDrain(fd);
          this.counters.kicks++;
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
    delete this.kick[i];
  }

  private sharedBuffersReply(): { info: SharedBuffersInfo; fd: number } | string {
    const { shared, ledger } = this.ctx;
    const p = this.partition;
    // The static partition is handed out whole when all of it is in the pool;
    // otherwise (a re-attach after traffic) the port starts empty and the
    // pool gifts it buffers as it posts them (see ingestRx).
    const given = ledger.owned[this.id] === 0 && ledger.assignRange(p.start, p.count, this.id);
    this.zeroCopy = true;
    this.ctx.log.info({ port: this.name, partition: given ? p : null, owned: ledger.owned[this.id] }, 'shared buffers mapped by front-end');
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
    const { ledger, log } = this.ctx;
    this.stopKick(0);
    this.stopKick(1);
    this.rxq = this.txq = null;
    this.rxWalker = this.txWalker = null;
    this.clearPostings();
    const reclaimed = ledger.reclaim(this.id);
    this.backend = null;
    this.zeroCopy = false;
    log.info({ port: this.name, reason, reclaimed }, 'front-end disconnected');
    this.ctx.detached(this, reason);
  }

  /** Drop the front-end (misbehaviour or shutdown). */
  disconnect(reason: string): void {
    this.backend?.disconnect(reason);
  }

  private clearPostings(): void {
    this.rxSlot.fill(-1);
    this.copyHead = this.copyCount = 0;
    this.ownHead = this.ownCount = 0;
  }

  /**
   * Consume newly posted rx descriptors: shared buffers go into rxSlot (or
   * are gifted at once from the pool), other chains become copy targets.
   * Invalid postings are completed empty so the VM gets them back.
   */
  ingestRx(): number {
    const q = this.rxq;
    if (q === null) return 0;
    let n = q.availPending();
    if (n < 0) {
      this.counters.drop(Drop.RingBroken);
      this.disconnect('rx avail index ran ahead of the ring size');
      return 0;
    }
    const taken = n;
    const { shared, ledger } = this.ctx;
    const seg = this.seg;
    const walker = this.rxWalker!;
    const num = q.ring.num;
    while (n-- > 0) {
      const head = q.popAvail();
      const c = walker.walk(q.ring, head, seg);
      if (c < 0) {
        this.counters.drop(chainDrop(c));
        if (head < num) q.pushUsed(head, 0);
        continue;
      }
      const addr = seg.addr[0];
      const b = shared.indexOf(addr);
      if (seg.readable !== 0 || (b >= 0 && (!this.zeroCopy || c !== 1 || addr !== shared.addrOf(b) || seg.len[0] !== shared.bufSize))) {
        this.counters.drop(Drop.BadRxDesc);
        q.pushUsed(head, 0);
      } else if (b < 0) {
        this.copyQ[(this.copyHead + this.copyCount++) & 32767] = head;
      } else if (this.ctx.swap && ledger.owner[b] === this.id) {
        const at = (this.ownHead + this.ownCount++) & 32767;
        this.ownRxHead[at] = head;
        this.ownRxBuf[at] = b;
      } else if (this.rxSlot[b] >= 0) {
        this.counters.drop(Drop.DupRxPost);
        q.pushUsed(head, 0);
      } else if (ledger.owner[b] === POOL && ledger.owned[this.id] < this.partition.count) {
        writeNetHdr(shared.mem, shared.offsetOf(b), VIRTIO_NET_HDR_F_GIFT_BUFFER, 1);
        q.pushUsed(head, VIRTIO_NET_HDR_SIZE);
        ledger.transfer(b, this.id);
        this.counters.giftsOut++;
      } else {
        this.rxSlot[b] = head;
      }
    }
    return taken;
  }

  /** Bridge mode: own empty buffers posted on rx. */
  get ownRxCount(): number {
    return this.ownCount;
  }

  /** Take the oldest own rx posting: returns its head; its buffer is in takenBuf. */
  takeOwnRx(): number {
    const at = this.ownHead;
    this.takenBuf = this.ownRxBuf[at];
    this.ownHead = (at + 1) & 32767;
    this.ownCount--;
    return this.ownRxHead[at];
  }

  /** Buffer of the posting last returned by takeOwnRx(). */
  takenBuf = -1;

  /** Next copy target's head without consuming it, or -1. */
  peekCopyTarget(): number {
    return this.copyCount > 0 ? this.copyQ[this.copyHead] : -1;
  }

  consumeCopyTarget(): void {
    this.copyHead = (this.copyHead + 1) & 32767;
    this.copyCount--;
  }

  /**
   * Hand shared buffer b back to this port through its own posted rx
   * descriptor, flagged RETURNED (DESIGN §3.5). False if it posted none.
   */
  returnBuffer(b: number): boolean {
    let head = this.rxSlot[b];
    if (head < 0) {
      this.ingestRx();
      head = this.rxSlot[b];
      if (head < 0) return false;
    }
    const { shared } = this.ctx;
    const off = shared.offsetOf(b);
    setNetHdrFlags(shared.mem, off, netHdrFlags(shared.mem, off) | VIRTIO_NET_HDR_F_RETURNED);
    this.rxq!.pushUsed(head, VIRTIO_NET_HDR_SIZE);
    this.rxSlot[b] = -1;
    this.counters.returned++;
    return true;
  }

  /** Publish used entries and send the calls the VM asked for. */
  flush(): void {
    const b = this.backend;
    if (b === null) return;
    const rx = this.rxq;
    if (rx !== null) {
      rx.publishUsed();
      if (rx.needsCall()) this.call(b.vrings[RX_VRING].callFd);
    }
    const tx = this.txq;
    if (tx !== null) {
      tx.publishUsed();
      if (tx.needsCall()) this.call(b.vrings[TX_VRING].callFd);
    }
  }

  private call(fd: number): void {
    if (fd < 0) return;
    eventfdSignal(fd);
    this.counters.calls++;
  }

  /** Enable or disable kicks on every running queue; returns entries already pending. */
  setKicks(on: boolean): number {
    let pending = 0;
    if (this.rxq) pending += Math.max(0, this.rxq.setKicks(on));
    if (this.txq) pending += Math.max(0, this.txq.setKicks(on));
    return pending;
  }
}
