/**
 * Back-pressure (src/datapath/flow-control.ts) through both forwarders over
 * simulated VMs' real rings: a frame whose one destination has no rx
 * buffer stays in the sender's tx ring, the queue is marked as waiting (no
 * work for the poll loop), the wait is bounded per destination by the
 * deadline, and a zero-copy receiver on a bridge waits for the swap rather
 * than being copied into. Deadlines here are long (a few hundred ms) where
 * a test must not reach them and reached by sleeping well past them where
 * it must, so a loaded machine cannot flip a result.
 */
import t, { type Test } from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { BridgeForwarder } from '../../src/datapath/bridge-forwarder';
import { resolvePolicy } from '../../src/config';
import { Drop } from '../../src/datapath/counters';
import { FlowControl } from '../../src/datapath/flow-control';
import { PairForwarder } from '../../src/datapath/pair-forwarder';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { BROADCAST, Rig, frame, mac, type Vm } from '../helpers/datapath-rig';

const HDR = VIRTIO_NET_HDR_SIZE;
/** Long enough never to pass during a test step. */
const LONG_MS = 5000;
/** Short enough to pass by sleeping SHORT_MS * 3. */
const SHORT_MS = 30;

/** A classic sender a and a classic receiver b (private memory only), paired. */
function classicPair(t: Test, waitMs: number): { a: Vm; b: Vm; fw: PairForwarder; flow: FlowControl } {
  const rig = new Rig({ bufCount: 16 });
  t.teardown(() => rig.close());
  const a = rig.addVm({ zeroCopy: false, privSlots: 16 });
  const b = rig.addVm({ zeroCopy: false, privSlots: 16 });
  const flow = new FlowControl(waitMs);
  return { a, b, fw: new PairForwarder(32, flow), flow };
}

t.test('pair: frames for a peer without copy targets stay in the sender\'s ring', async (t) => {
  const { a, b, fw, flow } = classicPair(t, LONG_MS);
  b.postCopyTarget(0);
  b.port.ingestRx();
  for (let k = 0; k < 3; k++) a.sendPrivate(k, frame(mac(2), mac(1), 64, k));
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 1, 'one frame consumed: the peer had one copy target');
  t.equal(a.devTx.availPending(), 2, 'the other two are still in the sender\'s tx ring');
  t.equal(a.port.txBlocked[0], 1, 'the queue is marked as waiting');
  t.ok(Number.isFinite(flow.wakeAt), 'a deadline for the poll loop');
  t.equal(a.port.setKicks(true), 0, 'waiting entries are not work to stay awake for');
  a.port.setKicks(false);
  t.equal(a.port.counters.totalDrops(), 0, 'nothing dropped');
  t.equal(a.flushAndReap().tx.length, 1, 'only the delivered frame completed');
  t.equal(b.flushAndReap().rx.length, 1);

  // The receiver posts again: the waiting frames go, in order.
  b.postCopyTarget(1);
  b.postCopyTarget(2);
  flow.startRound();
  b.port.ingestRx();
  t.equal(b.port.rxWaitSince, -1, 'a posting ends the wait');
  t.equal(fw.forward(a.port, 0, b.port), 2);
  t.equal(a.port.txBlocked[0], 0);
  const rx = b.flushAndReap().rx;
  t.equal(rx.length, 2);
  t.same(b.slotBytes(2, HDR, 64), frame(mac(2), mac(1), 64, 2), 'the last frame sent arrived last');
  t.equal(b.port.counters.txPackets, 3, 'all three delivered');
  t.equal(a.port.counters.totalDrops(), 0);
});

t.test('pair: past the deadline the frames are dropped as rx-wait-timeout, and a posting restarts the wait', async (t) => {
  const { a, b, fw, flow } = classicPair(t, SHORT_MS);
  for (let k = 0; k < 4; k++) a.sendPrivate(k, frame(mac(2), mac(1)));
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 0, 'waits');
  await sleep(SHORT_MS * 3);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 4, 'deadline passed: all consumed');
  t.equal(a.port.counters.drops[Drop.RxWaitTimeout], 4, 'counted under their own reason');
  t.equal(a.port.counters.drops[Drop.NoRxBuffer], 0);
  t.equal(a.flushAndReap().tx.length, 4, 'the sender got its descriptors back');
  t.equal(flow.wakeAt, Infinity, 'nothing waits any more');

  b.postCopyTarget(0);
  b.port.ingestRx();
  t.equal(b.port.rxWaitSince, -1, 'the receiver showed life');
  a.sendPrivate(0, frame(mac(2), mac(1)));
  a.sendPrivate(1, frame(mac(2), mac(1)));
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 1, 'one delivered, the next waits again');
  t.equal(a.port.counters.drops[Drop.RxWaitTimeout], 4, 'no new drop');
});

t.test('pair: rxWaitMs 0 drops at once (no back-pressure)', async (t) => {
  const { a, b, fw } = classicPair(t, 0);
  a.sendPrivate(0, frame(mac(2), mac(1)));
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.equal(a.port.counters.drops[Drop.NoRxBuffer], 1);
  t.equal(a.port.txBlocked[0], 0);
});

t.test('pair: a shared buffer for a classic peer waits for a copy target, then is copied and handed back', async (t) => {
  const rig = new Rig({ bufCount: 16 });
  t.teardown(() => rig.close());
  const a = rig.addVm({ partition: [0, 16] });
  const b = rig.addVm({ zeroCopy: false, privSlots: 4 });
  const flow = new FlowControl(LONG_MS);
  const fw = new PairForwarder(32, flow);
  const ret = a.postShared(3); // rule 2: posted on a's own rx before it is sent
  a.port.ingestRx();
  const f = frame(mac(2), mac(1), 64, 9);
  a.sendShared(3, f);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 0, 'waits: the classic peer has no copy target');
  t.same(a.flushAndReap().rx, [], 'the buffer is not handed back while it waits');
  b.postCopyTarget(0);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.same(b.slotBytes(0, HDR, 64), f, 'copied into the peer\'s own memory');
  t.same(a.flushAndReap().rx, [{ id: ret, len: HDR }], 'and the shared buffer came back to its sender');
  t.equal(rig.ledger.owner[3], a.id);
  t.equal(a.port.counters.totalDrops(), 0);
  t.equal(rig.ledgerProblems(), '');
});

const PER = 16;

/** Bridge: n zero-copy VMs with 16 buffers each, none posted yet; b (index 1) and c (index 2) learned. */
function bridge(t: Test, n: number, waitMs: number): { rig: Rig; vms: Vm[]; fw: BridgeForwarder; flow: FlowControl } {
  const rig = new Rig({ bufCount: 64, swap: true });
  t.teardown(() => rig.close());
  const vms: Vm[] = [];
  for (let i = 0; i < n; i++) vms.push(rig.addVm({ partition: [i * PER, PER], privSlots: 4 }));
  const flow = new FlowControl(waitMs);
  const fw = new BridgeForwarder(32, vms.map((v) => v.port), 64, 300_000, flow);
  const now = performance.now();
  for (let i = 1; i < n; i++) fw.tenancy.tables[0].learn((1 << 16) | 0x0200, i + 1, vms[i].id, now); // VLAN 1 (the default access VLAN) in the key
  return { rig, vms, fw, flow };
}

t.test('bridge: a zero-copy receiver without own buffers makes the frame wait for the swap, not a copy', async (t) => {
  const { rig, vms, fw, flow } = bridge(t, 2, LONG_MS);
  const [a, b] = vms;
  b.postCopyTarget(0);
  b.port.ingestRx();
  const f = frame(mac(2), mac(1), 80, 3);
  const tx = a.sendShared(0, f);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, performance.now()), 0, 'not consumed although a copy target was there');
  t.equal(a.port.txBlocked[0], 1);
  t.equal(a.port.counters.copied, 0);

  const y = PER + 5;
  b.postShared(y);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, performance.now()), 1, 'the swap once b posted an own buffer');
  t.equal(a.port.counters.zeroCopy, 1);
  t.equal(a.port.counters.copied, 0);
  t.equal(a.port.counters.totalDrops(), 0);
  t.equal(rig.ledger.owner[0], b.id, 'sent buffer now b\'s');
  t.equal(rig.ledger.owner[y], a.id, 'b\'s empty buffer now a\'s');
  t.same(a.flushAndReap().tx, [{ id: tx, len: 0 }]);
  t.same(b.bufBytes(0, HDR, 80), f);
  t.equal(rig.ledgerProblems(), '');
});

t.test('bridge: a stuck destination holds frames for others behind it only until its deadline', async (t) => {
  const { rig, vms, fw, flow } = bridge(t, 3, SHORT_MS);
  const [a, b, c] = vms;
  c.postShared(2 * PER);
  c.port.ingestRx();
  a.sendShared(0, frame(mac(2), mac(1))); // for b, which posts nothing
  a.sendShared(1, frame(mac(3), mac(1))); // for c, behind it
  flow.startRound();
  t.equal(fw.forward(a.port, 0, performance.now()), 0, 'the head waits for b; c\'s frame waits behind it');
  t.same(c.flushAndReap().rx, []);
  await sleep(SHORT_MS * 3);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, performance.now()), 2, 'b\'s deadline passed: its frame dropped, c\'s delivered');
  t.equal(a.port.counters.drops[Drop.RxWaitTimeout], 1);
  t.equal(c.flushAndReap().rx.length, 1, 'c got its frame');
  t.equal(a.port.counters.zeroCopy, 1);
  t.equal(rig.ledgerProblems(), '');
});

t.test('bridge: a flood never waits', async (t) => {
  const { vms, fw, flow } = bridge(t, 3, LONG_MS);
  const [a, , c] = vms;
  c.postShared(2 * PER);
  c.port.ingestRx();
  a.sendShared(0, frame(BROADCAST, mac(1)));
  flow.startRound();
  t.equal(fw.forward(a.port, 0, performance.now()), 1, 'consumed at once');
  t.equal(a.port.counters.drops[Drop.NoRxBuffer], 1, 'b had no buffer: counted');
  t.equal(c.flushAndReap().rx.length, 1, 'c got it');
  t.equal(flow.wakeAt, Infinity);
});

t.test('bridge: a frame that waits does not spend its sender\'s or its receiver\'s rate-limit tokens', async (t) => {
  const { rig, vms, fw, flow } = bridge(t, 2, LONG_MS);
  const [a, b] = vms;
  // 1000 frames/s with a 2 ms bucket: two tokens each; the clock stands still, so nothing refills.
  fw.tenancy.configure(a.id, resolvePolicy({ limit: { rx: { pps: 1000, burstMs: 2 } } }), 0);
  fw.tenancy.configure(b.id, resolvePolicy({ limit: { tx: { pps: 1000, burstMs: 2 } } }), 0);
  a.sendShared(0, frame(mac(2), mac(1)));
  for (let round = 0; round < 5; round++) {
    flow.startRound();
    t.equal(fw.forward(a.port, 0, 0), 0, `round ${round}: b has no buffer, the frame waits`);
  }
  b.postShared(PER);
  b.port.ingestRx();
  flow.startRound();
  t.equal(fw.forward(a.port, 0, 0), 1, 'delivered once b posted: the five waits took no tokens');
  t.equal(a.port.counters.drops[Drop.RxLimit], 0);
  t.equal(b.port.counters.drops[Drop.TxLimit], 0);
  t.equal(a.port.counters.zeroCopy, 1);
  t.equal(rig.ledgerProblems(), '');
});
