/**
 * Multiqueue (VHOST_USER_PROTOCOL_F_MQ): two guest-driver VMs with 4 queue
 * pairs each through a real switch process. All queues carry traffic, and
 * a queue kept saturated does not starve the others: the switch gives
 * every transmit queue one burst per round.
 */
import path from 'node:path';
import t from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { FrameChecker, Verdict, writeTestFrame } from '../../src/guest/test-packet';
import { startSwitch, waitAttached } from '../helpers/procs';

for (const exchange of ['gift', 'swap'] as const) t.test(`${exchange}: 4 queue pairs, all used, no starvation`, async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']], forwarding: { burst: 32, pairExchange: exchange } });
  const tx = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm1.sock'), queuePairs: 4 });
  const rx = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm2.sock'), queuePairs: 4 });
  t.teardown(() => {
    tx.close();
    rx.close();
  });
  t.equal(tx.queuePairs, 4, 'vm1 opened 4 queue pairs');
  await waitAttached(sw, 'vm1', 'vm2');

  // Received frames per sending queue (stream id = queue + 1), and when the light ones were all in.
  const perQueue = [0, 0, 0, 0, 0];
  const check = new FrameChecker();
  const seq = [0, 0, 0, 0];
  const send = (q: number): boolean => {
    const b = tx.alloc();
    if (b < 0) return false;
    writeTestFrame(tx.shared!.mem, tx.frameOffset(b), 96, q + 1, seq[q]);
    if (!tx.send(b, 96, 0, q)) {
      tx.release(b);
      return false;
    }
    seq[q]++;
    return true;
  };
  const LIGHT = 200;
  const LIGHT_RESERVE = 8;
  let floodAfterLight = -1;
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    // Keep queue 0 as full as the ring allows, but leave the light queues
    // buffers to send (swapped buffers come back on queue 0's tx ring, so the
    // flood alone could hold every free buffer).
    while (tx.freeCount > LIGHT_RESERVE && send(0));
    for (let q = 1; q < 4; q++) if (seq[q] < LIGHT) send(q);
    tx.flush();
    tx.receive(256); // gifts coming back (gift exchange)
    tx.flush();
    const n = rx.receive(1024);
    for (let i = 0; i < n; i++) {
      const tok = rx.rxToken[i];
      if (check.verify(rx.packetMem(tok), rx.packetOffset(tok), rx.rxLen[i]) === Verdict.Ok) perQueue[check.lastStream]++;
      rx.release(tok);
    }
    rx.flush();
    const lightDone = perQueue[2] >= LIGHT && perQueue[3] >= LIGHT && perQueue[4] >= LIGHT;
    if (lightDone && floodAfterLight < 0) floodAfterLight = seq[0];
    if (lightDone && seq[0] > floodAfterLight + 1000) break;
    await new Promise((r) => setImmediate(r));
  }
  t.ok(floodAfterLight > 0, `the light queues got all ${LIGHT} frames through while queue 0 was flooding (${floodAfterLight} flood frames sent by then)`);
  t.ok(seq[0] > floodAfterLight, 'and the flood was still going after that');
  for (let q = 1; q <= 4; q++) t.ok(perQueue[q] > 0, `frames from tx queue ${q - 1} arrived (${perQueue[q]})`);
  const s = await sw.stats();
  const vm1 = s.ports.find((p) => p.name === 'vm1')!;
  const vm2 = s.ports.find((p) => p.name === 'vm2')!;
  t.equal(vm1.queues.length, 4, 'switch runs 4 queue pairs for vm1');
  t.ok(vm1.queues.every((q) => q.rxPackets > 0), `every vm1 tx queue carried traffic: ${vm1.queues.map((q) => q.rxPackets).join(', ')}`);
  t.ok(vm2.queues.filter((q) => q.txPackets > 0).length >= 2, `deliveries spread over vm2's rx queues: ${vm2.queues.map((q) => q.txPackets).join(', ')}`);
  t.ok(s.ledger.ok, 'ledger balanced');
});
