/**
 * Unit tests for TxClassifier (src/datapath/tx-class.ts): every class and
 * every drop reason, on chains written into a VM's real tx ring and walked
 * by the switch's ChainWalker over its own mapping of that ring.
 */
import t from 'tap';
import { Drop } from '../../src/datapath/counters';
import { TxClass, TxClassifier, chainDrop } from '../../src/datapath/tx-class';
import { ChainSegments, ChainWalker } from '../../src/virtio/chain';
import { VIRTIO_NET_HDR_SIZE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_MAX_CHAIN } from '../../src/virtio/defs';
import { PortWindow } from '../../src/shm/geometry';
import { Rig } from '../helpers/datapath-rig';

const NEXT = VIRTQ_DESC_F_NEXT;
const WRITE = VIRTQ_DESC_F_WRITE;

t.test('TxClassifier', async (t) => {
  const rig = new Rig({ bufCount: 32, bufSize: 2048 });
  t.teardown(() => rig.close());
  const vm = rig.addVm({ partition: [0, 16], txNum: 128 });
  const other = rig.addVm({ partition: [16, 16] });
  const { shared, ledger } = rig;
  const ring = vm.tx.ring; // the VM's view: where it writes
  const walker = new ChainWalker(128);
  const seg = new ChainSegments();
  const tx = new TxClassifier(new PortWindow(shared.base, shared.mem, shared.bufSize, shared.bufCount), ledger);
  const classify = (head: number, zeroCopy = true, src = vm.id): TxClass =>
    tx.classify(seg, walker.walk(vm.devTx.ring, head, seg), zeroCopy, src);
  const priv = vm.mem.gpa(vm.mem.slotOffset(0));

  t.test('chain errors map to their drop reasons', async (t) => {
    t.equal(classify(128), TxClass.Drop);
    t.equal(tx.drop, Drop.BadHead, 'head out of range');
    ring.setDesc(0, priv, 100, NEXT, 500);
    t.equal(classify(0), TxClass.Drop);
    t.equal(tx.drop, Drop.BadNext, 'next out of range');
    ring.setDesc(1, priv, 100, NEXT, 2);
    ring.setDesc(2, priv, 100, NEXT, 1);
    t.equal(classify(1), TxClass.Drop);
    t.equal(tx.drop, Drop.ChainLoop, 'loop');
    for (let i = 0; i <= VIRTQ_MAX_CHAIN; i++) ring.setDesc(10 + i, priv, 10, i === VIRTQ_MAX_CHAIN ? 0 : NEXT, 11 + i);
    t.equal(classify(10), TxClass.Drop);
    t.equal(tx.drop, Drop.ChainTooLong, `${VIRTQ_MAX_CHAIN + 1} descriptors`);
    ring.setDesc(3, priv, 16, VIRTQ_DESC_F_INDIRECT, 0);
    ring.setDesc(4, priv, 100, NEXT, 3);
    t.equal(classify(4), TxClass.Drop);
    t.equal(tx.drop, Drop.Indirect, 'indirect table');
    ring.setDesc(5, priv, 100, WRITE | NEXT, 6);
    ring.setDesc(6, priv, 100, 0, 0);
    t.equal(classify(5), TxClass.Drop);
    t.equal(tx.drop, Drop.BadOrder, 'writable before readable');
    t.equal(chainDrop(-99), Drop.BadOrder, 'unknown code');
  });

  t.test('a writable descriptor is refused (bad-order)', async (t) => {
    ring.setDesc(7, shared.addrOf(1), 100, WRITE, 0);
    t.equal(classify(7), TxClass.Drop);
    t.equal(tx.drop, Drop.BadOrder, 'lone writable shared buffer');
    ring.setDesc(8, priv, 20, NEXT, 9);
    ring.setDesc(9, priv + 20, 80, WRITE, 0);
    t.equal(classify(8), TxClass.Drop);
    t.equal(tx.drop, Drop.BadOrder, 'readable + writable chain');
  });

  t.test('not in the window: Copy', async (t) => {
    ring.setDesc(0, priv, 100, 0, 0);
    t.equal(classify(0), TxClass.Copy, 'private memory');
    ring.setDesc(0, priv, 12, NEXT, 1);
    ring.setDesc(1, priv + 12, 88, 0, 0);
    t.equal(classify(0), TxClass.Copy, 'private chain, header apart');
    ring.setDesc(0, shared.addrOf(2), 100, 0, 0);
    t.equal(classify(0, false), TxClass.Copy, 'a port that did not map the region: window addresses are its memory');
    ring.setDesc(0, shared.base + shared.size, 100, 0, 0);
    t.equal(classify(0), TxClass.Copy, 'just past the window');
  });

  t.test('gifts: lone and chained, link checks', async (t) => {
    ring.setDesc(0, shared.addrOf(3), VIRTIO_NET_HDR_SIZE, 0, 0);
    t.equal(classify(0), TxClass.Gift, 'lone 12-byte shared buffer');
    t.equal(tx.giftLink(seg, 0, vm.id), 3);
    ring.setDesc(0, shared.addrOf(4), VIRTIO_NET_HDR_SIZE, NEXT, 1);
    ring.setDesc(1, shared.addrOf(5), VIRTIO_NET_HDR_SIZE, NEXT, 2);
    ring.setDesc(2, shared.addrOf(6), VIRTIO_NET_HDR_SIZE, 0, 0);
    t.equal(classify(0), TxClass.Gift, 'gift chain');
    t.same([0, 1, 2].map((i) => tx.giftLink(seg, i, vm.id)), [4, 5, 6]);
    // Bad links: not at a buffer start, not 12 bytes, not owned.
    ring.setDesc(0, shared.addrOf(4), VIRTIO_NET_HDR_SIZE, NEXT, 1);
    ring.setDesc(1, shared.addrOf(5) + 64, VIRTIO_NET_HDR_SIZE, NEXT, 2);
    ring.setDesc(2, shared.addrOf(6), 100, NEXT, 3);
    ring.setDesc(3, shared.addrOf(20), VIRTIO_NET_HDR_SIZE, NEXT, 4);
    ring.setDesc(4, priv, VIRTIO_NET_HDR_SIZE, 0, 0);
    t.equal(classify(0), TxClass.Gift, 'a chain starting in the window is a gift');
    t.equal(tx.giftLink(seg, 0, vm.id), 4);
    t.equal(tx.giftLink(seg, 1, vm.id), -1);
    t.equal(tx.drop, Drop.BadZcDesc, 'link not at a buffer start');
    t.equal(tx.giftLink(seg, 2, vm.id), -1);
    t.equal(tx.drop, Drop.BadZcDesc, 'link not 12 bytes');
    t.equal(tx.giftLink(seg, 3, vm.id), -1);
    t.equal(tx.drop, Drop.NotOwner, 'link owned by another port');
    t.equal(tx.giftLink(seg, 4, vm.id), -1);
    t.equal(tx.drop, Drop.BadZcDesc, 'link outside the window');
    t.equal(tx.giftLink(seg, 3, other.id), 20, 'its owner may gift it');
  });

  t.test('shared packets: Shared, or bad-zc-desc / not-owner', async (t) => {
    ring.setDesc(0, shared.addrOf(7), 100, 0, 0);
    t.equal(classify(0), TxClass.Shared);
    t.equal(tx.buf, 7);
    ring.setDesc(0, shared.addrOf(7), shared.bufSize, 0, 0);
    t.equal(classify(0), TxClass.Shared, 'a whole buffer');
    ring.setDesc(0, shared.addrOf(7) + 64, 100, 0, 0);
    t.equal(classify(0), TxClass.Drop);
    t.equal(tx.drop, Drop.BadZcDesc, 'not at a buffer start');
    ring.setDesc(0, shared.addrOf(7), shared.bufSize + 1, 0, 0);
    t.equal(classify(0), TxClass.Drop);
    t.equal(tx.drop, Drop.BadZcDesc, 'longer than a buffer');
    ring.setDesc(0, shared.addrOf(17), 100, 0, 0);
    t.equal(classify(0), TxClass.Drop);
    t.equal(tx.drop, Drop.NotOwner, 'owned by the other port');
    ledger.transfer(8, 0xffff);
    ring.setDesc(0, shared.addrOf(8), 100, 0, 0);
    t.equal(classify(0), TxClass.Drop);
    t.equal(tx.drop, Drop.NotOwner, 'in the pool');
    ledger.transfer(8, vm.id);
    t.equal(classify(0), TxClass.Shared, 'owned again');
    t.ok(ledger.check().ok, 'classification never moves a buffer');
  });
});
