/**
 * Rx descriptors by buffer (PROTOCOL_F_RX_BY_BUFFER; docs/protocol.md,
 * "Pair mode: rx descriptors by buffer") over two simulated VMs' real
 * rings: the switch re-posts a buffer the sender sends in its rx
 * descriptor b (ownership rule 2 done by the switch), so a gift or a
 * return reaches the sender without it ever posting again; postings
 * elsewhere than descriptor b and copy targets below bufCount are refused;
 * a buffer already posted is not posted twice; an rx ring smaller than
 * bufCount and the swap exchange leave the rule off. The ledger is checked
 * after every step. (The lane's side of it: zc-lane-differential.test.ts.)
 */
import t, { type Test } from 'tap';
import { Drop } from '../../src/datapath/counters';
import { PairForwarder } from '../../src/datapath/pair-forwarder';
import { VIRTIO_NET_HDR_F_RETURNED } from '../../src/vhost/protocol';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { Rig, frame, mac, type Vm, type VmOptions } from '../helpers/datapath-rig';

const HDR = VIRTIO_NET_HDR_SIZE;
const N = 32;

/** a owns 0..31, b 32..63; each posts the other's buffers (in descriptor b where it acked the bit). */
interface Pair {
  rig: Rig;
  a: Vm;
  b: Vm;
  fw: PairForwarder;
  ledger: (msg: string) => void;
  /** a sends frame f in its buffer x and the switch forwards a's tx queue to b; returns a's tx head. */
  send: (x: number, f?: Uint8Array) => number;
  /** b gifts buffers xs back and the switch forwards b's tx queue to a. */
  giftBack: (xs: number[]) => void;
}

function pair(t: Test, aOpts: VmOptions, bOpts: VmOptions = { rxByBuffer: true }, swap = false): Pair {
  const rig = new Rig({ bufCount: 2 * N, swap });
  t.teardown(() => rig.close());
  const a = rig.addVm({ ...aOpts, partition: [0, N] });
  const b = rig.addVm({ ...bOpts, partition: [N, N] });
  if (!swap) {
    for (let i = 0; i < N; i++) {
      a.postShared(N + i);
      b.postShared(i);
    }
  }
  a.port.ingestRx();
  b.port.ingestRx();
  const fw = new PairForwarder(32);
  return {
    rig, a, b, fw,
    ledger: (msg) => t.equal(rig.ledgerProblems(), '', `ledger conserved: ${msg}`),
    send: (x, f = frame(mac(2), mac(1), 64, x)) => {
      const head = a.sendShared(x, f);
      fw.forward(a.port, 0, b.port);
      return head;
    },
    giftBack: (xs) => {
      b.sendGift(xs);
      fw.forward(b.port, 0, a.port);
    },
  };
}

t.test('a sent buffer comes back in the sender\'s descriptor b without a posting of its own', async (t) => {
  const { rig, a, b, fw, ledger, send, giftBack } = pair(t, { rxByBuffer: true });
  t.equal(a.port.rxByBuffer[0], 1, 'the rule is on for a\'s rx queue');
  a.sendShared(3, frame(mac(2), mac(1), 100, 7));
  a.sendShared(4, frame(mac(2), mac(1), 60, 8));
  t.equal(fw.forward(a.port, 0, b.port), 2);
  ledger('after the frames');
  t.same(b.flushAndReap().rx, [{ id: 3, len: HDR + 100 }, { id: 4, len: HDR + 60 }], 'b\'s postings in descriptors 3 and 4 completed');
  t.equal(a.port.postings.sharedPosting(3), 3, 'a\'s rx descriptor 3 (queue 0) now holds buffer 3');
  t.equal(a.port.postings.sharedPosting(4), 4);
  t.same(a.flushAndReap().rx, [], 'nothing completed at a yet');
  // b gifts them back: each link reaches a's descriptor b.
  giftBack([3, 4]);
  ledger('after the gift');
  t.same(a.flushAndReap().rx, [{ id: 3, len: HDR }, { id: 4, len: HDR }], 'the gift completes a\'s descriptors 3 and 4');
  t.equal(rig.ledger.owner[3], a.id);
  t.equal(rig.ledger.owner[4], a.id);
  t.equal(b.port.postings.sharedPosting(3), 3, 'and b\'s descriptor 3 holds buffer 3 again, for a\'s next frame in it');
  t.equal(a.port.counters.totalDrops() + b.port.counters.totalDrops(), 0, 'no drops');
  // Round two: the same buffers again, still without a posting from either VM.
  send(3, frame(mac(2), mac(1), 70, 9));
  t.same(b.flushAndReap().rx, [{ id: 3, len: HDR + 70 }], 'b receives buffer 3 again');
  ledger('round two');
});

t.test('a frame that cannot be delivered comes back RETURNED through descriptor b', async (t) => {
  const { rig, a, b, ledger, send } = pair(t, { rxByBuffer: true });
  b.port.postings.takeShared(5); // b has no posting of 5 (and no copy target)
  const tx = send(5, frame(mac(2), mac(1), 80, 3));
  ledger('after the return');
  const ar = a.flushAndReap();
  t.same(ar.tx, [{ id: tx, len: 0 }]);
  t.same(ar.rx, [{ id: 5, len: HDR }], 'handed back in a\'s descriptor 5');
  t.ok(a.bufBytes(5, 0, 1)[0] & VIRTIO_NET_HDR_F_RETURNED, 'flagged RETURNED');
  t.equal(rig.ledger.owner[5], a.id, 'a still owns it');
  t.equal(a.port.postings.sharedPosting(5), -1, 'the posting is used up');
  // A frame too short for an Ethernet header is returned the same way.
  send(6, new Uint8Array(10));
  t.same(a.flushAndReap().rx, [{ id: 6, len: HDR }]);
  t.equal(a.port.counters.drops[Drop.TooShort], 1);
  ledger('after the runt');
});

t.test('a buffer the sender posted itself is not posted twice', async (t) => {
  const { a, b, ledger, send, giftBack } = pair(t, { rxByBuffer: true });
  a.postShared(7); // rule 2 kept by the VM itself, in descriptor 7
  a.port.ingestRx();
  send(7, frame(mac(2), mac(1), 64, 1));
  b.flushAndReap();
  giftBack([7]);
  t.same(a.flushAndReap().rx, [{ id: 7, len: HDR }], 'one completion of descriptor 7');
  t.equal(a.port.counters.totalDrops(), 0, 'no dup-rx-post');
  ledger('end');
});

t.test('postings elsewhere than descriptor b, and copy targets below bufCount, are refused', async (t) => {
  const { a, b, fw, ledger, send } = pair(t, { rxByBuffer: true });
  // a does not own 40: posting it in descriptor 41 (another buffer's) or above bufCount is misplaced.
  const low = a.postRxChain([{ addr: a.win.addrOf(40), len: a.shared.bufSize, write: true }], 41);
  const high = a.postRxChain([{ addr: a.win.addrOf(40), len: a.shared.bufSize, write: true }]);
  t.ok(high >= 2 * N, 'a free descriptor above bufCount');
  // A copy target in descriptor 2 (buffer 2's, which a owns and may send), and one above bufCount.
  const ctLow = a.postRxChain([{ addr: a.mem.gpa(a.mem.slotOffset(0)), len: a.slotSize, write: true }], 2);
  const ctHigh = a.postCopyTarget(1);
  a.port.ingestRx();
  const rx = a.flushAndReap().rx;
  t.same(rx, [{ id: low, len: 0 }, { id: high, len: 0 }, { id: ctLow, len: 0 }], 'the three misplaced postings completed empty');
  t.equal(a.port.counters.drops[Drop.BadRxDesc], 3, 'counted bad-rx-desc');
  t.equal(a.port.postings.copyTargetCount(0), 1, 'the copy target above bufCount is held');
  t.equal(a.port.postings.sharedPosting(40), 40, 'a\'s posting of 40 in descriptor 40 stands');
  // b's frame in buffer 40 still lands in descriptor 40.
  b.sendShared(40, frame(mac(1), mac(2), 64, 2));
  fw.forward(b.port, 0, a.port);
  t.same(a.flushAndReap().rx, [{ id: 40, len: HDR + 64 }]);
  ledger('end');
});

t.test('an rx ring smaller than bufCount leaves the rule off: the VM posts as before', async (t) => {
  const { rig, a, b, ledger, send, giftBack } = pair(t, { rxByBuffer: true, rxNum: 32, privSlots: 0 });
  t.equal(a.port.rxByBuffer[0], 0, 'off on a 32-entry ring for 64 buffers');
  send(3, frame(mac(2), mac(1), 64, 1));
  t.equal(a.port.postings.sharedPosting(3), -1, 'nothing re-posted at a');
  b.flushAndReap();
  // b's gift of 3 finds no posting at a: it goes back to b, RETURNED.
  giftBack([3]);
  t.same(b.flushAndReap().rx, [{ id: 3, len: HDR }], 'the gift came back to b');
  t.equal(rig.ledger.owner[3], b.id);
  ledger('end');
});

t.test('a front-end that did not ack the bit gets no postings made for it', async (t) => {
  const { a, send } = pair(t, {});
  t.equal(a.port.rxByBuffer[0], 0);
  send(3, frame(mac(2), mac(1), 64, 1));
  t.equal(a.port.postings.sharedPosting(3), -1);
  // A shared posting in another buffer's descriptor is fine without it.
  a.port.postings.takeShared(41);
  a.postRxChain([{ addr: a.win.addrOf(41), len: a.shared.bufSize, write: true }], 100);
  a.port.ingestRx();
  t.equal(a.port.postings.sharedPosting(41), 100);
  t.equal(a.port.counters.totalDrops(), 0);
});

t.test('the swap exchange ignores the bit', async (t) => {
  const { a, b } = pair(t, { rxByBuffer: true }, { rxByBuffer: true }, true);
  t.equal(a.port.rxByBuffer[0], 0);
  t.equal(b.port.rxByBuffer[0], 0);
  // An own empty buffer posted in any descriptor is taken as one.
  const h = a.postRxChain([{ addr: a.win.addrOf(9), len: a.shared.bufSize, write: true }], 20);
  a.port.ingestRx();
  t.equal(a.port.postings.ownCount(0), 1);
  t.equal(h, 20);
  t.equal(a.port.counters.totalDrops(), 0);
});

t.test('the bit acked or withdrawn while rings run takes effect at the next sync; postings made stand', async (t) => {
  const { a, b, ledger, send, giftBack } = pair(t, {});
  t.equal(a.port.rxByBuffer[0], 0, 'off: not acked');
  const source = a.source as { ackedProtocol?: bigint };
  source.ackedProtocol = 1n << 41n;
  a.port.sync(a.source); // what SET_PROTOCOL_FEATURES does through the session's queuesChanged hook
  t.equal(a.port.rxByBuffer[0], 1, 'on after a late SET_PROTOCOL_FEATURES');
  send(3, frame(mac(2), mac(1), 64, 1));
  t.equal(a.port.postings.sharedPosting(3), 3, 're-posted in descriptor 3');
  source.ackedProtocol = 0n;
  a.port.sync(a.source);
  t.equal(a.port.rxByBuffer[0], 0, 'off again');
  t.equal(a.port.postings.sharedPosting(3), 3, 'the posting made while on stands (the ring kept running)');
  send(4, frame(mac(2), mac(1), 64, 2));
  t.equal(a.port.postings.sharedPosting(4), -1, 'nothing re-posted now');
  b.flushAndReap();
  giftBack([3]);
  t.same(a.flushAndReap().rx, [{ id: 3, len: HDR }], 'the standing posting still takes its gift');
  ledger('end');
});
