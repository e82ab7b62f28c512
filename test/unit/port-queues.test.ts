/**
 * Unit tests for PortQueues.ingestRx (src/datapath/port-queues.ts): what the
 * switch does with each kind of rx posting a VM makes on its real ring.
 */
import t from 'tap';
import { Drop } from '../../src/datapath/counters';
import { postingHead, postingQueue } from '../../src/datapath/rx-postings';
import { POOL } from '../../src/shm/ledger';
import { VIRTIO_NET_HDR_F_GIFT_BUFFER } from '../../src/vhost/protocol';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { Rig } from '../helpers/datapath-rig';

t.test('shared postings are recorded, duplicates completed empty', async (t) => {
  const rig = new Rig();
  t.teardown(() => rig.close());
  rig.addVm({ partition: [0, 32] });
  const vm = rig.addVm({ partition: [32, 32] });
  const h = vm.postShared(3);
  t.equal(vm.port.ingestRx(), 1, 'one posting taken');
  t.ok(vm.port.postings.hasShared(3));
  const p = vm.port.postings.sharedPosting(3);
  t.equal(postingHead(p), h);
  t.equal(postingQueue(p), 0);
  t.same(vm.flushAndReap().rx, [], 'held, not completed');
  t.equal(vm.port.ingestRx(), 0, 'nothing new');
  const dup = vm.postShared(3);
  t.equal(vm.port.ingestRx(), 1);
  t.equal(vm.port.counters.drops[Drop.DupRxPost], 1, 'dup-rx-post');
  t.same(vm.flushAndReap().rx, [{ id: dup, len: 0 }], 'duplicate handed back empty');
  t.equal(postingHead(vm.port.postings.sharedPosting(3)), h, 'first posting kept');
  t.same(vm.drainCalls(), [1, 0], 'the VM was called on its rx ring');
  t.equal(vm.port.counters.calls, 1);
  t.equal(rig.ledgerProblems(), '');
});

t.test('bad postings are completed empty', async (t) => {
  const rig = new Rig();
  t.teardown(() => rig.close());
  rig.addVm({ partition: [0, 32] });
  const vm = rig.addVm({ partition: [32, 32] });
  const { shared } = rig;
  const heads = [
    vm.postRxChain([{ addr: shared.addrOf(1), len: shared.bufSize }]), // readable
    vm.postShared(2, shared.bufSize - 64), // wrong length
    vm.postShared(3, shared.bufSize + 64), // wrong length (longer)
    vm.postRxChain([{ addr: shared.addrOf(4) + 64, len: shared.bufSize, write: true }]), // not at a buffer start
    vm.postRxChain([{ addr: shared.addrOf(5), len: 12, write: true }, { addr: shared.addrOf(6), len: shared.bufSize, write: true }]), // a chain
    vm.postRxChain([{ addr: vm.mem.gpa(vm.mem.slotOffset(0)), len: 100 }]), // readable copy target
  ];
  t.equal(vm.port.ingestRx(), heads.length);
  t.equal(vm.port.counters.drops[Drop.BadRxDesc], heads.length, 'bad-rx-desc for each');
  t.same(vm.flushAndReap().rx, heads.map((id) => ({ id, len: 0 })), 'each handed back empty, in order');
  for (const b of [1, 2, 3, 4, 5, 6]) t.notOk(vm.port.postings.hasShared(b));
  t.equal(vm.port.postings.copyTargetCount(0), 0);
  t.equal(vm.port.counters.totalDrops(), heads.length);
});

t.test('a port without the region cannot post shared buffers', async (t) => {
  const rig = new Rig();
  t.teardown(() => rig.close());
  const vm = rig.addVm({ zeroCopy: false });
  const h = vm.postShared(1);
  vm.port.ingestRx();
  t.equal(vm.port.counters.drops[Drop.BadRxDesc], 1);
  t.same(vm.flushAndReap().rx, [{ id: h, len: 0 }]);
});

t.test('copy targets and broken chains', async (t) => {
  const rig = new Rig();
  t.teardown(() => rig.close());
  const vm = rig.addVm();
  const a = vm.postCopyTarget(0);
  const b = vm.postCopyTarget(1);
  // A chain whose next is out of range: completed empty.
  const bad = vm.rx.allocDesc();
  vm.rx.ring.setDesc(bad, vm.mem.gpa(vm.mem.slotOffset(2)), 100, 1 | 2, 9999);
  vm.rx.addAvail(bad);
  vm.rx.publishAvail();
  t.equal(vm.port.ingestRx(), 3);
  t.equal(vm.port.postings.copyTargetCount(0), 2);
  t.equal(vm.port.postings.peekCopyTarget(0, 0), a);
  t.equal(vm.port.postings.peekCopyTarget(0, 1), b);
  t.equal(vm.port.counters.drops[Drop.BadNext], 1);
  vm.port.flush();
  t.equal(vm.rx.usedPending(), 1);
  t.equal(vm.rx.popUsed(), bad);
  t.equal(vm.rx.lastUsedLen, 0);
});

t.test('pool buffers are gifted at once while the port is under its partition', async (t) => {
  const rig = new Rig();
  t.teardown(() => rig.close());
  const vm = rig.addVm({ quota: 2 }); // re-attached: owns nothing, may take 2
  const { ledger } = rig;
  const heads = [10, 11, 12].map((b) => vm.postShared(b));
  t.equal(vm.port.ingestRx(), 3);
  t.same(vm.flushAndReap().rx, [{ id: heads[0], len: VIRTIO_NET_HDR_SIZE }, { id: heads[1], len: VIRTIO_NET_HDR_SIZE }], 'two gifts');
  t.equal(vm.hdrFlags(10), VIRTIO_NET_HDR_F_GIFT_BUFFER, 'flagged as gifts');
  t.equal(vm.hdrFlags(11), VIRTIO_NET_HDR_F_GIFT_BUFFER);
  t.equal(ledger.owner[10], vm.id, 'the ledger moved them from the pool');
  t.equal(ledger.owner[11], vm.id);
  t.equal(ledger.owner[12], POOL, 'the third stays in the pool');
  t.ok(vm.port.postings.hasShared(12), 'and is held as a posting');
  t.equal(vm.port.counters.giftsOut, 2);
  t.equal(ledger.owned[vm.id], 2);
  t.equal(rig.ledgerProblems(), '');
});

t.test('bridge: own buffers are held as own postings', async (t) => {
  const rig = new Rig({ swap: true });
  t.teardown(() => rig.close());
  const vm = rig.addVm({ partition: [0, 8] });
  rig.addVm({ partition: [8, 8] });
  const h0 = vm.postShared(2);
  const h1 = vm.postShared(5);
  const h2 = vm.postShared(9); // not its own: a pair-style posting
  vm.port.ingestRx();
  t.equal(vm.port.postings.ownCount(0), 2);
  t.equal(vm.port.postings.nextOwnBuf(0), 2);
  t.equal(vm.port.postings.takeOwn(0), h0);
  t.equal(vm.port.postings.nextOwnBuf(0), 5);
  t.equal(vm.port.postings.takeOwn(0), h1);
  t.notOk(vm.port.postings.hasShared(2), 'own buffers are not shared postings');
  t.equal(postingHead(vm.port.postings.sharedPosting(9)), h2);
});

t.test('avail index running ahead: ring-broken and broken() called', async (t) => {
  const rig = new Rig();
  t.teardown(() => rig.close());
  const vm = rig.addVm();
  const num = vm.rx.ring.num;
  Atomics.store(vm.rx.ring.avail, 1, num + 1);
  t.equal(vm.port.ingestRx(), 0, 'nothing taken');
  t.equal(vm.port.counters.drops[Drop.RingBroken], 1, 'ring-broken');
  t.equal(vm.broken.length, 1, 'broken() called');
  t.match(vm.broken[0], /rx queue 0/);
  Atomics.store(vm.tx.ring.avail, 1, vm.tx.ring.num + 1);
  t.equal(vm.port.txPending(0, 32), 0);
  t.equal(vm.broken.length, 2, 'tx too');
  t.match(vm.broken[1], /tx queue 0/);
  t.equal(vm.port.counters.drops[Drop.RingBroken], 2);
});

t.test('sync(null) voids the postings; the port reports not ready', async (t) => {
  const rig = new Rig();
  t.teardown(() => rig.close());
  const vm = rig.addVm({ partition: [32, 32] });
  vm.postShared(1);
  vm.postCopyTarget(0);
  vm.port.ingestRx();
  t.ok(vm.port.ready);
  vm.down();
  t.notOk(vm.port.ready);
  t.equal(vm.port.nq, 0);
  t.notOk(vm.port.postings.hasShared(1));
  t.equal(vm.port.postings.copyTargetCount(0), 0);
  t.equal(vm.port.rxQueueFor(0), -1);
});
