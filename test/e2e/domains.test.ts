/**
 * Sharing domains end to end (docs/design.md, "Trust model"), real processes:
 * a VM in another domain maps everything it is given and scans it while a
 * sends marked frames to b, and finds none of them (and, as a control, a VM
 * put in a's domain does find them: the scan works); a -> b stays zero-copy;
 * a bridge between two domains delivers by copy; pair-mode defaults give
 * each pair its own domain, shown in `zcswitch stats`.
 */
import path from 'node:path';
import t, { type Test } from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { counters, run, sleep, startSwitch, stopProc, vm, waitAttached, type SwitchProc } from '../helpers/procs';

/** Stream id of a's frames: every one carries "ZCSW" + this id (big endian) at frame offset 14. */
const STREAM = 0x5ec2e7a5;
const MARKER = Buffer.concat([Buffer.from('ZCSW'), Buffer.from([0x5e, 0xc2, 0xe7, 0xa5])]);

/** Everything the driver can reach: its Shared Buffers mapping and its own memory (rings, private slots). */
function reachable(drv: GuestDriver): Uint8Array[] {
  const out: Uint8Array[] = [];
  if (drv.shared) out.push(drv.shared.mem);
  const gm = (drv as unknown as { gm?: { mem: Uint8Array } }).gm;
  if (gm) out.push(gm.mem);
  return out;
}

function countMarkers(mems: Uint8Array[]): number {
  let n = 0;
  for (const m of mems) {
    const b = Buffer.from(m.buffer, m.byteOffset, m.byteLength);
    for (let i = b.indexOf(MARKER); i >= 0; i = b.indexOf(MARKER, i + 1)) n++;
  }
  return n;
}

/**
 * Pairs a+b and c+d; c attached in this process and scanning while a sends
 * `count` marked frames to a sink on b. Returns the markers c saw and how many scans it made.
 */
async function scanWhileSending(t: Test, sw: SwitchProc, count: number): Promise<{ seen: number; scans: number; bytes: number }> {
  const c = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'c.sock') });
  t.teardown(() => c.close());
  t.ok(c.shared, 'c negotiated SHARED_BUFFERS and mapped the region it was given');
  const mems = reachable(c);
  const sink = vm(sw, 'b', ['--mode', 'sink', '--count', String(count), '--duration', '60']);
  t.teardown(() => stopProc(sink));
  await waitAttached(sw, 'b');
  const gen = vm(sw, 'a', ['--mode', 'gen', '--stream', String(STREAM), '--count', String(count), '--size', '128']);
  t.teardown(() => stopProc(gen));
  let seen = 0;
  let scans = 0;
  let done = false;
  const results = Promise.all([gen.result, sink.result]).finally(() => {
    done = true;
  });
  while (!done) {
    seen += countMarkers(mems);
    scans++;
    await sleep(2);
  }
  seen += countMarkers(mems);
  const [g, s] = await results;
  t.equal(g.code, 0, `gen exited 0 ${g.stderr}`);
  t.equal(s.code, 0, `sink exited 0 ${s.stderr}`);
  t.equal(g.summary.sent, count, 'a sent every frame');
  t.same([s.summary.received, s.summary.verified, s.summary.lost], [count, count, 0], 'b received and verified every frame');
  return { seen, scans, bytes: mems.reduce((n, m) => n + m.byteLength, 0) };
}

const PAIRS = { ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }], pairs: [['a', 'b'], ['c', 'd']] };

t.test('a VM in another domain sees none of a\'s frames to b; a -> b stays zero-copy', async (t) => {
  const sw = await startSwitch(t, PAIRS);
  t.match(sw.stdout(), /per sharing domain, 2 domains \(16 MiB in all\)/, 'banner: two domains and the memory they take');
  t.match(sw.stdout(), /port a: .*\(paired with b, domain pair:a\+b\)/, 'banner: a\'s domain');
  t.match(sw.stdout(), /port c: .*\(paired with d, domain pair:c\+d\)/, 'banner: c\'s domain');
  const count = 200_000;
  const r = await scanWhileSending(t, sw, count);
  t.ok(r.scans > 10, `c scanned all ${r.bytes} bytes it can reach ${r.scans} times during the traffic`);
  t.equal(r.seen, 0, 'c found none of a\'s frames');
  const s = await sw.stats();
  const a = counters(s.ports.find((p) => p.name === 'a')!);
  t.equal(a.zeroCopy, count, 'a -> b: every frame zero-copy');
  t.equal(a.copiedBytes, 0, 'a -> b: no byte copied');
  t.ok(s.ledger.ok, `ledger balanced in every domain: ${s.ledger.problems.join('; ')}`);
  t.same(s.ports.map((p) => [p.name, p.domain]), [['a', 'pair:a+b'], ['b', 'pair:a+b'], ['c', 'pair:c+d'], ['d', 'pair:c+d']], 'stats: each pair its own domain');
  t.same(s.domains.map((d) => [d.name, d.ports, d.ledgerOk]), [['pair:a+b', ['a', 'b'], true], ['pair:c+d', ['c', 'd'], true]]);
  t.equal(s.sharedBuffers.domains, 2);
  const text = run(['stats', '--control', path.join(sw.dir, 'zcswitch.ctl')]);
  t.equal((await text.exited).code, 0);
  t.match(text.stdout(), /^port\s+domain\s+attached/m, 'zcswitch stats: a domain column');
  t.match(text.stdout(), /^c\s+pair:c\+d\s+yes/m, 'zcswitch stats: c in pair:c+d');
});

t.test('control: the same scan from a VM in a\'s domain does find a\'s frames', async (t) => {
  const sw = await startSwitch(t, { ...PAIRS, ports: [{ name: 'a' }, { name: 'b' }, { name: 'c', domain: 'pair:a+b' }, { name: 'd' }] });
  const r = await scanWhileSending(t, sw, 100_000);
  t.ok(r.seen > 0, `c (sharing a's region) saw ${r.seen} marked frames in ${r.scans} scans`);
  const s = await sw.stats();
  t.same(s.ports.map((p) => p.domain), ['pair:a+b', 'pair:a+b', 'pair:a+b', 'pair:a+b'], 'd follows c into the domain it names');
});

t.test('bridge across domains: delivered by copy into b\'s own buffers, verified, ledgers balanced', async (t) => {
  const sw = await startSwitch(t, { mode: 'bridge', ports: [{ name: 'a', domain: 'x' }, { name: 'b', domain: 'y' }] });
  t.match(sw.stdout(), /port a: .*\(bridge port, domain x\)/);
  const count = 40_000;
  const size = 256;
  const sink = vm(sw, 'b', ['--mode', 'sink', '--count', String(count), '--duration', '20']);
  t.teardown(() => stopProc(sink));
  await waitAttached(sw, 'b');
  const gen = vm(sw, 'a', ['--mode', 'gen', '--count', String(count), '--size', String(size), '--rate', '20000']);
  t.teardown(() => stopProc(gen));
  const [g, k] = await Promise.all([gen.result, sink.result]);
  t.equal(g.code, 0, `gen exited 0 ${g.stderr}`);
  t.equal(k.code, 0, `sink exited 0 ${k.stderr}`);
  t.equal(g.summary.sent, count, 'a sent every frame');
  const s = await sw.stats();
  const a = counters(s.ports.find((p) => p.name === 'a')!);
  // A bridge drops when the receiver posts no rx buffer within forwarding.rxWaitMs (back-pressure until then):
  // account for every frame.
  const noBuf = (a.drops['no-rx-buffer'] ?? 0) + (a.drops['rx-wait-timeout'] ?? 0);
  t.same(Object.keys(a.drops).filter((r) => r !== 'no-rx-buffer' && r !== 'rx-wait-timeout'), [], `no drops but for a full receiver (${JSON.stringify(a.drops)})`);
  t.ok(noBuf <= count / 100, `few frames dropped for want of an rx buffer (${noBuf})`);
  const got = count - noBuf;
  t.same([k.summary.received, k.summary.verified, k.summary.badChecksum, k.summary.badLength], [got, got, 0, 0], 'every frame not dropped delivered and verified');
  t.equal(a.zeroCopy, 0, 'nothing zero-copy across domains');
  t.equal(a.copied, got, 'every delivered frame copied');
  t.equal(a.copiedBytes, got * size, 'copiedBytes counts them');
  t.ok(s.ledger.ok, `ledger balanced: ${s.ledger.problems.join('; ')}`);
  t.same(s.domains.map((d) => [d.name, d.ports]), [['x', ['a']], ['y', ['b']]]);
});
