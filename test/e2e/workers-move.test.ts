/**
 * Ports moving between data-path workers with their front-ends attached
 * (forwarding.workers; docs/design.md, "Data-path workers"), and what a
 * worker's death leaves behind. All real processes: a switch with two
 * worker threads, guest-driver VMs, shared memory, eventfds and sockets.
 */
import fs from 'node:fs';
import t, { type Test } from 'tap';
import { controlRequest } from '../../src/switch/control';
import { fdsLinkingTo, fileIds } from '../helpers/fds';
import { type Proc, type SwitchProc, counters, logLines, running, sleep, startSwitch, stopProc, vm, waitAttached, waitFor, waitForLogLines } from '../helpers/procs';

async function ctl(sw: SwitchProc, cmd: object): Promise<Record<string, unknown>> {
  return (await controlRequest(sw.control, cmd)) as Record<string, unknown>;
}

/** Rewrite the config file's pairs and reload. */
async function reloadPairs(sw: SwitchProc, pairs: string[][]): Promise<Record<string, unknown>> {
  const cfg = JSON.parse(fs.readFileSync(sw.configPath, 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(sw.configPath, JSON.stringify({ ...cfg, pairs }));
  return ctl(sw, { cmd: 'reload' });
}

async function placement(sw: SwitchProc): Promise<string[][]> {
  return (await sw.stats()).workers.map((w) => w.ports.slice().sort());
}


const dropTotal = (c: { drops: Record<string, number> }): number => Object.values(c.drops).reduce((a, b) => a + b, 0);

/** Each port alone in its own sharing domain, so each can move (a pair across two domains copies every frame). */
const FOUR = {
  ports: ['g1', 's1', 'g2', 's2'].map((name) => ({ name, domain: `d-${name}` })),
  pairs: [['g1', 's1'], ['g2', 's2']],
};

const CASES = [
  { zeroCopy: true, exchange: 'gift' }, { zeroCopy: true, exchange: 'swap' }, { zeroCopy: false, exchange: 'gift' },
] as const;

for (const { zeroCopy, exchange } of CASES) t.test(`reloads re-pair attached ports across workers while traffic runs: each moves without its VM noticing, every frame accounted for (${zeroCopy ? `zero-copy VMs, ${exchange}` : '--no-zero-copy VMs'})`, async (t) => {
  // A long rxWaitMs: a sink descheduled on a busy machine holds its gen back instead of losing frames.
  const sw = await startSwitch(t, { ...FOUR, forwarding: { workers: 2, rxWaitMs: 5000, pairExchange: exchange } });
  t.same(await placement(sw), [['g1', 's1'], ['g2', 's2']], 'each pair on its own worker');
  const zc = zeroCopy ? [] : ['--no-zero-copy'];
  const n = zeroCopy ? 100_000 : 60_000;
  const sinks = ['s1', 's2'].map((p) => vm(sw, p, ['--mode', 'sink', '--duration', '120', ...zc]));
  t.teardown(() => Promise.all(sinks.map((s) => stopProc(s))));
  await waitAttached(sw, 's1', 's2');
  // Paced, so the traffic still runs when the reloads come.
  const gens = [1, 2].map((i) => vm(sw, `g${i}`, ['--mode', 'gen', '--stream', String(i), '--count', String(n), '--rate', '20000', '--size', '256', '--linger', '100', ...zc]));
  t.teardown(() => Promise.all(gens.map((g) => stopProc(g))));
  await waitAttached(sw, 'g1', 'g2');
  const logFrom = sw.stderr().length;
  const delivered = async (): Promise<number[]> => {
    const s = await sw.stats();
    return ['s1', 's2'].map((name) => counters(s.ports.find((p) => p.name === name)!).txPackets);
  };
  const moreTraffic = async (what: string): Promise<void> => {
    const from = await delivered();
    await waitFor(what, async () => (await delivered()).every((d, i) => d >= from[i] + 5000), 60000);
  };
  // The ledgers balance whenever we look, moves included.
  let checks = 0;
  const sampler = (async () => {
    while (gens.some((g) => running(g))) {
      const x = await sw.stats().catch(() => null);
      if (x) {
        checks++;
        if (!x.ledger.ok) t.fail(`ledger unbalanced mid-traffic: ${x.ledger.problems.join('; ')}`);
      }
      await sleep(50);
    }
  })();
  await moreTraffic('traffic on both pairs');

  // Each gen now pairs with the other pair's sink: each is first in its new pair and moves to that sink's worker.
  // The sinks pause first, so the gens' frames wait in their tx rings (back-pressure), each with the rx posting
  // its gen made for the buffer's return (ownership rule 2) held by the switch: the moves carry them.
  t.ok(gens.every((g) => running(g)), 'the gens are still sending when the first reload comes');
  for (const s of sinks) s.child.kill('SIGSTOP');
  await waitFor('the gens to be held back', async () => {
    const a = await delivered();
    await sleep(100);
    return (await delivered()).every((d, i) => d === a[i]);
  });
  const r1 = await reloadPairs(sw, [['g1', 's2'], ['g2', 's1']]);
  for (const s of sinks) s.child.kill('SIGCONT');
  t.match(r1, { ok: true, pairsAdded: [['g1', 's2'], ['g2', 's1']], pairsRemoved: [['g1', 's1'], ['g2', 's2']] }, `first reload applied: ${JSON.stringify(r1)}`);
  t.same(await placement(sw), [['g2', 's1'], ['g1', 's2']], 'both gens moved, their VMs attached');
  await moreTraffic('traffic on the new pairs');

  // And back: now each sink is first in its new pair and moves, with the rx buffers the switch holds for it.
  t.ok(gens.every((g) => running(g)), 'the gens are still sending when the second reload comes');
  const r2 = await reloadPairs(sw, [['s1', 'g1'], ['s2', 'g2']]);
  t.match(r2, { ok: true, pairsAdded: [['s1', 'g1'], ['s2', 'g2']] }, `second reload applied: ${JSON.stringify(r2)}`);
  t.same(await placement(sw), [['g2', 's2'], ['g1', 's1']], 'both sinks moved, their VMs attached');
  await moreTraffic('traffic after the second moves');

  const gr = await Promise.all(gens.map((g) => g.result));
  await sampler;
  for (const [i, g] of gr.entries()) {
    // A gen with --count does not reattach: a disconnect would have ended it with status 1.
    t.equal(g.code, 0, `gen g${i + 1} exited cleanly, never disconnected: ${g.stderr}`);
    t.equal(g.summary.sent, n, `gen g${i + 1} sent all ${n}`);
  }
  // Once the gens are done, every frame is delivered or counted as a drop at the switch.
  let st = await sw.stats();
  const port = (name: string) => counters(st.ports.find((p) => p.name === name)!);
  const accounted = () => ['g1', 'g2', 's1', 's2'].reduce((a, nm) => a + dropTotal(port(nm)), 0) + port('s1').txPackets + port('s2').txPackets;
  await waitFor('every frame sent delivered or counted', async () => {
    st = await sw.stats();
    return accounted() === 2 * n;
  }, 30000).catch(() => {});
  t.equal(accounted(), 2 * n, `every frame the gens sent was delivered to a sink or counted as a drop: ${JSON.stringify(st.ports.map((p) => [p.name, p.counters]))}`);
  for (const name of ['g1', 'g2']) {
    const c = port(name);
    // Frames sent while a gen had no peer (between a reload's pair removal and its new pair) are the only drops.
    t.same(Object.keys(c.drops).filter((r) => r !== 'peer-down'), [], `${name}: no drops but peer-down while re-paired: ${JSON.stringify(c.drops)}`);
    t.equal(c.rxPackets + dropTotal(c), n, `${name}: the switch counted every frame it took from the gen, across its move (${c.rxPackets} forwarded + ${dropTotal(c)} dropped)`);
  }
  for (const name of ['s1', 's2']) t.same(port(name).drops, {}, `${name}: no drops`);
  const moved = await waitForLogLines(sw, logFrom, (l) => l.msg === 'port moved to another data-path worker, next to its new peer', 4);
  await waitForLogLines(sw, logFrom, (l) => l.msg === 'front-end disconnected', 2);
  t.same(moved.map((l) => [l.port, l.attached]), [['g1', true], ['g2', true], ['s1', true], ['s2', true]], 'four moves, each with its front-end attached');
  t.same(logLines(sw, logFrom).filter((l) => l.msg === 'front-end disconnected').map((l) => l.port).sort(), ['g1', 'g2'],
    'the only disconnects: each gen once, when it left (the sinks stay attached)');

  const sr = await Promise.all(sinks.map(async (s) => {
    s.child.kill('SIGTERM');
    return s.result;
  }));
  const sent = 2 * n - ['g1', 'g2'].reduce((a, nm) => a + dropTotal(port(nm)), 0);
  for (const [i, s] of sr.entries()) {
    const name = `s${i + 1}`;
    t.equal(s.code, 0, `sink ${name} exited cleanly: ${s.stderr}`);
    t.equal(s.summary.reconnects, 0, `sink ${name} never reattached (never disconnected)`);
    t.equal(s.summary.badLength + s.summary.badChecksum + s.summary.notTest, 0, `sink ${name}: nothing corrupted`);
    t.equal(s.summary.dup, 0, `sink ${name}: nothing duplicated`);
    t.equal(s.summary.streams, 2, `sink ${name} verified frames of both gens: the new pairs carried traffic`);
    t.equal(s.summary.received, port(name).txPackets, `${name}: the switch's count (kept across its move) is what its VM received`);
  }
  // A gen's frames go to one sink, then the other: each sink's "lost" counts the other's share of a stream
  // (a jump in its numbering), not a loss. What is exact: every frame not dropped was verified once.
  t.equal(sr[0].summary.verified + sr[1].summary.verified, sent, `every frame that was not dropped verified once (${sent})`);
  t.ok(checks > 0, `ledger sampled ${checks} times during traffic`);
  await waitFor('the VMs to leave', async () => (await sw.stats()).ports.every((p) => !p.attached));
  const end = await sw.stats();
  t.ok(end.ledger.ok, `ledger balanced: ${end.ledger.problems.join('; ')}`);
  t.equal(end.sharedBuffers.pool, end.sharedBuffers.bufCount * end.sharedBuffers.domains, 'every buffer back in its pool');
});

t.test('a port that shares its domain cannot move, attached or not: the reload and pair add are refused naming why, nothing changes', async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'a1' }, { name: 'a2' }, { name: 'b1' }, { name: 'b2' }], pairs: [['a1', 'a2'], ['b1', 'b2']], forwarding: { workers: 2 } });
  const held: Proc[] = ['a1', 'b1'].map((p) => vm(sw, p, ['--mode', 'sink', '--duration', '60', '--no-reconnect']));
  t.teardown(() => Promise.all(held.map((h) => stopProc(h))));
  await waitAttached(sw, 'a1', 'b1');
  const refused = await reloadPairs(sw, [['a1', 'b1'], ['a2', 'b2']]);
  t.match(refused.error, /pairs: \[a1, b1\]: forwarded by different data-path workers \(0 and 1\) and neither can move.*"a1" shares domain "pair:a1\+a2" with "a2".*"b1" shares domain "pair:b1\+b2" with "b2"/,
    `refused with the reason: ${String(refused.error)}`);
  t.equal((await sw.port('a1')).peer, 'a2', 'a1 keeps its peer');
  t.same(await placement(sw), [['a1', 'a2'], ['b1', 'b2']], 'nothing moved');
  t.match(await ctl(sw, { cmd: 'pair-del', a: 'a1', b: 'a2' }), { ok: true });
  t.match(await ctl(sw, { cmd: 'pair-del', a: 'b1', b: 'b2' }), { ok: true });
  const refusedAdd = await ctl(sw, { cmd: 'pair-add', a: 'a1', b: 'b1' });
  t.match(refusedAdd.error, /different data-path workers \(0 and 1\) and neither can move.*"a1" shares domain "pair:a1\+a2" with "a2".*"b1" shares domain "pair:b1\+b2" with "b2"/,
    `pair add too: ${String(refusedAdd.error)}`);
  t.ok(held.every((h) => running(h)), 'the VMs stayed attached');
  t.match(await ctl(sw, { cmd: 'test-crash-worker', worker: 0 }), { error: /unknown command/ }, 'the test hook is off without ZCSWITCH_TEST_HOOKS=1');
});

t.test('a data-path worker that dies leaves no fd behind: what was lent to it is closed; the switch stays up', async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'a1' }, { name: 'a2' }, { name: 'b1' }, { name: 'b2' }], pairs: [['a1', 'a2'], ['b1', 'b2']], forwarding: { workers: 2 } },
    { env: { ZCSWITCH_TEST_HOOKS: '1' } });
  const pid = sw.child.pid!;
  const regions = () => fdsLinkingTo(pid, '/memfd:zcswitch-shared-buffers');
  t.equal(regions().length, 2, 'one fd per region, the control plane\'s: the workers map the regions and keep no fd');
  const baseline = new Set(fileIds(pid));
  const sink = vm(sw, 'a2', ['--mode', 'sink', '--duration', '60', '--no-reconnect']);
  t.teardown(() => stopProc(sink));
  await waitAttached(sw, 'a2');
  const gen = vm(sw, 'a1', ['--mode', 'gen', '--rate', '2000', '--no-reconnect']);
  t.teardown(() => stopProc(gen));
  await waitAttached(sw, 'a1');
  await waitFor('traffic on pair a', async () => counters(await sw.port('a2')).txPackets > 500, 30000);
  // The VMs' own eventfds and memory, less the region (the switch's own).
  const theirs = new Set([...fileIds(gen.child.pid!), ...fileIds(sink.child.pid!)].filter((id) => !baseline.has(id)));
  const held = () => fileIds(pid).filter((id) => theirs.has(id));
  t.ok(held().length > 0, `while attached the switch holds fds of the VMs (${held().length}: kick and call eventfds, memory)`);
  // Their memory as the switch maps it (the guest driver's memfd), by the control plane and by worker 0.
  const guestMaps = () => fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('/memfd:zcswitch-guest'));
  t.ok(guestMaps().length > 0, 'while attached the switch maps the VMs\' memory');
  const logFrom = sw.stderr().length;
  t.match(await ctl(sw, { cmd: 'test-crash-worker', worker: 0 }), { ok: true });
  await waitFor('the switch to see worker 0 die', () => logLines(sw, logFrom).some((l) => l.msg === 'a data-path worker thread died; disconnecting its ports'));
  // Disconnected, they exit (--no-reconnect).
  t.equal((await gen.result).code, 1, 'the gen lost its connection');
  t.equal((await sink.result).code, 1, 'the sink lost its connection');
  await waitFor('the switch to hold no fd of the VMs', () => held().length === 0, 10000).catch(() => {});
  t.same(held(), [], 'no fd of the departed VMs is left open in the switch (the call fds lent to the dead worker are closed)');
  t.same(guestMaps(), [], 'nor any mapping of their memory (the dead worker\'s went with its environment)');
  t.equal(sw.child.exitCode, null, 'the switch runs on');
  // The other worker still forwards.
  const echo = vm(sw, 'b2', ['--mode', 'echo', '--count', '2000']);
  t.teardown(() => stopProc(echo));
  await waitAttached(sw, 'b2');
  const g2 = await vm(sw, 'b1', ['--mode', 'gen', '--count', '2000', '--expect', '2000', '--linger', '20000']).result;
  t.equal(g2.summary.verified, 2000, `pair b on worker 1 forwards every frame: ${g2.stderr}`);
});

t.test('a data-path worker that dies while the control plane waits for its answer: the wait ends at once, not at the reply timeout', async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'a1' }, { name: 'a2' }, { name: 'b1' }, { name: 'b2' }], pairs: [['a1', 'a2'], ['b1', 'b2']], forwarding: { workers: 2 } },
    { env: { ZCSWITCH_TEST_HOOKS: '1' } });
  const logFrom = sw.stderr().length;
  t.match(await ctl(sw, { cmd: 'test-crash-worker', worker: 0, onNextRequest: true }), { ok: true });
  // stats asks every worker; worker 0 dies handling it. Without the crash signal the control plane would sit out 10 s.
  const t0 = Date.now();
  const s = await sw.stats();
  const ms = Date.now() - t0;
  t.ok(ms < 3000, `stats answered ${ms} ms after the request that killed worker 0 (the reply timeout is 10000 ms)`);
  t.equal(s.ports?.length, 4, `with every port listed: ${JSON.stringify(s).slice(0, 300)}`);
  t.ok(s.ledger.ok, 'and the ledger checked (by this thread now: nobody else writes it)');
  await waitFor('the switch to see worker 0 die', () => logLines(sw, logFrom).some((l) => l.msg === 'a data-path worker thread died; disconnecting its ports'));
  const died = logLines(sw, logFrom).find((l) => l.msg === 'a data-path worker thread died; disconnecting its ports')!;
  t.match(JSON.stringify(died), /uncaught error: test hook: this worker crashes while handling stats/, 'the death is logged with its error');
  // The other worker still forwards, and the control plane still answers.
  const echo = vm(sw, 'b2', ['--mode', 'echo', '--count', '1000']);
  t.teardown(() => stopProc(echo));
  await waitAttached(sw, 'b2');
  const g = await vm(sw, 'b1', ['--mode', 'gen', '--count', '1000', '--expect', '1000', '--linger', '20000']).result;
  t.equal(g.summary.verified, 1000, 'pair b on worker 1 forwards every frame');
});
