/**
 * Ports and pairs while the switch runs (docs/operations.md, "Adding and
 * removing ports"), real processes: while a bystander pair forwards
 * verified traffic, ports are added and removed 100 times (some with a
 * `zcswitch vm` attached for a moment), pairs made and unmade, and the
 * config reloaded with a good and a bad file; the bystander loses nothing,
 * the ledger balances after every step and the switch's fd count returns
 * to its baseline. Then a VM on a port added at run time exchanges verified
 * traffic with a peer paired by `pair add`. The first case runs again with
 * data-path workers, and one more checks where run-time ports go with
 * workers: placement, a pair add that moves a lone port (its capture
 * along), and the refusals when neither port can move.
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { parsePcap } from '../../src/capture/pcap';
import { controlRequest } from '../../src/switch/control';
import { bystanderConfig, startBystander } from '../helpers/bystander';
import { type SwitchProc, run, startSwitch, stopProc, vm, waitAttached, waitFor, within } from '../helpers/procs';

const fdCount = (sw: SwitchProc): number => fs.readdirSync(`/proc/${sw.child.pid}/fd`).length;
/** What each of the switch's fds is (to name a leak, not just count it). */
const fdTargets = (sw: SwitchProc): string[] => fs.readdirSync(`/proc/${sw.child.pid}/fd`).map((n) => {
  try {
    return `${n} -> ${fs.readlinkSync(`/proc/${sw.child.pid}/fd/${n}`)}`;
  } catch {
    return `${n} (closed while listing)`;
  }
});

async function ctl(sw: SwitchProc, cmd: object): Promise<Record<string, unknown>> {
  return (await controlRequest(sw.control, cmd)) as Record<string, unknown>;
}

async function ledgerOk(t: Test, sw: SwitchProc, step: string): Promise<boolean> {
  const st = await sw.stats();
  if (!st.ledger.ok) t.fail(`ledger unbalanced after ${step}: ${JSON.stringify(st.ledger.problems)}`);
  return st.ledger.ok;
}

async function cli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const p = run(args);
  const r = await p.exited;
  return { code: r.code, out: p.stdout(), err: p.stderr() };
}

async function names(sw: SwitchProc): Promise<string[]> {
  const r = await ctl(sw, { cmd: 'port-list' });
  return (r.ports as { name: string }[]).map((p) => p.name).sort();
}

// Also with data-path worker threads (forwarding.workers): run-time ports are placed on the workers, pairs move lone ports.
for (const workers of [0, 2]) t.test(`ports, pairs and reloads while a bystander pair forwards${workers ? ` (${workers} data-path workers)` : ''}`, async (t) => {
  const withWorkers = workers ? { workers } : {};
  const cfg = bystanderConfig([{ name: 'old1' }], { sharedBuffers: { bufCount: 512 }, forwarding: withWorkers });
  const sw = await startSwitch(t, cfg);
  const by = await startBystander(t, sw, { rate: 5000, seconds: 40 });
  await waitAttached(sw, 'by-a');
  const baseline = fdCount(sw);
  const fdsBefore = fdTargets(sw);
  const domainsBefore = (await sw.stats()).domains.length;

  let balanced = 0;
  for (let i = 0; i < 100; i++) {
    const name = `rt${i % 5}`; // five names over and over: ids and socket paths are reused
    const add = await ctl(sw, { cmd: 'port-add', name, ...(i % 3 === 0 ? { domain: 'shared-rt' } : {}) });
    if (add.ok !== true) t.fail(`port-add ${name}: ${JSON.stringify(add)}`);
    if (await ledgerOk(t, sw, `adding ${name}`)) balanced++;
    if (i % 2 === 1) {
      const peer = `rt${(i - 1) % 5}`;
      const pa = await ctl(sw, { cmd: 'pair-add', a: peer, b: name });
      if (pa.ok !== true) t.fail(`pair-add ${peer} ${name}: ${JSON.stringify(pa)}`);
      if (await ledgerOk(t, sw, `pairing ${peer}+${name}`)) balanced++;
      if (i % 4 === 1) {
        const pd = await ctl(sw, { cmd: 'pair-del', a: name, b: peer });
        if (pd.ok !== true) t.fail(`pair-del: ${JSON.stringify(pd)}`);
      }
    }
    if (i % 20 === 7) {
      // A VM attached for a moment: removing the port disconnects it and takes its buffers back.
      const v = vm(sw, name, ['--mode', 'sink', '--duration', '30', '--no-reconnect']);
      await waitAttached(sw, name);
      const owned = (await sw.port(name)).buffersOwned;
      t.ok(owned > 0, `the VM on run-time port ${name} was gifted ${owned} buffers from the pool`);
      const del = await ctl(sw, { cmd: 'port-del', name });
      t.same(del, { ok: true }, `port-del ${name} with a VM attached`);
      const r = await v.result;
      t.not(r.code, null, 'the VM saw the port go away and exited');
      t.notOk(fs.existsSync(`${sw.dir}/${name}.sock`), 'its socket is gone');
      await ctl(sw, { cmd: 'port-del', name: `rt${(i - 1) % 5}` });
    } else if (i % 2 === 1) {
      // Remove both of the pair's ports (the one added before first).
      for (const n of [`rt${(i - 1) % 5}`, name]) {
        const del = await ctl(sw, { cmd: 'port-del', name: n });
        if (del.ok !== true) t.fail(`port-del ${n}: ${JSON.stringify(del)}`);
      }
    }
    if (await ledgerOk(t, sw, `removing ${name}`)) balanced++;
  }
  t.ok(balanced >= 200, `the ledger balanced after each of ${balanced} steps`);
  t.same(await names(sw), ['by-a', 'by-b', 'old1'], 'port list: only the config ports are left');
  t.equal((await sw.stats()).domains.length, domainsBefore, 'every region made for a run-time domain was freed');
  try {
    await waitFor('the switch fd count back at its baseline', () => fdCount(sw) === baseline, 20000);
  } catch {
    const before = new Set(fdsBefore);
    t.comment(`fds not open at the start: ${fdTargets(sw).filter((f) => !before.has(f)).join(', ')}`);
  }
  t.equal(fdCount(sw), baseline, `switch fds back at the baseline ${baseline}`);

  // Refusals say why and exit 1; argument errors exit 2.
  const dup = await cli(['port', 'add', 'by-a', '--control', sw.control]);
  t.equal(dup.code, 1, 'port add of a taken name exits 1');
  t.match(dup.err, /a port named "by-a" already exists/, 'and says why');
  const nosuch = await cli(['port', 'del', 'nosuch', '--control', sw.control]);
  t.equal(nosuch.code, 1, 'port del of an unknown port exits 1');
  t.match(nosuch.err, /no port named "nosuch"/, 'and names it');
  const busy = await cli(['pair', 'add', 'by-a', 'old1', '--control', sw.control]);
  t.equal(busy.code, 1, 'pair add of a paired port exits 1');
  t.match(busy.err, /port "by-a" is already paired with "by-b"/, 'and says with whom');
  const noarg = await cli(['port', 'add', '--control', sw.control]);
  t.equal(noarg.code, 2, 'port add without a name exits 2');
  t.match(noarg.err, /missing required argument 'name'/, 'and names the argument');

  // Reload with a good file: adds new1+new2 (a pair), removes old1, changes burst live, bufSize needs a restart.
  const good = bystanderConfig([{ name: 'new1' }, { name: 'new2' }], { socketDir: sw.dir, sharedBuffers: { bufCount: 512, bufSize: 4096 }, forwarding: { burst: 32, ...withWorkers }, pairs: [['new1', 'new2']] });
  fs.writeFileSync(sw.configPath, JSON.stringify(good));
  const rl = await cli(['reload', '--json', '--control', sw.control]);
  t.equal(rl.code, 0, `reload exits 0 ${rl.err}`);
  const rep = JSON.parse(rl.out) as Record<string, unknown>;
  t.same([rep.portsAdded, rep.portsRemoved, rep.pairsAdded, rep.pairsRemoved], [['new1', 'new2'], ['old1'], [['new1', 'new2']], []], 'reload: the differences only');
  t.same(rep.live, [{ path: 'forwarding.burst', from: 64, to: 32 }], 'burst changed live');
  t.same((rep.restart as { path: string }[]).map((c) => c.path), ['sharedBuffers.bufSize'], 'bufSize needs a restart');
  t.same(await names(sw), ['by-a', 'by-b', 'new1', 'new2'], 'port list after the reload');
  t.equal((await sw.port('new1')).peer, 'new2', 'the new pair is paired');
  await ledgerOk(t, sw, 'the good reload');

  // A bad file (a pair naming no port) changes nothing, and the reload command says why.
  fs.writeFileSync(sw.configPath, JSON.stringify({ ...good, pairs: [['by-a', 'by-b'], ['new1', 'ghost']] }));
  const bad = await cli(['reload', '--control', sw.control]);
  t.equal(bad.code, 1, 'a bad file: reload exits 1');
  t.match(bad.err, /pairs\[1\]\[1\]: no port named "ghost"/, 'and names the problem');
  t.same(await names(sw), ['by-a', 'by-b', 'new1', 'new2'], 'nothing changed');
  // SIGHUP with the bad file: logged, nothing changes, the switch runs on.
  sw.child.kill('SIGHUP');
  await waitFor('the SIGHUP refusal in the log', () => /ghost/.test(sw.stderr()), 5000);
  t.same(await names(sw), ['by-a', 'by-b', 'new1', 'new2'], 'SIGHUP with a bad file changed nothing');

  await by.check(t);
  await ledgerOk(t, sw, 'the bystander run');
  if (workers) {
    const placed = (await sw.stats()).workers.flatMap((w) => w.ports).sort();
    t.same(placed, ['by-a', 'by-b', 'new1', 'new2'], 'the workers forward for exactly the ports that run');
  }
});


/** count verified frames g1 → s1 at 20,000 frames/s; the gen must exit 0; returns the sink's result. */
async function genToSink(t: Test, sw: SwitchProc, count: number) {
  const sink = vm(sw, 's1', ['--mode', 'sink', '--count', String(count), '--duration', '30']);
  t.teardown(() => stopProc(sink));
  await waitAttached(sw, 's1');
  const gen = vm(sw, 'g1', ['--mode', 'gen', '--count', String(count), '--rate', '20000']);
  t.teardown(() => stopProc(gen));
  const [g, s] = await Promise.all([gen.result, sink.result]);
  t.equal(g.code, 0, `gen exited 0 ${g.stderr}`);
  return { s };
}

t.test('a VM on a port added at run time talks to a peer paired by pair add', async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'cfg' }], sharedBuffers: { bufCount: 1024 } });
  const add1 = await cli(['port', 'add', 'g1', '--control', sw.control]);
  t.equal(add1.code, 0, `port add g1 ${add1.err}`);
  t.match(add1.out, /port g1: .*g1\.sock \(domain port:g1\)/, 'port add says where it is');
  const add2 = await cli(['port', 'add', 's1', '--domain', 'port:g1', '--control', sw.control]);
  t.equal(add2.code, 0, `port add s1 ${add2.err}`);
  const pa = await cli(['pair', 'add', 'g1', 's1', '--control', sw.control]);
  t.equal(pa.code, 0, `pair add g1 s1 ${pa.err}`);
  const list = await cli(['port', 'list', '--control', sw.control]);
  t.match(list.out, /g1\s+1\s+port:g1\s+s1\s+no\s+run time/, 'port list shows g1, its domain, peer and origin');
  t.match(list.out, /s1\s+2\s+port:g1\s+g1\s+no\s+run time/, 'and s1');
  t.match(list.out, /cfg\s+0\s+port:cfg\s+-\s+no\s+config/, 'and the config port');
  const count = 20000;
  const { s } = await genToSink(t, sw, count);
  t.equal(s.code, 0, `sink exited 0 ${s.stderr}`);
  t.same([s.summary.verified, s.summary.lost], [count, 0], 'every frame arrived verified');
  const st = await sw.stats();
  t.equal(st.ledger.ok, true, 'ledger balanced');
  const zc = (st.ports.find((p) => p.name === 'g1')!.counters as Record<string, number>).zeroCopy;
  t.equal(zc, count, 'g1 -> s1 was zero-copy (one domain)');
  const del = await cli(['pair', 'del', 'g1', 's1', '--control', sw.control]);
  t.equal(del.code, 0, 'pair del');
  t.equal((await sw.port('g1')).peer, null, 'g1 unpaired');
});

t.test('workers: run-time ports go to the least-loaded worker; pair add moves a lone port next to its peer, or says why it cannot', async (t) => {
  // A long rxWaitMs: a sink descheduled on a busy machine holds the sender back instead of losing frames (the test is about placement).
  const sw = await startSwitch(t, { ports: [{ name: 'cfg' }], forwarding: { workers: 2, rxWaitMs: 5000 }, sharedBuffers: { bufCount: 1024 } });
  const placement = async () => (await sw.stats()).workers.map((w) => w.ports.slice().sort());
  const baseline = fdCount(sw);
  t.same(await placement(), [['cfg'], []], 'the config port on worker 0');
  t.match(await ctl(sw, { cmd: 'port-add', name: 'g1' }), { ok: true });
  t.same(await placement(), [['cfg'], ['g1']], 'g1 (a domain of its own) on the least-loaded worker, 1');
  t.match(await ctl(sw, { cmd: 'port-add', name: 's1' }), { ok: true });
  t.same(await placement(), [['cfg', 's1'], ['g1']], 's1: a tie, the lowest index');
  // A capture of g1 started on worker 1 goes on after the move.
  const pcapFile = path.join(sw.dir, 'g1.pcap');
  const cap = run(['capture', '--control', sw.control, '--port', 'g1', '-c', '100', '-w', pcapFile]);
  await waitFor('the capture to be armed', () => cap.stderr().includes('capturing on port g1') || cap.child.exitCode !== null);
  t.match(await ctl(sw, { cmd: 'pair-add', a: 'g1', b: 's1' }), { ok: true });
  t.same(await placement(), [['cfg', 'g1', 's1'], []], 'pair add moved g1 (alone in its domain, no VM) to s1\'s worker');
  t.match(await ctl(sw, { cmd: 'port-add', name: 'p1', domain: 'da' }), { ok: true });
  t.match(await ctl(sw, { cmd: 'port-add', name: 'p2', domain: 'da' }), { ok: true });
  t.same(await placement(), [['cfg', 'g1', 's1'], ['p1', 'p2']], 'a domain stays on one worker');

  // Traffic over the moved port: every frame verified (two domains: the copy path).
  const count = 20000;
  const { s } = await genToSink(t, sw, count);
  const s1 = await sw.port('s1');
  t.same([s.summary.verified, s.summary.lost], [count, 0], `every frame arrived verified (sink ${JSON.stringify(s.summary)}, s1 drops ${JSON.stringify(s1.counters.drops)})`);
  t.equal(s1.counters.txPackets, count, 's1\'s counters come from its worker');
  t.equal((await within(cap.exited, 30000))?.code, 0, `the capture of the moved port ended: ${cap.stderr()}`);
  t.match(cap.stdout(), /^100 frames captured on port g1, 0 dropped/m, cap.stdout().trim());
  const seqs = parsePcap(fs.readFileSync(pcapFile)).records.map((r) => r.data.readUInt32BE(22));
  t.same(seqs, Array.from({ length: 100 }, (_, i) => i), 'the first 100 frames g1 sent, in order');

  // p1 has a domain mate and cannot move; cfg, alone in its domain, moves with its VM attached.
  const held = vm(sw, 'cfg', ['--mode', 'sink', '--duration', '30', '--no-reconnect']);
  t.teardown(() => stopProc(held));
  await waitAttached(sw, 'cfg');
  t.match(await ctl(sw, { cmd: 'pair-add', a: 'p1', b: 'cfg' }), { ok: true });
  t.same(await placement(), [['g1', 's1'], ['cfg', 'p1', 'p2']], 'pair add moved cfg, attached, to p1\'s worker');
  t.equal((await sw.port('cfg')).attached, true, 'its VM stayed attached');
  t.equal(held.child.exitCode, null, 'and noticed nothing (it would have exited on a disconnect)');
  t.match(await ctl(sw, { cmd: 'pair-del', a: 'p1', b: 'cfg' }), { ok: true });
  // Two ports that each share their domain, on different workers: neither can move.
  t.match(await ctl(sw, { cmd: 'port-add', name: 'q1', domain: 'db' }), { ok: true });
  t.match(await ctl(sw, { cmd: 'port-add', name: 'q2', domain: 'db' }), { ok: true });
  t.same(await placement(), [['g1', 'q1', 'q2', 's1'], ['cfg', 'p1', 'p2']], 'domain db on the least-loaded worker, 0');
  const refused = await ctl(sw, { cmd: 'pair-add', a: 'q1', b: 'p1' });
  t.match(refused.error, /different data-path workers \(0 and 1\) and neither can move.*"q1" shares domain "db" with "q2".*"p1" shares domain "da" with "p2"/,
    `refused with the reason: ${String(refused.error)}`);
  t.equal((await sw.port('q1')).peer, null, 'and nothing changed');
  const refusedAdd = await ctl(sw, { cmd: 'port-add', name: 'p3', domain: 'da', pair: 'q1' });
  t.match(refusedAdd.error, /cannot add port p3 paired with "q1".*"q1" shares domain "db" with "q2"/, `port add --pair too: ${String(refusedAdd.error)}`);
  t.same(await names(sw), ['cfg', 'g1', 'p1', 'p2', 'q1', 'q2', 's1'], 'p3 was not made');
  await stopProc(held);

  for (const cmd of [{ cmd: 'pair-del', a: 'g1', b: 's1' }, ...['g1', 's1', 'p1', 'p2', 'q1', 'q2'].map((name) => ({ cmd: 'port-del', name }))]) {
    t.match(await ctl(sw, cmd), { ok: true }, JSON.stringify(cmd));
  }
  t.same(await placement(), [[], ['cfg']], 'the workers let go of the removed ports (cfg stays where it moved)');
  const st = await sw.stats();
  t.ok(st.ledger.ok, `ledger balanced: ${st.ledger.problems.join('; ')}`);
  t.equal(st.domains.length, 1, 'the run-time domains were freed');
  await waitFor('the switch fd count back at its baseline', () => fdCount(sw) === baseline, 20000).catch(() => {});
  t.equal(fdCount(sw), baseline, `switch fds back at the baseline ${baseline}: ${fdTargets(sw).join(', ')}`);
});
