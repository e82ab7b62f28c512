/**
 * The guest driver's loops for the swap exchange (src/guest/swap-descs.ts)
 * on a pair with pairExchange "swap" and on a bridge, through a real switch
 * process and two guest drivers. Bursts of frames in shared buffers
 * (sendBurst) and copies through private slots (sendCopy) share one tx
 * ring, so the runs of swapped completions are cut by the copies' on both
 * rings. Every frame arrives once, intact, in order; every descriptor,
 * private slot and buffer comes back to where it belongs; nothing is
 * dropped or counted as an error; the ledger balances.
 */
import t from 'tap';
import type { QueuePair } from '../../src/guest/queue-pair';
import { FrameChecker, Verdict, defaultMacs, writeTestFrame } from '../../src/guest/test-packet';
import { attachDrivers, dataPathOf, settle } from '../helpers/drivers';
import { startSwitch } from '../helpers/procs';

const BRIDGE_DST = Uint8Array.of(2, 0, 0, 0, 0, 0xff);

for (const mode of ['pair', 'bridge'] as const) for (const inUsed of [true, false]) t.test(`${mode}${inUsed ? '' : ', exchanged buffers in descriptors (no SWAP_IN_USED)'}: shared frames in bursts and copies, interleaved, all come back`, async (t) => {
  const sw = await startSwitch(t, {
    sharedBuffers: { bufCount: 512 }, ports: [{ name: 'vm1' }, { name: 'vm2' }],
    ...(mode === 'pair' ? { pairs: [['vm1', 'vm2']], forwarding: { pairExchange: 'swap' } } : { mode: 'bridge' }),
  });
  const [tx, rx] = await attachDrivers(t, sw, ['vm1', 'vm2'], { swapInUsed: inUsed });
  const sh = tx.shared!;
  t.ok(sh.swap, 'the region says swap');
  t.ok(dataPathOf(tx).swapRuns && dataPathOf(rx).swapRuns, 'both drivers run the swap loops');
  t.equal(dataPathOf(tx).swapInUsed, inUsed, `exchanged buffers named in ${inUsed ? 'the used element' : 'descriptors'}`);
  const partition = tx.freeCount + dataPathOf(tx).qps[0].ownPosted;
  const macs = new Uint8Array(12);
  macs.set(BRIDGE_DST, 0);
  macs.set(defaultMacs(1).subarray(6, 12), 6);
  if (mode === 'bridge') {
    // The receiver's address, learnt from one frame it sends, so the generator's frames are unicast (swapped), not flooded.
    const b = rx.alloc();
    writeTestFrame(sh.mem, rx.frameOffset(b), 60, 9, 0, true, Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, ...BRIDGE_DST));
    t.ok(rx.send(b, 60), 'the receiver announces itself');
    rx.flush();
    const until = Date.now() + 5000;
    while (tx.receive(16) === 0 && Date.now() < until) await settle();
    tx.release(tx.rxToken[0]);
  }

  const TOTAL = 4000;
  const check = new FrameChecker();
  const frame = new Uint8Array(200);
  const bufs = new Int32Array(32);
  const lens = new Uint32Array(32);
  let seq = 0;
  let got = 0;
  let copies = 0;
  const wrongs: string[] = [];
  const deadline = Date.now() + 40000;
  while (got < TOTAL && Date.now() < deadline) {
    // A burst of shared frames, then a copy, a few times a round.
    for (let k = 0; k < 3 && seq < TOTAL; k++) {
      const want = Math.min(1 + ((seq * 7) % 29), TOTAL - seq);
      const n = tx.allocBurst(bufs, want);
      for (let i = 0; i < n; i++) {
        lens[i] = 60 + ((seq + i) % 90);
        writeTestFrame(sh.mem, tx.frameOffset(bufs[i]), lens[i], 1, seq + i, true, macs);
      }
      const sent = tx.sendBurst(bufs, lens, n);
      for (let i = sent; i < n; i++) tx.release(bufs[i]);
      seq += sent;
      if (sent < n || seq >= TOTAL) break;
      const len = 60 + (seq % 90);
      writeTestFrame(frame, 0, len, 1, seq, true, macs);
      if (!tx.sendCopy(frame, 0, len)) break;
      copies++;
      seq++;
    }
    tx.flush();
    tx.receive(256);
    tx.flush();
    const n = rx.receive(256);
    for (let i = 0; i < n; i++) {
      const tok = rx.rxToken[i];
      const v = check.verify(rx.packetMem(tok), rx.packetOffset(tok), rx.rxLen[i]);
      if (v !== Verdict.Ok || check.lastSeq !== got) wrongs.push(`#${got}: verdict ${v}, seq ${check.lastSeq}`);
      got++;
      rx.release(tok);
    }
    rx.flush();
    await settle();
  }
  t.equal(got, TOTAL, `all ${TOTAL} frames arrived through 512 buffers (${copies} of them copies)`);
  t.same(wrongs, [], 'each once, intact, in order');

  const until = Date.now() + 5000;
  while (tx.txInFlight() > 0 && Date.now() < until) await settle();
  const txv = dataPathOf(tx);
  const txq = txv.qps[0].txq;
  t.equal(tx.txInFlight(), 0, 'the sender has nothing in flight');
  t.equal(txv.qps[0].txOthers, 0, 'no allocated tx entry left in flight');
  t.equal(txq.freeDescs, txq.ring.num, 'every tx descriptor is free again');
  for (const [name, d] of [['sender', tx], ['receiver', rx]] as const) {
    t.equal(d.counters.rxErrors, 0, `${name}: no rx errors`);
    const qp = dataPathOf(d).qps[0];
    t.equal(d.freeCount + qp.ownPosted, partition, `${name}: its buffers are free or posted, ${partition} in all`);
    t.equal(qp.rxq.freeDescs + qp.ownPosted + privateRxPosted(qp), qp.rxq.ring.num, `${name}: every rx descriptor is free or holds a posting`);
  }
  const st = await sw.stats();
  for (const name of ['vm1', 'vm2']) t.same(st.ports.find((x) => x.name === name)!.counters.drops, {}, `${name}: nothing dropped`);
  t.equal(st.ports.find((x) => x.name === 'vm1')!.counters.zeroCopy, TOTAL - copies, 'every shared frame swapped');
  t.ok(st.ledger.ok, `ledger balanced: ${st.ledger.problems.join('; ')}`);
  t.same(st.ports.map((p) => p.buffersOwned), [partition, partition], 'each VM keeps its buffer count');
});

/** Rx descriptors holding a private copy target (rxKind < 0), posted at attach and after each copy received. */
function privateRxPosted(qp: QueuePair): number {
  let n = 0;
  const q = qp.rxq;
  // Descriptors not free and not an own posting: copy targets.
  const free = new Set(Array.from(q.freeStack.subarray(0, q.freeTop)));
  for (let id = 0; id < q.ring.num; id++) if (!free.has(id) && qp.rxOwn[id] === 0 && qp.rxKind[id] < 0) n++;
  return n;
}
