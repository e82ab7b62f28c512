/**
 * Rx descriptors by buffer (PROTOCOL_F_RX_BY_BUFFER; docs/protocol.md,
 * "Pair mode: rx descriptors by buffer") through a real switch process and
 * two guest drivers: one-way traffic through a small region, so every
 * buffer goes round many times (frame one way, gift back). A driver that
 * acked the bit writes no rx entry after its initial postings, and one
 * that did not keeps posting; either may face either. Every frame arrives
 * once, intact, in order; nothing is dropped; the ledger balances.
 */
import path from 'node:path';
import t from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { FrameChecker, Verdict, writeTestFrame } from '../../src/guest/test-packet';
import type { DriverQueue } from '../../src/virtio/driver-queue';
import { pumpOneWay } from '../helpers/pair-pump';
import { startSwitch, waitAttached } from '../helpers/procs';

/** The avail index of each rx ring of a driver (what it has posted, ever). */
const rxAvail = (d: GuestDriver): number[] =>
  (d as unknown as { dp: { qps: { rxq: DriverQueue }[] } }).dp.qps.map((qp) => qp.rxq.availIdx);

const cases = [
  { sender: true, receiver: true, queuePairs: 2 },
  { sender: false, receiver: true, queuePairs: 1 },
  { sender: true, receiver: false, queuePairs: 1 },
];
for (const { sender, receiver, queuePairs } of cases) {
  t.test(`sender ${sender ? 'with' : 'without'}, receiver ${receiver ? 'with' : 'without'} rx by buffer, ${queuePairs} queue pair(s)`, async (t) => {
    const sw = await startSwitch(t, {
      sharedBuffers: { bufCount: 256 }, ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']],
    });
    const tx = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm1.sock'), queuePairs, rxByBuffer: sender });
    const rx = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm2.sock'), queuePairs, rxByBuffer: receiver });
    t.teardown(() => {
      tx.close();
      rx.close();
    });
    await waitAttached(sw, 'vm1', 'vm2');
    t.equal(tx.rxByBuffer, sender, `the sender ${sender ? 'uses' : 'does not use'} it`);
    t.equal(rx.rxByBuffer, receiver, `the receiver ${receiver ? 'uses' : 'does not use'} it`);
    const tx0 = rxAvail(tx);
    const rx0 = rxAvail(rx);

    const TOTAL = 5000;
    const bufs = new Int32Array(32);
    const lens = new Uint32Array(32);
    const check = new FrameChecker();
    let seq = 0;
    let got = 0;
    const wrongs: string[] = [];
    // Over two queue pairs frames may interleave: each once, and in order per queue pair.
    const seen = new Uint8Array(TOTAL);
    const deadline = Date.now() + 30000;
    while (got < TOTAL && Date.now() < deadline) {
      let k = 0;
      for (; k < 32 && seq + k < TOTAL; k++) {
        const b = tx.alloc();
        if (b < 0) break;
        const len = 60 + ((seq + k) % 40);
        writeTestFrame(tx.shared!.mem, tx.frameOffset(b), len, 1, seq + k);
        bufs[k] = b;
        lens[k] = len;
      }
      const s = tx.sendBurst(bufs, lens, k, seq % queuePairs);
      for (let i = s; i < k; i++) tx.release(bufs[i]);
      seq += s;
      pumpOneWay(tx, rx, check, (v, q) => {
        if (v !== Verdict.Ok || q >= TOTAL || seen[q] !== 0 || (queuePairs === 1 && q !== got)) wrongs.push(`#${got}: verdict ${v}, seq ${q}`);
        else seen[q] = 1;
        got++;
      });
      rx.flush(); // gifts the surplus back
      await new Promise((r) => setImmediate(r));
    }
    t.equal(got, TOTAL, `all ${TOTAL} frames arrived through 256 buffers`);
    t.same(wrongs, [], queuePairs === 1 ? 'each once, intact, in order' : 'each once, intact');
    t.ok(tx.counters.giftsReceived > TOTAL / 2, `buffers came back as gifts (${tx.counters.giftsReceived})`);
    const grew = (before: number[], after: number[]) => after.some((a, q) => a !== before[q]);
    if (sender) t.same(rxAvail(tx), tx0, 'the sender wrote no rx entry after its first postings');
    else t.ok(grew(tx0, rxAvail(tx)), 'the sender posted each buffer before sending it');
    if (receiver) t.same(rxAvail(rx), rx0, 'the receiver wrote no rx entry for its gifts either');
    else t.ok(grew(rx0, rxAvail(rx)), 'the receiver posted each buffer before gifting it');
    const st = await sw.stats();
    for (const name of ['vm1', 'vm2']) {
      const p = st.ports.find((x) => x.name === name)!;
      t.same(p.counters.drops, {}, `${name}: nothing dropped`);
    }
    t.equal(st.ports.find((x) => x.name === 'vm1')!.counters.zeroCopy, TOTAL, 'all zero-copy');
    t.ok(st.ledger.ok, `ledger balanced: ${st.ledger.problems.join('; ')}`);
  });
}
