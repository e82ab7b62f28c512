/**
 * GuestDriver: a vhost-user front-end in TypeScript (like DPDK's
 * virtio-user) with a netmap-style API over the Shared Buffers region
 * (docs/protocol.md):
 *
 *   alloc()            take a free shared buffer (owned by this VM)
 *   allocBurst(out, max)
 *                      alloc() for up to max buffers at once
 *   frameOffset(b)     where to write the Ethernet frame in shared.mem
 *   send(b, len)       post b on our own rx queue, then queue it on tx:
 *                      ownership passes to the peer
 *   sendBurst(bufs, lens, n)
 *                      send() for n buffers in one loop (plain headers)
 *   flush()            publish both rings, kick if the switch asked, gift
 *   receive(max)       reap completions into rxToken[]/rxLen[]
 *   release(token)     give a received buffer back to the free pool
 *   releaseBurst(tokens, n)
 *                      release() for n tokens at once
 *
 * Invariant kept by the driver: every shared buffer we do not own is posted
 * on our rx queue (the peer may send it to us), every buffer we own is in
 * the free pool, with the application, or in flight on tx. A VM whose free
 * pool grows above the high-water mark gifts the surplus (GIFT_BUFFER).
 * Classic traffic uses private copy-target and tx slots in GuestMemory.
 *
 * Reconnecting (options.reconnect): when the switch goes away (crash,
 * restart) the driver drops the connection at once: its rings, its private
 * memory and the old Shared Buffers mapping are released, whatever was in
 * flight is lost (never delivered later, never read from the old region),
 * and the driver answers "nothing to do" (alloc -1, send false, receive 0)
 * until it has attached again. It retries with back-off, negotiates
 * SHARED_BUFFERS again, maps the new region and carries on; the counters
 * and the receive arrays stay. The first attach does not retry: a wrong
 * socket path fails at once.
 *
 * Two transports (docs/qemu.md, "The guest driver inside a guest"):
 * vhost-user (attach(): a process on the switch's host, the region from
 * GET_SHARED_BUFFERS or, --shared-bar-file, from a region file in its
 * memory table), and a virtio-net PCI device inside a QEMU guest
 * (attachPci(): the region as an ivshmem BAR, no reconnection).
 *
 * This class is the facade; the work is done by its units:
 *   attach.ts         the vhost-user handshake, memory layout, vring start-up
 *   pci/              the PCI transport: sysfs, virtio-pci, device discovery
 *   shared-region.ts  the region (RegionGeometry + mapping) and GET_SHARED_BUFFERS
 *   shared-bar.ts     the region reached as a BAR: header, port entry, base
 *   buffer-pool.ts    the free buffers we own and the gift policy
 *   data-path.ts      send / flush / receive / release, copies, sleep and wake
 */
import type { NetHdrOffload } from '../virtio/net-hdr';
import type { Logger } from '../log';
import { type AttachOptions, GuestAttachment } from './attach';
import { BufferPool } from './buffer-pool';
import { type PciAttachOptions, PciAttachment } from './pci/pci-attach';
import { DriverCounters } from './counters';
import { GuestDataPath } from './data-path';
import type { GuestMemory } from './guest-memory';
import type { SharedRegion } from './shared-region';

export type { SharedRegion };
export { DriverCounters };

/** Back-off between reconnection attempts: minMs, doubling up to maxMs. */
export interface ReconnectOptions {
  minMs?: number;
  maxMs?: number;
}

export interface GuestDriverOptions extends AttachOptions {
  log?: Logger;
  /** The driver is closed for good (without reconnect: the switch went away). */
  onClose?: (reason: string) => void;
  /** Keep reattaching when the switch goes away (true: back-off 50 ms doubling to 1 s). */
  reconnect?: boolean | ReconnectOptions;
  /** With reconnect: the connection was lost; the driver is retrying. */
  onDisconnect?: (reason: string) => void;
  /** With reconnect: attached again (new region, fresh rings). */
  onReconnect?: () => void;
}

export class GuestDriver {
  readonly counters = new DriverCounters();
  shared: SharedRegion | null = null;
  readonly rxToken: Int32Array;
  readonly rxLen: Uint32Array;
  /** Queue pair each received packet arrived on. */
  readonly rxQueue: Uint8Array;
  features = 0n;
  /** The switch re-posts what we send: PROTOCOL_F_RX_BY_BUFFER acked and in use (GuestDataPath.postOnSend off). */
  rxByBuffer = false;
  /** Shared buffer b leaves in tx descriptor b (gift exchange, tx rings that hold every buffer: GuestDataPath.fixedTx). */
  fixedTx = false;
  /** PCI transport: the name of the region header's port entry that is ours. */
  portName: string | null = null;

  private att: GuestAttachment | null = null;
  /** The PCI transport (attachPci), instead of a vhost-user attachment. */
  private pci: PciAttachment | null = null;
  private gm!: GuestMemory;
  /** Replaced by the region-sized pool at attach; empty (and never gifting) before. */
  private pool = new BufferPool(0);
  private dp!: GuestDataPath;
  private closed = false;
  /** A connection is up and its memory mapped (false while reconnecting). */
  private live = false;
  /** A waitForWork callback parked while reconnecting: called once attached again. */
  private parkedWake: (() => void) | null = null;
  /** Successful reattachments after a lost connection. */
  reconnects = 0;

  private constructor(private readonly opts: GuestDriverOptions, maxBatch: number) {
    this.rxToken = new Int32Array(maxBatch);
    this.rxLen = new Uint32Array(maxBatch);
    this.rxQueue = new Uint8Array(maxBatch);
  }

  /** Connect, negotiate, map, set up both rings and post the initial rx buffers. */
  static async attach(opts: GuestDriverOptions): Promise<GuestDriver> {
    const d = new GuestDriver(opts, 1024);
    try {
      await d.setup();
      d.live = true;
    } catch (e) {
      d.close();
      throw e;
    }
    return d;
  }

  /**
   * Inside a VM: drive a virtio-net PCI device from user space, with the
   * Shared Buffers region as an ivshmem BAR (pci/pci-attach.ts). No
   * reconnection: the device does not go away; the switch side of it is
   * QEMU's business.
   */
  static attachPci(opts: PciAttachOptions & { log?: Logger }): GuestDriver {
    const a = new PciAttachment(opts);
    const d = new GuestDriver({ socketPath: `pci:${a.bdf}`, log: opts.log }, 1024);
    d.pci = a;
    d.portName = a.portName;
    d.features = a.features;
    d.shared = a.shared;
    d.gm = a.gm;
    d.pool = new BufferPool(a.shared.bufCount, a.giftHigh, a.giftLow);
    d.dp = new GuestDataPath(a.shared, a.gm, a.qps, d.pool, d.counters, d, a.kick, a.copyTargets, a.privTx);
    d.fixedTx = d.dp.fixedTx;
    d.dp.postInitial();
    a.start();
    d.live = true;
    opts.log?.info({
      pci: a.bdf, sharedBar: a.sharedBdf, ringBar: a.ringBdf, rxNum: a.rxNum, txNum: a.txNum, owned: d.pool.count, fixedTx: d.fixedTx,
    }, 'guest driver attached to the PCI device');
    return d;
  }

  private async setup(): Promise<void> {
    const o = this.opts;
    const a: GuestAttachment = (this.att = new GuestAttachment(o, (reason) => this.onDisconnect(a, reason)));
    await a.negotiate();
    this.features = a.features;
    this.shared = a.shared;
    const lay = a.layOut();
    this.gm = lay.gm;
    this.pool = new BufferPool(a.shared ? a.shared.bufCount : 0, a.giftHigh, a.giftLow);
    this.dp = new GuestDataPath(a.shared, lay.gm, lay.qps, this.pool, this.counters, this, a.kick, lay.copyTargets, lay.privTx, a.extensions);
    this.rxByBuffer = this.dp.rxByBuffer;
    this.fixedTx = this.dp.fixedTx;
    await a.sendMemTable(lay.gm);
    this.dp.postInitial();
    await a.startRings(lay.gm, (fd) => this.dp.watchCall(fd));
    o.log?.info({
      socket: o.socketPath, zeroCopy: this.shared !== null, queuePairs: a.queuePairs, rxNum: lay.rxNum, txNum: lay.txNum, owned: this.pool.count,
      rxByBuffer: this.rxByBuffer, fixedTx: this.fixedTx, swapInUsed: this.dp.swapInUsed, returnedInUsed: this.dp.returnedInUsed,
    }, 'guest driver attached');
  }

  // ---- buffers -----------------------------------------------------------

  /** Gift when more than this many buffers are free (Infinity: never; always on a bridge). */
  get giftHigh(): number {
    return this.pool.giftHigh;
  }

  set giftHigh(n: number) {
    this.pool.giftHigh = n;
  }

  /** Gift down to this many free buffers. */
  get giftLow(): number {
    return this.pool.giftLow;
  }

  set giftLow(n: number) {
    this.pool.giftLow = n;
  }

  /** alloc() for a burst: up to max free buffers into out[0, n); returns n. */
  allocBurst(out: Int32Array, max: number): number {
    return this.live ? this.dp.allocBurst(out, max) : this.pool.allocBurst(out, max);
  }

  get freeCount(): number {
    return this.pool.count;
  }

  /** A free shared buffer this VM owns, or -1 (swap: after our own rx postings are topped up; none while reconnecting). */
  alloc(): number {
    return this.live ? this.dp.alloc() : this.pool.alloc();
  }

  /** Byte offset in shared.mem where buffer b's Ethernet frame starts. */
  frameOffset(b: number): number {
    return this.dp.frameOffset(b);
  }

  /** Largest frame a shared buffer holds. */
  get maxFrame(): number {
    return this.dp.maxFrame;
  }

  /** The connection is gone and the memory unmapped: nothing may be touched. */
  get isClosed(): boolean {
    return this.closed;
  }

  get queuePairs(): number {
    return this.dp.queuePairs;
  }

  // ---- data path -----------------------------------------------------------

  /** Free tx descriptors on queue q (an echo should not take more packets than it can send back). */
  txFree(q = 0): number {
    return this.live ? this.dp.txFree(q) : 0;
  }

  /** Room on tx queue q for another send (and on its rx for the return posting). */
  canSend(q = 0): boolean {
    return this.live && this.dp.canSend(q);
  }

  /**
   * Transmit shared buffer b holding a frame of frameLen bytes at
   * frameOffset(b). Returns false (and b stays ours) when the rings are full.
   * offload: the header's offload fields (a TSO segment, an open checksum;
   * attach with gso so the switch accepts them).
   */
  send(b: number, frameLen: number, hdrFlags = 0, q = 0, offload: NetHdrOffload | null = null): boolean {
    return this.live && this.dp.send(b, frameLen, hdrFlags, q, offload);
  }

  /**
   * Transmit a burst of shared buffers on queue pair q: bufs[i] with a frame
   * of lens[i] bytes, i < n (plain headers: no offloads, no flags), the
   * same as n send() calls in one loop. Returns how many were queued, the
   * first ones; the others are still the caller's (release or retry them).
   */
  sendBurst(bufs: Int32Array, lens: Uint32Array, n: number, q = 0): number {
    return this.live ? this.dp.sendBurst(bufs, lens, n, q) : 0;
  }

  /** Transmit a frame from private memory (the classic, copied path). */
  sendCopy(src: Uint8Array, off: number, len: number, q = 0): boolean {
    return this.live && this.dp.sendCopy(src, off, len, q);
  }

  /** Publish what was queued, gift any surplus, and kick where the switch asked. */
  flush(): void {
    if (this.live) this.dp.flush();
  }

  /**
   * Reap tx and rx completions on every queue pair, round robin. Received
   * packets land in rxToken/rxLen/rxQueue [0, n): a token >= 0 is a shared
   * buffer (frame at frameOffset), < 0 a private slot (use
   * packetMem/packetOffset). Gifts and returned buffers go straight to the
   * free pool.
   */
  receive(max: number): number {
    return this.live ? this.dp.receive(max) : 0;
  }

  /** Memory holding a received packet's frame. */
  packetMem(token: number): Uint8Array {
    return this.dp.packetMem(token);
  }

  /** Offset of a received packet's frame in packetMem(token). */
  packetOffset(token: number): number {
    return this.dp.packetOffset(token);
  }

  /** Done with a received packet: its buffer returns to the free pool (or is reposted). */
  release(token: number): void {
    // A token from before a lost connection belongs to memory that is gone.
    if (this.live) this.dp.release(token);
  }

  /** release() for tokens[0, n) at once. */
  releaseBurst(tokens: Int32Array, n: number): void {
    if (this.live) this.dp.releaseBurst(tokens, n);
  }

  // ---- sleeping ------------------------------------------------------------

  /**
   * Sleep until the switch completes something: re-enable calls, re-check,
   * and call cb once (at once if work is already pending).
   */
  waitForWork(cb: () => void): void {
    if (this.closed) return;
    if (!this.live) {
      this.parkedWake = cb;
      return;
    }
    this.dp.waitForWork(cb);
  }

  /** Transmit descriptors the switch has not completed yet, over all queue pairs. */
  txInFlight(): number {
    return this.live ? this.dp.txInFlight() : 0;
  }

  /**
   * Before leaving: wait (up to timeoutMs) until the switch has taken every
   * packet we queued. Closing the connection earlier would drop what is
   * still on the tx rings. Resolves with what is left (0 = drained).
   */
  async drainTx(timeoutMs = 2000): Promise<number> {
    // A closed driver has nothing to drain (and its rings are unmapped).
    if (this.closed) return 0;
    this.flush();
    const end = Date.now() + timeoutMs;
    let left = this.txInFlight();
    while (left > 0 && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 1));
      if (this.closed) return 0;
      left = this.txInFlight();
    }
    return left;
  }

  /** Calls off while the application is polling. */
  pollMode(): void {
    if (this.live) this.dp.pollMode();
  }

  // ---- test hooks ----------------------------------------------------------

  /**
   * Put an arbitrary descriptor chain on tx (tests of the switch's
   * validation). `next` is an index into `descs`; headOverride publishes a
   * raw head value instead of the chain's first descriptor.
   */
  injectRawTx(descs: { addr: number; len: number; flags?: number; next?: number }[], headOverride?: number): void {
    this.dp.injectRawTx(descs, headOverride);
  }

  /**
   * Put an arbitrary rx posting on queue 0 (tests of the switch's rx
   * validation). The descriptor is never reused by the driver: its
   * completion, if any, is ignored.
   */
  injectRawRx(addr: number, len: number, flags: number): void {
    this.dp.injectRawRx(addr, len, flags);
  }

  /** Guest-physical address of private slot k (for raw tests). */
  privateSlotAddr(k: number): number {
    return this.gm.gpa(this.gm.slotOffset(k));
  }

  get privateMem(): Uint8Array {
    return this.gm.mem;
  }

  get guestMemorySize(): number {
    return this.gm.size;
  }

  // ---- teardown --------------------------------------------------------------

  /** Whether the driver is attached now (false while reconnecting or once closed). */
  get isAttached(): boolean {
    return this.live && !this.closed;
  }

  private onDisconnect(a: GuestAttachment, reason: string): void {
    // A handshake that fails while reconnecting is the retry loop's business.
    if (this.closed || a !== this.att || !this.live) return;
    if (!this.opts.reconnect) {
      this.opts.log?.warn({ reason }, 'switch connection closed');
      this.close();
      this.opts.onClose?.(reason);
      return;
    }
    this.opts.log?.warn({ reason }, 'switch connection lost; reconnecting');
    this.dropConnection();
    this.opts.onDisconnect?.(reason);
    void this.reconnectLoop();
  }

  /**
   * Forget the connection: stop the watchers, close the fds, unmap our rings
   * and the old region. What was queued or completed but not received is lost.
   */
  private dropConnection(): void {
    this.live = false;
    this.dp?.closeWatchers();
    this.att?.close();
    this.att = null;
    this.shared = null;
    this.pool = new BufferPool(0);
  }

  private async reconnectLoop(): Promise<void> {
    const r = typeof this.opts.reconnect === 'object' ? this.opts.reconnect : {};
    const min = r.minMs ?? 50;
    const max = r.maxMs ?? 1000;
    let delay = min;
    for (let attempt = 1; !this.closed; attempt++) {
      await new Promise((res) => setTimeout(res, delay));
      if (this.closed) return;
      try {
        await this.setup();
        if (this.closed) return void this.dropConnection();
        if (this.att!.fe.isClosed) throw new Error('connection closed during the handshake');
        this.live = true;
        this.reconnects++;
        this.opts.log?.info({ attempt }, 'reattached to the switch');
        this.opts.onReconnect?.();
        const cb = this.parkedWake;
        this.parkedWake = null;
        cb?.();
        return;
      } catch (e) {
        this.opts.log?.debug({ attempt, err: (e as Error).message }, 'reconnect attempt failed');
        this.dp?.closeWatchers();
        this.att?.close();
        this.att = null;
        this.shared = null;
        delay = Math.min(max, delay * 2);
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.live = false;
    this.parkedWake = null;
    this.dp?.closeWatchers();
    this.att?.close();
    this.pci?.close();
    this.pci = null;
  }
}
