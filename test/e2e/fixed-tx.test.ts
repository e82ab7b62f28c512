/**
 * Fixed tx descriptors (GuestDataPath.fixedTx): in the gift exchange, with
 * tx rings of at least bufCount entries plus the private tx slots, the
 * guest driver sends shared buffer b in tx descriptor b, frames and gift
 * links alike, and reaps completions of those without reading them.
 * Through a real switch process and two guest drivers: frames through
 * shared buffers and copies through private slots on one tx ring, so
 * both kinds of completion come back interleaved. Every frame arrives
 * once, intact, in order; every private slot and allocated descriptor
 * comes back; nothing is dropped; the ledger balances. Swaps, and a tx
 * ring too small, keep allocating descriptors.
 */
import path from 'node:path';
import t, { type Test } from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { FrameChecker, Verdict, writeTestFrame } from '../../src/guest/test-packet';
import { VIRTIO_NET_HDR_SIZE, VIRTQ_DESC_F_NEXT } from '../../src/virtio/defs';
import { attachDrivers, dataPathOf, settle } from '../helpers/drivers';
import { pumpOneWay } from '../helpers/pair-pump';
import { type SwitchProc, startSwitch } from '../helpers/procs';

/** A switch with a pair of 256 buffers (gift exchange) and a guest driver on each port: vm1 (tx), vm2 (rx). */
async function attachedPair(t: Test): Promise<{ sw: SwitchProc; tx: GuestDriver; rx: GuestDriver }> {
  const sw = await startSwitch(t, { sharedBuffers: { bufCount: 256 }, ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] });
  const [tx, rx] = await attachDrivers(t, sw, ['vm1', 'vm2']);
  return { sw, tx, rx };
}

t.test('gifts: shared buffer b leaves in tx descriptor b, copies in allocated ones, both complete', async (t) => {
  const { sw, tx, rx } = await attachedPair(t);
  const sh = tx.shared!;
  const txv = dataPathOf(tx);
  const rxv = dataPathOf(rx);
  const txq = txv.qps[0].txq;
  const privTx = txv.privTxTop;
  t.ok(tx.fixedTx && rx.fixedTx, 'both drivers use fixed tx descriptors');
  t.ok(txq.ring.num >= sh.bufCount + privTx, `the tx ring (${txq.ring.num}) holds every buffer and the ${privTx} private slots`);
  t.equal(txq.reserved, sh.bufCount, 'tx descriptors [0, bufCount) reserved for the buffers');
  const allocatable = txq.freeDescs;

  // One frame: its avail entry and descriptor name the buffer.
  const b = tx.alloc();
  writeTestFrame(sh.mem, tx.frameOffset(b), 100, 1, 0);
  t.ok(tx.send(b, 100), 'sent');
  t.equal(txq.ring.avail[2 + ((txq.availIdx - 1) & txq.ring.mask)], b, `the avail entry is descriptor ${b}`);
  t.equal(txq.ring.descAddr(b), sh.base + sh.offsetOf(b), 'descriptor b holds buffer b');
  t.equal(txq.ring.descLen(b), VIRTIO_NET_HDR_SIZE + 100, 'with the frame\'s length');
  t.equal(txq.ring.descFlags(b), 0, 'alone');
  t.equal(txq.freeDescs, allocatable, 'no descriptor allocated for it');

  const TOTAL = 3000;
  const check = new FrameChecker();
  const frame = new Uint8Array(200);
  let seq = 1;
  let got = 0;
  let copies = 0;
  let sawChain = false;
  const wrongs: string[] = [];
  const deadline = Date.now() + 30000;
  while (got < TOTAL && Date.now() < deadline) {
    for (let k = 0; k < 24 && seq < TOTAL; k++) {
      const len = 60 + (seq % 90);
      // Every fifth frame through a private slot: its completion must free the slot and its descriptor.
      if (seq % 5 === 0) {
        writeTestFrame(frame, 0, len, 1, seq);
        if (!tx.sendCopy(frame, 0, len)) break;
        copies++;
      } else {
        const buf = tx.alloc();
        if (buf < 0) break;
        writeTestFrame(sh.mem, tx.frameOffset(buf), len, 1, seq);
        if (!tx.send(buf, len)) {
          tx.release(buf);
          break;
        }
      }
      seq++;
    }
    pumpOneWay(tx, rx, check, (v, q) => {
      if (v !== Verdict.Ok || q !== got) wrongs.push(`#${got}: verdict ${v}, seq ${q}`);
      got++;
    });
    const rq = rxv.qps[0].txq;
    const before = rq.availIdx;
    rx.flush(); // gifts the surplus back: a chain of the buffers' own descriptors
    if (rq.availIdx !== before && !sawChain) {
      const head = rq.ring.avail[2 + (before & rq.ring.mask)];
      const next = rq.ring.descNext(head);
      sawChain = head < sh.bufCount && rq.ring.descAddr(head) === sh.base + sh.offsetOf(head) &&
        rq.ring.descLen(head) === VIRTIO_NET_HDR_SIZE && (rq.ring.descFlags(head) & VIRTQ_DESC_F_NEXT) !== 0 &&
        next < sh.bufCount && rq.ring.descAddr(next) === sh.base + sh.offsetOf(next);
    }
    await settle();
  }
  t.equal(got, TOTAL, `all ${TOTAL} frames arrived through 256 buffers (${copies} of them copies)`);
  t.same(wrongs, [], 'each once, intact, in order');
  t.ok(sawChain, 'a gift chain links the buffers\' own tx descriptors');
  t.ok(tx.counters.giftsReceived > TOTAL / 2, `buffers came back as gifts (${tx.counters.giftsReceived})`);

  // Every completion taken: private slots and allocated descriptors all back, nothing counted in flight.
  const until = Date.now() + 5000;
  while ((tx.txInFlight() > 0 || rx.txInFlight() > 0) && Date.now() < until) await settle();
  t.equal(tx.txInFlight(), 0, 'the sender has nothing in flight');
  t.equal(txv.qps[0].txOthers, 0, 'no allocated entry left in flight');
  t.equal(txv.privTxTop, privTx, 'every private tx slot is free again');
  t.equal(txq.freeDescs, allocatable, 'every allocated tx descriptor is free again');
  t.equal(rxv.qps[0].txOthers, 0, 'the receiver\'s gift chains took no allocated descriptor');

  const st = await sw.stats();
  for (const name of ['vm1', 'vm2']) t.same(st.ports.find((x) => x.name === name)!.counters.drops, {}, `${name}: nothing dropped`);
  t.equal(st.ports.find((x) => x.name === 'vm1')!.counters.copied, copies, 'the copies went the copy path');
  t.ok(st.ledger.ok, `ledger balanced: ${st.ledger.problems.join('; ')}`);
});

t.test('swaps, and a tx ring without room for every buffer, allocate tx descriptors', async (t) => {
  const sw = await startSwitch(t, {
    sharedBuffers: { bufCount: 256 }, forwarding: { pairExchange: 'swap' }, ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']],
  });
  const swap = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm1.sock') });
  t.teardown(() => swap.close());
  t.notOk(swap.fixedTx, 'swap: no fixed tx descriptors');
  t.equal(dataPathOf(swap).qps[0].txq.reserved, 0, 'none reserved');

  const sw2 = await startSwitch(t, { sharedBuffers: { bufCount: 256 }, ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] });
  const small = await GuestDriver.attach({ socketPath: path.join(sw2.dir, 'vm1.sock'), txQueueSize: 256 });
  t.teardown(() => small.close());
  t.notOk(small.fixedTx, 'a 256-entry tx ring for 256 buffers and 64 private slots: no fixed tx descriptors');
  t.equal(dataPathOf(small).qps[0].txq.reserved, 0, 'none reserved');
});

t.test('gift chains keep their descriptors\' chain words from one round of the buffers to the next', async (t) => {
  // A chain word the receiver rewrites takes its cache line from the switch, which reads it next
  // (GuestDataPath.giftLinksFixed). Buffers come back to it in the order it gifted them, so in steady
  // one-way traffic a chain word changes only where a chain ends at another place than last time.
  const { sw, tx, rx } = await attachedPair(t);
  const sh = tx.shared!;
  const txWords = dataPathOf(rx).qps[0].txWords;
  const check = new FrameChecker();
  let seq = 0;
  let got = 0;
  let rewritten = 0;
  let giftsAtStart = -1;
  const WARM = 2000;
  const TOTAL = 12000;
  const before = new Uint32Array(txWords.length);
  const deadline = Date.now() + 30000;
  while (got < TOTAL && Date.now() < deadline) {
    for (let b = tx.alloc(); b >= 0; b = tx.alloc()) {
      writeTestFrame(sh.mem, tx.frameOffset(b), 60, 1, seq);
      if (!tx.send(b, 60)) {
        tx.release(b);
        break;
      }
      seq++;
    }
    got += pumpOneWay(tx, rx, check, () => {});
    before.set(txWords);
    rx.flush(); // gifts the surplus back
    if (got >= WARM) {
      if (giftsAtStart < 0) giftsAtStart = rx.counters.giftsSent;
      for (let b = 0; b < sh.bufCount; b++) if (txWords[2 * b + 1] !== before[2 * b + 1]) rewritten++;
    }
    await settle();
  }
  const links = rx.counters.giftsSent - giftsAtStart;
  t.ok(got >= TOTAL, `${got} frames one way through ${sh.bufCount} buffers`);
  t.ok(links > 5000, `the receiver gifted ${links} buffers back after the warm-up`);
  t.ok(rewritten < links / 4, `a chain word rewritten for ${rewritten} of ${links} gift links`);
});
