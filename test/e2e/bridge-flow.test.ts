/**
 * Lossless zero-copy unicast on a bridge, as a user runs it: four
 * `zcswitch vm` processes on one bridge (1024 buffers each), a sends to b's
 * learned MAC. Below the receiver's capacity every frame is delivered and
 * verified, by buffer swap (0 bytes copied), with the ledger balanced; at
 * full rate nothing may vanish: frames the sink verified + frames the
 * switch counted as dropped = frames sent (docs/design.md, "Back-pressure").
 */
import t, { type Test } from 'tap';
import { counters, startSwitch, vm, waitAttached } from '../helpers/procs';

const PORTS = ['a', 'b', 'c', 'd'];
const B_MAC = '02:00:00:00:00:02';

async function fourVmBridge(t: Test) {
  const sw = await startSwitch(t, { mode: 'bridge', ports: PORTS.map((name) => ({ name })) });
  // c and d are bystanders: attached sinks that must see nothing but the announcements.
  const bystanders = ['c', 'd'].map((p) => vm(sw, p, ['--mode', 'sink']));
  for (const p of bystanders) t.teardown(() => p.child.kill('SIGTERM'));
  // Attached before b announces itself, so they see both announcements.
  await waitAttached(sw, 'c', 'd');
  return { sw, bystanders };
}

for (const { rate, n, label } of [
  { rate: 50_000, n: 100_000, label: '50,000 frames/s' },
  { rate: 0, n: 200_000, label: 'full rate' },
]) {
  t.test(`four VMs on one bridge, a -> b unicast, ${n} frames at ${label}`, async (t) => {
    const { sw } = await fourVmBridge(t);
    const sink = vm(sw, 'b', ['--mode', 'sink', '--mac', B_MAC, '--announce', '--count', String(n), '--duration', '60']);
    t.teardown(() => sink.child.kill('SIGTERM'));
    await waitAttached(sw, 'b');
    const gen = vm(sw, 'a', ['--mode', 'gen', '--dst-mac', B_MAC, '--announce', '--count', String(n), '--rate', String(rate), '--linger', '0']);
    const g = await gen.result;
    t.equal(g.code, 0, `gen exits 0 (${g.stderr.trim()})`);
    t.equal(g.summary.sent, n, 'gen sent every frame');
    const a = counters(await sw.port('a'));
    if (rate > 0) {
      const s = await sink.result;
      t.equal(s.code, 0, `sink exits 0 (${s.stderr.trim()})`);
      t.equal(s.summary.verified, n, 'every frame delivered and verified');
      t.equal(s.summary.lost, 0, 'none lost');
      t.equal(s.summary.dup, 0, 'no duplicates');
      t.same(a.drops, {}, 'no drops');
      // The announcements are flooded (copied to all but the last port); the unicast frames all swap.
      t.equal(a.zeroCopy, n + 1, 'every unicast frame (and the last flood copy of the announcement) swapped');
      t.equal(a.copiedBytes, 2 * 60, 'no unicast byte copied: only the two flood copies of the 60-byte announcement');
    } else {
      // At full rate back-pressure still holds the sender; what a deadline drops is counted.
      await new Promise((r) => setTimeout(r, 500));
      sink.child.kill('SIGTERM');
      const s = await sink.result;
      const drops = Object.entries(a.drops);
      t.same(drops.filter(([r]) => r !== 'rx-wait-timeout'), [], `drops only past the wait deadline (${JSON.stringify(a.drops)})`);
      t.equal(s.summary.verified + (a.drops['rx-wait-timeout'] ?? 0), n, `verified ${s.summary.verified} + counted drops = sent`);
      t.equal(s.summary.dup, 0, 'no duplicates');
    }
    const st = await sw.stats();
    t.ok(st.ledger.ok, `ledger balanced: ${JSON.stringify(st.ledger.problems)}`);
    for (const p of ['c', 'd']) t.equal(counters(await sw.port(p)).txPackets, 2, `${p} saw only the two announcements`);
  });
}
