/**
 * Offloads between real guests (src/datapath/segment.ts): two QEMU guests
 * send a TCP stream through a pair switch with offloads on (TSO frames
 * larger than the MTU cross the switch whole), with `ports[].offloads:
 * false` (every frame MTU-sized), and to a guest that turned GUEST_TSO off
 * (the switch cuts each GSO frame; the receiver's count adds up). The
 * stream's md5 is checked on both sides every time, and the wall time of
 * each stream is printed for docs/PERFORMANCE.md (TCG: compare ratios).
 * QEMU's host_mtu reaches the switch as NET_SET_MTU (accepted up to the
 * port's mtu, refused above it).
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

/**
 * host_mtu: QEMU offers VIRTIO_NET_F_MTU to the guest and tells the switch with
 * NET_SET_MTU; the guest's eth0 comes up at that MTU, so 8000-byte pings cross
 * the switch as single 8042-byte frames instead of IP fragments. A host_mtu
 * above the port's `mtu` is refused by the switch (and QEMU keeps vhost stopped).
 */
t.test('host_mtu=9000 on ports with mtu 9000: the guests use it, 8000-byte pings cross unfragmented', { skip }, async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'vm1', mtu: 9000 }, { name: 'vm2', mtu: 9000 }], pairs: [['vm1', 'vm2']], log: { level: 'debug' } });
  const boot = (o: GuestOptions): QemuGuest => {
    const g = QemuGuest.start(o);
    t.teardown(() => g.kill());
    return g;
  };
  const device = 'host_mtu=9000';
  const a = boot({ name: 'vm1', socket: path.join(sw.dir, 'vm1.sock'), ip: '10.0.0.1/24', peer: '10.0.0.2', roles: ['ping'], count: 3, size: 8000, device });
  const b = boot({ name: 'vm2', socket: path.join(sw.dir, 'vm2.sock'), ip: '10.0.0.2/24', roles: ['wait'], device });
  await Promise.all([a.ready(), b.ready()]);
  const p = await a.result('ping', 90_000);
  t.ok(p.ok, `8000-byte pings answered: ${p.line}`);
  t.equal(p.fields.recv, '3', 'all three came back');
  const set = sw.stderr().split('\n').filter((l) => l.includes('"req":"NET_SET_MTU"'));
  t.ok(set.length >= 2, `both guests' QEMU sent NET_SET_MTU (${set.length} logged)`);
  const c1 = counters(await sw.port('vm1'));
  // Fragments would be at most 1514 bytes on the wire; the echo requests are 8042.
  t.ok(c1.rxBytes / c1.rxPackets > 1514, `vm1's frames average ${Math.round(c1.rxBytes / c1.rxPackets)} bytes: no fragments`);
  t.notOk(Object.keys(c1.drops).includes('over-mtu'), `nothing dropped as over-mtu (${JSON.stringify(c1.drops)})`);
});

t.test('host_mtu=9000 on a port with mtu 1500: the switch refuses NET_SET_MTU, naming the port\'s mtu', { skip }, async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] });
  const g = QemuGuest.start({ name: 'vm1', socket: path.join(sw.dir, 'vm1.sock'), ip: '10.0.0.1/24', roles: ['wait'], timeoutS: 30, device: 'host_mtu=9000' });
  t.teardown(() => g.kill());
  const line = await waitFor('the refusal in the switch log', () => sw.stderr().split('\n').find((l) => l.includes('"req":"NET_SET_MTU"') && /9000/.test(l)), 60_000);
  t.match(line, /mtu 9000 is outside 68\.\.1500 \(the port's mtu\)/, 'the refusal names the asked MTU and the port\'s limit');
  // QEMU 7.2 then leaves vhost stopped and says why.
  const said = await g.waitFor(/(\d+)Bytes MTU not supported by the backend/, 'QEMU to report the refusal', 30_000);
  t.equal(said[1], '9000', 'QEMU reported the refused MTU');
  t.equal(sw.child.exitCode, null, 'the switch is alive');
});
