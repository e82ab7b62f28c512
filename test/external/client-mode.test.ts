/**
 * Client-mode ports (`ports[].connect`): the front-end listens and the
 * switch connects to it, retrying until it is there and after it goes away.
 *  - DPDK testpmd virtio-user `server=1` (testpmd listens) in txonly on a
 *    client-mode port, a guest-driver sink on its pair: exact accounting;
 *    testpmd killed and started again: the switch reconnects, traffic flows.
 *  - QEMU `-chardev socket,server=on,wait=off` on a client-mode port: the
 *    guest pings a guest-driver responder through the switch.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { type Testpmd, startTestpmd, testpmdPath, endTxonlyRun } from '../helpers/dpdk';
import { requireProgram } from '../helpers/external';
import { NetResponder } from '../helpers/net';
import { counters, startSwitch, tempDir, vm, waitAttached, waitFor, waitForLog } from '../helpers/procs';
import { QEMU_BIN, QemuGuest, findQemu } from '../helpers/qemu';

const skipDpdk = requireProgram(t, 'dpdk-testpmd', 'apt-get install dpdk (or set ZC_DPDK_TESTPMD)', testpmdPath());
const skipQemu = requireProgram(t, QEMU_BIN, 'apt-get install qemu-system-x86', findQemu());

const sumDrops = (c: { drops: Record<string, number> }) => Object.values(c.drops).reduce((a, b) => a + b, 0);

/** testpmd txonly on a virtio-user port that listens at `sock` (server=1): it waits there for the switch to connect. */
const txonly = (sock: string): Promise<Testpmd> =>
  startTestpmd(`net_virtio_user0,path=${sock},server=1,queues=1,queue_size=256`, [
    '--forward-mode=txonly', '--mbuf-size=2048', '--txpkts=128', '--txd=256', '--rxd=256',
  ]);

t.test('testpmd virtio-user server=1 on a client-mode port -> guest-driver sink; killed and restarted: reconnected', { skip: skipDpdk }, async (t) => {
  // testpmd's socket is its own, outside the switch's socketDir.
  const pmdDir = tempDir(t);
  const sock = path.join(pmdDir, 'pmd.sock');
  const sw = await startSwitch(t, { ports: [{ name: 'vm1', connect: sock }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] });
  t.match(sw.stdout(), `port vm1: connects to ${sock}`, 'the banner names the front-end\'s socket');
  t.notOk(fs.existsSync(path.join(sw.dir, 'vm1.sock')), 'a client-mode port has no socket of its own');
  t.equal((await sw.port('vm1')).socket, `connect:${sock}`, 'stats show the connect path');
  const sink = vm(sw, 'vm2', ['--mode', 'sink']);
  t.teardown(() => sink.child.kill('SIGKILL'));
  await waitAttached(sw, 'vm2');
  // Nobody listens yet: the switch retries (logged once per outage, not per attempt).
  await waitFor('the switch to report the front-end missing', () => sw.stderr().includes('cannot connect to the front-end'), 5000);

  // Round 1: testpmd appears, the switch connects; then testpmd is killed (no goodbye on the ring).
  const pmd1 = await txonly(sock);
  t.teardown(() => pmd1.kill());
  await waitFor('packets at the sink (round 1)', async () => counters(await sw.port('vm2')).txPackets > 20000, 30000);
  pmd1.kill();
  await pmd1.exited;
  await waitFor('vm1 to detach after testpmd was killed', async () => !(await sw.port('vm1')).attached);
  const before = await sw.stats();
  const b1 = counters(before.ports.find((p) => p.name === 'vm1')!);
  const b2 = counters(before.ports.find((p) => p.name === 'vm2')!);
  const consumedBefore = b1.rxPackets + sumDrops(b1);
  t.ok(b2.txPackets > 20000, `round 1 delivered ${b2.txPackets} frames`);
  // A killed testpmd leaves its socket file behind (nobody listening): the switch's attempts are refused until a new one binds.
  fs.rmSync(sock, { force: true });

  // Round 2: testpmd again at the same path: the switch reconnects by itself and traffic flows again.
  const pmd2 = await txonly(sock);
  t.teardown(() => pmd2.kill());
  await waitAttached(sw, 'vm1');
  await waitFor('packets at the sink (round 2)', async () => counters(await sw.port('vm2')).txPackets > b2.txPackets + 20000, 30000);
  // The log up to round 2: once testpmd 2 quits below, the switch starts a third outage of its own.
  const logBeforeEnd = sw.stderr();
  const { st, k, s, c1, c2 } = await endTxonlyRun(sw, pmd2, sink);
  t.equal([...sw.stderr().matchAll(/client-mode port: connected to the front-end/g)].length, 2, 'the switch connected twice: once per testpmd');
  // Outages: before testpmd 1 (the switch starts first), and between the two
  // testpmds unless the second was listening before the switch's first retry.
  const outages = [...logBeforeEnd.matchAll(/cannot connect to the front-end/g)].length;
  const attempts = [...logBeforeEnd.matchAll(/"failedAttempts":(\d+)[^\n]*client-mode port: connected/g)].reduce((n, m) => n + Number(m[1]), 0);
  t.ok(outages >= 1 && outages <= 2, `each outage logged once (${outages} logged), not once per attempt`);
  t.ok(attempts >= outages, `${attempts} failed attempts behind those ${outages} log lines`);

  // Round 2's accounting, exact (as test/external/dpdk.test.ts): what the switch consumed from
  // testpmd's tx ring since round 1 ended, plus what was still on that ring when testpmd stopped it.
  const stops = [...sw.stderr().matchAll(/"port":"vm1","vring":1,"base":(\d+),"msg":"vring stopped"/g)];
  t.ok(stops.length > 0, 'the switch logged testpmd stopping its tx ring (GET_VRING_BASE)');
  const base = Number(stops[stops.length - 1]?.[1]);
  const consumed = c1.rxPackets + sumDrops(c1) - consumedBefore;
  t.equal(consumed % 65536, base, `the ring index at stop (${base}) is what the switch consumed in round 2 (${consumed})`);
  const onRing = (st.txPackets - base) & 0xffff;
  t.ok(onRing <= 256, `what was left on testpmd's ring fits the ring (${onRing} of 256)`);
  t.equal(consumed + onRing, st.txPackets, `round 2: sent = delivered + counted drops + left on the ring (${consumed} + ${onRing})`);
  t.ok(st.txPackets > 20000, `testpmd sent ${st.txPackets} packets in round 2`);
  t.same(Object.keys(c1.drops).filter((r) => r !== 'rx-wait-timeout' && r !== 'peer-down'), [], `only capacity drops: ${JSON.stringify(c1.drops)}`);
  t.equal(c2.txPackets, c1.rxPackets, 'everything the switch took from testpmd and did not drop reached vm2');
  t.equal(k.summary.received, c2.txPackets, 'the sink counted exactly what the switch delivered, both rounds');
  t.equal(k.summary.bytesReceived, k.summary.received * 128, 'each delivered frame is 128 bytes');
  t.ok(s.ledger.ok, 'ledger balanced');
});

t.test('QEMU chardev server=on on a client-mode port: the guest pings a guest-driver responder', { skip: skipQemu }, async (t) => {
  const qDir = tempDir(t);
  const sock = path.join(qDir, 'qemu.sock');
  const sw = await startSwitch(t, { ports: [{ name: 'vm1', connect: sock }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] });
  let host: NetResponder | null = null;
  const drv = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm2.sock'), onClose: () => host?.stop() });
  const h = new NetResponder(drv, '02:00:00:00:00:02', '10.0.0.2');
  host = h;
  h.start();
  t.teardown(() => {
    h.stop();
    drv.close();
  });
  await waitAttached(sw, 'vm2');
  const g = QemuGuest.start({ name: 'vm1', socket: sock, server: true, ip: '10.0.0.1/24', peer: '10.0.0.2', roles: ['ping'], count: 3, timeoutS: 90 });
  t.teardown(() => g.kill());
  await g.ready();
  const p = await g.result('ping');
  t.ok(p.ok, `the guest (QEMU listening) pinged the guest-driver VM through the switch: ${p.line}`);
  t.ok(h.echoAnswered >= 3, `the responder answered its echo requests (${h.echoAnswered})`);
  t.ok(await waitForLog(sw, /client-mode port: connected to the front-end/), 'the switch connected to QEMU');
  t.equal(await g.poweredOff(), 0, 'the guest powered off');
  const s = await sw.stats();
  t.ok(s.ledger.ok, 'ledger balanced');
});
