/**
 * Attaching the guest driver to a switch port: the vhost-user front-end
 * handshake in the order a virtio-net device expects it (features and
 * protocol features, queue count, SET_OWNER, GET_SHARED_BUFFERS when
 * negotiated, SET_FEATURES), the layout of the driver's own memory (vrings
 * and private slots in GuestMemory) and its queue pairs, SET_MEM_TABLE, and
 * starting every vring (num, base, addresses, call and kick eventfds,
 * enable). It owns what the connection holds (socket, eventfds, mappings)
 * and releases it on close. The buffer rules are in docs/protocol.md.
 */
import fs from 'node:fs';
import { closeFd, eventfdCreate, eventfdSignal, fdSize, mmapShared, munmap } from '../../bindings';
import { decodeU64, memTable, u64, vringAddr, vringState } from '../vhost/codec';
import {
  PROTOCOL_F_MQ, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_RETURNED_IN_USED, PROTOCOL_F_RX_BY_BUFFER, PROTOCOL_F_SHARED_BUFFERS, PROTOCOL_F_SWAP_IN_USED, Req, VHOST_USER_F_PROTOCOL_FEATURES,
} from '../vhost/protocol';
import {
  VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6, VIRTIO_RING_F_EVENT_IDX, VIRTQ_MAX_SIZE, bit, hasBit,
} from '../virtio/defs';
import { DriverQueue } from '../virtio/driver-queue';
import { SplitRing } from '../virtio/ring';
import type { AckedExtensions } from './data-path';
import { VhostUserFrontend } from './frontend';
import { GuestMemory } from './guest-memory';
import { QueuePair } from './queue-pair';
import { regionFromBar } from './shared-bar';
import { type SharedRegion, fetchSharedRegion } from './shared-region';

/** The zcswitch extensions beside SHARED_BUFFERS: the AttachOptions field that declines each (asked for by default) and its bit. */
const EXTENSIONS = [
  ['rxByBuffer', PROTOCOL_F_RX_BY_BUFFER], ['swapInUsed', PROTOCOL_F_SWAP_IN_USED], ['returnedInUsed', PROTOCOL_F_RETURNED_IN_USED],
] as const;

/** What the handshake needs: how to reach the switch and how to size rings and memory. */
export interface AttachOptions {
  socketPath: string;
  /** Negotiate SHARED_BUFFERS when the back-end offers it (default true). */
  zeroCopy?: boolean;
  /**
   * Negotiate checksum and TCP segmentation offloads (CSUM, GUEST_CSUM,
   * HOST/GUEST_TSO4/6) when offered: the VM may then send and receive
   * 64 KiB TCP segments with their virtio_net_hdr (send's offload argument).
   */
  gso?: boolean;
  /**
   * Ask for rx descriptors by buffer (PROTOCOL_F_RX_BY_BUFFER) when offered
   * (default true): the switch re-posts each buffer we send, so we write no
   * rx entry per packet (gift exchange only).
   */
  rxByBuffer?: boolean;
  /**
   * Ask for the swap's buffer in the used element (PROTOCOL_F_SWAP_IN_USED)
   * when offered (default true): with swaps a tx completion names the
   * buffer we got in exchange, so we read no descriptor back.
   */
  swapInUsed?: boolean;
  /**
   * Ask for RETURNED in the used element (PROTOCOL_F_RETURNED_IN_USED)
   * when offered (default true): a gift is told from a buffer handed back
   * by the used element, so we read no header line the peer touched last.
   */
  returnedInUsed?: boolean;
  /** Queue pairs to open (default 1; more needs VHOST_USER_PROTOCOL_F_MQ). */
  queuePairs?: number;
  /**
   * Default: with gifts, room for every shared buffer in its own descriptor
   * plus the private tx slots (GuestDataPath.fixedTx; at least 1024), else 1024.
   */
  txQueueSize?: number;
  /** Default: room for every shared buffer plus the copy targets. */
  rxQueueSize?: number;
  /** Private rx buffers posted for copied packets (default 1024, at most the rx ring minus bufCount). */
  copyTargets?: number;
  /** Private tx buffers for sendCopy (default 64). */
  privateTx?: number;
  /** Size of a private slot (default: the region's bufSize, at least 2048). */
  slotSize?: number;
  /** Override the switch's gift watermarks (in buffers). */
  giftHigh?: number;
  giftLow?: number;
  /**
   * Map a Shared Buffers region whose memfd is not sealed against shrinking
   * (default false: such a region is refused, since whoever else holds the
   * fd could pull the memory from under us).
   */
  allowUnsealed?: boolean;
  /**
   * Host-side "shared BAR" mode: attach as a classic front-end (no
   * SHARED_BUFFERS) and put this region file into SET_MEM_TABLE as one more
   * region, as QEMU does for an ivshmem-plain device; geometry and partition
   * come from the region header (shared-bar.ts).
   */
  sharedBarFile?: string;
  /** Guest-physical address of the region in that mode (default SHARED_BAR_DEFAULT_GPA). */
  sharedBarGpa?: number;
  /** Our entry in the region header: the port's name and/or MAC. */
  port?: string;
  mac?: Uint8Array;
}

/** Where the host-side shared-BAR mode puts the region: well above the driver's own memory at GUEST_GPA. */
export const SHARED_BAR_DEFAULT_GPA = 0x8_0000_0000;
/** The region's "user" address in that mode (what a QEMU would map it at). */
const SHARED_BAR_UADDR = 0x7e00_0000_0000;

/** The driver's rings and private memory, sized from the options and the region. */
export interface GuestLayout {
  gm: GuestMemory;
  qps: QueuePair[];
  rxNum: number;
  txNum: number;
  /** Private rx slots posted for copied packets: slots [0, copyTargets). */
  copyTargets: number;
  /** Private tx slots for sendCopy: the next privTx slots. */
  privTx: number;
}

export class GuestAttachment {
  readonly fe: VhostUserFrontend;
  /** Virtio features acked (SET_FEATURES). */
  features = 0n;
  /** VHOST_USER_F_PROTOCOL_FEATURES was negotiated. */
  private protocol = false;
  readonly queuePairs: number;
  shared: SharedRegion | null = null;
  giftHigh = Infinity;
  giftLow = Infinity;
  gm: GuestMemory | null = null;
  /** Kick and call eventfd per vring (2q rx, 2q+1 tx), as they are created. */
  readonly kickFd: number[] = [];
  readonly callFd: number[] = [];
  private regionBuffer: ArrayBuffer | null = null;
  /** Shared-BAR mode: the region file (sent with SET_MEM_TABLE). */
  private barFd = -1;
  private barGpa = 0;
  /** The extensions acked beside SHARED_BUFFERS (EXTENSIONS), for GuestDataPath. */
  get extensions(): AckedExtensions {
    const acked = this.fe.ackedProtocol;
    return {
      rxByBuffer: hasBit(acked, PROTOCOL_F_RX_BY_BUFFER), swapInUsed: hasBit(acked, PROTOCOL_F_SWAP_IN_USED),
      returnedInUsed: hasBit(acked, PROTOCOL_F_RETURNED_IN_USED),
    };
  }

  /** Kick vring i: signal its kick eventfd (what the data path calls). */
  readonly kick = (vring: number): void => eventfdSignal(this.kickFd[vring]);

  constructor(private readonly opts: AttachOptions, onDisconnect: (reason: string) => void) {
    this.queuePairs = opts.queuePairs ?? 1;
    this.fe = VhostUserFrontend.connect(opts.socketPath, onDisconnect);
  }

  /** Features, protocol features, queue count, SET_OWNER, the shared region, SET_FEATURES. */
  async negotiate(): Promise<void> {
    const o = this.opts;
    const fe = this.fe;
    const offered = decodeU64(await fe.call(Req.GET_FEATURES));
    if (!hasBit(offered, VIRTIO_F_VERSION_1)) throw new Error('back-end does not offer VIRTIO_F_VERSION_1');
    const gso = o.gso
      ? bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) |
        bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6)
      : 0n;
    const want = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_RING_F_EVENT_IDX) | gso;
    this.features = offered & want;
    this.protocol = hasBit(offered, VHOST_USER_F_PROTOCOL_FEATURES);
    if (this.protocol) {
      const pf = decodeU64(await fe.call(Req.GET_PROTOCOL_FEATURES));
      const askShared = o.zeroCopy !== false && o.sharedBarFile === undefined;
      let wantP = bit(PROTOCOL_F_REPLY_ACK) | bit(PROTOCOL_F_MQ) | (askShared ? bit(PROTOCOL_F_SHARED_BUFFERS) : 0n);
      // Each extension with zero copy, unless its option says no.
      for (const [option, b] of EXTENSIONS) if (askShared && o[option] !== false) wantP |= bit(b);
      const acked = pf & wantP;
      await fe.send(Req.SET_PROTOCOL_FEATURES, u64(acked));
      fe.ackedProtocol = acked;
    }
    const nq = this.queuePairs;
    if (nq > 1) {
      if (!hasBit(fe.ackedProtocol, PROTOCOL_F_MQ)) throw new Error(`${nq} queue pairs requested but the back-end does not offer multiqueue`);
      const max = Number(decodeU64(await fe.call(Req.GET_QUEUE_NUM)));
      if (nq > max) throw new Error(`${nq} queue pairs requested, the back-end supports ${max}`);
    }
    await fe.send(Req.SET_OWNER);
    if (hasBit(fe.ackedProtocol, PROTOCOL_F_SHARED_BUFFERS)) {
      const r = await fetchSharedRegion(fe, o);
      this.regionBuffer = r.buffer;
      this.shared = r.region;
      this.giftHigh = r.giftHigh;
      this.giftLow = r.giftLow;
    } else if (o.sharedBarFile !== undefined) {
      this.mapSharedBar(o.sharedBarFile);
    }
    await fe.send(Req.SET_FEATURES, u64(this.features));
  }

  /** Shared-BAR mode: map the region file and take geometry and partition from its header. */
  private mapSharedBar(file: string): void {
    const o = this.opts;
    this.barGpa = o.sharedBarGpa ?? SHARED_BAR_DEFAULT_GPA;
    this.barFd = fs.openSync(file, 'r+');
    const size = fdSize(this.barFd);
    if (size <= 0) throw new Error(`shared BAR file ${file} is empty`);
    this.regionBuffer = mmapShared(this.barFd, size, 0);
    const r = regionFromBar(this.regionBuffer, this.barGpa, { port: o.port, mac: o.mac }, o);
    this.shared = r.region;
    this.giftHigh = r.giftHigh;
    this.giftLow = r.giftLow;
  }

  /**
   * Size the rings and private slots and build the queue pairs. Every rx
   * ring can hold every shared buffer plus the copy targets: postings need
   * not be spread evenly over the queues.
   */
  layOut(): GuestLayout {
    const o = this.opts;
    const sh = this.shared;
    const nq = this.queuePairs;
    const bufCount = sh ? sh.bufCount : 0;
    // Copy targets take a whole 1024-entry tx ring of a classic sender (testpmd, QEMU) per wake-up: fewer round trips under back-pressure.
    let copyTargets = o.copyTargets ?? 1024;
    const privTx = o.privateTx ?? 64;
    const rxNum = o.rxQueueSize ?? Math.min(VIRTQ_MAX_SIZE, nextPow2(bufCount + copyTargets));
    // Gift exchange: room for every shared buffer in its own tx descriptor (GuestDataPath.fixedTx) and the private tx slots.
    const txNum = o.txQueueSize ?? (sh && !sh.swap ? Math.min(VIRTQ_MAX_SIZE, Math.max(1024, nextPow2(bufCount + privTx))) : 1024);
    if (rxNum < bufCount) throw new Error(`rx queue size ${rxNum} cannot hold the region's ${bufCount} buffers`);
    copyTargets = Math.min(copyTargets, rxNum - bufCount);
    const slotSize = o.slotSize ?? Math.max(2048, sh ? sh.bufSize : 0);
    const sizes: number[] = [];
    for (let q = 0; q < nq; q++) sizes.push(rxNum, txNum);
    const gm = (this.gm = new GuestMemory(sizes, copyTargets + privTx, slotSize));
    const eventIdx = hasBit(this.features, VIRTIO_RING_F_EVENT_IDX);
    const qps: QueuePair[] = [];
    for (let q = 0; q < nq; q++) {
      qps.push(new QueuePair(
        new DriverQueue(new SplitRing(rxNum, gm.ringParts(2 * q)), eventIdx),
        new DriverQueue(new SplitRing(txNum, gm.ringParts(2 * q + 1)), eventIdx),
      ));
    }
    return { gm, qps, rxNum, txNum, copyTargets, privTx };
  }

  /** Share the driver's memory (rings and private slots) with the back-end. */
  async sendMemTable(gm: GuestMemory): Promise<void> {
    const regions = [{ guestPhysAddr: BigInt(gm.gpa(0)), memorySize: BigInt(gm.size), userspaceAddr: BigInt(gm.uaddr(0)), mmapOffset: 0n }];
    const fds = [gm.fd];
    if (this.barFd >= 0) {
      const size = this.regionBuffer!.byteLength;
      if (this.barGpa < gm.gpa(gm.size) && gm.gpa(0) < this.barGpa + size) {
        throw new Error(`shared BAR at 0x${this.barGpa.toString(16)} overlaps the driver's memory at 0x${gm.gpa(0).toString(16)}`);
      }
      regions.push({ guestPhysAddr: BigInt(this.barGpa), memorySize: BigInt(size), userspaceAddr: BigInt(SHARED_BAR_UADDR), mmapOffset: 0n });
      fds.push(this.barFd);
    }
    await this.fe.send(Req.SET_MEM_TABLE, memTable(regions), fds);
  }

  /**
   * Hand every vring to the back-end (after the initial rx postings, so the
   * switch sees them at once), enable them, and kick every rx queue.
   * watchCall is told each call eventfd as it is created.
   */
  async startRings(gm: GuestMemory, watchCall: (fd: number) => void): Promise<void> {
    const fe = this.fe;
    const nq = this.queuePairs;
    for (let i = 0; i < 2 * nq; i++) {
      const r = gm.rings[i];
      this.kickFd[i] = eventfdCreate();
      this.callFd[i] = eventfdCreate();
      await fe.send(Req.SET_VRING_NUM, vringState(i, r.num));
      await fe.send(Req.SET_VRING_BASE, vringState(i, 0));
      await fe.send(Req.SET_VRING_ADDR, vringAddr({
        index: i, flags: 0, desc: BigInt(gm.uaddr(r.desc)), used: BigInt(gm.uaddr(r.used)),
        avail: BigInt(gm.uaddr(r.avail)), log: 0n,
      }));
      await fe.send(Req.SET_VRING_CALL, u64(BigInt(i)), [this.callFd[i]]);
      await fe.send(Req.SET_VRING_KICK, u64(BigInt(i)), [this.kickFd[i]]);
      watchCall(this.callFd[i]);
    }
    if (this.protocol) {
      for (let i = 0; i < 2 * nq; i++) await fe.send(Req.SET_VRING_ENABLE, vringState(i, 1));
    }
    for (let q = 0; q < nq; q++) eventfdSignal(this.kickFd[2 * q]);
  }

  /** Close the connection, the eventfds and both mappings (the caller stops the watchers first). */
  close(): void {
    if (!this.fe.isClosed) this.fe.close();
    for (const fd of [...this.kickFd, ...this.callFd]) {
      try {
        closeFd(fd);
      } catch {
        /* already closed */
      }
    }
    this.gm?.close();
    if (this.regionBuffer) munmap(this.regionBuffer);
    this.regionBuffer = null;
    if (this.barFd >= 0) fs.closeSync(this.barFd);
    this.barFd = -1;
  }
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p <<= 1;
  return p;
}
