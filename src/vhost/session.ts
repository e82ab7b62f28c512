/**
 * The vhost-user back-end session for one port: a table from request id to
 * handler (passt style), REPLY_ACK answered in one place, every request
 * logged by name, one default for unsupported requests. The session itself
 * handles feature negotiation and status; ring set-up (vrings.ts) and the
 * SHARED_BUFFERS extension (shared-buffers-handler.ts) plug their handlers
 * into its table. It never touches packets.
 *
 * Security model: the socket is an external interface and the front-end is
 * untrusted. Every field it sends (sizes, counts, indices, addresses, flags,
 * fds) is checked before use; a malformed message costs that front-end its
 * connection (ProtocolError, logged with the request's name), never the
 * switch or another port. A well-formed request we decline is acked with
 * failure and the session goes on.
 */
import type { Logger } from '../log';
import { MTU_MIN, hasBit } from '../virtio/defs';
import { VhostChannel } from './channel';
import { ProtocolError, type SharedBuffersInfo, type VhostMessage, decodeU64, u64 } from './codec';
import { type Handler, type HandlerRows, Refused } from './handler';
import { type MemoryTable, closeFdQuiet } from './memory-table';
import {
  FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, FLAG_VERSION_MASK, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_SHARED_BUFFERS, REPLIES, Req,
  reqName,
} from './protocol';
import { sharedBuffersHandlers } from './shared-buffers-handler';
import { type VringSlot, Vrings } from './vrings';

export { VringSlot } from './vrings';

export interface BackendHooks {
  /** Running queues or memory changed: re-read queue(i) for every index. */
  queuesChanged(): void;
  /** GET_SHARED_BUFFERS: the region fd and this port's geometry, or a reason it cannot be served. */
  sharedBuffers(): { info: SharedBuffersInfo; fd: number } | string;
  /** The Shared Buffers window [base, base+size) a memory table must not overlap, if any. */
  sharedWindow(): { base: number; size: number } | null;
  closed(reason: string): void;
  /** The front-end's memory vanished under a mapping (SIGBUS survived by the guard): drop it. */
  guestMemoryFault(): void;
  /**
   * A worker thread forwards for this port (src/workers/): bring the ring
   * indices of the running queues up to date from it before they are read
   * (GET_VRING_BASE, a ring stopping or being remapped).
   */
  beforeRingRead?(): void;
}

export interface BackendOptions {
  port: string;
  log: Logger;
  features: bigint;
  protocolFeatures: bigint;
  queuePairs: number;
  /** Keep a dup of each memory region's fd while it is mapped (a worker thread maps it again: src/workers/). */
  keepMemoryFds?: boolean;
  /** The port's `mtu`: the most a front-end may ask for with NET_SET_MTU. */
  mtu: number;
}

export class VhostUserBackend {
  readonly vrings: VringSlot[];
  readonly channel: VhostChannel;
  ackedFeatures = 0n;
  ackedProtocol = 0n;
  status = 0n;
  /** NET_SET_MTU: the MTU the front-end's device announces (QEMU host_mtu=); 0 when it sent none. */
  mtu = 0;
  /**
   * SET_OWNER arrived: the front-end finished the set-up it does on its own.
   * QEMU sends it at connect, long before its guest's driver starts the rings.
   */
  ownerClaimed = false;
  private readonly rings: Vrings;
  private readonly handlers: Map<number, Handler>;

  constructor(fd: number, private readonly opts: BackendOptions, private readonly hooks: BackendHooks) {
    this.rings = new Vrings(2 * opts.queuePairs, {
      port: opts.port,
      log: opts.log,
      ackedFeatures: () => this.ackedFeatures,
      queuesChanged: () => hooks.queuesChanged(),
      sharedWindow: () => hooks.sharedWindow(),
      guestMemoryFault: () => hooks.guestMemoryFault(),
      beforeRingRead: () => hooks.beforeRingRead?.(),
      keepMemoryFds: opts.keepMemoryFds === true,
    });
    this.vrings = this.rings.slots;
    this.handlers = handlerTable([
      [Req.GET_FEATURES, () => u64(this.opts.features)],
      [Req.SET_FEATURES, (m) => this.setFeatures(decodeU64(m))],
      [Req.GET_PROTOCOL_FEATURES, () => u64(this.opts.protocolFeatures)],
      [Req.SET_PROTOCOL_FEATURES, (m) => this.setProtocolFeatures(decodeU64(m))],
      // Ownership is the connection itself (one front-end per port); SET_OWNER marks a front-end that has done its own set-up (limits.handshakeSec).
      [Req.SET_OWNER, () => void (this.ownerClaimed = true)],
      [Req.RESET_OWNER, () => this.opts.log.info({ port: this.opts.port }, 'RESET_OWNER ignored (deprecated request)')],
      [Req.GET_QUEUE_NUM, () => u64(BigInt(this.opts.queuePairs))],
      [Req.SET_STATUS, (m) => void (this.status = decodeU64(m))],
      [Req.GET_STATUS, () => u64(this.status)],
      [Req.NET_SET_MTU, (m) => this.setMtu(decodeU64(m))],
      ...this.rings.handlers(),
      ...sharedBuffersHandlers({ negotiated: () => this.sharedBuffersNegotiated, sharedBuffers: () => hooks.sharedBuffers() }),
    ]);
    this.channel = new VhostChannel(fd, (m) => this.dispatch(m), (reason) => this.teardown(reason));
  }

  /** The front-end's memory table, once SET_MEM_TABLE has mapped it. */
  get mem(): MemoryTable | null {
    return this.rings.mem;
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
    let reply: ReturnType<Handler> = undefined;
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
        closeFds(msg);
        this.disconnect(reason);
        return;
      }
    }
    closeFds(msg);
    if (this.channel.isClosed) return;
    if (reply) {
      if (Buffer.isBuffer(reply)) this.channel.send(msg.request, FLAG_VERSION | FLAG_REPLY, reply);
      else this.channel.send(msg.request, FLAG_VERSION | FLAG_REPLY, reply.payload, reply.fds);
    } else if ((msg.flags & FLAG_NEED_REPLY) && hasBit(this.ackedProtocol, PROTOCOL_F_REPLY_ACK) && !REPLIES.has(msg.request)) {
      this.channel.send(msg.request, FLAG_VERSION | FLAG_REPLY, u64(ok ? 0n : 1n));
    } else if (!ok && REPLIES.has(msg.request)) {
      // The front-end waits for an answer we cannot give; better to drop it than hang it.
      this.disconnect(`${name}: cannot answer this request`);
    }
  }

  /** The default for every request without a handler: log it by name, ack with failure. */
  private unsupported(msg: VhostMessage): boolean {
    this.opts.log.warn({ port: this.opts.port, req: reqName(msg.request) }, 'unsupported vhost-user request ignored');
    return false;
  }

  private setFeatures(f: bigint): void {
    const extra = f & ~this.opts.features;
    if (extra) throw new ProtocolError(`SET_FEATURES: acks features that were not offered: 0x${extra.toString(16)}`);
    this.ackedFeatures = f;
    this.opts.log.info({ port: this.opts.port, features: `0x${f.toString(16)}`, eventIdx: this.rings.eventIdx }, 'features negotiated');
    // EVENT_IDX may change under running rings (some front-ends set features late).
    this.rings.rebuildQueues();
  }

  private setProtocolFeatures(f: bigint): void {
    const extra = f & ~this.opts.protocolFeatures;
    if (extra) throw new ProtocolError(`SET_PROTOCOL_FEATURES: acks protocol features that were not offered: 0x${extra.toString(16)}`);
    this.ackedProtocol = f;
    this.opts.log.info({ port: this.opts.port, protocolFeatures: `0x${f.toString(16)}`, sharedBuffers: this.sharedBuffersNegotiated }, 'protocol features negotiated');
    // RX_BY_BUFFER and SWAP_IN_USED change how the data path treats running queues (a front-end may set them late).
    this.hooks.queuesChanged();
  }

  private setMtu(v: bigint): void {
    const most = this.opts.mtu;
    if (v < BigInt(MTU_MIN) || v > BigInt(most)) throw new Refused(`NET_SET_MTU: mtu ${v} is outside ${MTU_MIN}..${most} (the port's mtu)`);
    this.mtu = Number(v);
    this.opts.log.info({ port: this.opts.port, mtu: this.mtu }, 'MTU set by the front-end');
    this.hooks.queuesChanged();
  }

  private teardown(reason: string): void {
    this.rings.close();
    this.hooks.closed(reason);
    this.rings.unmapMemory();
  }
}

/** One table from the handlers' rows; a request claimed twice is a bug in the table. */
function handlerTable(rows: HandlerRows): Map<number, Handler> {
  const table = new Map<number, Handler>();
  for (const [req, handler] of rows) {
    if (table.has(req)) throw new Error(`two handlers for ${reqName(req)}`);
    table.set(req, handler);
  }
  return table;
}

/** The handler took the fds it keeps; close the rest. */
function closeFds(msg: VhostMessage): void {
  for (const fd of msg.fds) closeFdQuiet(fd);
  msg.fds = [];
}
