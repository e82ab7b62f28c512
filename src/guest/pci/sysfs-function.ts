/**
 * One PCI function seen through Linux sysfs (/sys/bus/pci/devices/<bdf>):
 * its config space (the `config` file, read and written at an offset), its
 * BARs' guest-physical addresses (the `resource` file) and their mappings
 * (the `resourceN` files, mmapped). Needs root, and no kernel driver may be
 * using the device. Everything read here comes from the device, which the
 * hypervisor controls: sizes and offsets are checked before use.
 */
import fs from 'node:fs';
import path from 'node:path';
import { mmapShared } from '../../../bindings';

export const PCI_SYSFS = '/sys/bus/pci/devices';

const PCI_COMMAND = 0x04;
const PCI_COMMAND_MEMORY = 0x2;
const PCI_COMMAND_MASTER = 0x4;

/** Where a BAR sits in guest-physical space. */
export interface BarInfo {
  gpa: number;
  size: number;
}

export class SysfsPciFunction {
  readonly dir: string;

  constructor(readonly bdf: string, sysfsRoot = PCI_SYSFS) {
    if (!/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(bdf)) {
      throw new Error(`PCI address ${JSON.stringify(bdf)} is not of the form 0000:00:04.0`);
    }
    this.dir = path.join(sysfsRoot, bdf);
    if (!fs.existsSync(path.join(this.dir, 'config'))) throw new Error(`no PCI device ${bdf} (${this.dir}/config missing)`);
  }

  /** Every PCI function the kernel lists. */
  static list(sysfsRoot = PCI_SYSFS): string[] {
    try {
      return fs.readdirSync(sysfsRoot).sort();
    } catch {
      return [];
    }
  }

  /** `len` bytes of config space from `off` (short when the file is shorter: unprivileged reads stop at 64). */
  readConfig(off: number, len: number): Buffer {
    const fd = fs.openSync(path.join(this.dir, 'config'), 'r');
    try {
      const b = Buffer.alloc(len);
      const n = fs.readSync(fd, b, 0, len, off);
      return b.subarray(0, n);
    } finally {
      fs.closeSync(fd);
    }
  }

  private writeConfig16(off: number, v: number): void {
    const fd = fs.openSync(path.join(this.dir, 'config'), 'r+');
    try {
      const b = Buffer.alloc(2);
      b.writeUInt16LE(v, 0);
      fs.writeSync(fd, b, 0, 2, off);
    } finally {
      fs.closeSync(fd);
    }
  }

  get vendorId(): number {
    return this.readConfig(0, 2).readUInt16LE(0);
  }

  get deviceId(): number {
    return this.readConfig(2, 2).readUInt16LE(0);
  }

  /** The kernel driver bound to the function, or null. */
  get boundDriver(): string | null {
    try {
      return path.basename(fs.readlinkSync(path.join(this.dir, 'driver')));
    } catch {
      return null;
    }
  }

  /**
   * Turn on memory decoding (so the BARs answer) and bus mastering (so the
   * device may reach guest memory): no kernel driver did it for us.
   */
  enable(): void {
    const cmd = this.readConfig(PCI_COMMAND, 2).readUInt16LE(0);
    const want = cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    if (want !== cmd) this.writeConfig16(PCI_COMMAND, want);
  }

  /** BAR n's guest-physical address and size (from the `resource` file), or null when unused. */
  bar(n: number): BarInfo | null {
    const lines = fs.readFileSync(path.join(this.dir, 'resource'), 'utf8').split('\n');
    const f = (lines[n] ?? '').trim().split(/\s+/);
    if (f.length < 3) return null;
    const start = Number(BigInt(f[0]));
    const end = Number(BigInt(f[1]));
    if (start === 0 && end === 0) return null;
    if (!(end > start)) throw new Error(`${this.bdf}: BAR${n} has a bad range ${f[0]}..${f[1]}`);
    return { gpa: start, size: end - start + 1 };
  }

  /** Map all of BAR n (resourceN) read-write and shared. */
  mapBar(n: number): { buffer: ArrayBuffer; info: BarInfo } {
    const info = this.bar(n);
    if (!info) throw new Error(`${this.bdf}: BAR${n} is not implemented`);
    const fd = fs.openSync(path.join(this.dir, `resource${n}`), 'r+');
    try {
      return { buffer: mmapShared(fd, info.size, 0), info };
    } finally {
      fs.closeSync(fd);
    }
  }
}
