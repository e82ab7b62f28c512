/**
 * Attaching the guest driver to a virtio-net PCI device from inside a VM
 * (the PCI transport): the counterpart of attach.ts for a driver that has
 * no vhost-user socket. The virtio-net device is driven from user space
 * (virtio-pci.ts); packet buffers are the Shared Buffers region, mapped
 * through its ivshmem BAR (the shared BAR, shared-bar.ts); the rings and
 * private slots live in a second, private ivshmem BAR (the ring BAR), the
 * simplest memory with a known guest-physical address that is physically
 * contiguous and that QEMU also puts into the vhost-user memory table, so
 * the switch can reach it.
 *
 * Queue sizes are bounded by the device (QEMU's rx_queue_size and
 * tx_queue_size, at most 1024): every rx ring must hold every shared buffer
 * plus the copy targets, so a shared BAR used this way has at most that many
 * buffers.
 */
import { munmap } from '../../../bindings';
import { VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_RING_F_EVENT_IDX, bit, hasBit } from '../../virtio/defs';
import { DriverQueue } from '../../virtio/driver-queue';
import { SplitRing } from '../../virtio/ring';
import { GuestMemory, type GuestMemoryBacking } from '../guest-memory';
import { QueuePair } from '../queue-pair';
import { regionFromBar } from '../shared-bar';
import type { SharedRegion } from '../shared-region';
import { IVSHMEM_MEM_BAR, findIvshmem, findVirtioNet } from './discover';
import { SysfsPciFunction } from './sysfs-function';
import { VirtioPciDevice } from './virtio-pci';

export interface PciAttachOptions {
  /** The virtio-net function (default: the only one no kernel driver holds). */
  pci?: string;
  /** The ivshmem device of the Shared Buffers region (default: the one whose BAR ends in the header magic). */
  sharedBar?: string;
  /** The ivshmem device for rings and private slots (default: the only other ivshmem device). */
  ringBar?: string;
  /** Our entry in the region header (default: by the device's MAC). */
  port?: string;
  mac?: Uint8Array;
  rxQueueSize?: number;
  txQueueSize?: number;
  copyTargets?: number;
  privateTx?: number;
  giftHigh?: number;
  giftLow?: number;
  sysfsRoot?: string;
}

function pickOne(found: string[], what: string, flag: string): string {
  if (found.length === 1) return found[0];
  throw new Error(found.length === 0 ? `no ${what} found (give ${flag})` : `${found.length} ${what}s found (${found.join(', ')}): give ${flag}`);
}

export class PciAttachment {
  readonly dev: VirtioPciDevice;
  readonly shared: SharedRegion;
  readonly giftHigh: number;
  readonly giftLow: number;
  readonly features: bigint;
  readonly gm: GuestMemory;
  readonly qps: QueuePair[];
  readonly rxNum: number;
  readonly txNum: number;
  readonly copyTargets: number;
  readonly privTx: number;
  readonly bdf: string;
  readonly sharedBdf: string;
  readonly ringBdf: string;
  readonly mac: Uint8Array | null;
  /** Our entry's name in the region header. */
  readonly portName: string;
  private readonly sharedBuffer: ArrayBuffer;
  /** Kick vring i: write its index to its notify register. */
  readonly kick = (vring: number): void => this.dev.notify(vring);

  constructor(o: PciAttachOptions) {
    const root = o.sysfsRoot;
    this.bdf = o.pci ?? pickOne(findVirtioNet(root), 'unbound virtio-net PCI device', '--pci');
    const iv = o.sharedBar && o.ringBar ? null : findIvshmem(root);
    this.sharedBdf = o.sharedBar ?? pickOne(iv!.shared, 'ivshmem device carrying a zcswitch region', '--shared-bar');
    this.ringBdf = o.ringBar ?? pickOne(iv!.plain.filter((b) => b !== this.sharedBdf), 'second ivshmem device for rings', '--ring-bar');
    const fn = new SysfsPciFunction(this.bdf, root);
    const bound = fn.boundDriver;
    if (bound) throw new Error(`${this.bdf} is bound to the kernel driver ${bound}: unbind it (echo ${this.bdf} > /sys/bus/pci/drivers/${bound}/unbind)`);
    this.dev = new VirtioPciDevice(fn);
    this.features = this.dev.negotiate(
      bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_RING_F_EVENT_IDX), bit(VIRTIO_F_VERSION_1),
    );
    this.mac = hasBit(this.features, VIRTIO_NET_F_MAC) ? this.dev.mac() : null;

    const sf = new SysfsPciFunction(this.sharedBdf, root);
    sf.enable();
    const sb = sf.mapBar(IVSHMEM_MEM_BAR);
    this.sharedBuffer = sb.buffer;
    try {
      const r = regionFromBar(sb.buffer, sb.info.gpa, { port: o.port, mac: o.mac ?? this.mac ?? undefined }, o);
      this.shared = r.region;
      this.portName = r.entry.name;
      this.giftHigh = r.giftHigh;
      this.giftLow = r.giftLow;

      const bufCount = this.shared.bufCount;
      const rxMax = this.dev.maxQueueSize(0);
      const txMax = this.dev.maxQueueSize(1);
      this.rxNum = o.rxQueueSize ?? rxMax;
      this.txNum = o.txQueueSize ?? txMax;
      if (this.rxNum <= bufCount) {
        throw new Error(`rx queue size ${this.rxNum} (device maximum ${rxMax}) cannot hold the region's ${bufCount} buffers and a copy target ` +
          '(use a smaller region or rx_queue_size=1024)');
      }
      this.copyTargets = Math.min(o.copyTargets ?? 64, this.rxNum - bufCount);
      this.privTx = o.privateTx ?? 64;
      const rf = new SysfsPciFunction(this.ringBdf, root);
      rf.enable();
      const backing = (size: number): GuestMemoryBacking => {
        const m = rf.mapBar(IVSHMEM_MEM_BAR);
        if (m.info.size < size) {
          munmap(m.buffer);
          throw new Error(`ring BAR ${this.ringBdf} has ${m.info.size} bytes, the rings and slots need ${size}`);
        }
        // A ring file may hold an earlier run's rings: start from zero.
        new Uint8Array(m.buffer, 0, size).fill(0);
        return { buffer: m.buffer, fd: -1, gpaBase: m.info.gpa, close: () => munmap(m.buffer) };
      };
      this.gm = new GuestMemory([this.rxNum, this.txNum], this.copyTargets + this.privTx, Math.max(2048, this.shared.bufSize), backing);
      const eventIdx = hasBit(this.features, VIRTIO_RING_F_EVENT_IDX);
      this.qps = [new QueuePair(
        new DriverQueue(new SplitRing(this.rxNum, this.gm.ringParts(0)), eventIdx),
        new DriverQueue(new SplitRing(this.txNum, this.gm.ringParts(1)), eventIdx),
      )];
    } catch (e) {
      munmap(this.sharedBuffer);
      this.dev.reset();
      throw e;
    }
  }

  /** Hand both rings to the device (after the initial rx postings), start it, and kick rx. */
  start(): void {
    for (let i = 0; i < 2; i++) {
      const r = this.gm.rings[i];
      this.dev.setupQueue(i, r.num, this.gm.gpa(r.desc), this.gm.gpa(r.avail), this.gm.gpa(r.used));
    }
    this.dev.driverOk();
    this.dev.notify(0);
  }

  /** Stop the device (a reset: it lets go of the rings) and unmap everything. */
  close(): void {
    try {
      this.dev.reset();
    } catch {
      /* the device is gone or stuck; unmapping is all that is left */
    }
    this.gm.close();
    munmap(this.sharedBuffer);
  }
}
