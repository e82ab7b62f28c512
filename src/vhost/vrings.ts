/**
 * Ring set-up for one session: the front-end's memory table, each vring's
 * state as SET_VRING_* leave it, and the DeviceQueue built over a ring once
 * it is started, enabled, sized, addressed and mapped. The handlers here
 * plug into the session's table; the port learns of changes through
 * queuesChanged and reads the slots.
 */
import type { Logger } from '../log';
import { DeviceQueue } from '../virtio/device-queue';
import { VIRTIO_RING_F_EVENT_IDX, hasBit } from '../virtio/defs';
import { SplitRing, availRingBytes, descTableBytes, isValidQueueSize, ringPartsProblem, usedRingBytes } from '../virtio/ring';
import { ProtocolError, type VhostMessage, type VringAddr, decodeMemTable, decodeU64, decodeVringAddr, decodeVringState, vringState } from './codec';
import type { HandlerRows } from './handler';
import { MemoryTable, closeFdQuiet } from './memory-table';
import { notifierProblem } from './notifier-fd';
import { Req, VHOST_USER_F_PROTOCOL_FEATURES, VRING_IDX_MASK, VRING_NOFD_MASK, reqName } from './protocol';

export class VringSlot {
  num = 0;
  addr: VringAddr | null = null;
  base = 0;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  /** Bumped whenever kickFd changes, so watchers notice a new fd with a reused number. */
  kickGen = 0;
  /** Bumped whenever callFd changes (a front-end may swap it on a running ring), so a worker re-dups it. */
  callGen = 0;
  started = false;
  enabled = false;
  queue: DeviceQueue | null = null;
}

export interface VringsContext {
  port: string;
  log: Logger;
  /** Features the front-end acked: EVENT_IDX shapes the queues, PROTOCOL_FEATURES how a ring is enabled. */
  ackedFeatures(): bigint;
  /** Running queues, kick fds or memory changed. */
  queuesChanged(): void;
  /** The Shared Buffers window a memory table must not overlap, if any. */
  sharedWindow(): { base: number; size: number } | null;
  /** A mapping of this front-end's memory faulted (its file shrank): the port must go. */
  guestMemoryFault(): void;
  /** Ring indices are about to be read off the running queues: a worker that forwards for the port brings them up to date. */
  beforeRingRead(): void;
  /** Memory tables keep a dup of each region's fd (a worker thread maps them again). */
  keepMemoryFds: boolean;
}

type FdField = 'kickFd' | 'callFd' | 'errFd';
const FD_NAMES: Record<FdField, string> = { kickFd: 'kick', callFd: 'call', errFd: 'err' };

export class Vrings {
  readonly slots: VringSlot[];
  mem: MemoryTable | null = null;

  constructor(count: number, private readonly ctx: VringsContext) {
    this.slots = Array.from({ length: count }, () => new VringSlot());
  }

  get eventIdx(): boolean {
    return hasBit(this.ctx.ackedFeatures(), VIRTIO_RING_F_EVENT_IDX);
  }

  handlers(): HandlerRows {
    return [
      [Req.SET_MEM_TABLE, (m) => this.setMemTable(m)],
      [Req.SET_VRING_NUM, (m) => this.setVringNum(m)],
      [Req.SET_VRING_ADDR, (m) => this.setVringAddr(m)],
      [Req.SET_VRING_BASE, (m) => this.setVringBase(m)],
      [Req.GET_VRING_BASE, (m) => this.getVringBase(m)],
      [Req.SET_VRING_KICK, (m) => this.setVringFd(m, 'kickFd')],
      [Req.SET_VRING_CALL, (m) => this.setVringFd(m, 'callFd')],
      [Req.SET_VRING_ERR, (m) => this.setVringFd(m, 'errFd')],
      [Req.SET_VRING_ENABLE, (m) => this.setVringEnable(m)],
    ];
  }

  /** Remap every running ring (new memory table, size or features), keeping its indices. */
  rebuildQueues(): void {
    this.ctx.beforeRingRead();
    this.slots.forEach((s, i) => {
      if (s.queue) s.queue = this.makeQueue(i, s, s.queue.lastAvail, s.queue.usedIdx);
    });
    if (!this.refresh()) this.ctx.queuesChanged();
  }

  /** The connection is gone: drop every queue and close every ring fd. */
  close(): void {
    for (const s of this.slots) {
      s.queue = null;
      closeFdQuiet(s.kickFd);
      closeFdQuiet(s.callFd);
      closeFdQuiet(s.errFd);
      s.kickFd = s.callFd = s.errFd = -1;
    }
  }

  unmapMemory(): void {
    this.mem?.unmap();
    this.mem = null;
  }

  private slot(index: number, req: string): VringSlot {
    const s = this.slots[index];
    if (!s) throw new ProtocolError(`${req}: vring index ${index} out of range (this port has ${this.slots.length} vrings)`);
    return s;
  }

  private setMemTable(msg: VhostMessage): void {
    const regions = decodeMemTable(msg);
    const fds = msg.fds;
    msg.fds = [];
    const table = new MemoryTable(regions, fds, () => this.ctx.guestMemoryFault(), this.ctx.keepMemoryFds);
    const win = this.ctx.sharedWindow();
    if (win && table.overlapsGpa(win.base, win.size)) {
      table.unmap();
      throw new ProtocolError(`SET_MEM_TABLE: guest memory overlaps the Shared Buffers window at 0x${win.base.toString(16)}`);
    }
    const old = this.mem;
    this.mem = table;
    this.ctx.log.info({ port: this.ctx.port, regions: regions.length }, 'memory table mapped');
    try {
      this.rebuildQueues();
    } finally {
      // Nothing refers to the old table once this.mem is the new one, and a
      // ring that does not fit the new table disconnects the front-end: unmap
      // the old one (and close the fds it keeps for workers) either way, or
      // every such message would leak them.
      old?.unmap();
    }
  }

  private setVringNum(msg: VhostMessage): void {
    const st = decodeVringState(msg);
    const s = this.slot(st.index, 'SET_VRING_NUM');
    if (!isValidQueueSize(st.num)) throw new ProtocolError(`SET_VRING_NUM: vring ${st.index} size ${st.num} is not a power of two in 1..32768`);
    s.num = st.num;
    if (s.queue) this.rebuildQueues();
  }

  private setVringAddr(msg: VhostMessage): void {
    const a = decodeVringAddr(msg);
    this.slot(a.index, 'SET_VRING_ADDR').addr = a;
  }

  private setVringBase(msg: VhostMessage): void {
    const st = decodeVringState(msg);
    this.slot(st.index, 'SET_VRING_BASE').base = st.num & 0xffff;
  }

  private getVringBase(msg: VhostMessage): Buffer {
    const st = decodeVringState(msg);
    const s = this.slot(st.index, 'GET_VRING_BASE');
    if (s.queue) this.ctx.beforeRingRead();
    const base = s.queue ? resumeIndex(s.queue) : s.base;
    s.base = base;
    s.started = false;
    closeFdQuiet(s.kickFd);
    s.kickFd = -1;
    // The port must drop its watcher on the closed kick fd even if the ring was not running.
    if (!this.refresh()) this.ctx.queuesChanged();
    this.ctx.log.info({ port: this.ctx.port, vring: st.index, base }, 'vring stopped');
    return vringState(st.index, base);
  }

  private setVringFd(msg: VhostMessage, which: FdField): void {
    const v = decodeU64(msg);
    const index = Number(v & BigInt(VRING_IDX_MASK));
    const s = this.slot(index, reqName(msg.request));
    const noFd = (v & BigInt(VRING_NOFD_MASK)) !== 0n;
    if (!noFd && msg.fds.length !== 1) throw new ProtocolError(`${reqName(msg.request)}: vring ${index} expects one fd, got ${msg.fds.length}`);
    // The fd stays in msg.fds until it is accepted: the session closes it on every refusal.
    const problem = noFd ? null : notifierProblem(msg.fds[0]);
    if (problem) throw new ProtocolError(`${reqName(msg.request)}: vring ${index} ${FD_NAMES[which]} fd ${problem}`);
    closeFdQuiet(s[which]);
    s[which] = noFd ? -1 : msg.fds.pop()!;
    if (which === 'callFd') s.callGen++;
    if (which === 'kickFd') {
      // SET_VRING_KICK starts the ring; without protocol features it is enabled too.
      s.kickGen++;
      s.started = true;
      if (!hasBit(this.ctx.ackedFeatures(), VHOST_USER_F_PROTOCOL_FEATURES)) s.enabled = true;
    }
    // The port re-reads fds even when no ring started or stopped.
    if (!this.refresh()) this.ctx.queuesChanged();
  }

  private setVringEnable(msg: VhostMessage): void {
    const st = decodeVringState(msg);
    this.slot(st.index, 'SET_VRING_ENABLE').enabled = st.num !== 0;
    this.refresh();
  }

  /** Build or drop each ring's DeviceQueue to match its state; tell the port if anything changed. */
  private refresh(): boolean {
    let changed = false;
    let read = false;
    this.slots.forEach((s, i) => {
      const run = s.started && s.enabled && s.num > 0 && s.addr !== null && this.mem !== null;
      if (run && !s.queue) {
        s.queue = this.makeQueue(i, s, s.base, -1);
        changed = true;
      } else if (!run && s.queue) {
        if (!read) this.ctx.beforeRingRead();
        read = true;
        s.base = resumeIndex(s.queue);
        s.queue = null;
        changed = true;
      }
    });
    if (changed) this.ctx.queuesChanged();
    return changed;
  }

  private makeQueue(i: number, s: VringSlot, lastAvail: number, usedIdx: number): DeviceQueue {
    const a = s.addr!;
    const mem = this.mem!;
    const { port, log } = this.ctx;
    const part = (what: string, addr: bigint, bytes: number) => {
      const p = mem.translateUser(Number(addr), bytes);
      if (!p) throw new ProtocolError(`vring ${i}: ${what} address 0x${addr.toString(16)} (+${bytes}) is not in the memory table`);
      return p;
    };
    const parts = {
      desc: part('descriptor table', a.desc, descTableBytes(s.num)),
      avail: part('avail ring', a.avail, availRingBytes(s.num)),
      used: part('used ring', a.used, usedRingBytes(s.num)),
    };
    const problem = ringPartsProblem(s.num, parts);
    if (problem) throw new ProtocolError(`vring ${i}: ${problem}`);
    const ring = new SplitRing(s.num, parts);
    const inMemory = Atomics.load(ring.used16, 1);
    if (usedIdx < 0) {
      if (inMemory !== lastAvail) {
        log.warn({ port, vring: i, base: lastAvail, usedIdx: inMemory }, 'vring base differs from used.idx; resuming from used.idx');
        lastAvail = inMemory;
      }
      usedIdx = inMemory;
    }
    log.info({ port, vring: i, num: s.num, eventIdx: this.eventIdx }, 'vring started');
    return new DeviceQueue(ring, this.eventIdx, lastAvail, usedIdx);
  }
}

/**
 * The ring index a stopped vring resumes from, as GET_VRING_BASE reports it:
 * the first avail entry not yet used. The switch takes rx descriptors off the
 * avail ring before it fills them (copy targets wait in the port), so
 * lastAvail runs ahead of used.idx by the descriptors it holds; reporting
 * lastAvail would make a front-end that restarts the ring from this value
 * (QEMU after stop/cont or migration: SET_VRING_BASE) skip them, and the
 * guest would never see those buffers again. The port drops what it holds
 * when the ring stops, so they are taken again on restart. Anything the
 * switch completed is made visible first.
 */
function resumeIndex(q: DeviceQueue): number {
  q.publishUsed();
  return q.usedIdx;
}
