/**
 * The guest driver running inside real QEMU 7.2 guests (TCG): each guest
 * (scripts/guest-image/build-node.sh: Node and the built project) runs
 * `zcswitch vm --pci` on its virtio-net-pci device from user space, with the
 * sharing domain's region as an ivshmem-plain BAR (the file the switch
 * publishes) and its rings in a second, private ivshmem device. The switch
 * recognises the region in QEMU's memory table and moves the frames
 * zero-copy (guests whose kernel drives the device keep the copy path with
 * the BAR present: test/external/qemu.test.ts). Skipped when qemu-system-x86_64 is not installed; under CI=true
 * that is a failure instead (test/README.md).
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { regionSizeFor } from '../../src/shm/region-header';
import { requireProgram } from '../helpers/external';
import { counters, startSwitch, tempDir, vm, waitAttached, waitFor } from '../helpers/procs';
import { QEMU_BIN, QemuGuest, findQemu, nodeGuestImage } from '../helpers/qemu';

const BUF_COUNT = 512;
const BUF_SIZE = 2048;
const REGION_SIZE = regionSizeFor(BUF_COUNT, BUF_SIZE);
const PAIR = { ports: [{ name: 'a' }, { name: 'b' }], pairs: [['a', 'b']], sharedBuffers: { bufCount: BUF_COUNT, bufSize: BUF_SIZE } };
/** Frames one guest sends the other (about 5 kpps under TCG here: well under two minutes). */
const FRAMES = 100_000;

const skip = requireProgram(t, QEMU_BIN, 'apt-get install qemu-system-x86', findQemu());
if (!skip) t.before(() => {
  nodeGuestImage(); // build (or reuse) the image before any timing starts
});

/** A guest running `zcswitch vm --pci --port <port> <args>`, killed in teardown. */
function driverGuest(t: Test, dir: string, port: string, args: string[]): QemuGuest {
  const ringFile = path.join(tempDir(t), `${port}.rings`);
  fs.writeFileSync(ringFile, Buffer.alloc(0));
  fs.truncateSync(ringFile, 1 << 20);
  const g = QemuGuest.startDriver({
    socket: path.join(dir, `${port}.sock`), regionFile: path.join(dir, 'pair:a+b.region'), regionSize: REGION_SIZE, ringFile,
    vmArgs: ['--port', port, '--json', '--quiet', ...args], name: `guest ${port}`,
  });
  t.teardown(() => g.kill());
  return g;
}

t.test(`two QEMU guests, the driver inside each: ${FRAMES} frames one way, zero-copy, gifts, ledger balanced`, { skip, timeout: 420_000 }, async (t) => {
  const sw = await startSwitch(t, PAIR);
  const sink = driverGuest(t, sw.dir, 'b', ['--mode', 'sink', '--count', String(FRAMES), '--duration', '300']);
  // Booting and starting Node under TCG takes tens of seconds. The gen may start before the
  // sink is up: the switch holds its frames until the sink posts buffers, so none is lost either way.
  await waitFor('guest b to attach', async () => (await sw.port('b')).ready, 180_000);
  const gen = driverGuest(t, sw.dir, 'a', ['--mode', 'gen', '--count', String(FRAMES)]);
  const [g, s] = await Promise.all([gen.vmResult(), sink.vmResult()]);
  t.ok(g.ok, `gen guest: driver exit ${g.exit}`);
  t.ok(s.ok, `sink guest: driver exit ${s.exit}`);
  t.equal(g.summary.sent, FRAMES, 'gen sent every frame');
  t.equal(s.summary.received, FRAMES, 'sink received every frame');
  t.equal(s.summary.verified, FRAMES, 'every frame verified inside the sink guest');
  t.equal(s.summary.lost + s.summary.dup + s.summary.badLength + s.summary.badChecksum, 0, 'none lost, duplicated or bad');
  t.ok(s.summary.giftsSent > 0 && g.summary.giftsReceived > 0, `one-way traffic flowed through gifts (${s.summary.giftsSent} given back)`);
  t.comment(`rate under TCG: gen ${Math.round(g.summary.txPps)} pps, sink ${Math.round(s.summary.rxPps)} pps`);
  const st = await sw.stats();
  const a = counters(st.ports.find((p) => p.name === 'a')!);
  const b = counters(st.ports.find((p) => p.name === 'b')!);
  t.equal(a.zeroCopy, FRAMES, 'the switch moved every frame zero-copy');
  t.equal(a.copiedBytes + b.copiedBytes, 0, '0 payload bytes copied');
  t.same(a.drops, {}, 'a: no drops');
  t.same(b.drops, {}, 'b: no drops');
  await Promise.all([gen.poweredOff(60_000), sink.poweredOff(60_000)]);
  await waitFor('both guests detached', async () => (await sw.stats()).ports.every((p) => !p.ready), 15_000);
  const end = await sw.stats();
  t.ok(end.ledger.ok, `ledger balanced: ${end.ledger.problems.join('; ')}`);
  t.equal(end.sharedBuffers.pool, end.sharedBuffers.bufCount, 'every buffer back in the pool after both guests left');
});

// Both pair exchanges (forwarding.pairExchange). A swapped frame waits for the receiver's empty buffer, and a
// TCG guest polling every millisecond may not post one within the default rxWaitMs: a long wait keeps this about the exchange.
for (const exchange of ['gift', 'swap'] as const) t.test(`${exchange}: a QEMU guest running the driver and a zcswitch vm on the host exchange frames zero-copy`, { skip, timeout: 300_000 }, async (t) => {
  const sw = await startSwitch(t, { ...PAIR, forwarding: { pairExchange: exchange, rxWaitMs: 5000 } });
  const n = 10_000;
  const echo = vm(sw, 'b', ['--mode', 'echo', '--count', String(n), '--duration', '240']);
  await waitAttached(sw, 'b');
  const gen = driverGuest(t, sw.dir, 'a', ['--mode', 'gen', '--count', String(n), '--expect', String(n), '--linger', '30000']);
  const g = await gen.vmResult();
  const e = await echo.result;
  t.ok(g.ok, `gen guest: driver exit ${g.exit}`);
  t.equal(e.code, 0, `host echo exited cleanly: ${e.stderr}`);
  t.equal(e.summary.verified, n, 'every frame verified on the host');
  t.equal(g.summary.verified, n, 'every echo verified inside the guest');
  const st = await sw.stats();
  for (const p of st.ports) {
    const c = counters(p);
    t.equal(c.zeroCopy, n, `${p.name}: every frame zero-copy`);
    t.equal(c.copiedBytes, 0, `${p.name}: 0 payload bytes copied`);
  }
});
