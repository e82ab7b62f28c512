/**
 * GuestDriver: a vhost-user front-end in TypeScript (like DPDK's
 * virtio-user) with a netmap-style API over the Shared Buffers region
 * (docs/protocol.md):
 *
 *   alloc()            take a free shared buffer (owned by this VM)
 *   frameOffset(b)     where to write the Ethernet frame in shared.mem
 *   send(b, len)       post b on our own rx queue, then queue it on tx:
 *                      ownership passes to the peer
 *   flush()            publish both rings, kick if the switch asked, gift
 *   receive(max)       reap completions into rxToken[]/rxLen[]
 *   release(token)     give a received buffer back to the free pool
 *
 * Invariant kept by the driver: every shared buffer we do not own is posted
 * on our rx queue (the peer may send it to us), every buffer we own is in
 * the free pool, with the application, or in flight on tx. A VM whose free
 * pool grows above the high-water mark gifts the surplus (GIFT_BUFFER).
 * Classic traffic uses private copy-target and tx slots in GuestMemory.
 *
 * This class is the facade; the work is done by its units:
 *   attach.ts         the vhost-user handshake, memory layout, vring start-up
 *   shared-region.ts  the region (RegionGeometry + mapping) and GET_SHARED_BUFFERS
 *   buffer-pool.ts    the free buffers we own and the gift policy
 *   data-path.ts      send / flush / receive / release, copies, sleep and wake
 */
import type { Logger } from '../log';
import { type AttachOptions, GuestAttachment } from './attach';
import { BufferPool } from './buffer-pool';
import { DriverCounters, GuestDataPath } from './data-path';
import type { GuestMemory } from './guest-memory';
import type { SharedRegion } from './shared-region';

export type { SharedRegion };
export { DriverCounters };

export interface GuestDriverOptions extends AttachOptions {
  log?: Logger;
  onClose?: (reason: string) => void;
}

export class GuestDriver {
  readonly counters = new DriverCounters();
  shared: SharedRegion | null = null;
  readonly rxToken: Int32Array;
  readonly rxLen: Uint32Array;
  /** Queue pair each received packet arrived on. */
  readonly rxQueue: Uint8Array;
  features = 0n;

  private att: GuestAttachment | null = null;
  private gm!: GuestMemory;
  /** Replaced by the region-sized pool at attach; empty (and never gifting) before. */
  private pool = new BufferPool(0);
  private dp!: GuestDataPath;
  private closed = false;

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
    } catch (e) {
      d.close();
      throw e;
    }
    return d;
  }

  private async setup(): Promise<void> {
    const o = this.opts;
    const a = (this.att = new GuestAttachment(o, (reason) => this.onDisconnect(reason)));
    await a.negotiate();
    this.features = a.features;
    this.shared = a.shared;
    const lay = a.layOut();
    this.gm = lay.gm;
    this.pool = new BufferPool(a.shared ? a.shared.bufCount : 0, a.giftHigh, a.giftLow);
    this.dp = new GuestDataPath(a.shared, lay.gm, lay.qps, this.pool, this.counters, this, a.kickFd, lay.copyTargets, lay.privTx);
    await a.sendMemTable(lay.gm);
    this.dp.postInitial();
    await a.startRings(lay.gm, (fd) => this.dp.watchCall(fd));
    o.log?.info({
      socket: o.socketPath, zeroCopy: this.shared !== null, queuePairs: a.queuePairs, rxNum: lay.rxNum, txNum: lay.txNum, owned: this.pool.count,
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

  get freeCount(): number {
    return this.pool.count;
  }

  /** A free shared buffer this VM owns, or -1. */
  alloc(): number {
    return this.pool.alloc();
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
    return this.dp.txFree(q);
  }

  /** Room on tx queue q for another send (and on its rx for the return posting). */
  canSend(q = 0): boolean {
    return this.dp.canSend(q);
  }

  /**
   * Transmit shared buffer b holding a frame of frameLen bytes at
   * frameOffset(b). Returns false (and b stays ours) when the rings are full.
   */
  send(b: number, frameLen: number, hdrFlags = 0, q = 0): boolean {
    return this.dp.send(b, frameLen, hdrFlags, q);
  }

  /** Transmit a frame from private memory (the classic, copied path). */
  sendCopy(src: Uint8Array, off: number, len: number, q = 0): boolean {
    return this.dp.sendCopy(src, off, len, q);
  }

  /** Publish what was queued, gift any surplus, and kick where the switch asked. */
  flush(): void {
    this.dp.flush();
  }

  /**
   * Reap tx and rx completions on every queue pair, round robin. Received
   * packets land in rxToken/rxLen/rxQueue [0, n): a token >= 0 is a shared
   * buffer (frame at frameOffset), < 0 a private slot (use
   * packetMem/packetOffset). Gifts and returned buffers go straight to the
   * free pool.
   */
  receive(max: number): number {
    return this.dp.receive(max);
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
    this.dp.release(token);
  }

  // ---- sleeping ------------------------------------------------------------

  /**
   * Sleep until the switch completes something: re-enable calls, re-check,
   * and call cb once (at once if work is already pending).
   */
  waitForWork(cb: () => void): void {
    if (this.closed) return;
    this.dp.waitForWork(cb);
  }

  /** Transmit descriptors the switch has not completed yet, over all queue pairs. */
  txInFlight(): number {
    return this.dp.txInFlight();
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
    this.dp.pollMode();
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

  private onDisconnect(reason: string): void {
    if (this.closed) return;
    this.opts.log?.warn({ reason }, 'switch connection closed');
    this.close();
    this.opts.onClose?.(reason);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dp?.closeWatchers();
    this.att?.close();
  }
}
