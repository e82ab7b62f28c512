/**
 * Sharing domains in the data path (docs/design.md, "Trust model"): a frame
 * between two ports of different domains is copied into the receiver's own
 * buffers (pair mode: its copy targets; bridge: its own posted shared
 * buffers, in its own domain's region), never swapped or address-matched;
 * the sender's buffer stays with, or goes back to, the sender; every
 * domain's ledger balances. Each VM here maps only its own domain's region.
 */
import t, { type Test } from 'tap';
import { BridgeForwarder } from '../../src/datapath/bridge-forwarder';
import { PairForwarder } from '../../src/datapath/pair-forwarder';
import { VIRTIO_NET_HDR_F_RETURNED } from '../../src/vhost/protocol';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { Rig, frame, mac } from '../helpers/datapath-rig';

const HDR = VIRTIO_NET_HDR_SIZE;

function rig(t: Test, swap: boolean): Rig {
  const r = new Rig({ bufCount: 32, swap });
  t.teardown(() => r.close());
  return r;
}

t.test('pair across domains: copied into the peer\'s copy target, the buffer returned, nothing address-matched', async (t) => {
  const r = rig(t, false);
  const y = r.addDomain('y');
  const a = r.addVm({ partition: [0, 16] });
  const b = r.addVm({ partition: [0, 16], domain: y });
  t.not(a.shared, b.shared, 'two regions');
  t.equal(a.shared.base, b.shared.base, 'at the same guest address');
  // b posts buffer 5 of *its* region (the same address as a's buffer 5: an address match would pick it) and a copy target.
  b.postShared(5);
  const target = b.postCopyTarget(0);
  b.port.ingestRx();
  a.postShared(5); // a's own posting of the buffer it sends (rule 2)
  a.port.ingestRx();
  const f = frame(mac(2), mac(1), 100, 11);
  const tx = a.sendShared(5, f);
  const fw = new PairForwarder(32);
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.equal(r.ledgerProblems(), '', 'every domain\'s ledger balances');
  const br = b.flushAndReap();
  t.same(br.rx, [{ id: target, len: HDR + 100 }], 'delivered into the copy target');
  t.same(b.slotBytes(0, HDR, 100), f, 'the frame, copied into b\'s own memory');
  t.not(b.bufBytes(5, HDR, 100).join(), f.join(), 'b\'s region (same address as a\'s buffer 5) does not hold it');
  t.ok(b.port.postings.hasShared(5), 'b\'s shared posting of its buffer 5 untouched');
  t.equal(y.ledger.owner[5], b.id, 'and still b\'s');
  const ar = a.flushAndReap();
  t.same(ar.tx, [{ id: tx, len: 0 }]);
  t.equal(ar.rx.length, 1, 'the buffer came back to a through its own posting');
  t.ok(a.hdrFlags(5) & VIRTIO_NET_HDR_F_RETURNED, 'flagged RETURNED');
  t.equal(r.ledger.owner[5], a.id, 'a still owns it in domain d0');
  t.equal(y.ledger.owned[a.id], 0, 'a owns nothing in domain y');
  const c = a.port.counters;
  t.same([c.zeroCopy, c.copied, c.copiedBytes, c.returned, c.totalDrops()], [0, 1, 100, 1, 0], 'counted as copied');
});

t.test('pair across domains: gifts go back to the sender', async (t) => {
  const r = rig(t, false);
  const y = r.addDomain('y');
  const a = r.addVm({ partition: [0, 16] });
  const b = r.addVm({ partition: [0, 16], domain: y });
  b.postShared(3);
  b.port.ingestRx();
  a.postShared(3);
  a.port.ingestRx();
  a.sendGift([3]);
  const fw = new PairForwarder(32);
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.equal(r.ledgerProblems(), '');
  t.equal(r.ledger.owner[3], a.id, 'still a\'s');
  t.equal(y.ledger.owner[3], b.id, 'b\'s buffer 3 (its own domain) untouched');
  t.same(b.flushAndReap().rx, [], 'b got nothing');
  t.equal(a.flushAndReap().rx.length, 1, 'returned to a');
  t.equal(a.port.counters.returned, 1);
});

t.test('bridge across domains: copied into the receiver\'s own buffer, no swap; within a domain: the swap', async (t) => {
  const r = rig(t, true);
  const y = r.addDomain('y');
  const a = r.addVm({ partition: [0, 16] });
  const b = r.addVm({ partition: [0, 16], domain: y });
  const c = r.addVm({ partition: [16, 16] }); // a's domain
  const bOwn = b.postShared(2);
  b.port.ingestRx();
  const cOwn = c.postShared(20);
  c.port.ingestRx();
  const fw = new BridgeForwarder(32, [a.port, b.port, c.port], 64, 300_000);
  // Teach the bridge where b and c are.
  fw.tenancy.tables[0].learn((1 << 16) | 0x0200, 2, b.id, 0);
  fw.tenancy.tables[0].learn((1 << 16) | 0x0200, 3, c.id, 0);
  const f = frame(mac(2), mac(1), 90, 5);
  const tx = a.sendShared(7, f);
  t.equal(fw.forward(a.port, 0, 1), 1);
  t.equal(r.ledgerProblems(), '', 'ledgers balance after the cross-domain frame');
  const brx = b.flushAndReap().rx;
  t.same(brx, [{ id: bOwn, len: HDR + 90 }], 'b\'s own posting filled');
  t.equal(b.rx.ring.descAddr(bOwn), b.shared.addrOf(2), 'its descriptor keeps its address (no swap)');
  t.same(b.bufBytes(2, HDR, 90), f, 'the frame is in b\'s own buffer of its own region');
  const atx = a.flushAndReap().tx;
  t.same(atx, [{ id: tx, len: 0 }]);
  t.equal(a.tx.ring.descAddr(tx), a.shared.addrOf(7), 'a\'s tx descriptor unchanged: its buffer stays with it');
  t.equal(r.ledger.owner[7], a.id);
  t.equal(y.ledger.owner[2], b.id);
  t.same([a.port.counters.zeroCopy, a.port.counters.copied, a.port.counters.copiedBytes], [0, 1, 90], 'counted as copied');

  // The same sender to c, in its own domain: the swap.
  const g = frame(mac(3), mac(1), 70, 6);
  const tx2 = a.sendShared(8, g);
  t.equal(fw.forward(a.port, 0, 2), 1);
  t.equal(r.ledgerProblems(), '');
  t.same(c.flushAndReap().rx, [{ id: cOwn, len: HDR + 70 }]);
  t.equal(c.rx.ring.descAddr(cOwn), r.shared.addrOf(8), 'c got a\'s buffer (swap)');
  t.same(a.flushAndReap().tx, [{ id: tx2, len: 0 }]);
  t.equal(a.tx.ring.descAddr(tx2), r.shared.addrOf(20), 'a got c\'s empty buffer');
  t.equal(r.ledger.owner[8], c.id);
  t.equal(r.ledger.owner[20], a.id);
  t.equal(a.port.counters.zeroCopy, 1);
});

t.test('bridge across domains: a broadcast reaches every domain, the last same-domain port by swap only', async (t) => {
  const r = rig(t, true);
  const y = r.addDomain('y');
  const a = r.addVm({ partition: [0, 16] });
  const b = r.addVm({ partition: [0, 16], domain: y }); // last target, other domain: must be a copy
  const bOwn = b.postShared(4);
  b.port.ingestRx();
  const fw = new BridgeForwarder(32, [a.port, b.port], 64, 300_000);
  const f = frame([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], mac(1), 64, 2);
  const tx = a.sendShared(9, f);
  t.equal(fw.forward(a.port, 0, 1), 1);
  t.equal(r.ledgerProblems(), '');
  t.same(b.flushAndReap().rx, [{ id: bOwn, len: HDR + 64 }]);
  t.same(b.bufBytes(4, HDR, 64), f);
  t.equal(b.rx.ring.descAddr(bOwn), b.shared.addrOf(4));
  a.flushAndReap();
  t.equal(a.tx.ring.descAddr(tx), a.shared.addrOf(9));
  t.same([a.port.counters.zeroCopy, a.port.counters.copied], [0, 1]);
});
