/**
 * Offloads between real guests (src/datapath/segment.ts): two QEMU guests
 * send a TCP stream through a pair switch with offloads on (TSO frames
 * larger than the MTU cross the switch whole), with `ports[].offloads:
 * false` (every frame MTU-sized), and to a guest that turned GUEST_TSO off
 * (the switch cuts each GSO frame; the receiver's count adds up). The
 * stream's md5 is checked on both sides every time, and the wall time of
 * each stream is printed for docs/PERFORMANCE.md (TCG: compare ratios).
 * Skipped when qemu-system-x86_64 is missing; a failure under CI=true.
 */
import path from 'node:path';
import t, { type Test } from 'tap';
import { requireProgram } from '../helpers/external';
import { counters, startSwitch, waitAttached, waitFor } from '../helpers/procs';
import { type GuestOptions, QEMU_BIN, QemuGuest, findQemu, guestImage } from '../helpers/qemu';

const skip = requireProgram(t, QEMU_BIN, 'apt-get install qemu-system-x86', findQemu());
if (!skip) t.before(() => {
  guestImage();
});

/** Stream size; ZCS_TCP_KIB=32768 for the docs/PERFORMANCE.md measurement (longer streams, steadier ratios). */
const KIB = Number(process.env.ZCS_TCP_KIB ?? 8192);

/** vm1 sends KIB KiB to vm2 over TCP; returns both ports' counters and the stream's wall time (ms, seen from here). */
async function stream(t: Test, ports: Record<string, unknown>[], vm2Device?: string) {
  const sw = await startSwitch(t, { ports, pairs: [['vm1', 'vm2']] });
  const common = { tcpPort: 5001, kib: KIB, timeoutS: 150 } as const;
  const boot = (o: GuestOptions): QemuGuest => {
    const g = QemuGuest.start(o);
    t.teardown(() => g.kill());
    return g;
  };
  const a = boot({ ...common, name: 'vm1', socket: path.join(sw.dir, 'vm1.sock'), ip: '10.0.0.1/24', peer: '10.0.0.2', roles: ['tcp-send'] });
  const b = boot({ ...common, name: 'vm2', socket: path.join(sw.dir, 'vm2.sock'), ip: '10.0.0.2/24', peer: '10.0.0.1', roles: ['tcp-recv'], device: vm2Device });
  await Promise.all([a.ready(), b.ready()]);
  await waitAttached(sw, 'vm1', 'vm2');
  await a.waitFor(/ZC SENDING/, 'the sender to start', 60_000);
  const started = Date.now();
  const [tx, rx] = await Promise.all([a.result('tcp-send', 120_000), b.result('tcp-recv', 120_000)]);
  const ms = Date.now() - started;
  t.ok(tx.ok, `vm1 sent: ${tx.line}`);
  t.ok(rx.ok, `vm2 received: ${rx.line}`);
  t.equal(rx.fields.bytes, String(KIB * 1024), `vm2 received exactly ${KIB} KiB`);
  t.equal(rx.fields.md5, tx.fields.md5, 'md5 of the received stream equals the sender\'s');
  t.equal(await a.poweredOff(), 0, 'vm1 powered off');
  t.equal(await b.poweredOff(), 0, 'vm2 powered off');
  await waitFor('both ports to be detached', async () => (await sw.stats()).ports.every((p) => !p.attached));
  const s = await sw.stats();
  const [c1, c2] = ['vm1', 'vm2'].map((n) => counters(s.ports.find((p) => p.name === n)!));
  for (const [n, c] of [['vm1', c1], ['vm2', c2]] as const) {
    t.notOk(Object.keys(c.drops).some((k) => k.startsWith('bad-')), `${n}: no bad headers or descriptors (${JSON.stringify(c.drops)})`);
  }
  t.comment(`${KIB} KiB vm1 -> vm2 in ${ms} ms (${((KIB * 8) / 1024 / (ms / 1000)).toFixed(1)} Mbit/s); vm1 gsoFrames=${c1.gsoFrames} rxPackets=${c1.rxPackets}; vm2 segmented=${c2.segmented}`);
  return { c1, c2, ms };
}

const times: Record<string, number> = {};

t.test('offloads on: TSO frames larger than the MTU cross the switch whole, the stream arrives intact', { skip }, async (t) => {
  const { c1, c2, ms } = await stream(t, [{ name: 'vm1' }, { name: 'vm2' }]);
  times.on = ms;
  t.ok(c1.gsoFrames > 0, `vm1 sent GSO frames (${c1.gsoFrames})`);
  // The sender's bytes per frame: well above the 1514-byte MTU frame when TSO is at work.
  t.ok(c1.rxBytes / c1.rxPackets > 1514, `vm1's frames average ${Math.round(c1.rxBytes / c1.rxPackets)} bytes`);
  t.equal(c2.segmented, 0, 'nothing cut: vm2 negotiated GUEST_TSO4');
});

t.test('offloads off (ports[].offloads false): MTU-sized frames only, the stream arrives intact', { skip }, async (t) => {
  const { c1, c2, ms } = await stream(t, [{ name: 'vm1', offloads: false }, { name: 'vm2', offloads: false }]);
  times.off = ms;
  t.equal(c1.gsoFrames, 0, 'no GSO frame');
  t.ok(c1.rxBytes / c1.rxPackets <= 1514, `vm1's frames average ${Math.round(c1.rxBytes / c1.rxPackets)} bytes`);
  t.equal(c2.segmented, 0);
  if (times.on !== undefined) t.comment(`offloads on / off wall time: ${times.on} / ${ms} ms = ${(ms / times.on).toFixed(2)}x faster with offloads`);
});

t.test('a guest without GUEST_TSO: the switch cuts every GSO frame, the count adds up, the stream arrives intact', { skip }, async (t) => {
  const { c1, c2 } = await stream(t, [{ name: 'vm1' }, { name: 'vm2' }], 'guest_tso4=off,guest_tso6=off,guest_ecn=off');
  t.ok(c1.gsoFrames > 0, `vm1 sent GSO frames (${c1.gsoFrames})`);
  t.ok(c2.segmented >= 2 * c1.gsoFrames, `vm2 got them cut (${c2.segmented} frames from ${c1.gsoFrames})`);
  // Every frame vm1 handed over reached vm2 as itself or as its segments.
  t.equal(c2.txPackets - c2.segmented, c1.rxPackets - c1.gsoFrames, 'vm2\'s frames = vm1\'s plain frames + the segments');
});
