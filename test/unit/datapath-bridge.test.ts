/**
 * Unit tests for BridgeForwarder (src/datapath/bridge-forwarder.ts) over
 * simulated VMs' real rings (docs/protocol.md, "Bridge mode"): the swap,
 * flooding with copies, MAC learning, hairpin, classic receivers, gifts.
 */
import t, { type Test } from 'tap';
import { BridgeForwarder } from '../../src/datapath/bridge-forwarder';
import { Drop } from '../../src/datapath/counters';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { BROADCAST, Rig, frame, mac, type Vm } from '../helpers/datapath-rig';

const HDR = VIRTIO_NET_HDR_SIZE;
const PER = 16;
/** MAC table keys carry the VLAN above the MAC's first 16 bits; ports without a vlan are on VLAN 1. */
const VLAN1 = 1 << 16;

/** n VMs with 16 buffers each, each with its first 8 posted on rx as own empty buffers; optional classic VM last. */
function bridge(t: Test, n: number, classic = false): { rig: Rig; vms: Vm[]; fw: BridgeForwarder; own: Map<number, number>[]; step: (msg: string) => void } {
  const rig = new Rig({ bufCount: 64, swap: true });
  t.teardown(() => rig.close());
  const vms: Vm[] = [];
  const own: Map<number, number>[] = []; // per VM: head -> buffer it posted
  for (let i = 0; i < n; i++) {
    const vm = rig.addVm({ partition: [i * PER, PER] });
    const m = new Map<number, number>();
    for (let k = 0; k < PER / 2; k++) m.set(vm.postShared(i * PER + k), i * PER + k);
    vm.port.ingestRx();
    vms.push(vm);
    own.push(m);
  }
  if (classic) {
    const vm = rig.addVm({ zeroCopy: false });
    vm.postCopyTarget(0);
    vm.postCopyTarget(1);
    vm.port.ingestRx();
    vms.push(vm);
    own.push(new Map());
  }
  const fw = new BridgeForwarder(32, vms.map((v) => v.port), 64, 300_000);
  const step = (msg: string): void => {
    t.equal(rig.ledgerProblems(), '', `ledger conserved: ${msg}`);
    for (let i = 0; i < n; i++) t.equal(rig.ledger.owned[vms[i].id], PER, `vm${i} keeps its ${PER} buffers: ${msg}`);
  };
  return { rig, vms, fw, own, step };
}

t.test('flood to three ports: copies to all but the last, which gets the swap', async (t) => {
  const { rig, vms, fw, own, step } = bridge(t, 4);
  const [a, b, c, d] = vms;
  const f = frame(BROADCAST, mac(1), 120, 4);
  const sent = 10; // a's own buffer, not posted
  const tx = a.sendShared(sent, f);
  t.equal(fw.forward(a.port, 0, 1), 1);
  step('after flood');
  const total = HDR + 120;
  for (const [i, vm] of [[1, b], [2, c]] as const) {
    const rx = vm.flushAndReap().rx;
    t.equal(rx.length, 1, `vm${i} got one packet`);
    const got = own[i].get(rx[0].id)!;
    t.equal(rx[0].len, total);
    t.equal(got, i * PER, `vm${i}: its oldest own posting`);
    t.equal(vm.rx.ring.descAddr(rx[0].id), rig.shared.addrOf(got), 'a copy: the descriptor keeps its address');
    t.same(vm.bufBytes(got, HDR, 120), f, `vm${i}: frame copied into its own buffer`);
    t.equal(rig.ledger.owner[got], vm.id, 'and it still owns it');
  }
  const drx = d.flushAndReap().rx;
  t.equal(drx.length, 1);
  const y = own[3].get(drx[0].id)!;
  t.equal(drx[0].len, total);
  t.equal(d.rx.ring.descAddr(drx[0].id), rig.shared.addrOf(sent), 'the last: its rx descriptor now points at the sender\'s buffer');
  t.same(d.bufBytes(sent, HDR, 120), f, 'frame in place');
  const atx = a.flushAndReap().tx;
  t.same(atx, [{ id: tx, len: 0 }]);
  t.equal(a.tx.ring.descAddr(tx), rig.shared.addrOf(y), 'the sender\'s tx descriptor now points at the receiver\'s empty buffer');
  t.equal(rig.ledger.owner[sent], d.id, 'ledger: sent buffer to the receiver');
  t.equal(rig.ledger.owner[y], a.id, 'ledger: empty buffer to the sender');
  t.equal(a.port.counters.copied, 2);
  t.equal(a.port.counters.zeroCopy, 1);
  t.equal(a.port.counters.rxPackets, 1);
  for (const vm of [b, c, d]) t.equal(vm.port.counters.txPackets, 1);
  t.equal(fw.tenancy.tables[0].lookup(VLAN1 | 0x0200, 1, 2), a.id, 'source MAC learned');
  t.same(a.flushAndReap().rx, [], 'never back out of the port it came in on');
});

t.test('unicast to a learned MAC: swap with that port only', async (t) => {
  const { rig, vms, fw, own, step } = bridge(t, 3);
  const [a, b, c] = vms;
  // b makes itself known (a broadcast).
  b.sendShared(PER + 12, frame(BROADCAST, mac(2)));
  fw.forward(b.port, 0, 1);
  for (const vm of vms) vm.flushAndReap();
  step('after learning');
  t.equal(fw.tenancy.tables[0].lookup(VLAN1 | 0x0200, 2, 1), b.id);
  const sent = 11;
  const f = frame(mac(2), mac(1), 64, 8);
  const tx = a.sendShared(sent, f);
  fw.forward(a.port, 0, 2);
  step('after swap');
  const brx = b.flushAndReap().rx;
  t.equal(brx.length, 1);
  const y = own[1].get(brx[0].id)!;
  t.equal(b.rx.ring.descAddr(brx[0].id), rig.shared.addrOf(sent));
  t.equal(brx[0].len, HDR + 64);
  t.same(b.bufBytes(sent, HDR, 64), f);
  t.equal(a.tx.ring.descAddr(tx), rig.shared.addrOf(y));
  t.equal(rig.ledger.owner[sent], b.id);
  t.equal(rig.ledger.owner[y], a.id);
  t.same(c.flushAndReap().rx, [], 'the third port saw nothing');
  t.equal(a.port.counters.zeroCopy, 1);
  t.equal(a.port.counters.copied, 0);
});

t.test('hairpin: a frame for a MAC on the sending port is dropped', async (t) => {
  const { rig, vms, fw, step } = bridge(t, 2);
  const [a, b] = vms;
  a.sendShared(10, frame(BROADCAST, mac(1)));
  fw.forward(a.port, 0, 1);
  a.flushAndReap();
  b.flushAndReap();
  const before = Array.from(rig.ledger.owner);
  const tx = a.sendShared(11, frame(mac(1), mac(1)));
  fw.forward(a.port, 0, 2);
  step('after hairpin');
  t.equal(a.port.counters.drops[Drop.Hairpin], 1, 'hairpin');
  const atx = a.flushAndReap().tx;
  t.same(atx, [{ id: tx, len: 0 }]);
  t.equal(a.tx.ring.descAddr(tx), rig.shared.addrOf(11), 'its own buffer comes back');
  t.same(b.flushAndReap().rx, []);
  t.same(Array.from(rig.ledger.owner), before, 'nothing moved');
});

t.test('a classic port always gets copies', async (t) => {
  const { vms, fw, step } = bridge(t, 1, true);
  const [a, cl] = vms;
  const f = frame(BROADCAST, mac(1), 90, 2);
  a.sendShared(9, f);
  fw.forward(a.port, 0, 1);
  step('after copy to classic');
  const rx = cl.flushAndReap().rx;
  t.equal(rx.length, 1);
  t.equal(rx[0].len, HDR + 90);
  t.same(cl.slotBytes(0, HDR, 90), f);
  t.equal(a.port.counters.copied, 1);
  t.equal(a.port.counters.zeroCopy, 0);
  t.equal(a.tx.ring.descAddr(a.tx.ring.avail[2]), a.shared.addrOf(9), 'no swap: the sender keeps its buffer');
});

t.test('gifts mean nothing on a bridge: handed straight back', async (t) => {
  const { rig, vms, fw, step } = bridge(t, 2);
  const [a, b] = vms;
  const tx = a.sendGift([12, 13]);
  fw.forward(a.port, 0, 1);
  step('after gift');
  t.same(a.flushAndReap().tx, [{ id: tx, len: 0 }]);
  t.same(b.flushAndReap().rx, []);
  t.equal(a.port.counters.giftsIn, 2);
  t.equal(rig.ledger.owner[12], a.id);
});

t.test('not-owner on a bridge: refused, nothing moves', async (t) => {
  const { rig, vms, fw, step } = bridge(t, 2);
  const [a, b] = vms;
  const tx = a.sendShared(PER + 12, frame(BROADCAST, mac(1))); // b's buffer
  fw.forward(a.port, 0, 1);
  step('after not-owner');
  t.equal(a.port.counters.drops[Drop.NotOwner], 1);
  t.same(a.flushAndReap().tx, [{ id: tx, len: 0 }]);
  t.same(b.flushAndReap().rx, []);
  t.equal(rig.ledger.owner[PER + 12], b.id);
});

t.test('per-port windows (ivshmem BARs at different addresses): the swap writes each VM its own address', async (t) => {
  const rig = new Rig({ bufCount: 64, swap: true });
  t.teardown(() => rig.close());
  const a = rig.addVm({ partition: [0, 32], windowBase: 0x8000_0000 });
  const b = rig.addVm({ partition: [32, 32], windowBase: 0x2_4000_0000 });
  const y = 40;
  const rxHead = b.postShared(y);
  b.port.ingestRx();
  const fw = new BridgeForwarder(32, [a.port, b.port], 64, 300_000);
  const f = frame(mac(2), mac(1), 100, 9);
  const sent = 3;
  const tx = a.sendShared(sent, f);
  t.equal(a.tx.ring.descAddr(tx), 0x8000_0000 + sent * 2048, 'a sends at its own address');
  t.equal(fw.forward(a.port, 0, 1), 1);
  const brx = b.flushAndReap().rx;
  t.same(brx, [{ id: rxHead, len: HDR + 100 }], 'b received the frame');
  t.equal(b.rx.ring.descAddr(rxHead), 0x2_4000_0000 + sent * 2048, 'b\'s descriptor points at buffer 3 at b\'s address');
  t.same(b.bufBytes(sent, HDR, 100), f, 'frame in place');
  t.same(a.flushAndReap().tx, [{ id: tx, len: 0 }]);
  t.equal(a.tx.ring.descAddr(tx), 0x8000_0000 + y * 2048, 'a\'s tx descriptor points at buffer 40 at a\'s address');
  t.equal(a.port.counters.zeroCopy, 1);
  t.equal(a.port.counters.copiedBytes, 0);
  t.equal(rig.ledger.owner[sent], b.id);
  t.equal(rig.ledger.owner[y], a.id);
  t.equal(rig.ledgerProblems(), '');
  // An address at the domain's base means nothing to a BAR port: it is not in its window (copy path, its own memory).
  const bad = a.sendChain([{ addr: rig.shared.addrOf(4), len: HDR + 60 }]);
  fw.forward(a.port, 0, 2);
  t.same(a.flushAndReap().tx, [{ id: bad, len: 0 }]);
  t.equal(a.port.counters.zeroCopy, 1, 'not taken as a shared buffer');
  t.equal(rig.ledger.owner[4], a.id, 'buffer 4 did not move');
});
