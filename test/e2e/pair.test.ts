/**
 * Pair mode end to end, all real processes: a switch, guest-driver VMs
 * (`zcswitch vm`), shared memory, eventfds and Unix sockets. Both pair
 * exchanges (forwarding.pairExchange): swap, the default, and gift.
 */
import t, { type Test } from 'tap';
import { type SwitchProc, counters, sleep, startSwitch, vm, waitAttached, waitFor, waitForLog } from '../helpers/procs';

const PAIR = { ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] };
const EXCHANGES = ['swap', 'gift'] as const;
/**
 * A swapped frame waits for the receiver's own empty buffer, and after
 * rxWaitMs (default 50) it is copied: a receiver descheduled that long on a
 * loaded test machine would turn "every frame zero-copy" into a timing
 * test. These tests check the exchange, not the deadline (flow-control tests do).
 */
const RX_WAIT_MS = 5000;
/** A pair with the given exchange (plus any other top-level keys). */
const pairWith = (pairExchange: (typeof EXCHANGES)[number], more: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ ...PAIR, ...more, forwarding: { pairExchange, rxWaitMs: RX_WAIT_MS } });

for (const exchange of EXCHANGES) t.test(`${exchange}: 1,000,000 packets each way, every payload verified, zero bytes copied`, async (t) => {
  const sw = await startSwitch(t, pairWith(exchange));
  const echo = vm(sw, 'vm2', ['--mode', 'echo', '--count', '1000000']);
  await waitAttached(sw, 'vm2');
  // Wait for every echo, however loaded the machine (the linger bounds a stall at 20 s).
  const gen = vm(sw, 'vm1', ['--mode', 'gen', '--count', '1000000', '--size', '64', '--expect', '1000000', '--linger', '20000']);
  const [g, e] = await Promise.all([gen.result, echo.result]);
  t.equal(g.code, 0, `gen exited cleanly: ${g.stderr}`);
  t.equal(e.code, 0, `echo exited cleanly: ${e.stderr}`);
  // vm1 -> vm2
  t.equal(e.summary.received, 1_000_000, 'echo received every packet');
  t.equal(e.summary.verified, 1_000_000, 'every payload checked out at vm2');
  // vm2 -> vm1
  t.equal(e.summary.sent, 1_000_000, 'echo sent every packet back');
  t.equal(g.summary.received, 1_000_000, 'gen received every echo');
  t.equal(g.summary.verified, 1_000_000, 'every echoed payload checked out at vm1');
  t.equal(g.summary.lost, 0, 'no packet lost');
  t.equal(g.summary.dup, 0, 'no packet duplicated or reordered');
  const s = await sw.stats();
  for (const p of s.ports) {
    const c = counters(p);
    t.equal(c.copiedBytes, 0, `${p.name}: 0 payload bytes copied`);
    t.equal(c.zeroCopy, 1_000_000, `${p.name}: all its packets moved zero-copy`);
    t.same(c.drops, {}, `${p.name}: no drops`);
    if (exchange === 'swap') t.equal(c.giftsIn + c.giftsOut + c.returned, 0, `${p.name}: swaps only, no gift or return`);
  }
  t.ok(s.ledger.ok, `ledger balanced: ${s.ledger.problems.join('; ')}`);
  t.equal(s.sharedBuffers.pool, s.sharedBuffers.bufCount, 'all buffers back in the pool after both VMs left');
});

/**
 * One way, 40 × bufCount verified frames from vm1 to vm2 over 256 buffers (so the sender must get buffers back
 * all along); the ledger is checked every 50 ms meanwhile, and `sample` sees each stats snapshot too.
 */
async function oneWay(t: Test, exchange: 'gift' | 'swap', sample: (s: Awaited<ReturnType<SwitchProc['stats']>>) => void = () => {}) {
  const bufCount = 256;
  const sw = await startSwitch(t, pairWith(exchange, { sharedBuffers: { bufCount, bufSize: 2048 } }));
  const total = 40 * bufCount;
  const sink = vm(sw, 'vm2', ['--mode', 'sink', '--count', String(total), '--duration', '120']);
  await waitAttached(sw, 'vm2');
  const gen = vm(sw, 'vm1', ['--mode', 'gen', '--count', String(total), '--size', '128']);
  // The ledger balances at every instant we look, not only at the end.
  let checks = 0;
  const sampler = (async () => {
    while (gen.child.exitCode === null) {
      const s = await sw.stats().catch(() => null);
      if (s) {
        checks++;
        if (!s.ledger.ok) t.fail(`ledger unbalanced mid-traffic: ${s.ledger.problems.join('; ')}`);
        sample(s);
      }
      await sleep(50);
    }
  })();
  const [g, k] = await Promise.all([gen.result, sink.result]);
  await sampler;
  t.equal(g.summary.sent, total, `gen sent 40 x bufCount packets (it needed buffers back to do so: ${exchange})`);
  t.equal(k.summary.received, total, 'sink received them all');
  t.equal(k.summary.verified, total, 'all verified');
  t.equal(k.summary.lost, 0, 'none lost');
  const s = await sw.stats();
  t.ok(checks > 0, `ledger sampled ${checks} times during traffic`);
  t.ok(s.ledger.ok, `ledger balanced at the end: ${s.ledger.problems.join('; ')}`);
  const vm1 = counters(s.ports.find((p) => p.name === 'vm1')!);
  const vm2 = counters(s.ports.find((p) => p.name === 'vm2')!);
  return { g, k, vm1, vm2, total, bufCount };
}

t.test('gift: one-way traffic keeps flowing through GIFT_BUFFER', async (t) => {
  const { g, k, vm1, vm2, total, bufCount } = await oneWay(t, 'gift');
  t.ok(k.summary.giftsSent > 0, `sink gifted buffers back (${k.summary.giftsSent})`);
  t.ok(g.summary.giftsReceived >= total - bufCount, `gen was gifted at least ${total - bufCount} buffers (${g.summary.giftsReceived})`);
  t.ok(vm2.giftsIn > 0 && vm1.giftsOut === vm2.giftsIn, `switch counted the gifts (${vm2.giftsIn})`);
});

t.test('swap: one-way traffic flows forever with no gifts, each VM keeps its buffer count', async (t) => {
  // Neither VM ever holds more than its share.
  const { g, k, vm1, vm2, total } = await oneWay(t, 'swap', (s) => {
    for (const p of s.ports) if (p.buffersOwned > 256 / 2) t.fail(`${p.name} owns ${p.buffersOwned} buffers mid-traffic`);
  });
  t.equal(k.summary.giftsSent + g.summary.giftsReceived, 0, 'no gift sent or received');
  t.equal(vm1.zeroCopy, total, 'every frame swapped');
  t.equal(vm1.giftsIn + vm2.giftsIn + vm1.returned, 0, 'the switch saw no gift and returned nothing');
});

for (const exchange of EXCHANGES) t.test(`${exchange}: a VM killed mid-traffic: switch survives, buffers reclaimed, port reusable`, async (t) => {
  const sw = await startSwitch(t, pairWith(exchange));
  const sink = vm(sw, 'vm2', ['--mode', 'sink']);
  await waitAttached(sw, 'vm2');
  const gen1 = vm(sw, 'vm1', ['--mode', 'gen', '--stream', '1']);
  await waitFor('traffic to flow', async () => counters(await sw.port('vm2')).txPackets > 20000, 20000);
  gen1.child.kill('SIGKILL');
  await gen1.exited;
  await waitFor('the switch to notice vm1 is gone', async () => !(await sw.port('vm1')).attached);
  t.ok(await waitForLog(sw, /"port":"vm1".*front-end disconnected/), 'disconnect logged with the port name');
  let s = await sw.stats();
  t.ok(s.ledger.ok, `ledger balanced after the kill: ${s.ledger.problems.join('; ')}`);
  t.equal(s.ports.find((p) => p.name === 'vm1')!.buffersOwned, 0, 'the dead VM owns nothing');
  // What it owned went back to the pool (it may have owned nothing: every buffer sent and taken before the kill).
  const vm2Owned = s.ports.find((p) => p.name === 'vm2')!.buffersOwned;
  t.equal(s.sharedBuffers.pool + vm2Owned, s.sharedBuffers.bufCount, `every buffer is the pool's (${s.sharedBuffers.pool}) or vm2's (${vm2Owned})`);
  const before = counters(s.ports.find((p) => p.name === 'vm2')!).txPackets;

  // Attach again on the same port and send a known amount.
  const gen2 = vm(sw, 'vm1', ['--mode', 'gen', '--stream', '2', '--count', '5000']);
  const g2 = await gen2.result;
  t.equal(g2.code, 0, `second VM ran: ${g2.stderr}`);
  t.equal(g2.summary.sent, 5000, 're-attached VM sent 5000 packets');
  await waitFor('vm2 to receive them', async () => counters(await sw.port('vm2')).txPackets >= before + 5000);
  sink.child.kill('SIGTERM');
  const k = await sink.result;
  t.equal(k.code, 0, 'sink stopped cleanly');
  t.equal(k.summary.badChecksum + k.summary.badLength, 0, 'nothing corrupted');
  s = await sw.stats();
  t.ok(s.ledger.ok, `ledger balanced at the end: ${s.ledger.problems.join('; ')}`);
  t.equal(s.sharedBuffers.pool, s.sharedBuffers.bufCount, 'everything reclaimed once both VMs left');
  t.ok(sw.child.exitCode === null, 'switch still running');
});
