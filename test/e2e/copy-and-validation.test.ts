/**
 * The test process itself is VM1 (GuestDriver in-process, so it can write
 * any descriptor it likes); VM2 is a real `zcswitch vm` sink. Covers the
 * copy path for descriptors in the VM's own memory and the counted drop
 * reasons for hostile descriptors, with zero-copy traffic continuing, in
 * both pair exchanges (forwarding.pairExchange): a gift chain's good links
 * move to the peer in gift mode and come straight back in swap mode.
 */
import path from 'node:path';
import t from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { writeTestFrame } from '../../src/guest/test-packet';
import { VIRTQ_DESC_F_NEXT } from '../../src/virtio/defs';
import { counters, startSwitch, vm, waitAttached, waitFor } from '../helpers/procs';

for (const exchange of ['gift', 'swap'] as const) t.test(`${exchange}: copy path, bad descriptors, and traffic that keeps flowing`, async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']], forwarding: { pairExchange: exchange, rxWaitMs: 5000 } });
  // It stops by itself after the 1001 test frames below (the copied one and 1000 zero-copy).
  const sink = vm(sw, 'vm2', ['--mode', 'sink', '--count', '1001', '--duration', '60']);
  await waitAttached(sw, 'vm2');
  const drv = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm1.sock') });
  t.teardown(() => drv.close());
  t.ok(drv.shared, 'vm1 negotiated SHARED_BUFFERS');
  await waitAttached(sw, 'vm1');
  const vm1 = async () => counters(await sw.port('vm1'));
  const vm2 = async () => counters(await sw.port('vm2'));

  // 1. A frame in the VM's own memory (outside the region) is copied.
  const frame = new Uint8Array(200);
  writeTestFrame(frame, 0, 200, 7, 0);
  t.ok(drv.sendCopy(frame, 0, 200), 'queued a frame from private memory');
  drv.flush();
  await waitFor('the copied frame to be delivered', async () => (await vm1()).copied === 1);
  let c = await vm1();
  t.equal(c.copiedBytes, 200, 'its 200 payload bytes were copied and counted');
  t.equal(c.zeroCopy, 0, 'nothing went zero-copy yet');

  // 2. Hostile descriptors, each with its own reason.
  drv.injectRawTx([{ addr: 0x9_0000_0000_0000, len: 100 }]);
  drv.injectRawTx([{ addr: drv.privateSlotAddr(0), len: 64, flags: VIRTQ_DESC_F_NEXT, next: 0 }]);
  drv.injectRawTx([], 60000);
  drv.injectRawTx([{ addr: drv.privateSlotAddr(1), len: 64, next: 1 }, { addr: drv.privateSlotAddr(2), len: 64, next: 0 }]);
  await waitFor('four drops to be counted', async () => {
    const d = (await vm1()).drops;
    return (d['bad-address'] ?? 0) + (d['chain-loop'] ?? 0) + (d['bad-head'] ?? 0) >= 4;
  });
  c = await vm1();
  t.equal(c.drops['bad-address'], 1, 'address outside all memory: bad-address');
  t.equal(c.drops['chain-loop'], 2, 'a self loop and a two-descriptor cycle: chain-loop');
  t.equal(c.drops['bad-head'], 1, 'head index out of range: bad-head');

  // 3. A buffer the VM does not own.
  const notMine = drv.shared!.partitionStart === 0 ? drv.shared!.bufCount - 1 : 0;
  drv.injectRawTx([{ addr: drv.shared!.base + notMine * drv.shared!.bufSize, len: 100 }]);
  await waitFor('not-owner drop', async () => (await vm1()).drops['not-owner'] === 1);
  t.equal((await vm1()).drops['not-owner'], 1, 'sending a buffer owned by the peer: not-owner');

  // 3b. A gift chain (several 12-byte whole-buffer links): good links move
  // to the peer one by one (gift) or come back in the tx completion (swap),
  // bad ones are counted and skipped.
  const sh = drv.shared!;
  const at = (b: number) => sh.base + b * sh.bufSize;
  const g1 = drv.alloc();
  const g2 = drv.alloc();
  const g3 = drv.alloc();
  const owned = async () => {
    const st = await sw.stats();
    return (name: string) => st.ports.find((p) => p.name === name)!.buffersOwned;
  };
  const before = await owned();
  drv.injectRawTx([
    { addr: at(g1), len: 12, next: 1 },
    { addr: at(notMine), len: 12, next: 2 },
    { addr: at(g2), len: 12, next: 3 },
    { addr: at(g3), len: 100, next: 4 },
    { addr: at(g3) + 64, len: 12 },
  ]);
  await waitFor('the gift chain to be handled', async () => (await vm1()).giftsIn === 2);
  c = await vm1();
  t.equal(c.drops['not-owner'], 2, 'a link owned by the peer: not-owner');
  t.equal(c.drops['bad-zc-desc'], 2, 'a link that is not 12 bytes, and one not at a buffer start: bad-zc-desc');
  let s = await sw.stats();
  t.ok(s.ledger.ok, 'ledger balanced after the gift chain');
  const after = await owned();
  if (exchange === 'gift') {
    t.equal(after('vm2'), before('vm2') + 2, 'the two good links now belong to vm2');
    t.equal(after('vm1'), before('vm1') - 2, 'and no longer to vm1');
  } else {
    t.equal(after('vm2'), before('vm2'), 'swap: the gift gave vm2 nothing');
    t.equal(after('vm1'), before('vm1'), 'and vm1 kept its buffers');
    t.equal((await vm2()).giftsOut, 0, 'nothing was delivered as a gift');
  }

  // 4. Zero-copy traffic still flows.
  const stats0 = counters(await sw.port('vm2')).txPackets;
  let seq = 1;
  while (seq <= 1000) {
    const b = drv.alloc();
    if (b < 0) {
      drv.flush();
      drv.receive(64);
      await new Promise((r) => setImmediate(r));
      continue;
    }
    writeTestFrame(drv.shared!.mem, drv.frameOffset(b), 64, 7, seq, true);
    if (!drv.send(b, 64)) {
      drv.release(b);
      drv.flush();
      await new Promise((r) => setImmediate(r));
      continue;
    }
    seq++;
  }
  drv.flush();
  await waitFor('1000 zero-copy packets at vm2', async () => counters(await sw.port('vm2')).txPackets >= stats0 + 1000);
  c = await vm1();
  t.equal(c.zeroCopy, 1000, '1000 packets moved zero-copy after the bad ones');
  t.equal(c.copied, 1, 'still exactly one copied packet');

  const k = await sink.result;
  t.equal(k.summary.received, 1001, 'sink got the copied frame and the 1000 zero-copy ones, nothing else');
  t.equal(k.summary.verified, 1001, 'all intact');
  t.equal(k.summary.lost, 0, 'no gaps in the sequence');
  s = await sw.stats();
  t.ok(s.ledger.ok, `ledger balanced: ${s.ledger.problems.join('; ')}`);
  t.ok(sw.child.exitCode === null, 'switch still running');
});
