/**
 * A peer that attaches owning nothing still gets buffers (BufferPool,
 * GIFT_RETRY_MS). Through a real switch process and guest drivers: the
 * sender sends every buffer it owns and leaves; the receiver, holding every
 * buffer, gifts its surplus to the empty port and gets it back RETURNED,
 * which pauses its gifting. A new sender on the port owns nothing, so it
 * cannot show life by sending; the receiver's retry hands it buffers, and
 * traffic flows again. Both ways a driver tells a RETURNED gift from a
 * gift: by the used len (RETURNED_IN_USED, the default) and by the header.
 */
import path from 'node:path';
import t from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { FrameChecker, Verdict, writeTestFrame } from '../../src/guest/test-packet';
import { dataPathOf } from '../helpers/drivers';
import { startSwitch, waitAttached, waitFor } from '../helpers/procs';

const settle = () => new Promise((r) => setTimeout(r, 1));

for (const returnedInUsed of [true, false]) t.test(`a sender that attaches owning nothing gets gifts from a paused receiver (RETURNED told by the ${returnedInUsed ? 'used len' : 'header'})`, async (t) => {
  const sw = await startSwitch(t, { sharedBuffers: { bufCount: 256 }, ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] });
  const sock = (p: string) => path.join(sw.dir, `${p}.sock`);
  const rx = await GuestDriver.attach({ socketPath: sock('vm2'), returnedInUsed });
  const tx1 = await GuestDriver.attach({ socketPath: sock('vm1'), returnedInUsed });
  const drivers = [rx, tx1];
  t.teardown(() => drivers.forEach((d) => d.close()));
  await waitAttached(sw, 'vm1', 'vm2');

  // The first sender sends everything it owns; the receiver takes it all in and gifts nothing yet.
  let seq = 0;
  let refused = 0;
  for (let b = tx1.alloc(); b >= 0; b = tx1.alloc()) {
    writeTestFrame(tx1.shared!.mem, tx1.frameOffset(b), 60, 1, seq++);
    if (!tx1.send(b, 60)) refused++;
  }
  tx1.flush();
  t.equal(refused, 0, `the first sender sent all ${seq} buffers it owned`);
  const held: number[] = [];
  await waitFor('the receiver to hold every frame', async () => {
    const n = rx.receive(256);
    for (let i = 0; i < n; i++) held.push(rx.rxToken[i]);
    await settle();
    return held.length === seq;
  });
  tx1.close();
  await waitFor('the switch to see vm1 go', async () => !(await sw.port('vm1')).attached);
  let st = await sw.stats();
  t.equal(st.ports.find((p) => p.name === 'vm2')!.buffersOwned, 256, 'the receiver owns every buffer');
  t.equal(st.sharedBuffers.pool, 0, 'the pool is empty');

  // Released, the surplus is gifted to nobody and comes back RETURNED: gifting pauses.
  for (const b of held) rx.release(b);
  await waitFor('the receiver\'s gifts to come back', async () => {
    rx.flush();
    rx.receive(256);
    await settle();
    return rx.counters.returned > 0;
  });
  t.ok((rx as unknown as { pool: { blocked: boolean } }).pool.blocked, 'the receiver paused its gifting');
  t.equal(rx.counters.giftsReceived, 0, 'none of its own gifts taken for the peer\'s');
  t.equal(dataPathOf(rx).returnedInUsed, returnedInUsed, `RETURNED_IN_USED ${returnedInUsed ? 'acked' : 'not asked for'}`);

  // A new sender owns nothing: it can only wait for gifts.
  const tx2 = await GuestDriver.attach({ socketPath: sock('vm1'), returnedInUsed });
  drivers.push(tx2);
  await waitAttached(sw, 'vm1');
  t.equal(tx2.freeCount, 0, 'the new sender owns nothing');
  const check = new FrameChecker();
  let sent = 0;
  let got = 0;
  const deadline = Date.now() + 5000;
  while (got < 500 && Date.now() < deadline) {
    tx2.receive(256);
    for (let b = tx2.alloc(); b >= 0 && sent < 500; b = tx2.alloc()) {
      writeTestFrame(tx2.shared!.mem, tx2.frameOffset(b), 60, 2, sent);
      if (!tx2.send(b, 60)) {
        tx2.release(b);
        break;
      }
      sent++;
    }
    tx2.flush();
    const n = rx.receive(256);
    for (let i = 0; i < n; i++) {
      const tok = rx.rxToken[i];
      if (check.verify(rx.packetMem(tok), rx.packetOffset(tok), rx.rxLen[i]) === Verdict.Ok && check.lastStream === 2) got++;
      rx.release(tok);
    }
    rx.flush();
    await settle();
  }
  t.ok(tx2.counters.giftsReceived > 0, `the new sender got gifts (${tx2.counters.giftsReceived})`);
  t.equal(got, 500, 'and its 500 frames arrived');
  st = await sw.stats();
  t.ok(st.ledger.ok, `ledger balanced: ${st.ledger.problems.join('; ')}`);
});
