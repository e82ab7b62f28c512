/**
 * The command line as a user meets it: bad configs and arguments give a
 * clear message and a non-zero exit with nothing left behind; `npm start`
 * prints where each port's socket is; `zcswitch stats` renders a table.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { DEFAULTS } from '../../src/config/schema';
import { counters, run, sleep, spawnProc, startSwitch, tempDir, vm, waitAttached, waitFor, waitForOutput } from '../helpers/procs';

const BAD_CONFIGS: [string, Record<string, unknown>, RegExp][] = [
  ['unknown field', { ports: [{ name: 'vm1', colour: 'red' }] }, /ports\[0\]: unknown field "colour"/],
  ['pair naming a missing port', { ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm3']] }, /pairs\[0\]\[1\]: no port named "vm3"/],
  ['bufSize not a multiple of 64', { ports: [{ name: 'vm1' }], sharedBuffers: { bufSize: 1000 } }, /sharedBuffers\.bufSize: must be a multiple of 64/],
  ['zero buffers', { ports: [{ name: 'vm1' }], sharedBuffers: { bufCount: 0 } }, /sharedBuffers\.bufCount: must be at least 1/],
  ['duplicate port names', { ports: [{ name: 'vm1' }, { name: 'vm1' }] }, /ports\[1\]\.name: duplicate port name "vm1"/],
];

for (const [what, body, message] of BAD_CONFIGS) {
  t.test(`bad config: ${what}`, async (t) => {
    const dir = tempDir(t);
    const sockets = path.join(dir, 'sockets');
    const file = path.join(dir, 'bad.json');
    fs.writeFileSync(file, JSON.stringify({ socketDir: sockets, ...body }));
    const p = run(['start', '-c', file]);
    const { code } = await p.exited;
    t.equal(code, 2, 'exits with status 2');
    t.match(p.stderr(), message, `names the field: ${p.stderr().trim()}`);
    t.match(p.stderr(), file, 'names the file');
    const left = fs.existsSync(sockets) ? fs.readdirSync(sockets) : [];
    t.same(left, [], 'leaves no socket behind');
  });
}

t.test('missing config file and bad JSON', async (t) => {
  const dir = tempDir(t);
  let p = run(['start', '-c', path.join(dir, 'nope.json')]);
  t.equal((await p.exited).code, 2);
  t.match(p.stderr(), /cannot read file/);
  fs.writeFileSync(path.join(dir, 'syntax.json'), '{\n  "ports": [\n    { "name": "vm1" }\n  ],,\n}\n');
  p = run(['start', '-c', path.join(dir, 'syntax.json')]);
  t.equal((await p.exited).code, 2);
  t.match(p.stderr(), /line 4/);
});

t.test('bad command-line arguments name the option', async (t) => {
  const cases: [string[], RegExp][] = [
    [['vm'], /required option '-p, --port <name>'/],
    [['vm', '--port', 'vm1', '--size', 'abc'], /--size must be a whole number, got "abc"/],
    [['vm', '--port', 'vm1', '--mode', 'flood'], /--mode.*Allowed choices are gen, sink, echo/],
    [['start'], /required option '-c, --config <file>'/],
    [['frobnicate'], /unknown command 'frobnicate'/],
  ];
  for (const [args, msg] of cases) {
    const p = run(args);
    const { code } = await p.exited;
    t.equal(code, 2, `${args.join(' ')}: exit 2`);
    t.match(p.stderr(), msg, `${args.join(' ')}: ${p.stderr().split('\n')[0]}`);
  }
  const p = run(['vm', '--port', 'nobody', '--socket-dir', '/nonexistent-zcswitch']);
  t.equal((await p.exited).code, 1, 'attaching to a missing socket fails');
  t.match(p.stderr(), /cannot attach to port nobody at \/nonexistent-zcswitch\/nobody\.sock/);
  const s = run(['stats', '--control', '/nonexistent-zcswitch/zcswitch.ctl']);
  t.equal((await s.exited).code, 1, 'stats without a switch fails');
  t.match(s.stderr(), /no switch is running at/);
  const h = run(['--help']);
  t.equal((await h.exited).code, 0);
  t.match(h.stdout(), /start.*\n.*vm.*\n.*stats/s, 'help lists the commands');
});

t.test('npm start runs the switch on config/default.json', async (t) => {
  const root = path.join(__dirname, '..', '..', '..');
  // What `npm start` runs (with sh -c, in the package root): it must name config/default.json.
  const start: string = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).scripts.start;
  const DEFAULT = '--config config/default.json';
  t.equal(start.split(DEFAULT).length, 2, `the start script runs on ${DEFAULT}: ${start}`);
  t.match(start, /^node dist\/src\/cli\/main\.js start /, 'it runs the built CLI\'s start command');
  // The same command line on config/default.json as it is, but for socketDir: a private
  // directory, so a switch already running in the default socket directory (anyone's) cannot
  // make this fail, and this cannot disturb it.
  const cfg = JSON.parse(fs.readFileSync(path.join(root, 'config', 'default.json'), 'utf8'));
  t.equal(cfg.socketDir, DEFAULTS.socketDir, 'config/default.json uses the documented socket directory');
  const dir = tempDir(t);
  const config = path.join(dir, 'default.json');
  fs.writeFileSync(config, JSON.stringify({ ...cfg, socketDir: dir }));
  // sh -c as npm runs it; exec so that the signals below reach the switch itself.
  const p = spawnProc('sh', ['-c', `exec ${start.replace(DEFAULT, `--config ${config}`)}`], { cwd: root });
  t.teardown(async () => {
    p.child.kill('SIGKILL');
    await p.exited;
  });
  await waitForOutput(p, 'the switch to print its control socket', (out) => out.includes('control:'));
  for (const port of cfg.ports) {
    t.match(p.stdout(), `port ${port.name}: ${path.join(dir, `${port.name}.sock`)}`, `prints the socket of ${port.name}`);
    t.ok(fs.statSync(path.join(dir, `${port.name}.sock`)).isSocket(), `${port.name}.sock exists`);
  }
  p.child.kill('SIGTERM');
  t.equal((await p.exited).code, 0, 'exits 0 on SIGTERM');
  for (const port of cfg.ports) t.notOk(fs.existsSync(path.join(dir, `${port.name}.sock`)), `${port.name}.sock removed on SIGTERM`);
});

t.test('zcswitch stats prints a table and JSON', async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'left' }, { name: 'right' }], pairs: [['left', 'right']] });
  const sink = vm(sw, 'right', ['--mode', 'sink', '--count', '300', '--duration', '60']);
  await waitAttached(sw, 'right');
  await vm(sw, 'left', ['--mode', 'gen', '--count', '300']).result;
  await sink.result;
  const table = run(['stats', '--control', sw.control]);
  t.equal((await table.exited).code, 0);
  t.match(table.stdout(), /ledger balanced/);
  t.match(table.stdout(), /^left\s+pair:left\+right\s+no\s+no\s+0\s+300\s+0\s+19200\s+0\s+300 \(100%\)\s+0\s/m, 'left: 300 received from it (19200 B), 300 zero-copy (100%), 0 copied');
  t.match(table.stdout(), /^right\s+pair:left\+right\s+no\s+no\s+0\s+0\s+300\s+0\s+19200\s/m, 'right: 300 delivered to it');
  const json = run(['stats', '--json', '--control', sw.control]);
  t.equal((await json.exited).code, 0);
  const s = JSON.parse(json.stdout());
  t.equal(s.ports.length, 2);
  t.equal(s.ports[0].counters.zeroCopy, 300);
  t.equal(s.ledger.ok, true);
  t.equal(await sw.stop(), 0, 'switch exits 0 on SIGTERM');
  t.same(fs.readdirSync(sw.dir).filter((f) => f.endsWith('.sock') || f.endsWith('.ctl')), [], 'sockets removed');
});

t.test('stats table: learned MACs (bridge) and one indented row per queue', async (t) => {
  const { renderStats } = await import('../../src/cli/stats');
  const counters = (rx: number, tx: number) => ({
    rxPackets: rx, rxBytes: rx * 100, txPackets: tx, txBytes: tx * 100, zeroCopy: rx, copied: 0, copiedBytes: 0,
    giftsIn: 0, giftsOut: 0, returned: 0, kicks: 0, calls: 0, gsoFrames: rx, segmented: 2 * rx, checksummed: 1, drops: {},
  });
  const port = (name: string, macs: string[], queues?: unknown[]) => ({
    name, socket: `/s/${name}.sock`, domain: 'bridge', attached: true, ready: true, zeroCopy: true, peer: null, buffersOwned: 10, macs, queues,
    counters: counters(12, 30),
  });
  const s = {
    mode: 'bridge', uptimeSec: 3, sharedBuffers: { bufCount: 64, bufSize: 2048, base: '0x4000000000', pool: 0 },
    ledger: { ok: true, problems: [] },
    ports: [
      port('a', ['02:00:00:00:00:01'], [
        { index: 0, rxPackets: 5, txPackets: 20, rxBytes: 500, txBytes: 2000 },
        { index: 1, rxPackets: 7, txPackets: 10, rxBytes: 700, txBytes: 1000 },
      ]),
      port('b', ['02:00:00:00:00:02', '02:00:00:00:00:03', '02:00:00:00:00:04']),
      port('c', []),
    ],
  };
  type Stats = Parameters<typeof renderStats>[0];
  const out = renderStats(s as unknown as Stats);
  const lines = out.split('\n');
  t.match(lines[1], /^port\s+domain\s+attached\s+zc\s+owned\s+rx pkts\s+tx pkts\s+.*\bmacs\s+drops$/, 'a macs column in bridge mode');
  t.match(lines[2], /^a\s+bridge\s+yes\s+yes\s+10\s+12\s+30\s.*02:00:00:00:00:01\s+0$/);
  t.match(lines[1], /\breturned\s+gso\/cut\/csum\s/, 'an offloads column: GSO frames in, frames cut, checksums completed');
  t.match(lines[2], /\s12\/24\/1\s/, 'its cell: gsoFrames/segmented/checksummed');
  const rxCol = lines[1].indexOf('rx pkts');
  const txCol = lines[1].indexOf('tx pkts');
  t.match(lines[3], /^ {2}q0\s+5\s+20\s+500\s+2000$/, 'queue 0 under port a: packets and bytes');
  t.equal(lines[3].indexOf('5'), rxCol, 'queue rx in the rx pkts column');
  t.equal(lines[3].indexOf('20'), txCol, 'queue tx in the tx pkts column');
  t.match(lines[4], /^ {2}q1\s+7\s+10\s+700\s+1000$/, 'queue 1 under port a');
  t.match(lines[5], /^b\s.*3: 02:00:00:00:00:02,02:00:00:00:00:03,\.\.\.\s+0$/, 'many MACs: count and the first two');
  t.match(lines[6], /^c\s.*\s-\s+0$/, 'no MACs: -');
  const pair = renderStats({ ...s, mode: 'pair', ports: [port('x', [])] } as unknown as Stats);
  t.notMatch(pair, /macs/, 'pair mode: no macs column');
});

t.test('a VM whose switch goes away prints its summary and exits 1 (--no-reconnect)', async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'a' }, { name: 'b' }], pairs: [['a', 'b']] });
  // Both would reconnect by default (test/e2e/restart.test.ts); --no-reconnect keeps the old contract.
  const sink = vm(sw, 'b', ['--mode', 'sink', '--no-reconnect']);
  await waitAttached(sw, 'b');
  const gen = vm(sw, 'a', ['--mode', 'gen', '--rate', '20000', '--no-reconnect']);
  await waitAttached(sw, 'a');
  await sleep(300);
  t.equal(await sw.stop(), 0, 'switch stopped');
  for (const [name, p] of [['sink', sink], ['gen', gen]] as const) {
    const r = await p.result;
    t.equal(r.code, 1, `${name} exits 1`);
    t.match(r.stderr, /switch connection closed/, `${name} says why`);
    t.equal((r.summary as unknown as { mode: string }).mode, name, `${name} still printed its JSON summary`);
  }
});

t.test('start-up banner says what each port is: paired, unpaired, bridge port, TAP uplink', async (t) => {
  const { portLines } = await import('../../src/cli/start');
  const { parseConfig } = await import('../../src/config');
  const pair = parseConfig({ socketDir: '/s', ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }], pairs: [['a', 'b']] });
  t.same(portLines(pair), [
    'port a: /s/a.sock (paired with b, domain pair:a+b)',
    'port b: /s/b.sock (paired with a, domain pair:a+b)',
    'port c: /s/c.sock (unpaired: it has no peer, frames it sends are dropped; domain port:c)',
  ]);
  const cross = parseConfig({ socketDir: '/s', ports: [{ name: 'a', domain: 'x' }, { name: 'b', domain: 'y' }], pairs: [['a', 'b']] });
  t.same(portLines(cross), [
    'port a: /s/a.sock (paired with b, domain x; b is in domain y: every frame is copied)',
    'port b: /s/b.sock (paired with a, domain y; a is in domain x: every frame is copied)',
  ], 'a pair across domains says that it copies');
  const bridge = parseConfig({ socketDir: '/s', mode: 'bridge', ports: [{ name: 'a' }, { name: 'up', type: 'tap', ifname: 'zc0' }, { name: 'b' }] });
  t.same(portLines(bridge), [
    'port a: /s/a.sock (bridge port, domain bridge)',
    'port up: TAP interface zc0 (bridge uplink to the host stack)',
    'port b: /s/b.sock (bridge port, domain bridge)',
  ], 'bridge: in config order, no "(unpaired)"');

  const sw = await startSwitch(t, { mode: 'bridge', ports: [{ name: 'x' }, { name: 'y' }, { name: 'z' }] });
  t.match(sw.stdout(), /^zcswitch: bridge mode/m);
  for (const n of ['x', 'y', 'z']) t.match(sw.stdout(), `  port ${n}: ${path.join(sw.dir, `${n}.sock`)} (bridge port, domain bridge)\n`, `the running switch prints port ${n} as a bridge port`);
  t.notMatch(sw.stdout(), /unpaired/);
});

t.test('start-up banner: per port, the QEMU options that map its domain\'s region as an ivshmem BAR', async (t) => {
  const { ivshmemLines } = await import('../../src/cli/start');
  const { parseConfig } = await import('../../src/config');
  const cfg = parseConfig({
    socketDir: '/s', ports: [{ name: 'a' }, { name: 'b' }, { name: 'c', domain: 'x' }], pairs: [['a', 'b']], sharedBuffers: { bufCount: 4096, bufSize: 2048 },
  });
  t.same(ivshmemLines(cfg), [
    'port a ivshmem: -object memory-backend-file,id=zcs-a,mem-path=/s/pair:a+b.region,size=16M,share=on -device ivshmem-plain,memdev=zcs-a',
    'port b ivshmem: -object memory-backend-file,id=zcs-b,mem-path=/s/pair:a+b.region,size=16M,share=on -device ivshmem-plain,memdev=zcs-b',
    'port c ivshmem: -object memory-backend-file,id=zcs-c,mem-path=/s/x.region,size=16M,share=on -device ivshmem-plain,memdev=zcs-c',
  ], '8 MiB of buffers + the 64 KiB header: a 16 MiB region');
  const sw = await startSwitch(t, { ports: [{ name: 'x' }, { name: 'y' }], pairs: [['x', 'y']], sharedBuffers: { bufCount: 64, bufSize: 2048 } });
  const file = path.join(sw.dir, 'pair:x+y.region');
  t.match(sw.stdout(), `  port x ivshmem: -object memory-backend-file,id=zcs-x,mem-path=${file},size=256K,share=on -device ivshmem-plain,memdev=zcs-x\n`);
  t.equal(fs.statSync(file).size, 256 * 1024, 'the printed path opens the region, of the printed size');
});

t.test('an unusable socketDir: exit 2, the message names the path and socketDir, no "switch stopped"', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'a-file');
  fs.writeFileSync(file, 'not a directory\n');
  const cases: [string, string, RegExp][] = [
    ['under a regular file', path.join(file, 'sockets'), /a part of the path is a file, not a directory/],
    ['a regular file itself', file, /not a directory/],
  ];
  // Root passes permission bits; as another user a read-only directory is the permission case.
  if (process.getuid?.() !== 0) {
    const ro = path.join(dir, 'read-only');
    fs.mkdirSync(ro, { mode: 0o555 });
    cases.push(['a directory without write permission', ro, /permission denied/]);
  }
  for (const [what, socketDir, problem] of cases) {
    const cfg = path.join(dir, 'cfg.json');
    fs.writeFileSync(cfg, JSON.stringify({ socketDir, ports: [{ name: 'vm1' }] }));
    const p = run(['start', '-c', cfg, '--log-level', 'info']);
    const { code } = await p.exited;
    t.equal(code, 2, `${what}: exit 2`);
    const err = p.stderr();
    t.match(err, `socketDir "${socketDir}"`, `${what}: names the field and the path: ${err.trim()}`);
    t.match(err, problem, `${what}: says what is wrong`);
    t.match(err, cfg, `${what}: names the config file`);
    t.notMatch(p.stdout() + err, /switch stopped|switch started/, `${what}: no start or stop log for a switch that never ran`);
  }
});

t.test('a second generator run is a new stream to the sink, not a million duplicates', async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'left' }, { name: 'right' }], pairs: [['left', 'right']] });
  const sink = vm(sw, 'right', ['--mode', 'sink', '--count', '6000', '--duration', '60']);
  await waitAttached(sw, 'right');
  for (let i = 0; i < 2; i++) {
    const g = await vm(sw, 'left', ['--mode', 'gen', '--count', '3000']).result;
    t.equal(g.code, 0, `gen run ${i + 1}`);
  }
  const s = (await sink.result).summary;
  t.same([s.verified, s.lost, s.dup, s.streams], [6000, 0, 0, 2], 'sink: 6000 verified in 2 streams, no loss, no duplicate');
});

t.test('the VM says what it does and how it stops, and its rate line shows verified and lost', async (t) => {
  const { startLine } = await import('../../src/cli/vm');
  const base = { port: 'p', socketDir: '/s', size: 64, count: 0, duration: 0, rate: 0, stream: 1 } as Parameters<typeof startLine>[0];
  t.match(startLine({ ...base, mode: 'sink' }, '/s/p.sock', true, 7), /^p sink: attached to \/s\/p\.sock, zero-copy.*; runs until Ctrl-C \(or give --count \/ --duration\); reattaches if the switch restarts$/);
  t.match(startLine({ ...base, mode: 'gen', count: 1000 }, '/s/p.sock', true, 7), /sending 1000 test frames of 64 B \(stream 1, run 7\).*stops after 1000 frames sent, or on Ctrl-C$/);
  t.match(startLine({ ...base, mode: 'gen', count: 1000, reconnect: true }, '/s/p.sock', true, 7), /or on Ctrl-C; reattaches if the switch restarts$/);
  t.match(startLine({ ...base, mode: 'sink', reconnect: false }, '/s/p.sock', true, 7), /--duration\)$/);
  t.match(startLine({ ...base, mode: 'echo', duration: 5 }, '/s/p.sock', false, 7), /copy path.*sending every frame it receives back; stops after 5 s, or on Ctrl-C; reattaches if the switch restarts$/);

  const sw = await startSwitch(t, { ports: [{ name: 'left' }, { name: 'right' }], pairs: [['left', 'right']] });
  const sink = run(['vm', '--socket-dir', sw.dir, '--port', 'right', '--mode', 'sink', '--duration', '4']);
  await waitAttached(sw, 'right');
  await vm(sw, 'left', ['--mode', 'gen', '--rate', '5000', '--count', '10000']).result;
  t.equal((await sink.exited).code, 0);
  const lines = sink.stdout().trim().split('\n');
  t.match(lines[0], /^right sink: attached to .*right\.sock.*stops after 4 s, or on Ctrl-C; reattaches if the switch restarts$/, `start line: ${lines[0]}`);
  const RATE = /^right sink: tx \S+ [kM]pps rx \S+ [kM]pps \(total tx (\d+) rx (\d+), verified (\d+), lost (\d+), dup (\d+), bad (\d+), gifts out \d+ in \d+\)$/;
  const rates = lines.slice(1, -1).map((l) => RATE.exec(l));
  t.ok(rates.length >= 2 && rates.every((m) => m !== null), `every per-second line parses:\n${lines.slice(1, -1).join('\n')}`);
  const lastRate = rates[rates.length - 1]!;
  const [rx, verified, lost, dup] = [2, 3, 4, 5].map((i) => Number(lastRate[i]));
  t.ok(verified > 0 && verified === rx, `the rate line counts verified frames (${verified} of ${rx})`);
  t.same([lost, dup], [0, 0], 'and lost and dup');
  t.match(lines[lines.length - 1], /^right sink done in .*verified 10000, lost 0, dup 0/, 'summary: the 10000 sent at 5000 pps, all verified');
});

t.test('SIGUSR2: a VM prints its counters so far, busy and CPU time included, and keeps running', async (t) => {
  const sw = await startSwitch(t, { ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] });
  const sink = vm(sw, 'vm2', ['--mode', 'sink', '--no-verify']);
  await waitAttached(sw, 'vm2');
  const gen = vm(sw, 'vm1', ['--mode', 'gen', '--count', '200000', '--no-verify']);
  const g = await gen.result;
  t.equal(g.code, 0, `gen ran: ${g.stderr}`);
  t.ok(g.summary.busySec > 0 && g.summary.busySec <= g.summary.elapsedSec, `gen's summary has its busy time (${g.summary.busySec} s)`);
  // What the switch delivered to the sink (a drop for want of an rx buffer is allowed here).
  await sleep(200);
  const delivered = counters(await sw.port('vm2')).txPackets;
  t.ok(delivered > 0, `the switch delivered ${delivered} packets`);
  const snapshots = () => sink.stdout().trim().split('\n').filter((l) => l.startsWith('{"snapshot":true'));
  await waitFor('a snapshot with every delivered packet', async () => {
    sink.child.kill('SIGUSR2');
    await sleep(50);
    const last = snapshots().pop();
    return last !== undefined && (JSON.parse(last) as { received: number }).received === delivered;
  }, 15000);
  const snap = JSON.parse(snapshots().pop()!) as Record<string, number>;
  t.equal(snap.received, delivered, 'the snapshot counts what arrived');
  t.ok(snap.busySec > 0, `busy time (${snap.busySec} s)`);
  t.ok(snap.busySec <= snap.elapsedSec, `busy time within the elapsed time (${snap.elapsedSec} s)`);
  t.ok(snap.cpuSec > 0, `CPU time of the process (${snap.cpuSec} s)`);
  t.equal(sink.child.exitCode, null, 'the sink is still running after the snapshots');
  sink.child.kill('SIGTERM');
  const k = await sink.result;
  t.equal(k.code, 0, 'sink stopped cleanly');
  t.equal(k.summary.received, delivered, 'and its final summary is the last line');
  t.ok(k.summary.busySec >= snap.busySec, 'busy time only grows');
});
