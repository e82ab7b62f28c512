/**
 * Data-path worker threads (forwarding.workers, docs/design.md "Threads"),
 * all real processes: a switch whose pairs are forwarded by two worker
 * threads, guest-driver VMs, shared memory, eventfds and Unix sockets.
 */
import t from 'tap';
import { counters, sleep, startSwitch, vm, waitAttached, waitFor } from '../helpers/procs';

const TWO_PAIRS = {
  ports: [{ name: 'a1' }, { name: 'a2' }, { name: 'b1' }, { name: 'b2' }],
  pairs: [['a1', 'a2'], ['b1', 'b2']],
  forwarding: { workers: 2 },
};

t.test('two pairs on two workers: traffic on both at once, every frame verified, ledger balanced', async (t) => {
  const sw = await startSwitch(t, TWO_PAIRS);
  let s = await sw.stats();
  t.equal(s.workers.length, 2, 'two workers');
  t.same(s.workers.map((w) => w.ports.sort()), [['a1', 'a2'], ['b1', 'b2']], 'each pair on its own worker');
  const n = 200_000;
  const echoA = vm(sw, 'a2', ['--mode', 'echo', '--count', String(n)]);
  const echoB = vm(sw, 'b2', ['--mode', 'echo', '--count', String(n)]);
  await waitAttached(sw, 'a2');
  await waitAttached(sw, 'b2');
  const genA = vm(sw, 'a1', ['--mode', 'gen', '--count', String(n), '--size', '64', '--expect', String(n), '--linger', '20000']);
  const genB = vm(sw, 'b1', ['--mode', 'gen', '--count', String(n), '--size', '1500', '--expect', String(n), '--linger', '20000']);
  // The ledgers balance whenever we look, not only at the end.
  let checks = 0;
  const sampler = (async () => {
    while (genA.child.exitCode === null || genB.child.exitCode === null) {
      const x = await sw.stats().catch(() => null);
      if (x) {
        checks++;
        if (!x.ledger.ok) t.fail(`ledger unbalanced mid-traffic: ${x.ledger.problems.join('; ')}`);
      }
      await sleep(50);
    }
  })();
  const [ga, gb, ea, eb] = await Promise.all([genA.result, genB.result, echoA.result, echoB.result]);
  await sampler;
  for (const [name, g, e] of [['a', ga, ea], ['b', gb, eb]] as const) {
    t.equal(g.code, 0, `gen ${name} exited cleanly: ${g.stderr}`);
    t.equal(e.code, 0, `echo ${name} exited cleanly: ${e.stderr}`);
    t.equal(e.summary.verified, n, `pair ${name}: every payload checked out at the echo`);
    t.equal(g.summary.verified, n, `pair ${name}: every echoed payload checked out at the gen`);
    t.equal(g.summary.lost + g.summary.dup, 0, `pair ${name}: nothing lost or duplicated`);
  }
  t.ok(checks > 0, `ledger sampled ${checks} times during traffic`);
  s = await sw.stats();
  for (const p of s.ports) {
    const c = counters(p);
    t.equal(c.zeroCopy, n, `${p.name}: stats (from its worker) count ${n} zero-copy packets`);
    t.same(c.drops, {}, `${p.name}: no drops`);
  }
  t.ok(s.workers.every((w) => w.busyRounds > 0), 'both workers did work');
  t.equal(s.dataPath.busyRounds, s.workers[0].busyRounds + s.workers[1].busyRounds, 'dataPath is the sum over workers');
  t.ok(s.ledger.ok, `ledger balanced: ${s.ledger.problems.join('; ')}`);
  t.equal(s.sharedBuffers.pool, s.sharedBuffers.bufCount * s.sharedBuffers.domains, 'every buffer back in its pool');
});
