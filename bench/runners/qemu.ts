/**
 * One qemu-zc run: a switch and two QEMU guests (TCG) that run the guest
 * driver inside (`zcswitch vm --pci`, the region as an ivshmem BAR, rings in
 * a second ivshmem device; docs/qemu.md), gen -> sink one way. The guests
 * are booted from scripts/guest-image/build-node.sh's image with the same
 * command line the QEMU test uses (test/helpers/qemu.ts). Rates come from
 * the switch's counters over the measured window, as in the zcswitch
 * runner; under TCG they say what emulation costs, not what the switch can
 * do (for the record, not a target).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { regionSizeFor } from '../../src/shm/region-header';
import { controlRequest } from '../../src/switch/control';
import type { SwitchStats } from '../../src/switch/stats';
import { driverGuestArgs, findQemu, nodeGuestImage } from '../../test/helpers/qemu';
import { type Child, startChild } from '../lib/child';
import { processCpuSec, sleep, waitFor } from '../lib/util';
import type { RunMetrics, Scenario } from '../types';
import { type PortCounters, type RunContext, bufSizeFor, checkLength, dropsBetween, perPacket, windowRates } from './common';

/** The rx ring (at most 1024) holds every shared buffer plus copy targets. */
export const QEMU_BUF_COUNT = 512;
/** Boot and Node start-up under TCG take tens of seconds. */
const BOOT_TIMEOUT_MS = 180_000;

/** Why qemu-zc cannot run here, or null (and the image is built). */
export function qemuProblem(): string | null {
  if (!findQemu()) return 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)';
  try {
    nodeGuestImage();
  } catch (e) {
    return `the guest image with Node cannot be built: ${(e as Error).message.split('\n')[0]}`;
  }
  return null;
}

export async function runQemuGuests(s: Scenario, ctx: RunContext): Promise<RunMetrics> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zcbq-'));
  const bufSize = bufSizeFor(s.size);
  const cfg = {
    socketDir: dir,
    sharedBuffers: { bufCount: QEMU_BUF_COUNT, bufSize },
    ports: [{ name: 'vm1' }, { name: 'vm2' }],
    pairs: [['vm1', 'vm2']],
    forwarding: { burst: s.burst, pollMode: s.pollMode ?? 'spin-then-sleep' },
    log: { level: 'warn' },
  };
  const cfgPath = path.join(dir, 'switch.json');
  fs.writeFileSync(cfgPath, JSON.stringify(cfg, null, 2));
  const control = path.join(dir, 'zcswitch.ctl');
  const regionFile = path.join(dir, 'pair:vm1+vm2.region');
  const safety = String(Math.ceil(ctx.warmupSec + ctx.durationSec + 2 * BOOT_TIMEOUT_MS / 1000));
  const guestArgs = (port: string, mode: string, mac: string) => {
    const ringFile = path.join(dir, `${port}.rings`);
    fs.writeFileSync(ringFile, Buffer.alloc(0));
    // Rings of 1024 and 128 private slots of at least 2 KiB, rounded up to a power of two.
    fs.truncateSync(ringFile, 2 ** Math.ceil(Math.log2(256 * 1024 + 128 * Math.max(2048, bufSize))));
    return driverGuestArgs({
      socket: path.join(dir, `${port}.sock`), regionFile, regionSize: regionSizeFor(QEMU_BUF_COUNT, bufSize), ringFile,
      vmArgs: ['--port', port, '--mode', mode, '--size', String(s.size), '--burst', String(s.burst), '--duration', safety, '--no-verify', '--json', '--quiet'],
      timeoutS: Number(safety) + 60,
    }, mac, nodeGuestImage());
  };
  ctx.setup({
    config: cfg,
    switch: 'zcswitch start -c <config>',
    guests: 'qemu-system-x86_64 (TCG) with the Node image, `zcswitch vm --pci` inside (docs/qemu.md)',
    vm2: `qemu-system-x86_64 ${guestArgs('vm2', 'sink', '52:54:00:00:00:02').join(' ').replaceAll(dir, '<dir>')}`,
  });
  const children: Child[] = [];
  const warnings: string[] = [];
  const qemu = findQemu()!;
  try {
    const sw = startChild('switch', process.execPath, [ctx.cli, 'start', '-c', cfgPath]);
    children.push(sw);
    await waitFor('the switch to start', () => sw.stdout().includes('control:') || !sw.running(), 15000);
    if (!sw.running()) throw new Error(`switch exited at start:\n${sw.tail()}`);
    const stats = async () => (await controlRequest(control, { cmd: 'stats' })) as SwitchStats;
    const port = (st: SwitchStats, name: string) => st.ports.find((p) => p.name === name)!;
    const counters = (st: SwitchStats, name: string) => port(st, name).counters as PortCounters;

    // Both guests boot at once (each takes tens of seconds); the gen's frames wait for the sink's buffers.
    const rx = startChild('guest vm2 sink', qemu, guestArgs('vm2', 'sink', '52:54:00:00:00:02'));
    const gen = startChild('guest vm1 gen', qemu, guestArgs('vm1', 'gen', '52:54:00:00:00:01'));
    children.push(rx, gen);
    await waitFor('traffic to flow between the guests', async () => !gen.running() || !rx.running() ||
      (port(await stats(), 'vm2').ready && counters(await stats(), 'vm2').txPackets > 0), BOOT_TIMEOUT_MS, 500);
    if (!gen.running() || !rx.running()) throw new Error(`a guest exited at start:\n${gen.tail(8)}\n${rx.tail(8)}`);

    await sleep(ctx.warmupSec * 1000);
    const snap = async () => {
      const t0 = performance.now();
      const cpu = { sw: processCpuSec(sw.pid), vm1: processCpuSec(gen.pid), vm2: processCpuSec(rx.pid) };
      const st = await stats();
      return { at: (t0 + performance.now()) / 2, ...cpu, stats: st };
    };
    const a = await snap();
    await sleep(ctx.durationSec * 1000);
    const b = await snap();
    if (!gen.running() || !rx.running()) throw new Error(`a guest exited during the measurement:\n${gen.tail(4)}\n${rx.tail(4)}`);
    const d = (name: string, key: string) => (counters(b.stats, name)[key] as number) - (counters(a.stats, name)[key] as number);
    const names = ['vm1', 'vm2'];
    const packets = d('vm2', 'txPackets');
    const bytes = d('vm2', 'txBytes');
    const copied = names.reduce((n, p) => n + d(p, 'copiedBytes'), 0);
    const gifts = names.reduce((n, p) => n + d(p, 'giftsIn'), 0);
    const dropReasons = dropsBetween(a.stats, b.stats, names);
    const windowSec = (b.at - a.at) / 1000;
    const delta = (k: 'sw' | 'vm1' | 'vm2') => (a[k] !== null && b[k] !== null ? b[k]! - a[k]! : null);
    const swCpu = delta('sw');
    const all = [delta('sw'), delta('vm1'), delta('vm2')];
    const totalCpu = all.every((x) => x !== null) ? all.reduce((x, y) => x! + y!, 0) : null;
    const avgLen = packets > 0 ? bytes / packets : null;
    checkLength(avgLen, s.size, warnings);
    if (!(packets > 0)) throw new Error('no packets delivered in the measured window');
    // The switch's busy time (stats.dataPath); the guests' drivers report none from inside QEMU, so their cells stay null.
    const swBusy = a.stats.dataPath && b.stats.dataPath ? b.stats.dataPath.busySec - a.stats.dataPath.busySec : null;
    return {
      ...windowRates(ctx.run, windowSec, packets, bytes),
      avgLen,
      switchCpuNsPerPkt: perPacket(swCpu, packets, 1e9),
      switchCpuLoad: swCpu === null ? null : swCpu / windowSec,
      switchBusyNsPerPkt: perPacket(swBusy, packets, 1e9),
      switchBusyLoad: swBusy === null ? null : swBusy / windowSec,
      vm1CpuNsPerPkt: perPacket(delta('vm1'), packets, 1e9),
      vm1BusyNsPerPkt: null,
      vm1BusyLoad: null,
      vm2CpuNsPerPkt: perPacket(delta('vm2'), packets, 1e9),
      vm2BusyNsPerPkt: null,
      vm2BusyLoad: null,
      totalCpuNsPerPkt: perPacket(totalCpu, packets, 1e9),
      copiedBytesPerPkt: copied / packets,
      giftsPer1000: (gifts / packets) * 1000,
      drops: Object.values(dropReasons).reduce((x, y) => x + y, 0),
      dropReasons,
      extra: {
        zeroCopyPackets: names.reduce((n, p) => n + d(p, 'zeroCopy'), 0),
        copiedPackets: names.reduce((n, p) => n + d(p, 'copied'), 0),
        qemuCpuSec: { vm1: delta('vm1'), vm2: delta('vm2') },
      },
      warnings,
    };
  } finally {
    for (const c of children.reverse()) await c.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
