/**
 * GuestDriver.sendBurst through a real switch process, for both pair
 * exchanges: a burst larger than the tx ring sends what fits (the first
 * ones) and leaves the rest the caller's; every frame arrives once, intact,
 * in order, with its own length; a burst on queue pair 1 goes out there;
 * counters and the ledger agree; with gifts, shared buffer b posts in rx
 * descriptor b. Each at the default region base and at a base whose low
 * address word is above 2^31.
 */
import path from 'node:path';
import t from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import type { DriverQueue } from '../../src/virtio/driver-queue';
import { FrameChecker, Verdict, writeTestFrame } from '../../src/guest/test-packet';
import { startSwitch, waitAttached } from '../helpers/procs';

// The region at the default base (its low address word 0) and at one whose low word has bit 31 set (RegionGeometry.baseLo negative).
const cases = [['gift', undefined], ['swap', undefined], ['gift', '0x4080000000'], ['swap', '0x4080000000']] as const;
for (const [exchange, base] of cases) t.test(`${exchange}, base ${base ?? 'default'}: sendBurst sends what the ring holds, every frame once and intact`, async (t) => {
  const sw = await startSwitch(t, {
    ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']], forwarding: { pairExchange: exchange },
    ...(base ? { sharedBuffers: { base } } : {}),
  });
  const tx = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm1.sock'), queuePairs: 2, txQueueSize: 16 });
  const rx = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm2.sock'), queuePairs: 2 });
  t.teardown(() => {
    tx.close();
    rx.close();
  });
  await waitAttached(sw, 'vm1', 'vm2');
  const bufs = new Int32Array(24);
  const lens = new Uint32Array(24);
  const check = new FrameChecker();
  let seq = 0;
  let got = 0;
  let bytes = 0;
  const wrongs: string[] = [];
  // The receiver posted its buffers over both rx queues, so frames arrive by queue: each seq once, with its length.
  const seen = new Uint8Array(4096);
  /** Take n buffers and write frames seq.. into them (lengths 60 + 7k). */
  const fill = (n: number): number => {
    let k = 0;
    for (; k < n; k++) {
      const b = tx.alloc();
      if (b < 0) break;
      const len = 60 + 7 * ((seq + k) % 50);
      writeTestFrame(tx.shared!.mem, tx.frameOffset(b), len, 1, seq + k);
      bufs[k] = b;
      lens[k] = len;
    }
    return k;
  };
  const drain = (): void => {
    tx.flush();
    tx.receive(256); // buffers coming back (gifts, or nothing with swaps)
    tx.flush();
    const n = rx.receive(256);
    for (let i = 0; i < n; i++) {
      const tok = rx.rxToken[i];
      const len = rx.rxLen[i];
      const v = check.verify(rx.packetMem(tok), rx.packetOffset(tok), len);
      const q = check.lastSeq;
      if (v !== Verdict.Ok || q >= seen.length || seen[q] !== 0 || len !== 60 + 7 * (q % 50)) wrongs.push(`#${got}: verdict ${v}, seq ${q}, len ${len}`);
      else seen[q] = 1;
      got++;
      rx.release(tok);
    }
    rx.flush();
  };

  const n = fill(24);
  t.equal(n, 24);
  const sent = tx.sendBurst(bufs, lens, n);
  t.equal(sent, 16, 'the 16 that fit a 16-entry tx ring');
  for (let i = sent; i < n; i++) tx.release(bufs[i]);
  seq += sent;
  t.equal(tx.counters.txPackets, 16);
  t.equal(tx.counters.txBytes, Array.from(lens.subarray(0, 16)).reduce((a, b) => a + b, 0), 'bytes of the frames sent');
  t.equal(tx.sendBurst(bufs, lens, 0), 0, 'an empty burst sends nothing');

  const TOTAL = 2000;
  const deadline = Date.now() + 20000;
  while (got < TOTAL && Date.now() < deadline) {
    if (seq < TOTAL) {
      const k = fill(Math.min(24, TOTAL - seq));
      const s = tx.sendBurst(bufs, lens, k);
      for (let i = s; i < k; i++) tx.release(bufs[i]);
      for (let i = 0; i < s; i++) bytes += lens[i];
      seq += s;
    }
    drain();
    await new Promise((r) => setImmediate(r));
  }
  t.equal(got, TOTAL, `all ${TOTAL} frames arrived`);
  t.same(wrongs, [], 'each once, intact, with its own length');
  t.equal(seen.subarray(0, TOTAL).reduce((a, b) => a + b, 0), TOTAL, 'every sequence number');

  // A burst on queue pair 1.
  const k = fill(8);
  t.equal(tx.sendBurst(bufs, lens, k, 1), 8, 'eight on queue pair 1');
  seq += 8;
  const until = Date.now() + 10000;
  while (got < TOTAL + 8 && Date.now() < until) {
    drain();
    await new Promise((r) => setImmediate(r));
  }
  t.equal(got, TOTAL + 8);
  t.same(wrongs, []);
  if (exchange === 'gift') {
    // Gift exchange: shared buffer b posts in rx descriptor b (GuestDataPath.fixedRx), written once.
    const qps = (tx as unknown as { dp: { qps: { rxq: DriverQueue }[] } }).dp.qps;
    const sh = tx.shared!;
    let posted = 0;
    const wrong: number[] = [];
    for (const qp of qps) {
      t.equal(qp.rxq.reserved, sh.bufCount, 'rx descriptors [0, bufCount) reserved for the buffers');
      for (let b = 0; b < sh.bufCount; b++) {
        const r = qp.rxq.ring;
        if (r.descAddr(b) === 0) continue;
        posted++;
        if (r.descAddr(b) !== sh.addrOf(b) || r.descLen(b) !== sh.bufSize) wrong.push(b);
      }
    }
    t.ok(posted >= sh.bufCount / 2, `rx descriptors in use hold their own buffer (${posted})`);
    t.same(wrong, [], 'descriptor b names buffer b, whole');
  }
  const s = await sw.stats();
  const vm1 = s.ports.find((p) => p.name === 'vm1')!;
  t.equal(vm1.queues[1].rxPackets, 8, 'the switch took them from vm1\'s queue pair 1');
  t.equal(vm1.counters.rxPackets, TOTAL + 8);
  t.equal(vm1.counters.zeroCopy, TOTAL + 8, 'all zero-copy');
  t.ok(s.ledger.ok, 'ledger balanced');
});
