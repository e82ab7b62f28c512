/**
 * Unit tests for PairForwarder (src/datapath/pair-forwarder.ts) over two
 * simulated VMs' real rings (docs/protocol.md, ownership rules 1-5): zero-copy
 * delivery, the copy path and returns, gift chains, refusals; the ledger's
 * conservation check after every step.
 */
import t, { type Test } from 'tap';
import { Drop } from '../../src/datapath/counters';
import { PairForwarder } from '../../src/datapath/pair-forwarder';
import { USED_LEN_RETURNED, VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED } from '../../src/vhost/protocol';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { Rig, type VmOptions, frame, mac, type Vm } from '../helpers/datapath-rig';

const HDR = VIRTIO_NET_HDR_SIZE;

/** Two VMs with 32 buffers each, each posting every buffer of the other's (rule 2). */
function pair(t: Test, aOpts: VmOptions = {}): { rig: Rig; a: Vm; b: Vm; fw: PairForwarder; step: (msg: string) => void } {
  const rig = new Rig({ bufCount: 64 });
  t.teardown(() => rig.close());
  const { a, b } = rig.crossPosted(32, aOpts);
  const fw = new PairForwarder(32);
  const step = (msg: string): void => {
    t.equal(rig.ledgerProblems(), '', `ledger conserved: ${msg}`);
  };
  step('start');
  return { rig, a, b, fw, step };
}

t.test('zero-copy delivery completes the peer\'s posting of the same buffer', async (t) => {
  const { rig, a, b, fw, step } = pair(t);
  const f = frame(mac(2), mac(1), 100, 7);
  a.postShared(3); // its own rx posting before sending (rule 2)
  a.port.ingestRx();
  const bHead = b.port.postings.sharedPosting(3) & 0xffff;
  const tx = a.sendShared(3, f);
  t.equal(fw.forward(a.port, 0, b.port), 1, 'one tx entry consumed');
  step('after delivery');
  const ar = a.flushAndReap();
  const br = b.flushAndReap();
  t.same(ar.tx, [{ id: tx, len: 0 }], 'sender\'s tx completed');
  t.same(ar.rx, [], 'sender\'s own posting of 3 not touched');
  t.same(br.rx, [{ id: bHead, len: HDR + 100 }], 'peer\'s posting of buffer 3 completed with the packet length');
  t.same(b.bufBytes(3, HDR, 100), f, 'the peer reads the frame in place');
  t.equal(rig.ledger.owner[3], b.id, 'ledger: buffer 3 is the peer\'s');
  t.equal(rig.ledger.owned[a.id], 31);
  t.equal(rig.ledger.owned[b.id], 33);
  t.equal(a.port.counters.zeroCopy, 1);
  t.equal(a.port.counters.rxPackets, 1);
  t.equal(a.port.counters.rxBytes, 100);
  t.equal(b.port.counters.txPackets, 1);
  t.equal(b.port.counters.txBytes, 100);
  t.equal(a.port.counters.copied, 0);
  t.equal(a.port.counters.totalDrops(), 0);
  t.notOk(b.port.postings.hasShared(3), 'the peer\'s posting is used up');
  t.same(b.drainCalls(), [1, 0], 'peer called on rx');
  t.same(a.drainCalls(), [0, 1], 'sender called on tx');
  // b sends it back the same way: a's own posting of 3 receives it.
  const aHead = a.port.postings.sharedPosting(3) & 0xffff;
  b.sendShared(3, frame(mac(1), mac(2), 64, 9));
  t.equal(fw.forward(b.port, 0, a.port), 1);
  step('after the reply');
  t.same(a.flushAndReap().rx, [{ id: aHead, len: HDR + 64 }]);
  t.equal(rig.ledger.owner[3], a.id, 'back with its first owner');
});

t.test('no posting at the peer: copied into a classic rx buffer, buffer returned', async (t) => {
  const { rig, a, b, fw, step } = pair(t);
  const f = frame(mac(2), mac(1), 80, 3);
  // b consumed its posting of 5 some other way: take it away.
  b.port.postings.takeShared(5);
  const slot = b.postCopyTarget(0);
  const ret = a.postShared(5);
  a.port.ingestRx();
  b.port.ingestRx();
  const tx = a.sendShared(5, f, VIRTIO_NET_HDR_F_GIFT_BUFFER); // stray flags must not reach the receiver
  t.equal(fw.forward(a.port, 0, b.port), 1);
  step('after copy');
  const br = b.flushAndReap();
  const ar = a.flushAndReap();
  t.same(br.rx, [{ id: slot, len: HDR + 80 }], 'copied into the classic buffer');
  t.same(b.slotBytes(0, HDR, 80), f, 'frame copied');
  t.equal(b.slotBytes(0, 0, 1)[0], 0, 'switch flags cleared in the copy');
  t.equal(b.slotBytes(0, 10, 1)[0], 1, 'num_buffers 1');
  t.same(ar.tx, [{ id: tx, len: 0 }]);
  t.same(ar.rx, [{ id: ret, len: HDR }], 'the sender\'s own posting of 5 completed: returned');
  t.ok(a.hdrFlags(5) & VIRTIO_NET_HDR_F_RETURNED, 'RETURNED (0x80) set in its header');
  t.equal(rig.ledger.owner[5], a.id, 'still the sender\'s');
  t.equal(a.port.counters.copied, 1);
  t.equal(a.port.counters.copiedBytes, 80);
  t.equal(a.port.counters.returned, 1);
  t.equal(a.port.counters.zeroCopy, 0);
  t.equal(b.port.counters.txPackets, 1);
});

const RETURNED_LEN = (HDR | USED_LEN_RETURNED) >>> 0;

for (const returnedInUsed of [false, true]) t.test(`no posting and no classic buffer: no-rx-buffer, returned${returnedInUsed ? ' (RETURNED in the used len)' : ''}`, async (t) => {
  const { rig, a, b, fw, step } = pair(t, { returnedInUsed });
  b.port.postings.takeShared(5);
  const ret = a.postShared(5);
  a.port.ingestRx();
  a.sendShared(5, frame(mac(2), mac(1)));
  fw.forward(a.port, 0, b.port);
  step('after drop');
  t.equal(a.port.counters.drops[Drop.NoRxBuffer], 1);
  t.same(a.flushAndReap().rx, [{ id: ret, len: returnedInUsed ? RETURNED_LEN : HDR }], returnedInUsed ? 'returned, used len 12 | USED_LEN_RETURNED' : 'returned');
  t.ok(a.hdrFlags(5) & VIRTIO_NET_HDR_F_RETURNED, 'flagged RETURNED in the header');
  t.equal(rig.ledger.owner[5], a.id);
});

t.test('RETURNED_IN_USED: a gift returned says so in its used len, a gift and a frame delivered do not', async (t) => {
  const { a, b, fw, step } = pair(t, { returnedInUsed: true });
  // A gift of a's that b cannot take comes back with the bit.
  b.port.postings.takeShared(6);
  const ret6 = a.postShared(6);
  a.port.ingestRx();
  a.sendGift([6]);
  fw.forward(a.port, 0, b.port);
  step('after the gift\'s return');
  t.same(a.flushAndReap().rx, [{ id: ret6, len: RETURNED_LEN }], 'a gift RETURNED: the bit too');
  // A delivered frame and a gift back are plain lengths; b did not ack the bit and never sees it.
  const aHead = a.postShared(3);
  a.port.ingestRx();
  const bHead = b.port.postings.sharedPosting(3) & 0xffff;
  a.sendShared(3, frame(mac(2), mac(1), 100, 1));
  fw.forward(a.port, 0, b.port);
  t.same(b.flushAndReap().rx, [{ id: bHead, len: HDR + 100 }], 'a frame: its length');
  b.sendGift([3]);
  fw.forward(b.port, 0, a.port);
  step('after the gift back');
  t.same(a.flushAndReap().rx, [{ id: aHead, len: HDR }], 'a gift: 12 exactly');
  // b did not ack the bit: its returns are 12 bytes, as before.
  a.port.postings.takeShared(40);
  const bRet = b.postShared(40);
  b.port.ingestRx();
  b.sendShared(40, frame(mac(1), mac(2)));
  fw.forward(b.port, 0, a.port);
  t.same(b.flushAndReap().rx, [{ id: bRet, len: HDR }], 'b\'s return: 12 bytes');
  step('end');
});

t.test('no return slot: counted, the buffer stays the sender\'s', async (t) => {
  const { rig, a, b, fw, step } = pair(t);
  b.port.postings.takeShared(5);
  a.sendShared(5, frame(mac(2), mac(1)));
  fw.forward(a.port, 0, b.port);
  step('after drop');
  t.equal(a.port.counters.drops[Drop.NoRxBuffer], 1);
  t.equal(a.port.counters.drops[Drop.NoReturnSlot], 1);
  t.equal(rig.ledger.owner[5], a.id);
});

t.test('peer down: dropped peer-down and returned', async (t) => {
  const { rig, a, b, fw, step } = pair(t);
  const ret = a.postShared(6);
  a.port.ingestRx();
  b.down();
  const tx = a.sendShared(6, frame(mac(2), mac(1)));
  t.equal(fw.forward(a.port, 0, b.port), 1);
  step('peer down');
  t.equal(a.port.counters.drops[Drop.PeerDown], 1);
  const ar = a.flushAndReap();
  t.same(ar.tx, [{ id: tx, len: 0 }]);
  t.same(ar.rx, [{ id: ret, len: HDR }], 'returned');
  t.ok(a.hdrFlags(6) & VIRTIO_NET_HDR_F_RETURNED);
  t.equal(rig.ledger.owner[6], a.id);
  // No peer at all.
  const ret2 = a.postShared(7);
  a.port.ingestRx();
  a.sendShared(7, frame(mac(2), mac(1)));
  fw.forward(a.port, 0, null);
  step('no peer');
  t.equal(a.port.counters.drops[Drop.PeerDown], 2);
  t.same(a.flushAndReap().rx, [{ id: ret2, len: HDR }]);
});

t.test('gift chain delivered link by link', async (t) => {
  const { rig, a, b, fw, step } = pair(t);
  b.port.postings.takeShared(12); // b has no posting for 12
  const ret12 = a.postShared(12);
  a.port.ingestRx();
  const heads = [10, 11, 13].map((x) => b.port.postings.sharedPosting(x) & 0xffff);
  // Links: 10, 11 good; 12 no posting at b (returned); 40 not owned; 13 good.
  const tx = a.sendChain([10, 11, 12, 40, 13].map((x) => ({ addr: rig.shared.addrOf(x), len: HDR })));
  t.equal(fw.forward(a.port, 0, b.port), 1);
  step('after gift chain');
  const br = b.flushAndReap();
  const ar = a.flushAndReap();
  t.same(br.rx, heads.map((id) => ({ id, len: HDR })), 'each good link completes b\'s posting, 12 bytes');
  t.same(ar.tx, [{ id: tx, len: 0 }], 'tx chain completed once');
  t.same(ar.rx, [{ id: ret12, len: HDR }], 'the link b had no posting for is handed back');
  t.ok(a.hdrFlags(12) & VIRTIO_NET_HDR_F_RETURNED);
  for (const x of [10, 11, 13]) t.equal(rig.ledger.owner[x], b.id, `buffer ${x} moved`);
  t.equal(rig.ledger.owner[12], a.id);
  t.equal(rig.ledger.owner[40], b.id, 'not-owned link untouched');
  t.equal(a.port.counters.giftsIn, 4, 'four valid links');
  t.equal(b.port.counters.giftsOut, 3);
  t.equal(a.port.counters.drops[Drop.NotOwner], 1);
  t.equal(a.port.counters.zeroCopy, 0, 'gifts are not packets');
  t.equal(a.port.counters.rxPackets, 0);
  // A lone gift.
  const h = b.port.postings.sharedPosting(14) & 0xffff;
  a.sendGift([14]);
  fw.forward(a.port, 0, b.port);
  step('after lone gift');
  t.same(b.flushAndReap().rx, [{ id: h, len: HDR }]);
  t.equal(rig.ledger.owner[14], b.id);
});

t.test('a buffer the sender does not own is dropped not-owner', async (t) => {
  const { rig, a, b, fw, step } = pair(t);
  const before = Array.from(rig.ledger.owner);
  const tx = a.sendShared(40, frame(mac(2), mac(1))); // b's buffer
  t.equal(fw.forward(a.port, 0, b.port), 1);
  step('after not-owner');
  t.equal(a.port.counters.drops[Drop.NotOwner], 1);
  t.same(Array.from(rig.ledger.owner), before, 'no buffer moved');
  t.same(a.flushAndReap().tx, [{ id: tx, len: 0 }], 'tx completed');
  t.same(b.flushAndReap().rx, [], 'nothing delivered');
  t.equal(a.port.counters.zeroCopy + a.port.counters.copied, 0);
});

t.test('a packet shorter than a frame: too-short, returned', async (t) => {
  const { rig, a, b, fw, step } = pair(t);
  const ret = a.postShared(8);
  a.port.ingestRx();
  a.sendShared(8, new Uint8Array(10));
  fw.forward(a.port, 0, b.port);
  step('too short');
  t.equal(a.port.counters.drops[Drop.TooShort], 1);
  t.same(a.flushAndReap().rx, [{ id: ret, len: HDR }]);
  t.equal(rig.ledger.owner[8], a.id);
});

t.test('classic sender: private memory copied into the peer\'s classic buffer', async (t) => {
  const { a, b, fw, step } = pair(t);
  const slot = b.postCopyTarget(3);
  b.port.ingestRx();
  const f = frame(mac(2), mac(1), 200, 5);
  a.sendPrivate(0, f);
  fw.forward(a.port, 0, b.port);
  step('copy');
  t.same(b.flushAndReap().rx, [{ id: slot, len: HDR + 200 }]);
  t.same(b.slotBytes(3, HDR, 200), f);
  t.equal(a.port.counters.copied, 1);
});

t.test('burst: at most `burst` entries per call', async (t) => {
  const { rig, a, b, step } = pair(t);
  const fw = new PairForwarder(4);
  for (let i = 0; i < 10; i++) a.sendShared(i, frame(mac(2), mac(1)));
  t.equal(fw.forward(a.port, 0, b.port), 4);
  t.equal(fw.forward(a.port, 0, b.port), 4);
  t.equal(fw.forward(a.port, 0, b.port), 2);
  t.equal(fw.forward(a.port, 0, b.port), 0);
  step('after bursts');
  t.equal(a.port.counters.zeroCopy, 10);
  t.equal(b.flushAndReap().rx.length, 10);
  t.equal(rig.ledger.owned[b.id], 42);
});
