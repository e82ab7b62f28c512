/**
 * `zcswitch vm`: attach a guest-driver "VM" to a port and generate, sink or
 * echo self-checking traffic, printing packet rates as it goes and a
 * summary (JSON with --json) at the end.
 */
import path from 'node:path';
import { GuestDriver } from '../guest/driver';
import { GSO_SHIFT } from '../guest/gso-frame';
import { MIN_TEST_FRAME, defaultMacs, freshRunId } from '../guest/test-packet';
import { TrafficVm, type TrafficSummary, type VmMode } from '../guest/traffic';
import { createLogger, type LogLevel } from '../log';

export interface VmOptions {
  /** Required except with --pci (where the port is found by the device's MAC). */
  port?: string;
  socketDir: string;
  socket?: string;
  mode: VmMode;
  size: number;
  count: number;
  rate: number;
  duration: number;
  burst: number;
  spinUs: number;
  verify: boolean;
  zeroCopy: boolean;
  allowUnsealed?: boolean;
  /** Ask for PROTOCOL_F_RX_BY_BUFFER (default true; --no-rx-by-buffer). */
  rxByBuffer?: boolean;
  /** Ask for PROTOCOL_F_SWAP_IN_USED (default true; --no-swap-in-used). */
  swapInUsed?: boolean;
  /** Ask for PROTOCOL_F_RETURNED_IN_USED (default true; --no-returned-in-used). */
  returnedInUsed?: boolean;
  copy: boolean;
  /** Reattach when the switch goes away; undefined: reconnectDefault(). */
  reconnect?: boolean;
  linger: number;
  expect: number;
  stream: number;
  mac?: Uint8Array;
  dstMac?: Uint8Array;
  announce: boolean;
  /** TSO test frames (src/guest/gso-frame.ts): negotiate offloads, send / check frames as TCP segments. */
  gso?: boolean;
  queues: number;
  json: boolean;
  quiet: boolean;
  logLevel: LogLevel;
  sharedBarFile?: string;
  sharedBarGpa?: number;
  /** Inside a VM: the virtio-net PCI function (true: auto-detect). */
  pci?: string | true;
  sharedBar?: string;
  ringBar?: string;
}

export async function vmCommand(o: VmOptions): Promise<void> {
  const pciMode = o.pci !== undefined || o.sharedBar !== undefined || o.ringBar !== undefined;
  if (o.port === undefined && !pciMode && o.socket === undefined) {
    process.stderr.write("error: required option '-p, --port <name>' not specified (or --pci inside a VM)\n");
    process.exit(2);
  }
  if (pciMode && o.queues > 1) {
    process.stderr.write('error: --queues: the PCI transport drives one queue pair\n');
    process.exit(2);
  }
  if (pciMode && o.sharedBarFile !== undefined) {
    process.stderr.write('error: --shared-bar-file is the host-side stand-in for --pci; give one of them\n');
    process.exit(2);
  }
  const log = createLogger(o.logLevel, `vm:${o.port ?? 'pci'}`);
  const socketPath = pciMode ? `pci:${o.pci === true || o.pci === undefined ? 'auto' : o.pci}` : o.socket ?? path.join(o.socketDir, `${o.port}.sock`);
  let vm: TrafficVm | null = null;
  let lostSwitch = false;
  let drv: GuestDriver;
  const reconnect = o.reconnect ?? reconnectDefault(o);
  if (pciMode) {
    try {
      drv = GuestDriver.attachPci({
        pci: typeof o.pci === 'string' ? o.pci : undefined, sharedBar: o.sharedBar, ringBar: o.ringBar, port: o.port, log,
      });
      // The lines we print name the port; inside a VM that is the header entry the MAC picked.
      o = { ...o, port: o.port ?? drv.portName ?? 'pci' };
    } catch (e) {
      process.stderr.write(`zcswitch vm: cannot attach to the PCI device: ${(e as Error).message}\n`);
      process.exit(1);
    }
  } else try {
    drv = await GuestDriver.attach({
      sharedBarFile: o.sharedBarFile, sharedBarGpa: o.sharedBarGpa, port: o.port, mac: o.mac,
      socketPath, log, zeroCopy: o.zeroCopy, queuePairs: o.queues, allowUnsealed: !!o.allowUnsealed, gso: !!o.gso,
      rxByBuffer: o.rxByBuffer !== false, swapInUsed: o.swapInUsed !== false, returnedInUsed: o.returnedInUsed !== false, reconnect,
      onDisconnect: (reason) => {
        process.stderr.write(`zcswitch vm: switch connection lost: ${reason}; reconnecting\n`);
        vm?.disconnected();
      },
      onReconnect: () => {
        process.stderr.write(`zcswitch vm: reattached to ${socketPath} (reconnect ${drv.reconnects})\n`);
        vm?.reconnected();
      },
      onClose: (reason) => {
        process.stderr.write(`zcswitch vm: switch connection closed: ${reason}\n`);
        lostSwitch = true;
        vm?.stop();
      },
    });
  } catch (e) {
    process.stderr.write(`zcswitch vm: cannot attach to port ${o.port} at ${socketPath}: ${(e as Error).message}\n`);
    process.exit(1);
  }
  const minSize = o.gso && o.mode === 'gen' ? GSO_SHIFT + MIN_TEST_FRAME : MIN_TEST_FRAME;
  if (o.size < minSize || o.size > drv.maxFrame) {
    process.stderr.write(`zcswitch vm: --size ${o.size} must be within ${minSize}..${drv.maxFrame} (the buffer size)\n`);
    drv.close();
    process.exit(2);
  }
  // TSO frames go out of shared buffers only, and an echo would send them back without their header.
  if (o.gso && (o.mode === 'echo' || o.copy || !drv.shared)) {
    process.stderr.write('zcswitch vm: --gso needs shared buffers (not --copy or --no-zero-copy) and mode gen or sink\n');
    drv.close();
    process.exit(2);
  }
  if (!drv.shared && o.mode === 'gen' && !o.copy) {
    process.stderr.write('zcswitch vm: the switch did not grant shared buffers; sending through private memory (copy path)\n');
  }
  // A fresh run id per run: a sink tells this run from an earlier one of the same stream (no duplicate storm).
  // It stays across reconnections: the sink sees one stream with a gap where the switch went away.
  const run = freshRunId();
  vm = new TrafficVm(drv, {
    mode: o.mode, size: o.size, count: o.count, rate: o.rate, durationSec: o.duration, burst: o.burst,
    spinUs: o.spinUs, verifyPayload: o.verify, copyMode: o.copy || !drv.shared, lingerMs: o.linger, expect: o.expect, stream: o.stream, run,
    macs: frameMacs(o), announce: o.announce, gso: !!o.gso,
  });
  const stopVm = () => vm?.stop();
  process.on('SIGINT', stopVm);
  process.on('SIGTERM', stopVm);
  // SIGUSR2: one JSON line of the counters so far (the bench takes two, around its measured window).
  const snapshot = () => process.stdout.write(JSON.stringify(snapshotLine(vm!.summary(), process.cpuUsage())) + '\n');
  process.on('SIGUSR2', snapshot);
  if (!o.quiet) process.stdout.write(startLine(o, socketPath, !!drv.shared && !o.copy, run) + '\n');
  let last = vm.summary();
  const ticker = o.quiet
    ? null
    : setInterval(() => {
        const s = vm!.summary();
        process.stdout.write(rateLine(o, last, s) + '\n');
        last = s;
      }, 1000);
  const summary = { ...(await vm.run()), reconnects: drv.reconnects };
  if (ticker) clearInterval(ticker);
  // Let the switch take what is still queued before we hang up.
  const left = await drv.drainTx();
  if (left > 0) process.stderr.write(`zcswitch vm: ${left} packets still queued when leaving (switch not taking them)\n`);
  drv.close();
  printSummary(o, summary);
  // The summary is printed either way; losing the switch is still a failure for a script.
  process.exit(lostSwitch ? 1 : 0);
}

/**
 * Reconnect unless told: a VM that runs until stopped (sink, echo, a gen
 * without --count) should outlive a switch restart; a gen with --count is a
 * finite job, and losing the switch fails it (exit status 1) as before.
 */
export function reconnectDefault(o: Pick<VmOptions, 'mode' | 'count'>): boolean {
  return o.mode !== 'gen' || o.count === 0;
}

function frameMacs(o: VmOptions): Uint8Array {
  const m = defaultMacs(o.stream);
  if (o.dstMac) m.set(o.dstMac, 0);
  if (o.mac) m.set(o.mac, 6);
  return m;
}

/** What this VM is about to do and what ends it (printed first, so a silent sink is not a mystery). */
export function startLine(o: VmOptions, socketPath: string, zeroCopy: boolean, run: number): string {
  const how = zeroCopy ? 'zero-copy (shared buffers)' : 'copy path (private memory)';
  const what = {
    gen: `sending ${o.count > 0 ? o.count : 'endless'} test frames of ${o.size} B (stream ${o.stream}, run ${run}) ` +
      `${o.rate > 0 ? `at ${o.rate} pps` : 'as fast as it can'}, verifying any that come back`,
    sink: 'counting and verifying the test frames it receives',
    echo: 'sending every frame it receives back',
  }[o.mode];
  const ends: string[] = [];
  if (o.count > 0) ends.push(`${o.count} frames ${o.mode === 'gen' ? 'sent' : 'received'}`);
  if (o.duration > 0) ends.push(`${o.duration} s`);
  const again = (o.reconnect ?? reconnectDefault(o)) ? '; reattaches if the switch restarts' : '';
  const until = ends.length > 0
    ? `stops after ${ends.join(' or ')}, or on Ctrl-C`
    : 'runs until Ctrl-C (or give --count / --duration)';
  return `${o.port} ${o.mode}: attached to ${socketPath}, ${how}; ${what}; ${until}${again}`;
}

/** The per-second line: rates over the last interval, then totals (verified and lost included). */
export function rateLine(o: Pick<VmOptions, 'port' | 'mode'>, last: TrafficSummary, s: TrafficSummary): string {
  const dt = s.elapsedSec - last.elapsedSec;
  return (
    `${o.port} ${o.mode}: tx ${fmtRate((s.sent - last.sent) / dt)} rx ${fmtRate((s.received - last.received) / dt)} ` +
    `(total tx ${s.sent} rx ${s.received}, verified ${s.verified}, lost ${s.lost}, dup ${s.dup}, ` +
    `bad ${s.badLength + s.badChecksum}, gifts out ${s.giftsSent} in ${s.giftsReceived})`
  );
}

/** The SIGUSR2 line: the summary so far, marked as a snapshot, with the process's CPU time (user + system, s). */
export function snapshotLine(s: TrafficSummary, cpu: NodeJS.CpuUsage): TrafficSummary & { snapshot: true; cpuSec: number } {
  return { snapshot: true, ...s, cpuSec: (cpu.user + cpu.system) / 1e6 };
}

function fmtRate(pps: number): string {
  return pps >= 1e6 ? `${(pps / 1e6).toFixed(2)} Mpps` : `${(pps / 1e3).toFixed(1)} kpps`;
}

function printSummary(o: VmOptions, s: TrafficSummary & { reconnects: number }): void {
  if (o.json) {
    process.stdout.write(JSON.stringify(s) + '\n');
    return;
  }
  process.stdout.write(
    `${o.port} ${o.mode} done in ${s.elapsedSec.toFixed(2)} s: sent ${s.sent} (${fmtRate(s.txPps)}), received ${s.received} ` +
      `(${fmtRate(s.rxPps)}), verified ${s.verified}${s.streams > 1 ? ` in ${s.streams} streams` : ''}, lost ${s.lost}, dup ${s.dup}, bad ${s.badLength + s.badChecksum}, ` +
      `gifts out ${s.giftsSent} in ${s.giftsReceived}, returned ${s.returned}${s.reconnects > 0 ? `, reconnected ${s.reconnects}x` : ''}\n`,
  );
}
