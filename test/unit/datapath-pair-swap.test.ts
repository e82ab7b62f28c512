/**
 * Unit tests for pair mode's swap exchange (forwarding.pairExchange "swap";
 * src/datapath/pair-forwarder.ts, src/datapath/swap.ts) over two simulated
 * VMs' real rings (docs/protocol.md, "Pair mode: swapping buffers"): the
 * swap and its ledger moves, back-pressure toward a peer without an empty
 * buffer, copies (classic peer, another sharing domain) with the sender
 * keeping its buffer, peer down, gifts handed back, refusals; the ledger's
 * conservation check and each VM's buffer count after every step.
 */
import t, { type Test } from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { Drop } from '../../src/datapath/counters';
import { FlowControl } from '../../src/datapath/flow-control';
import { PairForwarder } from '../../src/datapath/pair-forwarder';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { Rig, frame, mac, type Vm } from '../helpers/datapath-rig';

const HDR = VIRTIO_NET_HDR_SIZE;
const PER = 32;
/** Long enough never to pass during a test step. */
const LONG_MS = 5000;
/** Short enough to pass by sleeping SHORT_MS * 3. */
const SHORT_MS = 30;

interface SwapPair {
  rig: Rig;
  a: Vm;
  b: Vm;
  fw: PairForwarder;
  flow: FlowControl;
  /** Per VM: rx head -> the own empty buffer it posted there. */
  ownA: Map<number, number>;
  ownB: Map<number, number>;
  step: (msg: string) => void;
}

/** Two swap-mode VMs with 32 buffers each; each posts `posted` of its own on rx as empty buffers (none of the peer's). */
function swapPair(t: Test, opts: { posted?: number; waitMs?: number } = {}): SwapPair {
  const rig = new Rig({ bufCount: 2 * PER, swap: true });
  t.teardown(() => rig.close());
  const a = rig.addVm({ partition: [0, PER] });
  const b = rig.addVm({ partition: [PER, PER] });
  const posted = opts.posted ?? PER / 2;
  const ownA = new Map<number, number>();
  const ownB = new Map<number, number>();
  for (let k = 0; k < posted; k++) {
    ownA.set(a.postShared(PER - 1 - k), PER - 1 - k);
    ownB.set(b.postShared(2 * PER - 1 - k), 2 * PER - 1 - k);
  }
  a.port.ingestRx();
  b.port.ingestRx();
  const flow = new FlowControl(opts.waitMs ?? 0);
  const fw = new PairForwarder(32, flow, true);
  const step = (msg: string): void => {
    t.equal(rig.ledgerProblems(), '', `ledger conserved: ${msg}`);
    t.equal(rig.ledger.owned[a.id], PER, `a keeps its ${PER} buffers: ${msg}`);
    t.equal(rig.ledger.owned[b.id], PER, `b keeps its ${PER} buffers: ${msg}`);
  };
  step('start');
  return { rig, a, b, fw, flow, ownA, ownB, step };
}

t.test('swap: the frame lands in the peer\'s own empty buffer\'s descriptor, the empty buffer comes back on tx', async (t) => {
  const { rig, a, b, fw, ownA, ownB, step } = swapPair(t);
  const f = frame(mac(2), mac(1), 100, 7);
  const tx = a.sendShared(3, f);
  t.equal(fw.forward(a.port, 0, b.port), 1, 'one tx entry consumed');
  step('after the swap');
  const ar = a.flushAndReap();
  const br = b.flushAndReap();
  t.same(ar.rx, [], 'the sender posted nothing for it and gets nothing on rx');
  t.equal(ar.tx.length, 1);
  t.equal(ar.tx[0].id, tx);
  t.equal(br.rx.length, 1, 'one rx completion at the peer');
  const [rxHead] = [br.rx[0].id];
  t.equal(br.rx[0].len, HDR + 100, 'with the packet length');
  const empty = ownB.get(rxHead)!;
  t.ok(empty >= PER, 'in a descriptor where the peer had posted one of its own empty buffers');
  t.equal(b.win.indexAt(b.rx.ring.descAddr(rxHead)), 3, 'the peer\'s rx descriptor now names buffer 3');
  t.same(b.bufBytes(3, HDR, 100), f, 'the peer reads the frame in place');
  t.equal(a.win.indexAt(a.tx.ring.descAddr(tx)), empty, 'the sender\'s tx descriptor names the peer\'s empty buffer');
  t.equal(rig.ledger.owner[3], b.id, 'ledger: buffer 3 is the peer\'s');
  t.equal(rig.ledger.owner[empty], a.id, 'ledger: the empty buffer is the sender\'s');
  t.equal(a.port.counters.zeroCopy, 1);
  t.equal(a.port.counters.rxPackets, 1);
  t.equal(a.port.counters.rxBytes, 100);
  t.equal(b.port.counters.txPackets, 1);
  t.equal(b.port.counters.txBytes, 100);
  t.equal(a.port.counters.copied + a.port.counters.giftsIn + b.port.counters.giftsOut + a.port.counters.returned, 0, 'no copy, gift or return');
  t.equal(a.port.counters.totalDrops(), 0);
  t.equal(b.port.postings.ownCount(0), PER / 2 - 1, 'one own posting used');
  t.same(b.drainCalls(), [1, 0], 'peer called on rx');
  t.same(a.drainCalls(), [0, 1], 'sender called on tx');

  // And back: b sends buffer 3 to a; a's own empty buffer comes to b.
  const g = frame(mac(1), mac(2), 64, 9);
  const tx2 = b.sendShared(3, g);
  t.equal(fw.forward(b.port, 0, a.port), 1);
  step('after the reply');
  const ar2 = a.flushAndReap();
  t.equal(ar2.rx.length, 1);
  t.ok(ownA.has(ar2.rx[0].id), 'into one of a\'s own postings');
  t.equal(a.win.indexAt(a.rx.ring.descAddr(ar2.rx[0].id)), 3);
  t.same(a.bufBytes(3, HDR, 64), g);
  const back = b.flushAndReap().tx;
  t.equal(back[0].id, tx2);
  t.equal(rig.ledger.owner[b.win.indexAt(b.tx.ring.descAddr(tx2))], b.id, 'b got one of a\'s empty buffers, and owns it');
});

t.test('a burst of frames: each one swapped, every frame intact', async (t) => {
  const { a, b, fw, step } = swapPair(t);
  const frames = [0, 1, 2, 3, 4, 5, 6, 7].map((k) => frame(mac(2), mac(1), 60 + 10 * k, k));
  frames.forEach((f, k) => a.sendShared(k, f));
  t.equal(fw.forward(a.port, 0, b.port), 8);
  step('after the burst');
  const rx = b.flushAndReap().rx;
  t.equal(rx.length, 8);
  rx.forEach((u, k) => {
    const buf = b.win.indexAt(b.rx.ring.descAddr(u.id));
    t.equal(buf, k, `completion ${k} names buffer ${k} (ring order kept)`);
    t.same(b.bufBytes(buf, HDR, u.len - HDR), frames[k], `frame ${k} intact`);
  });
  const got = new Set(a.flushAndReap().tx.map((u) => a.win.indexAt(a.tx.ring.descAddr(u.id))));
  t.equal(got.size, 8, 'eight different empty buffers back');
  for (const y of got) t.ok(y >= PER, `buffer ${y} was b's`);
});

t.test('no own empty buffer at the peer: the frame waits, then is swapped when the peer posts', async (t) => {
  const { rig, a, b, fw, flow, step } = swapPair(t, { posted: 0, waitMs: LONG_MS });
  b.postCopyTarget(0); // a copy target is no reason to copy a frame that can be swapped
  b.port.ingestRx();
  const f = frame(mac(2), mac(1), 80, 4);
  const tx = a.sendShared(5, f);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 0, 'nothing consumed');
  t.equal(a.devTx.availPending(), 1, 'the frame stays in the sender\'s ring');
  t.equal(a.port.txBlocked[0], 1, 'the queue is marked as waiting');
  t.ok(Number.isFinite(flow.wakeAt), 'a deadline for the poll loop');
  t.equal(a.flushAndReap().tx.length, 0);
  step('while it waits');
  const head = b.postShared(40);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 1, 'the posting lets it go');
  step('after the swap');
  t.same(b.flushAndReap().rx, [{ id: head, len: HDR + 80 }]);
  t.same(b.bufBytes(5, HDR, 80), f);
  t.equal(a.flushAndReap().tx[0].id, tx);
  t.equal(a.win.indexAt(a.tx.ring.descAddr(tx)), 40);
  t.equal(rig.ledger.owner[40], a.id);
  t.equal(a.port.counters.zeroCopy, 1);
  t.equal(a.port.counters.copied, 0);
  t.equal(a.port.counters.totalDrops(), 0);
});

t.test('past the deadline: rx-wait-timeout, the sender keeps its buffer', async (t) => {
  const { rig, a, b, fw, flow, step } = swapPair(t, { posted: 0, waitMs: SHORT_MS });
  const tx = a.sendShared(5, frame(mac(2), mac(1)));
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 0, 'waits');
  await sleep(SHORT_MS * 3);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 1, 'deadline passed: consumed');
  step('after the timeout');
  t.equal(a.port.counters.drops[Drop.RxWaitTimeout], 1, 'counted');
  const done = a.flushAndReap();
  t.equal(done.tx[0].id, tx);
  t.equal(a.win.indexAt(a.tx.ring.descAddr(tx)), 5, 'the tx descriptor is completed unchanged');
  t.same(done.rx, [], 'no return posting needed');
  t.equal(rig.ledger.owner[5], a.id);
  t.same(b.flushAndReap().rx, []);
});

t.test('past the deadline with a copy target: copied, the sender keeps its buffer', async (t) => {
  const { rig, a, b, fw, flow, step } = swapPair(t, { posted: 0, waitMs: SHORT_MS });
  const f = frame(mac(2), mac(1), 90, 2);
  const tx = a.sendShared(6, f);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 0, 'waits for an empty buffer');
  const slot = b.postCopyTarget(0);
  b.port.ingestRx();
  // The posting restarted the wait: let it run out again.
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 0, 'a copy target does not end the wait for the swap');
  await sleep(SHORT_MS * 3);
  flow.startRound();
  t.equal(fw.forward(a.port, 0, b.port), 1);
  step('after the copy');
  t.same(b.flushAndReap().rx, [{ id: slot, len: HDR + 90 }]);
  t.same(b.slotBytes(0, HDR, 90), f);
  t.equal(a.flushAndReap().tx[0].id, tx);
  t.equal(a.win.indexAt(a.tx.ring.descAddr(tx)), 6, 'unchanged');
  t.equal(rig.ledger.owner[6], a.id);
  t.equal(a.port.counters.copied, 1);
  t.equal(a.port.counters.totalDrops(), 0);
});

t.test('rxWaitMs 0: no own buffer and no copy target is dropped at once, the sender keeps its buffer', async (t) => {
  const { rig, a, b, fw, step } = swapPair(t, { posted: 0 });
  const tx = a.sendShared(7, frame(mac(2), mac(1)));
  t.equal(fw.forward(a.port, 0, b.port), 1);
  step('after the drop');
  t.equal(a.port.counters.drops[Drop.NoRxBuffer], 1);
  t.equal(a.port.txBlocked[0], 0);
  t.equal(a.flushAndReap().tx[0].id, tx);
  t.equal(rig.ledger.owner[7], a.id);
});

t.test('a classic peer gets a copy; the sender keeps its buffer', async (t) => {
  const rig = new Rig({ bufCount: 2 * PER, swap: true });
  t.teardown(() => rig.close());
  const a = rig.addVm({ partition: [0, PER] });
  const b = rig.addVm({ zeroCopy: false, privSlots: 4 });
  const fw = new PairForwarder(32, new FlowControl(LONG_MS), true);
  const slot = b.postCopyTarget(1);
  b.port.ingestRx();
  const f = frame(mac(2), mac(1), 70, 5);
  const tx = a.sendShared(2, f);
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.same(b.flushAndReap().rx, [{ id: slot, len: HDR + 70 }]);
  t.same(b.slotBytes(1, HDR, 70), f, 'copied into the peer\'s own memory');
  t.equal(a.flushAndReap().tx[0].id, tx);
  t.equal(a.win.indexAt(a.tx.ring.descAddr(tx)), 2, 'tx completed unchanged');
  t.equal(rig.ledger.owner[2], a.id);
  t.equal(rig.ledger.owned[a.id], PER);
  t.equal(a.port.counters.copied, 1);
  t.equal(a.port.counters.zeroCopy, 0);
  t.equal(rig.ledgerProblems(), '');
});

t.test('a peer in another sharing domain gets a copy, never a swap', async (t) => {
  const rig = new Rig({ bufCount: 2 * PER, swap: true });
  t.teardown(() => rig.close());
  const other = rig.addDomain('d1');
  const a = rig.addVm({ partition: [0, PER] });
  const b = rig.addVm({ partition: [PER, PER], domain: other });
  const fw = new PairForwarder(32, new FlowControl(0), true);
  b.postShared(40); // its own empty buffer, of its own region
  const slot = b.postCopyTarget(0);
  b.port.ingestRx();
  t.equal(b.port.postings.ownCount(0), 1);
  const f = frame(mac(2), mac(1), 64, 8);
  const tx = a.sendShared(1, f);
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.same(b.flushAndReap().rx, [{ id: slot, len: HDR + 64 }], 'into the copy target');
  t.same(b.slotBytes(0, HDR, 64), f);
  t.equal(a.win.indexAt(a.tx.ring.descAddr(tx)), 1, 'tx completed unchanged');
  t.equal(rig.ledger.owner[1], a.id);
  t.equal(other.ledger.owner[40], b.id);
  t.equal(a.port.counters.copied, 1);
  t.equal(rig.ledgerProblems(), '');
});

t.test('peer down: peer-down, the sender keeps its buffer', async (t) => {
  const { rig, a, b, fw, step } = swapPair(t);
  b.down();
  const tx = a.sendShared(4, frame(mac(2), mac(1)));
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.equal(a.port.counters.drops[Drop.PeerDown], 1);
  t.equal(a.flushAndReap().tx[0].id, tx);
  t.equal(a.win.indexAt(a.tx.ring.descAddr(tx)), 4);
  step('after the drop');
  t.equal(rig.ledger.owner[4], a.id);
  // No peer at all: the same.
  a.sendShared(4, frame(mac(2), mac(1)));
  t.equal(fw.forward(a.port, 0, null), 1);
  t.equal(a.port.counters.drops[Drop.PeerDown], 2);
});

t.test('gifts mean nothing with swaps: handed straight back in the tx completion', async (t) => {
  const { rig, a, b, fw, step } = swapPair(t);
  const tx = a.sendGift([10, 11, 12]);
  t.equal(fw.forward(a.port, 0, b.port), 1);
  step('after the gift');
  t.same(a.flushAndReap().tx, [{ id: tx, len: 0 }]);
  t.same(b.flushAndReap().rx, [], 'nothing reaches the peer');
  t.equal(a.port.counters.giftsIn, 3);
  t.equal(b.port.counters.giftsOut, 0);
  for (const x of [10, 11, 12]) t.equal(rig.ledger.owner[x], a.id);
  // A link the sender does not own is counted; the chain still completes.
  const tx2 = a.sendGift([13, 40]);
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.equal(a.port.counters.drops[Drop.NotOwner], 1);
  t.equal(a.port.counters.giftsIn, 4);
  t.same(a.flushAndReap().tx, [{ id: tx2, len: 0 }]);
  step('after the bad gift');
});

t.test('refusals: not-owner and too-short move nothing', async (t) => {
  const { rig, a, b, fw, step } = swapPair(t);
  a.sendShared(40, frame(mac(2), mac(1)));
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.equal(a.port.counters.drops[Drop.NotOwner], 1);
  t.equal(rig.ledger.owner[40], b.id);
  a.sendShared(8, new Uint8Array(10));
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.equal(a.port.counters.drops[Drop.TooShort], 1);
  t.equal(a.flushAndReap().tx.length, 2);
  t.same(b.flushAndReap().rx, []);
  t.equal(b.port.postings.ownCount(0), PER / 2, 'no own posting used');
  step('after the refusals');
});

t.test('a stale own posting (the receiver sent that buffer after posting it) is completed empty, never swapped', async (t) => {
  const { rig, a, b, fw, ownB, step } = swapPair(t, { posted: 2 });
  // b's two own postings: buffers 63 (oldest) and 62. b sends 63 to a (breaking rule 1 of the swap: it is still posted).
  const stale = [...ownB.entries()].find(([, buf]) => buf === 63)![0];
  b.sendShared(63, frame(mac(1), mac(2), 64, 1));
  t.equal(fw.forward(b.port, 0, a.port), 1);
  t.equal(rig.ledger.owner[63], a.id, 'a owns 63 now');
  step('after b sent its posted buffer');
  // a sends to b: the stale posting of 63 must not be used (that would give a buffer 63 a second time).
  const tx = a.sendShared(2, frame(mac(2), mac(1), 64, 2));
  t.equal(fw.forward(a.port, 0, b.port), 1);
  step('after the swap past the stale posting');
  const rx = b.flushAndReap().rx;
  t.same(rx.find((u) => u.id === stale), { id: stale, len: 0 }, 'the stale posting completed empty');
  t.equal(b.port.counters.drops[Drop.BadRxDesc], 1, 'counted on b');
  t.equal(a.win.indexAt(a.tx.ring.descAddr(tx)), 62, 'a got b\'s valid empty buffer, 62');
  t.equal(rig.ledger.owner[62], a.id);
  t.equal(rig.ledger.owner[2], b.id);
  // With no valid posting left at all the frame is copied or dropped, never swapped with a stale one.
  b.postShared(61);
  b.port.ingestRx();
  b.sendShared(61, frame(mac(1), mac(2), 64, 3));
  t.equal(fw.forward(b.port, 0, a.port), 1);
  const tx2 = a.sendShared(3, frame(mac(2), mac(1), 64, 4));
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.equal(a.win.indexAt(a.tx.ring.descAddr(tx2)), 3, 'tx completed unchanged: a keeps buffer 3');
  t.equal(a.port.counters.drops[Drop.NoRxBuffer], 1, 'no copy target either: no-rx-buffer');
  t.equal(b.port.counters.drops[Drop.BadRxDesc], 2);
  step('after the last stale posting');
});
