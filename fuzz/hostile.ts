/**
 * The fuzzer's hostile front-end: a raw vhost-user connection (the tests'
 * RawClient) plus its own memory, rings written byte by byte (no driver
 * logic in the way), and a factory of file descriptors of every kind. It
 * owns everything it creates and releases it in close(), so the fuzzer
 * itself leaks nothing over millions of cases.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  closeFd, eventfdCreate, eventfdSignal, memfdCreate, mmapShared, munmap, socketPair,
} from '../bindings';
import { decodeSharedBuffersInfo, memTable, u64, vringAddr, vringState } from '../src/vhost/codec';
import {
  FLAG_VERSION, PROTOCOL_F_MQ, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_RETURNED_IN_USED, PROTOCOL_F_RX_BY_BUFFER, PROTOCOL_F_SHARED_BUFFERS, Req, VHOST_USER_F_PROTOCOL_FEATURES,
} from '../src/vhost/protocol';
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, bit } from '../src/virtio/defs';
import { type RawReply, RawClient } from '../test/helpers/unit-vhost-client';
import { sleep } from '../test/helpers/wait';

export const GPA = 0x1_0000_0000;
export const UADDR = 0x7f00_0000_0000;
/** Each ring gets this many bytes of our memory (enough for num <= 512). */
export const RING_STRIDE = 16384;

// ---- file descriptors of every kind

export const FD_KINDS = ['memfd', 'eventfd', 'pipe', 'rofile', 'devzero', 'devnull', 'socket', 'dir'] as const;
export type FdKind = (typeof FD_KINDS)[number];

/** Files the fd factory opens: made once per fuzz run in its private dir. */
export class FdFactory {
  private readonly fifo: string;
  private readonly file: string;

  constructor(readonly dir: string) {
    this.fifo = path.join(dir, 'fuzz.fifo');
    this.file = path.join(dir, 'fuzz.ro');
    if (!fs.existsSync(this.file)) fs.writeFileSync(this.file, Buffer.alloc(8192, 0xa5));
    if (!fs.existsSync(this.fifo)) execFileSync('mkfifo', [this.fifo]);
  }

  /** A new fd of this kind; `size` for a memfd. The caller closes it. */
  make(kind: FdKind, size = 65536): number[] {
    switch (kind) {
      case 'memfd': return [memfdCreate('zcfuzz', size)];
      case 'eventfd': return [eventfdCreate()];
      // O_RDWR on a FIFO never blocks on Linux and gives both ends in one fd.
      case 'pipe': return [fs.openSync(this.fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)];
      case 'rofile': return [fs.openSync(this.file, 'r')];
      case 'devzero': return [fs.openSync('/dev/zero', 'r+')];
      case 'devnull': return [fs.openSync('/dev/null', 'r+')];
      case 'socket': return socketPair();
      case 'dir': return [fs.openSync(this.dir, 'r')];
    }
  }
}

// ---- the connection

export interface Geometry {
  base: number;
  size: number;
  bufSize: number;
  bufCount: number;
  partitionStart: number;
  partitionCount: number;
}

export interface SetupOptions {
  zeroCopy: boolean;
  /** Ring size of both rings of queue pair 0. */
  num: number;
  /** Our memory: rings, then data slots. */
  memSize: number;
  /** Kick/call fds: eventfds, or these kinds (the notifier cases). */
  kickKind?: FdKind;
  callKind?: FdKind;
  /** Send SET_MEM_TABLE (default) or leave it to the case. */
  memTable?: boolean;
  /** Start both rings (default) or leave them to the case. */
  rings?: boolean;
  /**
   * Ack PROTOCOL_F_RX_BY_BUFFER and, with zeroCopy, make both rings hold
   * every buffer (at least num), so the switch re-posts what we send.
   */
  rxByBuffer?: boolean;
  /** Ack PROTOCOL_F_RETURNED_IN_USED: the switch marks what it hands back in the used len. */
  returnedInUsed?: boolean;
}

export class Hostile {
  private readonly owned: number[] = [];
  private readonly maps: ArrayBuffer[] = [];
  closed = false;
  mem: Uint8Array | null = null;
  view: DataView | null = null;
  memFd = -1;
  memSize = 0;
  num = 0;
  geo: Geometry | null = null;
  readonly kick: number[] = [];

  private constructor(readonly c: RawClient, readonly fds: FdFactory) {}

  /**
   * Connect, and make sure the switch took us (a port refuses a second
   * front-end until it has seen the last one go): GET_FEATURES must be
   * answered. Retries until the deadline; null if it never is.
   */
  static async connect(sock: string, fds: FdFactory, deadlineMs = 3000): Promise<Hostile | null> {
    const end = Date.now() + deadlineMs;
    while (Date.now() < end) {
      let c: RawClient;
      try {
        c = RawClient.connect(sock);
      } catch {
        await sleep(5);
        continue;
      }
      const h = new Hostile(c, fds);
      const r = await h.call(Req.GET_FEATURES, FLAG_VERSION, Buffer.alloc(0), [], 1000);
      if (r) return h;
      h.close();
      await sleep(3);
    }
    return null;
  }

  /** Keep this fd until close(). */
  own(...fds: number[]): number[] {
    this.owned.push(...fds);
    return fds;
  }

  fd(kind: FdKind, size?: number): number {
    const f = this.fds.make(kind, size);
    this.own(...f);
    return f[0];
  }

  /** Send one message; false once the switch has hung up (or the kernel took only part of it). */
  send(req: number, flags: number, payload: Buffer = Buffer.alloc(0), fds?: number[]): boolean {
    if (this.closed) return false;
    try {
      this.c.send(req, flags, payload, fds && fds.length ? fds : undefined);
      return true;
    } catch {
      return false;
    }
  }

  sendRaw(bytes: Buffer, fds?: number[]): boolean {
    if (this.closed) return false;
    try {
      this.c.sendRaw(bytes, fds && fds.length ? fds : undefined);
      return true;
    } catch {
      return false;
    }
  }

  /** Wait for one message; null when closed or nothing came in time. Received fds are ours to close. */
  async recv(timeoutMs = 500): Promise<RawReply | null> {
    if (this.closed) return null;
    try {
      const r = await this.c.recv(timeoutMs);
      if (r) this.own(...r.fds);
      return r;
    } catch {
      return null;
    }
  }

  async call(req: number, flags = FLAG_VERSION, payload: Buffer = Buffer.alloc(0), fds: number[] = [], timeoutMs = 500): Promise<RawReply | null> {
    if (!this.send(req, flags, payload, fds)) return null;
    return this.recv(timeoutMs);
  }

  /** A round trip that proves the switch has read everything sent before it. */
  barrier(timeoutMs = 500): Promise<RawReply | null> {
    return this.call(Req.GET_FEATURES, FLAG_VERSION, Buffer.alloc(0), [], timeoutMs);
  }

  // ---- memory and rings

  /** Our guest memory: a memfd we map ourselves. */
  makeMemory(size: number): void {
    this.memFd = this.own(memfdCreate('zcfuzz-guest', size))[0];
    const buf = mmapShared(this.memFd, size);
    this.maps.push(buf);
    this.mem = new Uint8Array(buf);
    this.view = new DataView(buf);
    this.memSize = size;
  }

  /** Shrink (or grow) the memfd under the switch. Our own mapping is not touched past `size` afterwards. */
  truncate(size: number): void {
    fs.ftruncateSync(this.memFd, size);
    this.memSize = Math.min(this.memSize, size);
  }

  /** Bytes of our memory per ring: RING_STRIDE, more for big rings. */
  get stride(): number {
    return Math.max(RING_STRIDE, Math.ceil((26 * this.num + 16) / 4096) * 4096);
  }

  ringOff(i: number): { desc: number; avail: number; used: number } {
    const desc = i * this.stride;
    const avail = desc + 16 * this.num;
    const used = (avail + 6 + 2 * this.num + 3) & ~3;
    return { desc, avail, used };
  }

  dataOff(k: number, slot = 2048): number {
    return 2 * this.stride + k * slot;
  }

  /** Write within our (still present) memory only; false if it would reach past it. */
  private ok(off: number, len: number): boolean {
    return this.view !== null && off >= 0 && off + len <= this.memSize;
  }

  writeDesc(ring: number, i: number, addr: number, len: number, flags: number, next: number): void {
    const off = this.ringOff(ring).desc + 16 * (i % Math.max(1, this.num));
    if (!this.ok(off, 16)) return;
    const v = this.view!;
    v.setUint32(off, addr >>> 0, true);
    v.setUint32(off + 4, Math.floor(addr / 2 ** 32) >>> 0, true);
    v.setUint32(off + 8, len >>> 0, true);
    v.setUint16(off + 12, flags & 0xffff, true);
    v.setUint16(off + 14, next & 0xffff, true);
  }

  availIdx(ring: number): number {
    const off = this.ringOff(ring).avail + 2;
    return this.ok(off, 2) ? this.view!.getUint16(off, true) : 0;
  }

  /** Put `head` in the next avail slot (no idx change). */
  putAvail(ring: number, slot: number, head: number): void {
    const off = this.ringOff(ring).avail + 4 + 2 * (slot % Math.max(1, this.num));
    if (this.ok(off, 2)) this.view!.setUint16(off, head & 0xffff, true);
  }

  setAvailIdx(ring: number, idx: number): void {
    const off = this.ringOff(ring).avail + 2;
    if (this.ok(off, 2)) this.view!.setUint16(off, idx & 0xffff, true);
  }

  setAvailFlags(ring: number, flags: number): void {
    const off = this.ringOff(ring).avail;
    if (this.ok(off, 2)) this.view!.setUint16(off, flags & 0xffff, true);
  }

  /** used_event (EVENT_IDX) and the used ring's idx/flags: garbage the switch must not trust. */
  scribbleUsed(ring: number, idx: number, usedEvent: number): void {
    const r = this.ringOff(ring);
    const ue = r.avail + 4 + 2 * this.num;
    if (this.ok(ue, 2)) this.view!.setUint16(ue, usedEvent & 0xffff, true);
    if (this.ok(r.used + 2, 2)) this.view!.setUint16(r.used + 2, idx & 0xffff, true);
  }

  kickRing(ring: number): void {
    const fd = this.kick[ring];
    if (fd === undefined || fd < 0) return;
    try {
      eventfdSignal(fd);
    } catch {
      /* not an eventfd (notifier cases) */
    }
  }

  // ---- the handshake, done right (cases break it where they want)

  /**
   * Features, protocol features (no REPLY_ACK: every send is fire and
   * forget), owner, GET_SHARED_BUFFERS when zeroCopy, memory, both rings of
   * queue pair 0 with their notifiers, enable. False if the switch hung up.
   */
  async setup(o: SetupOptions): Promise<boolean> {
    const V = FLAG_VERSION;
    const features = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_RING_F_EVENT_IDX);
    if (!(await this.call(Req.GET_PROTOCOL_FEATURES))) return false;
    const pf = (o.zeroCopy ? bit(PROTOCOL_F_SHARED_BUFFERS) : 0n) | bit(PROTOCOL_F_MQ) | (o.rxByBuffer ? bit(PROTOCOL_F_RX_BY_BUFFER) : 0n) |
      (o.returnedInUsed ? bit(PROTOCOL_F_RETURNED_IN_USED) : 0n);
    this.send(Req.SET_PROTOCOL_FEATURES, V, u64(pf));
    this.send(Req.SET_OWNER, V);
    if (o.zeroCopy) {
      const r = await this.call(Req.GET_SHARED_BUFFERS);
      if (!r) return false;
      try {
        const info = decodeSharedBuffersInfo({ request: r.request, flags: r.flags, payload: r.payload, fds: [] });
        this.geo = {
          base: Number(info.base), size: Number(info.size), bufSize: info.bufSize, bufCount: info.bufCount,
          partitionStart: info.partitionStart, partitionCount: info.partitionCount,
        };
      } catch {
        return false;
      }
    }
    this.send(Req.SET_FEATURES, V, u64(features));
    this.num = o.num;
    // Rx by buffer: a ring of at least bufCount entries (a power of two, at most virtio's 32768).
    if (o.rxByBuffer && this.geo) while (this.num < this.geo.bufCount && this.num < 32768) this.num *= 2;
    this.makeMemory(Math.max(o.memSize, 2 * this.stride + 65536));
    if (o.memTable !== false) this.sendMemTable();
    if (o.rings !== false) this.startRings(UADDR, o);
    return (await this.barrier()) !== null;
  }

  /** Both rings of queue pair 0 at `base` (front-end address of our ring 0), notifiers, enable. */
  startRings(base: number, o: { kickKind?: FdKind; callKind?: FdKind } = {}): void {
    const V = FLAG_VERSION;
    for (let i = 0; i < 2; i++) {
      const r = this.ringOff(i);
      const at = (off: number) => BigInt(base + off);
      this.send(Req.SET_VRING_NUM, V, vringState(i, this.num));
      this.send(Req.SET_VRING_BASE, V, vringState(i, 0));
      this.send(Req.SET_VRING_ADDR, V, vringAddr({
        index: i, flags: 0, desc: at(r.desc), used: at(r.used), avail: at(r.avail), log: 0n,
      }));
      const call = o.callKind ? this.fd(o.callKind) : this.fd('eventfd');
      const kick = o.kickKind ? this.fd(o.kickKind) : this.fd('eventfd');
      this.kick[i] = kick;
      this.send(Req.SET_VRING_CALL, V, u64(BigInt(i)), [call]);
      this.send(Req.SET_VRING_KICK, V, u64(BigInt(i)), [kick]);
    }
    for (let i = 0; i < 2; i++) this.send(Req.SET_VRING_ENABLE, V, vringState(i, 1));
  }

  sendMemTable(): boolean {
    return this.send(Req.SET_MEM_TABLE, FLAG_VERSION, memTable([
      { guestPhysAddr: BigInt(GPA), memorySize: BigInt(this.memSize), userspaceAddr: BigInt(UADDR), mmapOffset: 0n },
    ]), [this.memFd]);
  }

  close(): void {
    if (!this.closed) {
      this.closed = true;
      this.c.close();
    }
    for (const b of this.maps.splice(0)) {
      try {
        munmap(b);
      } catch {
        /* already */
      }
    }
    for (const fd of this.owned.splice(0)) {
      try {
        closeFd(fd);
      } catch {
        /* already */
      }
    }
    this.mem = null;
    this.view = null;
  }
}

export { PROTOCOL_F_REPLY_ACK };
