/**
 * The guest driver over a "shared BAR" without QEMU (`zcswitch vm
 * --shared-bar-file`): each VM attaches as a classic front-end (no
 * SHARED_BUFFERS), puts the region file the switch publishes into its
 * SET_MEM_TABLE at a guest-physical address of its own (as QEMU does for an
 * ivshmem-plain device), and learns geometry and partition from the region
 * header. Real processes: the switch and `zcswitch vm`s.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { counters, startSwitch, tempDir, vm, waitAttached } from '../helpers/procs';

const BUF_COUNT = 256;
const PAIR = { ports: [{ name: 'a' }, { name: 'b' }], pairs: [['a', 'b']], sharedBuffers: { bufCount: BUF_COUNT, bufSize: 2048 } };
const regionOf = (dir: string) => path.join(dir, 'pair:a+b.region');
/** A swapped frame is copied once its receiver has posted no empty buffer for rxWaitMs: long here, so a loaded machine cannot turn zero-copy into copies. */
const RX_WAIT_MS = 5000;

for (const exchange of ['swap', 'gift'] as const) t.test(`${exchange}: one-way traffic between two shared-BAR VMs at different addresses: zero-copy, ledger balanced`, async (t) => {
  const sw = await startSwitch(t, { ...PAIR, forwarding: { pairExchange: exchange, rxWaitMs: RX_WAIT_MS } });
  const total = 40 * BUF_COUNT;
  const sink = vm(sw, 'b', ['--shared-bar-file', regionOf(sw.dir), '--shared-bar-gpa', '0x900000000', '--mode', 'sink',
    '--count', String(total), '--duration', '120']);
  await waitAttached(sw, 'b');
  const gen = vm(sw, 'a', ['--shared-bar-file', regionOf(sw.dir), '--mode', 'gen', '--count', String(total), '--size', '128']);
  const [g, s] = await Promise.all([gen.result, sink.result]);
  t.equal(g.code, 0, `gen exited cleanly: ${g.stderr}`);
  t.equal(s.code, 0, `sink exited cleanly: ${s.stderr}`);
  t.equal(g.summary.sent, total, 'gen sent every frame');
  t.equal(s.summary.received, total, 'sink received every frame');
  t.equal(s.summary.verified, total, 'every frame verified at the sink');
  t.equal(s.summary.lost + s.summary.dup + s.summary.badLength + s.summary.badChecksum, 0, 'none lost, duplicated or bad');
  // Only BUF_COUNT buffers exist: 40× that many frames one way means the sink handed buffers back (gift) or the switch swapped them.
  if (exchange === 'gift') t.ok(s.summary.giftsSent > 0 && g.summary.giftsReceived > 0, `gifts flowed back (sink sent ${s.summary.giftsSent}, gen got ${g.summary.giftsReceived})`);
  else t.equal(s.summary.giftsSent + g.summary.giftsReceived, 0, 'swap: no gift needed');
  const st = await sw.stats();
  const a = counters(st.ports.find((p) => p.name === 'a')!);
  const b = counters(st.ports.find((p) => p.name === 'b')!);
  t.equal(a.zeroCopy, total, 'the switch moved every frame of a zero-copy');
  t.equal(a.copiedBytes + b.copiedBytes, 0, '0 payload bytes copied');
  t.same(a.drops, {}, 'a: no drops');
  t.same(b.drops, {}, 'b: no drops');
  t.ok(st.ledger.ok, `ledger balanced: ${st.ledger.problems.join('; ')}`);
  t.equal(st.sharedBuffers.pool, st.sharedBuffers.bufCount, 'every buffer back in the pool after both VMs left');
});

for (const exchange of ['swap', 'gift'] as const) t.test(`${exchange}: a shared-BAR VM and a SHARED_BUFFERS VM of one domain echo zero-copy`, async (t) => {
  const sw = await startSwitch(t, { ...PAIR, forwarding: { pairExchange: exchange, rxWaitMs: RX_WAIT_MS } });
  const n = 5000;
  const echo = vm(sw, 'b', ['--mode', 'echo', '--count', String(n)]);
  await waitAttached(sw, 'b');
  const gen = vm(sw, 'a', ['--shared-bar-file', regionOf(sw.dir), '--mode', 'gen', '--count', String(n), '--expect', String(n), '--linger', '20000']);
  const [g, e] = await Promise.all([gen.result, echo.result]);
  t.equal(g.code, 0, `gen exited cleanly: ${g.stderr}`);
  t.equal(e.code, 0, `echo exited cleanly: ${e.stderr}`);
  t.equal(e.summary.verified, n, 'every frame verified at the echo');
  t.equal(g.summary.verified, n, 'every echoed frame verified at the gen');
  const st = await sw.stats();
  for (const p of st.ports) {
    const c = counters(p);
    t.equal(c.zeroCopy, n, `${p.name}: every frame zero-copy`);
    t.equal(c.copiedBytes, 0, `${p.name}: 0 payload bytes copied`);
  }
  t.ok(st.ledger.ok, `ledger balanced: ${st.ledger.problems.join('; ')}`);
});

t.test('a file that is not a region, or a port the header does not list, is a clear error', async (t) => {
  const sw = await startSwitch(t, PAIR);
  const junk = path.join(tempDir(t), 'junk.region');
  fs.writeFileSync(junk, Buffer.alloc(1 << 20));
  const bad = await vm(sw, 'a', ['--shared-bar-file', junk, '--mode', 'sink', '--duration', '1']).result;
  t.equal(bad.code, 1, 'exit status 1');
  t.match(bad.stderr, /region header: magic is "", expected "zcswitch"/, 'names the bad field');
  // The socket of port a, but the header entry of a port that does not exist.
  const missing = await vm(sw, 'a', ['--socket', path.join(sw.dir, 'a.sock'), '--port', 'nosuch', '--shared-bar-file', regionOf(sw.dir),
    '--mode', 'sink', '--duration', '1']).result;
  t.equal(missing.code, 1, 'exit status 1');
  t.match(missing.stderr, /lists no port with name "nosuch".*ports: a, b/, 'names the port and the ports there are');
  const st = await sw.stats();
  t.ok(st.ledger.ok, `ledger balanced: ${st.ledger.problems.join('; ')}`);
});
