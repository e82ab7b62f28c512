/**
 * The uplink: a TAP interface to the host's kernel stack, as a port of the
 * learning bridge. Frames cross it by copy (one read or write per frame,
 * each with a 12-byte virtio_net_hdr: IFF_VNET_HDR), which is how traffic
 * leaves the machine: across hosts it rides the kernel's own bridge or
 * VXLAN, not a tunnel of ours.
 */
import {
  FdWatcher, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, closeFd, fdRead, fdWrite, tapOpen, tapSetMtu, tapSetOffload,
} from '../../bindings';
import { MTU_DEFAULT } from '../virtio/defs';
import type { Logger } from '../log';
import { PortCounters } from './counters';
import type { Mirror } from './mirror';
import { RX_CSUM, RX_ECN, RX_TSO4, RX_TSO6 } from './segment';

/** What the kernel hands in once TUNSETOFFLOAD took CSUM and TSO (open). */
const OFFLOAD_CAPS = RX_CSUM | RX_TSO4 | RX_TSO6 | RX_ECN;

export class TapPort {
  readonly isTap = true;
  readonly counters = new PortCounters();
  /** One queue: [0]=rx packets, [1]=rx bytes, [2]=tx packets, [3]=tx bytes. */
  readonly queueCounters = new Float64Array(4);
  readonly zeroCopy = false;
  /** No sharing domain: the uplink maps no shared buffers, every frame to or from it is copied. */
  readonly domain = null;
  mirror: Mirror | null = null;
  /**
   * What the kernel takes as it is (RX_* of segment.ts). A TAP writer may
   * always hand in open checksums and TSO frames (the kernel checks the
   * header and segments itself), but with offloads off the switch cuts
   * and checksums for it, as for a plain guest.
   */
  offloadCaps = 0;
  /** The interface's MTU (`ports[].mtu`, set on open): frames to it must fit. */
  readonly mtu: number;
  /** 1 while the interface is open: the bridge treats it as one running queue pair. */
  nq = 0;
  private fd = -1;
  /** The fd is this port's to close (open); false: lent by the thread that opened the interface (adopt). */
  private ownsFd = true;
  private watcher: FdWatcher | null = null;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly ifname: string,
    private readonly log: Logger,
    private readonly wake: () => void,
    /** `ports[].offloads`: take and hand in GSO frames and open checksums (TUNSETOFFLOAD). */
    private readonly offloads = true,
    mtu = MTU_DEFAULT,
  ) {
    this.mtu = mtu;
    this.counters.onFirstDrop = (reason) =>
      log.warn({ port: name, reason }, 'first drop for this reason (later ones are only counted: zcswitch stats)');
  }

  get attached(): boolean {
    return this.fd >= 0;
  }

  get ready(): boolean {
    return this.fd >= 0;
  }

  /**
   * Create (or take) the interface and configure it: MTU, offloads.
   * `watch`: this thread's loop serves it (its readable fd wakes `wake`);
   * false when a data-path worker serves it through a dup of fdNumber
   * (adopt), and this thread only keeps the interface open.
   */
  open(watch = true): void {
    const r = tapOpen(this.ifname);
    this.fd = r.fd;
    this.nq = 1;
    tapSetMtu(r.name, this.mtu);
    // What the bridge carries (segment.ts): the kernel may then hand in open checksums and up to 64 KiB TCP segments.
    if (this.offloads) tapSetOffload(this.fd, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);
    this.offloadCaps = this.offloads ? OFFLOAD_CAPS : 0;
    if (watch) this.watch();
    this.log.info({ port: this.name, ifname: r.name, offloads: this.offloads, mtu: this.mtu }, 'tap uplink open');
  }

  /** The open interface's fd (-1: closed): what a data-path worker is lent a dup of. */
  get fdNumber(): number {
    return this.fd;
  }

  /**
   * Serve an interface another thread opened and configured (open(false)),
   * through fd: a dup that thread lent and closes itself, after close() here
   * stopped watching it (src/workers/lent-fds.ts).
   */
  adopt(fd: number): void {
    this.fd = fd;
    this.ownsFd = false;
    this.nq = 1;
    this.offloadCaps = this.offloads ? OFFLOAD_CAPS : 0;
    this.watch();
  }

  private watch(): void {
    // Level-triggered: while frames wait, the loop keeps being woken.
    this.watcher = new FdWatcher(this.fd, this.wake);
    this.watcher.start();
  }

  /** One frame (with its virtio_net_hdr) into buf; bytes, or -1 when none is waiting. */
  read(buf: Uint8Array): number {
    return this.fd < 0 ? -1 : fdRead(this.fd, buf, 0, buf.length);
  }

  /** One frame (with its virtio_net_hdr) to the kernel; false if it would block. */
  write(buf: Uint8Array, off: number, len: number): boolean {
    return this.fd >= 0 && fdWrite(this.fd, buf, off, len) === len;
  }

  /** Stop serving the interface: its watcher goes, and its fd when this port owns it. */
  close(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.fd >= 0 && this.ownsFd) closeFd(this.fd);
    this.fd = -1;
    this.nq = 0;
  }
}
