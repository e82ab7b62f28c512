/**
 * An in-process rig for the data-path units (Snabb-style selftests): one
 * sharing domain (Shared Buffers region and ledger) by default, more with
 * addDomain(), and per simulated VM (in the default domain or the one it is
 * given) a memfd holding its
 * split rings (rx vring 0, tx vring 1) plus a few private slots, driven from
 * the VM side by DriverQueues and served on the switch side by DeviceQueues
 * over a second mapping of the same memory (a MemoryTable built from a dup
 * of the fd, as SET_MEM_TABLE does), fed to PortQueues.sync() as a
 * QueueSource with real eventfds for the call fds. Nothing here mocks a
 * data-path unit: tests drive the real rings and read the real used entries.
 */
import { closeFd, dupFd, eventfdCreate, eventfdDrain, mmapShared, munmap } from '../../bindings';
import { PortQueues, type DataPathContext, type QueueSource } from '../../src/datapath/port-queues';
import { GuestMemory, GUEST_GPA, GUEST_UADDR } from '../../src/guest/guest-memory';
import { createLogger } from '../../src/log';
import { SharingDomain } from '../../src/shm/domain';
import type { OwnershipLedger } from '../../src/shm/ledger';
import type { SharedBuffers } from '../../src/shm/shared-buffers';
import { RegionGeometry } from '../../src/shm/geometry';
import { MemoryTable } from '../../src/vhost/memory-table';
import { PROTOCOL_F_RETURNED_IN_USED, PROTOCOL_F_RX_BY_BUFFER, PROTOCOL_F_SWAP_IN_USED, VIRTIO_NET_HDR_F_GIFT_BUFFER } from '../../src/vhost/protocol';
import { NET_HDR_GSO_TYPE, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_SIZE, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/virtio/defs';
import { DeviceQueue } from '../../src/virtio/device-queue';
import { DriverQueue } from '../../src/virtio/driver-queue';
import { SplitRing, availRingBytes, descTableBytes, usedRingBytes, type RingParts } from '../../src/virtio/ring';
import { writeNetHdr } from '../../src/virtio/net-hdr';

export const RIG_BASE = 0x40_0000_0000;

export interface RigOptions {
  bufCount?: number;
  bufSize?: number;
  queuePairs?: number;
  swap?: boolean;
}

export interface VmOptions {
  /** Partition [start, start+count) assigned from the pool (count also caps pool gifts). */
  partition?: [number, number];
  /** Buffers the port may take from the pool by gifts (default: the partition's count). */
  quota?: number;
  /** Ring sizes (default: rx nextPow2(bufCount + privSlots), tx 64). */
  rxNum?: number;
  txNum?: number;
  /**
   * Guest address where this VM sees buffer 0 (an ivshmem BAR's; default
   * RIG_BASE, the domain's): its port's window is moved there.
   */
  windowBase?: number;
  /** Its sharing domain (default: the rig's first, rig.domain). */
  domain?: SharingDomain;
  /** The VM mapped the region (PortQueues.zeroCopy). Default true. */
  zeroCopy?: boolean;
  /** Private slots in the VM's own memory (copy targets / classic tx buffers). */
  privSlots?: number;
  slotSize?: number;
  mergeable?: boolean;
  /** More virtio features the VM acked (e.g. GUEST_CSUM, GUEST_TSO4: what it takes as it is). */
  features?: bigint;
  /**
   * The VM acked PROTOCOL_F_RX_BY_BUFFER: rx descriptor b is buffer b's
   * (written so at start; postShared posts there, other postings take
   * descriptors from bufCount up).
   */
  rxByBuffer?: boolean;
  /** The VM acked PROTOCOL_F_SWAP_IN_USED: with swaps its tx completions name the exchanged buffer in used len. */
  swapInUsed?: boolean;
  /** The VM acked PROTOCOL_F_RETURNED_IN_USED: a RETURNED completion says so in its used len. */
  returnedInUsed?: boolean;
  /** A second rx queue (queue pair 1's; its tx queue does not run): needs a Rig of 2 queue pairs. */
  rx1?: boolean;
}

export interface Used {
  id: number;
  len: number;
}

/** A descriptor as the VM writes it. */
export interface DescSpec {
  addr: number;
  len: number;
  write?: boolean;
  /** Extra flags (e.g. INDIRECT) or'ed in. */
  flags?: number;
}

const nextPow2 = (n: number): number => {
  let p = 1;
  while (p < n) p <<= 1;
  return p;
};

export class Rig {
  /** The default domain, and its region and ledger. */
  readonly domain: SharingDomain;
  readonly shared: SharedBuffers;
  readonly ledger: OwnershipLedger;
  readonly domains: SharingDomain[] = [];
  readonly ctx: DataPathContext;
  readonly vms: Vm[] = [];
  private readonly bufCount: number;
  private readonly bufSize: number;

  constructor(opts: RigOptions = {}) {
    this.bufCount = opts.bufCount ?? 64;
    this.bufSize = opts.bufSize ?? 2048;
    this.domain = this.addDomain('d0');
    this.shared = this.domain.shared;
    this.ledger = this.domain.ledger;
    this.ctx = { domain: this.domain, log: createLogger('silent'), queuePairs: opts.queuePairs ?? 1, swap: opts.swap ?? false };
  }

  /** Another sharing domain: its own region (same base and geometry, different memory) and ledger. */
  addDomain(name: string): SharingDomain {
    const d = new SharingDomain(this.domains.length, name, this.bufCount, this.bufSize, RIG_BASE);
    this.domains.push(d);
    return d;
  }

  /** A VM whose port id is its index in rig.vms (bridge port arrays are indexed by id). */
  addVm(opts: VmOptions = {}): Vm {
    const vm = new Vm(this, this.vms.length, opts);
    this.vms.push(vm);
    return vm;
  }

  /**
   * Two VMs with half the buffers each (a: 0..n-1, b: n..2n-1), each posting
   * the other's, and the switch's ports holding those postings: the pair-mode
   * start of the data-path tests.
   */
  crossPosted(n: number, aOpts: VmOptions = {}): { a: Vm; b: Vm } {
    const a = this.addVm({ ...aOpts, partition: [0, n] });
    const b = this.addVm({ partition: [n, n] });
    for (let i = 0; i < n; i++) {
      a.postShared(n + i);
      b.postShared(i);
    }
    a.port.ingestRx();
    b.port.ingestRx();
    return { a, b };
  }

  /** Ledger conservation in every domain: '' when it holds, else the problems. */
  ledgerProblems(): string {
    return this.domains.flatMap((d) => d.ledger.check().problems.map((p) => `${d.name}: ${p}`)).join('; ');
  }

  close(): void {
    for (const vm of this.vms) vm.close();
    for (const d of this.domains) d.close();
  }
}

export class Vm {
  readonly mem: GuestMemory;
  /** The VM's own mapping of the Shared Buffers region. */
  readonly region: Uint8Array;
  private readonly regionBuf: ArrayBuffer;
  /** VM side. */
  readonly rx: DriverQueue;
  readonly tx: DriverQueue;
  /** VmOptions.rx1: queue pair 1's rx queue, VM side and switch side. */
  readonly rx1: DriverQueue | null = null;
  readonly devRx1: DeviceQueue | null = null;
  /** Switch side, over the MemoryTable's mapping of the same memfd. */
  readonly table: MemoryTable;
  readonly devRx: DeviceQueue;
  readonly devTx: DeviceQueue;
  readonly rxCall: number;
  readonly txCall: number;
  readonly source: QueueSource;
  readonly port: PortQueues;
  /** Reasons passed to the broken() callback. */
  readonly broken: string[] = [];
  readonly slotSize: number;
  readonly domain: SharingDomain;
  /** Where this VM sees the buffers (its descriptors use win.addrOf). */
  readonly win: RegionGeometry;

  constructor(rig: Rig, readonly id: number, opts: VmOptions) {
    this.domain = opts.domain ?? rig.domain;
    const { shared, ledger } = this.domain;
    const ctx: DataPathContext = { ...rig.ctx, domain: this.domain };
    const privSlots = opts.privSlots ?? 16;
    this.slotSize = opts.slotSize ?? 2048;
    const rxNum = opts.rxNum ?? nextPow2(shared.bufCount + privSlots);
    const txNum = opts.txNum ?? 64;
    this.mem = new GuestMemory(opts.rx1 ? [rxNum, txNum, rxNum] : [rxNum, txNum], privSlots, this.slotSize);
    this.regionBuf = mmapShared(shared.fd, shared.size);
    this.region = new Uint8Array(this.regionBuf);
    this.rx = new DriverQueue(new SplitRing(rxNum, this.mem.ringParts(0)), false);
    this.tx = new DriverQueue(new SplitRing(txNum, this.mem.ringParts(1)), false);

    // The switch maps the VM's memory itself, from the fd, and finds the rings by "user" address.
    this.table = new MemoryTable(
      [{ guestPhysAddr: BigInt(GUEST_GPA), memorySize: BigInt(this.mem.size), userspaceAddr: BigInt(GUEST_UADDR), mmapOffset: 0n }],
      [dupFd(this.mem.fd)],
    );
    const devRing = (i: number, num: number): SplitRing => {
      const r = this.mem.rings[i];
      const part = (off: number, bytes: number) => {
        const p = this.table.translateUser(this.mem.uaddr(off), bytes);
        if (p === null) throw new Error(`ring ${i} not in the memory table`);
        return p;
      };
      const parts: RingParts = { desc: part(r.desc, descTableBytes(num)), avail: part(r.avail, availRingBytes(num)), used: part(r.used, usedRingBytes(num)) };
      return new SplitRing(num, parts);
    };
    this.devRx = new DeviceQueue(devRing(0, rxNum), false, 0, 0);
    this.devTx = new DeviceQueue(devRing(1, txNum), false, 0, 0);
    if (opts.rx1) {
      this.rx1 = new DriverQueue(new SplitRing(rxNum, this.mem.ringParts(2)), false);
      this.devRx1 = new DeviceQueue(devRing(2, rxNum), false, 0, 0);
    }
    this.rxCall = eventfdCreate();
    this.txCall = eventfdCreate();
    this.source = {
      // Queue pairs past the first: rx1's rx queue where asked for, nothing else running.
      vrings: [
        { queue: this.devRx as DeviceQueue | null, callFd: this.rxCall }, { queue: this.devTx as DeviceQueue | null, callFd: this.txCall },
      ].concat(
        Array.from({ length: 2 * ctx.queuePairs - 2 }, (_, i) => ({ queue: i === 0 ? this.devRx1 : null, callFd: -1 })),
      ),
      mem: this.table,
      ackedFeatures: (opts.mergeable ? 1n << VIRTIO_NET_F_MRG_RXBUF : 0n) | (opts.features ?? 0n),
      ackedProtocol: (opts.rxByBuffer ? 1n << PROTOCOL_F_RX_BY_BUFFER : 0n) | (opts.swapInUsed ? 1n << PROTOCOL_F_SWAP_IN_USED : 0n) |
        (opts.returnedInUsed ? 1n << PROTOCOL_F_RETURNED_IN_USED : 0n),
    };
    // Descriptor b is buffer b's only where the ring has one for every buffer (PortQueues.rxByBuffer).
    this.rxByBuffer = opts.rxByBuffer === true && rxNum >= shared.bufCount;
    const part = opts.partition ?? [0, 0];
    if (part[1] > 0 && !ledger.assignRange(part[0], part[1], id)) throw new Error(`partition ${part} not in the pool`);
    this.port = new PortQueues(id, `vm${id}`, opts.quota ?? part[1], ctx, (reason) => this.broken.push(reason));
    this.port.zeroCopy = opts.zeroCopy ?? true;
    this.win = new RegionGeometry(opts.windowBase ?? shared.base, shared.bufSize, shared.bufCount);
    if (opts.windowBase !== undefined) this.port.setWindow(opts.windowBase);
    if (this.rxByBuffer) {
      this.rx.reserveLow(shared.bufCount);
      for (let b = 0; b < shared.bufCount; b++) this.rx.ring.setDesc(b, this.win.addrOf(b), shared.bufSize, VIRTQ_DESC_F_WRITE, 0);
    }
    this.port.sync(this.source);
  }

  /** Acked PROTOCOL_F_RX_BY_BUFFER (VmOptions.rxByBuffer) with an rx ring of at least bufCount entries. */
  readonly rxByBuffer: boolean;

  /** Its own domain's region (the only one it maps). */
  get shared(): SharedBuffers {
    return this.domain.shared;
  }

  /** The port goes away (the control plane's sync(null)). */
  down(): void {
    this.port.sync(null);
  }

  up(): void {
    this.port.sync(this.source);
    this.port.zeroCopy = true;
  }

  // ---- building descriptors

  /** Put a chain on a driver queue's avail ring and publish it; returns its head (head: use that descriptor for the first). */
  private chain(q: DriverQueue, descs: DescSpec[], head = -1): number {
    const ids = descs.map((_, i) => {
      if (i === 0 && head >= 0) return head;
      const d = q.allocDesc();
      if (d < 0) throw new Error('out of descriptors');
      return d;
    });
    descs.forEach((d, i) => {
      const last = i === descs.length - 1;
      const flags = (d.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT) | (d.flags ?? 0);
      q.ring.setDesc(ids[i], d.addr, d.len, flags, last ? 0 : ids[i + 1]);
    });
    q.addAvail(ids[0]);
    q.publishAvail();
    return ids[0];
  }

  postRxChain(descs: DescSpec[], head = -1): number {
    return this.chain(this.rx, descs, head);
  }

  sendChain(descs: DescSpec[]): number {
    return this.chain(this.tx, descs);
  }

  /** Post shared buffer b on rx (a whole buffer, device-writable); with rxByBuffer in descriptor b. */
  postShared(b: number, len = this.shared.bufSize): number {
    return this.postRxChain([{ addr: this.win.addrOf(b), len, write: true }], this.rxByBuffer ? b : -1);
  }

  /** Post private slot k as a classic rx buffer (copy target). */
  postCopyTarget(k: number, len = this.slotSize): number {
    return this.postRxChain([{ addr: this.mem.gpa(this.mem.slotOffset(k)), len, write: true }]);
  }

  /** Write header (flags, gso_type) + frame into shared buffer b (through the VM's mapping) and send it; returns the tx head. */
  sendShared(b: number, frame: Uint8Array, hdrFlags = 0, gsoType = 0): number {
    const off = this.shared.offsetOf(b);
    writeNetHdr(this.region, off, hdrFlags, 0);
    this.region[off + NET_HDR_GSO_TYPE] = gsoType;
    this.region.set(frame, off + VIRTIO_NET_HDR_SIZE);
    return this.sendChain([{ addr: this.win.addrOf(b), len: VIRTIO_NET_HDR_SIZE + frame.length }]);
  }

  /** Gift buffers (one descriptor each, chained); returns the tx head. */
  sendGift(bufs: number[]): number {
    bufs.forEach((b, i) => writeNetHdr(this.region, this.shared.offsetOf(b), i === 0 ? VIRTIO_NET_HDR_F_GIFT_BUFFER : 0, 0));
    return this.sendChain(bufs.map((b) => ({ addr: this.win.addrOf(b), len: VIRTIO_NET_HDR_SIZE })));
  }

  /** Write header + frame into private slot k and send it (classic copy path). */
  sendPrivate(k: number, frame: Uint8Array): number {
    const off = this.mem.slotOffset(k);
    writeNetHdr(this.mem.mem, off, 0, 0);
    this.mem.mem.set(frame, off + VIRTIO_NET_HDR_SIZE);
    return this.sendChain([{ addr: this.mem.gpa(off), len: VIRTIO_NET_HDR_SIZE + frame.length }]);
  }

  // ---- reaping

  private reap(q: DriverQueue): Used[] {
    const out: Used[] = [];
    while (q.usedPending() > 0) {
      const id = q.popUsed();
      out.push({ id, len: q.lastUsedLen });
      // Free the chain, each descriptor once (a test may have linked it into a loop).
      const freed = new Set<number>();
      for (let d = id; d < q.ring.num && !freed.has(d); ) {
        const f = q.ring.descFlags(d);
        const next = q.ring.descNext(d);
        q.freeDesc(d);
        freed.add(d);
        if ((f & VIRTQ_DESC_F_NEXT) === 0) break;
        d = next;
      }
    }
    return out;
  }

  /** Post shared buffer b on queue pair 1's rx queue (VmOptions.rx1); returns its head. */
  postSharedOn1(b: number): number {
    return this.chain(this.rx1!, [{ addr: this.win.addrOf(b), len: this.shared.bufSize, write: true }]);
  }

  /** Used entries of queue pair 1's rx queue (after flushAndReap published them). */
  reapRx1(): Used[] {
    return this.reap(this.rx1!);
  }

  /** Used entries of the rx ring (after the switch published them). */
  reapRx(): Used[] {
    return this.reap(this.rx);
  }

  reapTx(): Used[] {
    return this.reap(this.tx);
  }

  /** Publish what the switch completed, reap both rings. */
  flushAndReap(): { rx: Used[]; tx: Used[] } {
    this.port.flush();
    return { rx: this.reapRx(), tx: this.reapTx() };
  }

  /** Calls received on (rx, tx) call eventfds since the last look. */
  drainCalls(): [number, number] {
    return [eventfdDrain(this.rxCall), eventfdDrain(this.txCall)];
  }

  /** Header flags of shared buffer b as the VM sees them. */
  hdrFlags(b: number): number {
    return this.region[this.shared.offsetOf(b)];
  }

  /** Bytes of shared buffer b as the VM sees them. */
  bufBytes(b: number, off: number, len: number): Uint8Array {
    const o = this.shared.offsetOf(b) + off;
    return this.region.slice(o, o + len);
  }

  slotBytes(k: number, off: number, len: number): Uint8Array {
    const o = this.mem.slotOffset(k) + off;
    return this.mem.mem.slice(o, o + len);
  }

  close(): void {
    this.port.sync(null);
    this.table.unmap();
    try {
      munmap(this.regionBuf);
    } catch {
      /* already */
    }
    this.mem.close();
    closeFd(this.rxCall);
    closeFd(this.txCall);
  }
}

/** An Ethernet frame of `len` bytes: dst, src MAC, ethertype 0x88b5, then a byte pattern from `seed`. */
export function frame(dst: readonly number[], src: readonly number[], len = 64, seed = 1): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let i = 14; i < len; i++) f[i] = (seed * 31 + i * 7) & 0xff;
  return f;
}

export const mac = (n: number): number[] => [0x02, 0, 0, 0, 0, n];
export const BROADCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
