/**
 * A modern (virtio 1.0) virtio PCI device driven from user space: the
 * vendor capabilities in config space say which BAR holds the common
 * configuration, the notify area, the ISR and the device configuration;
 * the driver resets the device, negotiates features, gives each queue the
 * guest-physical addresses of its rings, and kicks a queue by writing its
 * index to that queue's notify address. No interrupts: completions are
 * found by polling the used rings (MSI-X vectors are left unassigned).
 *
 * The device (the hypervisor) is trusted as far as any PCI device is, but
 * its capability offsets are still checked against the BAR sizes before any
 * access, so a wrong one is an error naming the field, not a stray write.
 */
import type { SysfsPciFunction } from './sysfs-function';

const PCI_STATUS = 0x06;
const PCI_STATUS_CAP_LIST = 0x10;
const PCI_CAPABILITY_LIST = 0x34;
const PCI_CAP_ID_VNDR = 0x09;

export const VIRTIO_PCI_VENDOR = 0x1af4;
/** Modern virtio-net (0x1040 + device type 1); 0x1000 is the transitional id QEMU uses by default. */
export const VIRTIO_NET_PCI_IDS = [0x1041, 0x1000];

const CAP_COMMON = 1;
const CAP_NOTIFY = 2;
const CAP_ISR = 3;
const CAP_DEVICE = 4;

/** virtio_pci_common_cfg field offsets. */
const C = {
  deviceFeatureSelect: 0, deviceFeature: 4, driverFeatureSelect: 8, driverFeature: 12,
  msixConfig: 16, numQueues: 18, deviceStatus: 20, configGeneration: 21,
  queueSelect: 22, queueSize: 24, queueMsixVector: 26, queueEnable: 28, queueNotifyOff: 30,
  queueDesc: 32, queueDriver: 40, queueDevice: 48,
} as const;
const COMMON_CFG_SIZE = 56;

export const STATUS_ACKNOWLEDGE = 1;
export const STATUS_DRIVER = 2;
export const STATUS_DRIVER_OK = 4;
export const STATUS_FEATURES_OK = 8;
export const STATUS_FAILED = 0x80;
const NO_VECTOR = 0xffff;

/** One virtio vendor capability: a window [offset, offset + length) of a BAR. */
export interface VirtioCap {
  type: number;
  bar: number;
  offset: number;
  length: number;
  /** Notify capability only: bytes between the notify addresses of consecutive notify_off values. */
  notifyMultiplier: number;
}

/** The virtio vendor capabilities of a function's config space (the capability list walked with a loop guard). */
export function virtioCaps(cfg: Uint8Array): VirtioCap[] {
  const dv = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
  if (cfg.length < 0x40) throw new Error(`config space read returned ${cfg.length} bytes (need root for the capability list)`);
  if (!(dv.getUint16(PCI_STATUS, true) & PCI_STATUS_CAP_LIST)) return [];
  const caps: VirtioCap[] = [];
  let at = cfg[PCI_CAPABILITY_LIST] & 0xfc;
  for (let hops = 0; at !== 0 && hops < 48; hops++) {
    if (at + 16 > cfg.length) throw new Error(`capability at 0x${at.toString(16)} runs past config space`);
    const next = cfg[at + 1] & 0xfc;
    if (cfg[at] === PCI_CAP_ID_VNDR && cfg[at + 2] >= 16) {
      const type = cfg[at + 3];
      const notify = type === CAP_NOTIFY && cfg[at + 2] >= 20 && at + 20 <= cfg.length;
      caps.push({
        type, bar: cfg[at + 4], offset: dv.getUint32(at + 8, true), length: dv.getUint32(at + 12, true),
        notifyMultiplier: notify ? dv.getUint32(at + 16, true) : 0,
      });
    }
    at = next;
  }
  return caps;
}

/**
 * Register views of a capability's window in a mapped BAR, checked. Typed
 * arrays rather than a DataView: each access must be one load or store of
 * the register's width (a device register split into byte writes is a
 * different write). x86 is little endian, like virtio.
 */
class RegisterWindow {
  readonly r8: Uint8Array;
  readonly r16: Uint16Array;
  readonly r32: Uint32Array;

  constructor(bars: Map<number, ArrayBuffer>, cap: VirtioCap, what: string, minLength: number) {
    const buf = bars.get(cap.bar);
    if (!buf) throw new Error(`virtio ${what} capability names BAR${cap.bar}, which is not mapped`);
    if (cap.length < minLength || cap.offset + cap.length > buf.byteLength || cap.offset % 4 !== 0) {
      throw new Error(`virtio ${what} capability (BAR${cap.bar} offset 0x${cap.offset.toString(16)} length ${cap.length}) ` +
        `does not fit the ${buf.byteLength}-byte BAR, is unaligned or is shorter than ${minLength}`);
    }
    this.r8 = new Uint8Array(buf, cap.offset, cap.length);
    this.r16 = new Uint16Array(buf, cap.offset, cap.length >>> 1);
    this.r32 = new Uint32Array(buf, cap.offset, cap.length >>> 2);
  }
}

export class VirtioPciDevice {
  private readonly common: RegisterWindow;
  private readonly notifyArea: RegisterWindow;
  private readonly notifyMultiplier: number;
  readonly deviceCfg: RegisterWindow | null;
  /** Per queue: the 16-bit index of its notify register in notifyArea. */
  private readonly notifyAt: number[] = [];

  constructor(readonly fn: SysfsPciFunction) {
    const caps = virtioCaps(fn.readConfig(0, 256));
    const find = (t: number) => caps.find((c) => c.type === t);
    const common = find(CAP_COMMON);
    const notify = find(CAP_NOTIFY);
    if (!common || !notify || !find(CAP_ISR)) {
      throw new Error(`${fn.bdf} is not a modern virtio PCI device (no common/notify/isr capabilities; disable-modern=off is needed)`);
    }
    const dev = find(CAP_DEVICE);
    fn.enable();
    const bars = new Map<number, ArrayBuffer>();
    for (const c of [common, notify, ...(dev ? [dev] : [])]) {
      if (!bars.has(c.bar)) bars.set(c.bar, fn.mapBar(c.bar).buffer);
    }
    this.common = new RegisterWindow(bars, common, 'common config', COMMON_CFG_SIZE);
    this.notifyArea = new RegisterWindow(bars, notify, 'notify', 2);
    this.notifyMultiplier = notify.notifyMultiplier;
    this.deviceCfg = dev ? new RegisterWindow(bars, dev, 'device config', 0) : null;
  }

  private get8(off: number): number {
    return this.common.r8[off];
  }

  private get16(off: number): number {
    return this.common.r16[off >>> 1];
  }

  private set16(off: number, v: number): void {
    this.common.r16[off >>> 1] = v;
  }

  private get32(off: number): number {
    return this.common.r32[off >>> 2];
  }

  private set32(off: number, v: number): void {
    this.common.r32[off >>> 2] = v;
  }

  /** A 64-bit register as two 32-bit stores, low half first (what the spec allows). */
  private set64(off: number, v: number): void {
    this.set32(off, v >>> 0);
    this.set32(off + 4, Math.floor(v / 2 ** 32));
  }

  get status(): number {
    return this.get8(C.deviceStatus);
  }

  set status(v: number) {
    this.common.r8[C.deviceStatus] = v;
  }

  /** Reset: write 0 and wait until the device reads back 0 (virtio 1.0, 4.1.4.3.2). */
  reset(): void {
    this.status = 0;
    for (let i = 0; i < 1_000_000 && this.status !== 0; i++);
    if (this.status !== 0) throw new Error(`${this.fn.bdf}: device does not finish its reset`);
  }

  get deviceFeatures(): bigint {
    this.set32(C.deviceFeatureSelect, 0);
    const lo = this.get32(C.deviceFeature);
    this.set32(C.deviceFeatureSelect, 1);
    const hi = this.get32(C.deviceFeature);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /**
   * Reset, acknowledge, and accept `wanted & offered` (`required` must all
   * be offered). Returns the features in force (FEATURES_OK kept).
   */
  negotiate(wanted: bigint, required: bigint): bigint {
    this.reset();
    this.status = STATUS_ACKNOWLEDGE;
    this.status = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
    const offered = this.deviceFeatures;
    if ((offered & required) !== required) {
      this.status = STATUS_FAILED;
      throw new Error(`${this.fn.bdf}: device lacks required features 0x${(required & ~offered).toString(16)}`);
    }
    const acked = offered & wanted;
    this.set32(C.driverFeatureSelect, 0);
    this.set32(C.driverFeature, Number(acked & 0xffff_ffffn));
    this.set32(C.driverFeatureSelect, 1);
    this.set32(C.driverFeature, Number(acked >> 32n));
    this.status = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
    if (!(this.status & STATUS_FEATURES_OK)) {
      this.status = STATUS_FAILED;
      throw new Error(`${this.fn.bdf}: device refused features 0x${acked.toString(16)}`);
    }
    return acked;
  }

  /** The MAC address in the device configuration (VIRTIO_NET_F_MAC), or null. */
  mac(): Uint8Array | null {
    const d = this.deviceCfg;
    return d && d.r8.length >= 6 ? Uint8Array.from(d.r8.subarray(0, 6)) : null;
  }

  get numQueues(): number {
    return this.get16(C.numQueues);
  }

  /** The largest size the device allows for queue q (0: the queue does not exist). */
  maxQueueSize(q: number): number {
    this.set16(C.queueSelect, q);
    return this.get16(C.queueSize);
  }

  /** Give queue q its size and ring addresses (guest-physical), and enable it. */
  setupQueue(q: number, num: number, desc: number, avail: number, used: number): void {
    const max = this.maxQueueSize(q);
    if (max === 0) throw new Error(`${this.fn.bdf}: queue ${q} does not exist`);
    if (num > max || (num & (num - 1)) !== 0) throw new Error(`${this.fn.bdf}: queue ${q} size ${num} (device maximum ${max}, power of two)`);
    this.set16(C.queueSize, num);
    this.set16(C.queueMsixVector, NO_VECTOR);
    this.set64(C.queueDesc, desc);
    this.set64(C.queueDriver, avail);
    this.set64(C.queueDevice, used);
    const at = this.get16(C.queueNotifyOff) * this.notifyMultiplier;
    if (at + 2 > this.notifyArea.r8.length || at % 2 !== 0) {
      throw new Error(`${this.fn.bdf}: queue ${q} notify offset ${at} is outside the notify area or unaligned`);
    }
    this.notifyAt[q] = at >>> 1;
    this.set16(C.queueEnable, 1);
  }

  /** All queues set up: the device may start. */
  driverOk(): void {
    this.status = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
  }

  /** Kick queue q: write its index to its notify register. */
  notify(q: number): void {
    this.notifyArea.r16[this.notifyAt[q]] = q;
  }
}
