/**
 * Real QEMU guests as switch ports: boots the tiny Linux image built by
 * scripts/guest-image/build.sh (virtio-net-pci on a vhost-user netdev,
 * guest RAM in a shared memfd), collects its serial console, waits for the
 * "ZC ..." markers its /init prints, and always kills QEMU in teardown.
 *
 *   const g = QemuGuest.start({ socket, ip: '10.0.0.1/24', roles: ['ping'], peer: '10.0.0.2' });
 *   t.teardown(() => g.kill());
 *   await g.ready();
 *   const r = await g.result('ping');   // { ok, fields: { sent: '3', ... } }
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { which } from './external';
import { waitFor } from './wait';

export const QEMU_BIN = 'qemu-system-x86_64';
const BUILD_SCRIPT = path.join(__dirname, '..', '..', '..', 'scripts', 'guest-image', 'build.sh');

/** Full path of qemu-system-x86_64, or null when it is not installed. */
export function findQemu(): string | null {
  return which(QEMU_BIN);
}

export interface GuestImage {
  kernel: string;
  initrd: string;
}

let image: GuestImage | null = null;

/** Build the guest image (or reuse the cache): runs scripts/guest-image/build.sh once per process. */
export function guestImage(): GuestImage {
  if (image) return image;
  let out: string;
  try {
    out = execFileSync(BUILD_SCRIPT, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`scripts/guest-image/build.sh failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
  const kernel = /^KERNEL=(.*)$/m.exec(out)?.[1];
  const initrd = /^INITRD=(.*)$/m.exec(out)?.[1];
  if (!kernel || !initrd) throw new Error(`build.sh printed no KERNEL=/INITRD= lines:\n${out}`);
  image = { kernel, initrd };
  return image;
}

const NODE_BUILD_SCRIPT = path.join(__dirname, '..', '..', '..', 'scripts', 'guest-image', 'build-node.sh');
let nodeImage: GuestImage | null = null;

/**
 * The guest with Node and the built project (scripts/guest-image/build-node.sh,
 * cached like the small one): runs `zcswitch vm --pci <zc.vm>` at boot.
 */
export function nodeGuestImage(): GuestImage {
  if (nodeImage) return nodeImage;
  let out: string;
  try {
    out = execFileSync(NODE_BUILD_SCRIPT, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`scripts/guest-image/build-node.sh failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
  const kernel = /^KERNEL=(.*)$/m.exec(out)?.[1];
  const initrd = /^INITRD=(.*)$/m.exec(out)?.[1];
  if (!kernel || !initrd) throw new Error(`build-node.sh printed no KERNEL=/INITRD= lines:\n${out}`);
  nodeImage = { kernel, initrd };
  return nodeImage;
}

/** A guest that runs the guest driver inside (the node image): its port, the region file and its own ring file. */
export interface DriverGuestOptions {
  socket: string;
  /** The region file the switch publishes (<socketDir>/<domain>.region) and its size. */
  regionFile: string;
  regionSize: number;
  /** A private file (1 MiB is plenty) for the driver's rings: the second ivshmem device. */
  ringFile: string;
  /** Arguments after `zcswitch vm --pci` (no commas or spaces inside one). */
  vmArgs: string[];
  mac?: string;
  name?: string;
  timeoutS?: number;
}

/** The QEMU command line of a guest-driver guest (docs/qemu.md shows the same). */
export function driverGuestArgs(o: DriverGuestOptions, mac: string, img: GuestImage): string[] {
  const append = ['console=ttyS0', 'quiet', 'panic=-1', `zc.timeout=${o.timeoutS ?? 300}`, `zc.vm=${o.vmArgs.join(',')}`].join(' ');
  const ringSize = fs.statSync(o.ringFile).size;
  return [
    '-accel', 'tcg', '-m', '1G', '-nographic', '-no-reboot',
    '-kernel', img.kernel, '-initrd', img.initrd, '-append', append,
    '-object', 'memory-backend-memfd,id=mem,size=1G,share=on', '-numa', 'node,memdev=mem',
    '-chardev', `socket,id=c0,path=${o.socket}`,
    '-netdev', 'vhost-user,id=n0,chardev=c0',
    // Rings of 1024: the rx ring holds every shared buffer plus copy targets.
    '-device', `virtio-net-pci,netdev=n0,mac=${mac},vectors=0,rx_queue_size=1024,tx_queue_size=1024`,
    '-object', `memory-backend-file,id=sb,mem-path=${o.regionFile},size=${o.regionSize},share=on`, '-device', 'ivshmem-plain,memdev=sb',
    '-object', `memory-backend-file,id=rb,mem-path=${o.ringFile},size=${ringSize},share=on`, '-device', 'ivshmem-plain,memdev=rb',
  ];
}

let macSeq = 0;

/** A MAC no other guest of this run has: 52:54:00 (QEMU's prefix), then pid and a counter. */
export function uniqueMac(): string {
  macSeq++;
  const b = [0x52, 0x54, 0x00, process.pid & 0xff, (macSeq >> 8) & 0xff, macSeq & 0xff];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export type GuestRole = 'ping' | 'tcp-send' | 'tcp-recv' | 'wait';

export interface GuestOptions {
  /** The port's vhost-user socket. */
  socket: string;
  /** eth0 address with prefix, e.g. 10.0.0.1/24. */
  ip: string;
  roles: GuestRole[];
  peer?: string;
  /** ping count and payload size. */
  count?: number;
  size?: number;
  /** TCP port and amount for tcp-send / tcp-recv. */
  tcpPort?: number;
  kib?: number;
  /** The guest's own watchdog: it powers off after this many seconds whatever happens (default 90). */
  timeoutS?: number;
  mac?: string;
  /** Name used in messages (default: the MAC). */
  name?: string;
  /** Reconnect to the switch's socket this many seconds after losing it (chardev reconnect=N; default: never). */
  reconnect?: number;
  /** Add a human monitor on a Unix socket (for QemuGuest.monitor: stop, cont, ...). */
  monitor?: boolean;
  /** QEMU listens on `socket` (`server=on,wait=off`) and the switch connects: a client-mode port (`ports[].connect`). */
  server?: boolean;
  /** More QEMU options, appended (e.g. the ivshmem options `zcswitch start` prints). */
  extraArgs?: string[];
  /** More virtio-net-pci properties, e.g. `guest_tso4=off,guest_tso6=off` (what the guest negotiates). */
  device?: string;
}

export interface RoleResult {
  ok: boolean;
  fields: Record<string, string>;
  line: string;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export class QemuGuest {
  readonly mac: string;
  readonly name: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private out = '';
  /** QEMU exited and its output has been read to the end. */
  private closed = false;
  private waiters: (() => void)[] = [];

  private constructor(readonly child: ChildProcess, readonly opts: GuestOptions, mac: string, private readonly monitorPath: string | null) {
    this.mac = mac;
    this.name = opts.name ?? mac;
    live.add(child);
    const onData = (d: Buffer) => {
      this.out += d.toString('latin1');
      for (const w of this.waiters.splice(0)) w();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.stdin!.on('error', () => {
      /* QEMU gone: nothing to write to */
    });
    this.exited = new Promise((resolve) =>
      child.on('close', (code, signal) => {
        live.delete(child);
        this.closed = true;
        if (monitorPath) fs.rmSync(monitorPath, { force: true });
        for (const w of this.waiters.splice(0)) w();
        resolve({ code, signal });
      }),
    );
  }

  /** The kernel command line for these options. */
  static append(o: GuestOptions): string {
    const p: string[] = ['console=ttyS0', 'quiet', 'panic=-1', `zc.ip=${o.ip}`, `zc.role=${o.roles.join(',')}`];
    if (o.peer) p.push(`zc.peer=${o.peer}`);
    if (o.count !== undefined) p.push(`zc.count=${o.count}`);
    if (o.size !== undefined) p.push(`zc.size=${o.size}`);
    if (o.tcpPort !== undefined) p.push(`zc.port=${o.tcpPort}`);
    if (o.kib !== undefined) p.push(`zc.kib=${o.kib}`);
    p.push(`zc.timeout=${o.timeoutS ?? 90}`);
    return p.join(' ');
  }

  /** The whole QEMU command line (docs/qemu.md shows the same). */
  static args(o: GuestOptions, mac: string, img: GuestImage, monitorPath: string | null = null): string[] {
    const monitor = monitorPath ? ['-monitor', `unix:${monitorPath},server=on,wait=off`] : [];
    return [
      ...monitor,
      '-accel', 'tcg', '-m', '256', '-nographic', '-no-reboot',
      '-kernel', img.kernel, '-initrd', img.initrd, '-append', QemuGuest.append(o),
      '-object', 'memory-backend-memfd,id=mem,size=256M,share=on', '-numa', 'node,memdev=mem',
      '-chardev', `socket,id=c0,path=${o.socket}${o.server ? ',server=on,wait=off' : ''}${o.reconnect ? `,reconnect=${o.reconnect}` : ''}`,
      '-netdev', 'vhost-user,id=n0,chardev=c0',
      // vectors=0 (INTx only) is required: QEMU 7.2 under TCG crashes in vhost start with MSI-X.
      '-device', `virtio-net-pci,netdev=n0,mac=${mac},vectors=0${o.device ? `,${o.device}` : ''}`,
      ...(o.extraArgs ?? []),
    ];
  }

  static start(o: GuestOptions): QemuGuest {
    const qemu = findQemu();
    if (!qemu) throw new Error(`${QEMU_BIN} is not installed`);
    const mac = o.mac ?? uniqueMac();
    const mon = o.monitor ? path.join(os.tmpdir(), `zcs-qmon-${process.pid}-${mac.replace(/:/g, '')}.sock`) : null;
    const child = spawn(qemu, QemuGuest.args(o, mac, guestImage(), mon), { stdio: ['pipe', 'pipe', 'pipe'] });
    return new QemuGuest(child, o, mac, mon);
  }

  /** Boot a guest-driver guest (nodeGuestImage); its result is vmResult(). */
  static startDriver(o: DriverGuestOptions): QemuGuest {
    const qemu = findQemu();
    if (!qemu) throw new Error(`${QEMU_BIN} is not installed`);
    const mac = o.mac ?? uniqueMac();
    const child = spawn(qemu, driverGuestArgs(o, mac, nodeGuestImage()), { stdio: ['pipe', 'pipe', 'pipe'] });
    return new QemuGuest(child, { socket: o.socket, ip: '', roles: [], name: o.name }, mac, null);
  }

  /**
   * A guest-driver guest's end: "ZC RESULT vm ok|fail exit=N" and the
   * driver's --json summary (a "ZC VM {...}" line), if it printed one.
   */
  async vmResult(timeoutMs = 240_000): Promise<{ ok: boolean; exit: string; summary: Record<string, number> }> {
    const m = await this.waitFor(/ZC RESULT vm (ok|fail) exit=(\S+)\n/, 'the guest driver to finish', timeoutMs);
    let summary: Record<string, number> = {};
    for (const line of this.output().split('\n')) {
      const j = /ZC VM (\{"mode".*\})\s*$/.exec(line);
      if (j) summary = JSON.parse(j[1]) as Record<string, number>;
    }
    return { ok: m[1] === 'ok', exit: m[2], summary };
  }

  /** Run one human-monitor command (needs opts.monitor) and return what it printed. */
  async monitor(cmd: string, timeoutMs = 10_000): Promise<string> {
    const p = this.monitorPath;
    if (!p) throw new Error(`${this.name}: started without a monitor`);
    await waitFor(`${this.name}: monitor socket`, () => fs.existsSync(p), timeoutMs);
    return new Promise<string>((resolve, reject) => {
      const sock = net.connect(p);
      let buf = '';
      let sent = false;
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`${this.name}: monitor command "${cmd}" got no prompt back within ${timeoutMs} ms: ${buf}`));
      }, timeoutMs);
      sock.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      sock.on('data', (d) => {
        buf += d.toString('latin1');
        if (!buf.endsWith('(qemu) ')) return;
        if (!sent) {
          // The greeting and first prompt: now the command.
          sent = true;
          buf = '';
          sock.write(`${cmd}\n`);
          return;
        }
        clearTimeout(timer);
        sock.end();
        // eslint-disable-next-line no-control-regex
        resolve(buf.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').replace(/\r/g, '').replace(/\(qemu\) $/, ''));
      });
    });
  }

  /**
   * Serial console and QEMU's own messages so far, terminal escapes and CRs
   * removed. Markers may share a line with firmware output, even glued to a
   * stray character ("Booting from ROM...  cZC READY"), so match "ZC ..."
   * anywhere, not at ^; and a line is only complete once its newline has
   * arrived (match up to \n, not $).
   */
  output(): string {
    // eslint-disable-next-line no-control-regex
    return this.out.replace(/\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])/g, '').replace(/\r/g, '');
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Wait until the output matches re. Fails with the console output when the
   * deadline passes or QEMU exits first.
   */
  async waitFor(re: RegExp, what: string, timeoutMs = 60_000): Promise<RegExpMatchArray> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = this.output().match(re);
      if (m) return m;
      if (this.closed) throw new Error(`${this.name}: QEMU exited before ${what}; console:\n${this.tail()}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}; console:\n${this.tail()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** "ZC READY": modules loaded, eth0 configured. Boot takes 3–7 s under TCG. */
  async ready(timeoutMs = 60_000): Promise<void> {
    const m = await this.waitFor(/ZC (READY .*|ERROR .*)\n/, 'ZC READY', timeoutMs);
    if (m[1].startsWith('ERROR')) throw new Error(`${this.name}: ${m[0]}; console:\n${this.tail()}`);
  }

  /** The "ZC RESULT <role> ok|fail k=v..." line of a role. */
  async result(role: GuestRole, timeoutMs = 60_000): Promise<RoleResult> {
    const m = await this.waitFor(new RegExp(`ZC RESULT ${role} (ok|fail)(.*)\\n`), `the result of role ${role}`, timeoutMs);
    const fields: Record<string, string> = {};
    for (const kv of m[2].trim().split(/\s+/)) {
      const i = kv.indexOf('=');
      if (i > 0) fields[kv.slice(0, i)] = kv.slice(i + 1);
    }
    return { ok: m[1] === 'ok', fields, line: m[0].trim() };
  }

  /** Type a line on the guest's serial console (role wait ends on "stop"). */
  type(line: string): void {
    if (this.running) this.child.stdin!.write(`${line}\n`);
  }

  /** Wait for the guest to power off by itself; returns QEMU's exit code. */
  async poweredOff(timeoutMs = 30_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name}: still running ${timeoutMs} ms after it should have powered off; console:\n${this.tail()}`)), timeoutMs);
    });
    try {
      return (await Promise.race([this.exited, timeout])).code;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stop QEMU now (SIGTERM, then SIGKILL after 3 s). Safe to call at any time, more than once. */
  async kill(): Promise<void> {
    if (this.running) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
      await this.exited;
      clearTimeout(t);
    } else {
      await this.exited;
    }
  }

  private tail(lines = 40): string {
    return this.output().split('\n').slice(-lines).join('\n');
  }
}
