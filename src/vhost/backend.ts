/**
 * The vhost-user back-end session for one port: a table from request id to
 * handler (passt style), REPLY_ACK answered in one place, every request
 * logged by name, one default for unsupported requests. It owns the
 * front-end's memory table and the vrings' state and tells its port when
 * the set of running queues changes; it never touches packets.
 */
import type { Logger } from '../log';
import { DeviceQueue } from '../virtio/device-queue';
import { VIRTIO_RING_F_EVENT_IDX, VHOST_USER_F_PROTOCOL_FEATURES, hasBit } from '../virtio/defs';
import { SplitRing, availRingBytes, descTableBytes, isValidQueueSize, ringPartsProblem, usedRingBytes } from '../virtio/ring';
import { VhostChannel } from './channel';
import {
  ProtocolError, type SharedBuffersInfo, type VhostMessage, type VringAddr, decodeMemTable, decodeU64,
  decodeVringAddr, decodeVringState, sharedBuffersInfo, u64, vringState,
} from './codec';
import { MemoryTable, closeFdQuiet } from './memory-table';
import {
  FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, FLAG_VERSION_MASK, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_SHARED_BUFFERS, REPLIES, Req,
  VRING_IDX_MASK, VRING_NOFD_MASK, reqName,
} from './protocol';

/** A request the back-end understood but refuses: ack with failure, keep the session. */
class Refused extends Error {}

export interface BackendHooks {
  /** Running queues or memory changed: re-read queue(i) for every index. */
  queuesChanged(): void;
  /** GET_SHARED_BUFFERS: the region fd and this port's geometry, or a reason it cannot be served. */
  sharedBuffers(): { info: SharedBuffersInfo; fd: number } | string;
  /** The Shared Buffers window [base, base+size) a memory table must not overlap, if any. */
  sharedWindow(): { base: number; size: number } | null;
  closed(reason: string): void;
}

export interface BackendOptions {
  port: string;
  log: Logger;
  features: bigint;
  protocolFeatures: bigint;
  queuePairs: number;
}

export class VringSlot {
  num = 0;
  addr: VringAddr | null = null;
  base = 0;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  /** Bumped whenever kickFd changes, so watchers notice a new fd with a reused number. */
  kickGen = 0;
  started = false;
  enabled = false;
  queue: DeviceQueue | null = null;
}

type Handler = (msg: VhostMessage) => Buffer | void;

export class VhostUserBackend {
  readonly vrings: VringSlot[];
  readonly channel: VhostChannel;
  mem: MemoryTable | null = null;
  ackedFeatures = 0n;
  ackedProtocol = 0n;
  status = 0n;
  private readonly handlers: Map<number, Handler>;

  constructor(fd: number, private readonly opts: BackendOptions, private readonly hooks: BackendHooks) {
    this.vrings = Array.from({ length: 2 * opts.queuePairs }, () => new VringSlot());
    this.handlers = new Map<number, Handler>([
      [Req.GET_FEATURES, () => u64(this.opts.features)],
      [Req.SET_FEATURES, (m) => this.setFeatures(decodeU64(m))],
      [Req.GET_PROTOCOL_FEATURES, () => u64(this.opts.protocolFeatures)],
      [Req.SET_PROTOCOL_FEATURES, (m) => this.setProtocolFeatures(decodeU64(m))],
      // Ownership is the connection itself: one front-end per port.
      [Req.SET_OWNER, () => undefined],
      [Req.RESET_OWNER, () => this.opts.log.info({ port: this.opts.port }, 'RESET_OWNER ignored (deprecated request)')],
      [Req.GET_QUEUE_NUM, () => u64(BigInt(this.opts.queuePairs))],
      [Req.SET_MEM_TABLE, (m) => this.setMemTable(m)],
      [Req.SET_VRING_NUM, (m) => this.setVringNum(m)],
      [Req.SET_VRING_ADDR, (m) => this.setVringAddr(m)],
      [Req.SET_VRING_BASE, (m) => this.setVringBase(m)],
      [Req.GET_VRING_BASE, (m) => this.getVringBase(m)],
      [Req.SET_VRING_KICK, (m) => this.setVringFd(m, 'kickFd')],
      [Req.SET_VRING_CALL, (m) => this.setVringFd(m, 'callFd')],
      [Req.SET_VRING_ERR, (m) => this.setVringFd(m, 'errFd')],
      [Req.SET_VRING_ENABLE, (m) => this.setVringEnable(m)],
      [Req.SET_STATUS, (m) => void (this.status = decodeU64(m))],
      [Req.GET_STATUS, () => u64(this.status)],
      [Req.GET_SHARED_BUFFERS, () => this.getSharedBuffers()],
    ]);
    this.channel = new VhostChannel(fd, (m) => this.dispatch(m), (reason) => this.teardown(reason));
  }

  get eventIdx(): boolean {
    return hasBit(this.ackedFeatures, VIRTIO_RING_F_EVENT_IDX);
  }

  get sharedBuffersNegotiated(): boolean {
    return hasBit(this.ackedProtocol, PROTOCOL_F_SHARED_BUFFERS);
  }

  /** Drop the connection (misbehaving front-end or switch shutdown). */
  disconnect(reason: string): void {
    this.channel.close(reason);
  }

  private dispatch(msg: VhostMessage): void {
    const name = reqName(msg.request);
    const log = this.opts.log;
    log.debug({ port: this.opts.port, req: name, size: msg.payload.length, fds: msg.fds.length }, 'vhost-user request');
    let reply: Buffer | void = undefined;
    let ok = true;
    try {
      if ((msg.flags & FLAG_VERSION_MASK) !== FLAG_VERSION) throw new ProtocolError(`${name}: bad protocol version in flags 0x${msg.flags.toString(16)}`);
      const handler = this.handlers.get(msg.request);
      if (handler) reply = handler(msg);
      else ok = this.unsupported(msg);
    } catch (e) {
      if (e instanceof Refused) {
        log.warn({ port: this.opts.port, req: name }, e.message);
        ok = false;
      } else {
        const reason = e instanceof ProtocolError ? e.message : `${name}: ${(e as Error).message}`;
        log.error({ port: this.opts.port, req: name }, `malformed request, disconnecting: ${reason}`);
        this.closeFds(msg);
        this.disconnect(reason);
        return;
      }
    }
    this.closeFds(msg);
    if (this.channel.isClosed) return;
    if (reply) {
      this.channel.send(msg.request, FLAG_VERSION | FLAG_REPLY, reply, this.replyFds);
      this.replyFds = undefined;
    } else if ((msg.flags & FLAG_NEED_REPLY) && hasBit(this.ackedProtocol, PROTOCOL_F_REPLY_ACK) && !REPLIES.has(msg.request)) {
      this.channel.send(msg.request, FLAG_VERSION | FLAG_REPLY, u64(ok ? 0n : 1n));
    } else if (!ok && REPLIES.has(msg.request)) {
      // The front-end waits for an answer we cannot give; better to drop it than hang it.
      this.disconnect(`${name}: cannot answer this request`);
    }
  }

  /** fds for the next reply (only GET_SHARED_BUFFERS sends one). */
  private replyFds: number[] | undefined;

  private unsupported(msg: VhostMessage): boolean {
    this.opts.log.warn({ port: this.opts.port, req: reqName(msg.request) }, 'unsupported vhost-user request ignored');
    return false;
  }

  private closeFds(msg: VhostMessage): void {
    for (const fd of msg.fds) closeFdQuiet(fd);
    msg.fds = [];
  }

  private slot(index: number, req: string): VringSlot {
    const s = this.vrings[index];
    if (!s) throw new ProtocolError(`${req}: vring index ${index} out of range (this port has ${this.vrings.length} vrings)`);
    return s;
  }

  private setFeatures(f: bigint): void {
    const extra = f & ~this.opts.features;
    if (extra) throw new ProtocolError(`SET_FEATURES: acks features that were not offered: 0x${extra.toString(16)}`);
    this.ackedFeatures = f;
    this.opts.log.info({ port: this.opts.port, features: `0x${f.toString(16)}`, eventIdx: this.eventIdx }, 'features negotiated');
    // EVENT_IDX may change under running rings (some front-ends set features late).
    this.rebuildQueues();
  }

  private setProtocolFeatures(f: bigint): void {
    const extra = f & ~this.opts.protocolFeatures;
    if (extra) throw new ProtocolError(`SET_PROTOCOL_FEATURES: acks protocol features that were not offered: 0x${extra.toString(16)}`);
    this.ackedProtocol = f;
    this.opts.log.info({ port: this.opts.port, protocolFeatures: `0x${f.toString(16)}`, sharedBuffers: this.sharedBuffersNegotiated }, 'protocol features negotiated');
  }

  private setMemTable(msg: VhostMessage): void {
    const regions = decodeMemTable(msg);
    const fds = msg.fds;
    msg.fds = [];
    const table = new MemoryTable(regions, fds);
    const win = this.hooks.sharedWindow();
    if (win && table.overlapsGpa(win.base, win.size)) {
      table.unmap();
      throw new ProtocolError(`SET_MEM_TABLE: guest memory overlaps the Shared Buffers window at 0x${win.base.toString(16)}`);
    }
    const old = this.mem;
    this.mem = table;
    this.opts.log.info({ port: this.opts.port, regions: regions.length }, 'memory table mapped');
    this.rebuildQueues();
    old?.unmap();
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
    const base = s.queue ? resumeIndex(s.queue) : s.base;
    s.base = base;
    s.started = false;
    closeFdQuiet(s.kickFd);
    s.kickFd = -1;
    // The port must drop its watcher on the closed kick fd even if the ring was not running.
    if (!this.refresh()) this.hooks.queuesChanged();
    this.opts.log.info({ port: this.opts.port, vring: st.index, base }, 'vring stopped');
    return vringState(st.index, base);
  }

  private setVringFd(msg: VhostMessage, which: 'kickFd' | 'callFd' | 'errFd'): void {
    const v = decodeU64(msg);
    const index = Number(v & BigInt(VRING_IDX_MASK));
    const s = this.slot(index, reqName(msg.request));
    const noFd = (v & BigInt(VRING_NOFD_MASK)) !== 0n;
    if (!noFd && msg.fds.length !== 1) throw new ProtocolError(`${reqName(msg.request)}: vring ${index} expects one fd, got ${msg.fds.length}`);
    closeFdQuiet(s[which]);
    s[which] = noFd ? -1 : msg.fds.pop()!;
    if (which === 'kickFd') {
      // SET_VRING_KICK starts the ring; without protocol features it is enabled too.
      s.kickGen++;
      s.started = true;
      if (!hasBit(this.ackedFeatures, VHOST_USER_F_PROTOCOL_FEATURES)) s.enabled = true;
    }
    // The port re-reads fds even when no ring started or stopped.
    if (!this.refresh()) this.hooks.queuesChanged();
  }

  private setVringEnable(msg: VhostMessage): void {
    const st = decodeVringState(msg);
    this.slot(st.index, 'SET_VRING_ENABLE').enabled = st.num !== 0;
    this.refresh();
  }

  private getSharedBuffers(): Buffer {
    if (!this.sharedBuffersNegotiated) throw new ProtocolError('GET_SHARED_BUFFERS: the SHARED_BUFFERS protocol feature was not negotiated');
    const r = this.hooks.sharedBuffers();
    if (typeof r === 'string') throw new Refused(`GET_SHARED_BUFFERS refused: ${r}`);
    this.replyFds = [r.fd];
    return sharedBuffersInfo(r.info);
  }

  /** Build or drop each ring's DeviceQueue to match its state; tell the port if anything changed. */
  private refresh(): boolean {
    let changed = false;
    this.vrings.forEach((s, i) => {
      const run = s.started && s.enabled && s.num > 0 && s.addr !== null && this.mem !== null;
      if (run && !s.queue) {
        s.queue = this.makeQueue(i, s, s.base, -1);
        changed = true;
      } else if (!run && s.queue) {
        s.base = resumeIndex(s.queue);
        s.queue = null;
        changed = true;
      }
    });
    if (changed) this.hooks.queuesChanged();
    return changed;
  }

  /** Remap every running ring (new memory table, size or features), keeping its indices. */
  private rebuildQueues(): void {
    this.vrings.forEach((s, i) => {
      if (s.queue) s.queue = this.makeQueue(i, s, s.queue.lastAvail, s.queue.usedIdx);
    });
    if (!this.refresh()) this.hooks.queuesChanged();
  }

  private makeQueue(i: number, s: VringSlot, lastAvail: number, usedIdx: number): DeviceQueue {
    const a = s.addr!;
    const mem = this.mem!;
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
        this.opts.log.warn({ port: this.opts.port, vring: i, base: lastAvail, usedIdx: inMemory }, 'vring base differs from used.idx; resuming from used.idx');
        lastAvail = inMemory;
      }
      usedIdx = inMemory;
    }
    this.opts.log.info({ port: this.opts.port, vring: i, num: s.num, eventIdx: this.eventIdx }, 'vring started');
    return new DeviceQueue(ring, this.eventIdx, lastAvail, usedIdx);
  }

  private teardown(reason: string): void {
    for (const s of this.vrings) {
      s.queue = null;
      closeFdQuiet(s.kickFd);
      closeFdQuiet(s.callFd);
      closeFdQuiet(s.errFd);
      s.kickFd = s.callFd = s.errFd = -1;
    }
    this.hooks.closed(reason);
    this.mem?.unmap();
    this.mem = null;
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
