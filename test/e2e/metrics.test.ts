/**
 * The Prometheus endpoint (`metrics.listen`): a real switch with traffic,
 * scraped with Node's http client; the exposition text parsed line by line
 * (HELP and TYPE before each family, every sample name, label set and
 * value) and compared with `zcswitch stats --json`. Plus the formatter on
 * its own and the config checks on the listen address.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { ConfigError, parseConfig } from '../../src/config';
import { formatMetrics } from '../../src/switch/metrics';
import type { SwitchStats } from '../../src/switch/stats';
import { run, startSwitch, tempDir, vm, waitAttached } from '../helpers/procs';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Family {
  name: string;
  help: string;
  type: string;
  samples: Sample[];
}

/** Parse one sample line: name, optional {k="v",...} with escapes, value. Throws on anything malformed. */
function parseSample(line: string): Sample {
  let i = 0;
  const nameRe = /[a-zA-Z_:][a-zA-Z0-9_:]*/y;
  const m = nameRe.exec(line);
  if (!m) throw new Error(`no metric name: ${line}`);
  const name = m[0];
  i = nameRe.lastIndex;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    while (line[i] !== '}') {
      const lre = /[a-zA-Z_][a-zA-Z0-9_]*/y;
      lre.lastIndex = i;
      const lm = lre.exec(line);
      if (!lm) throw new Error(`bad label name at ${i}: ${line}`);
      i = lre.lastIndex;
      if (line[i] !== '=' || line[i + 1] !== '"') throw new Error(`expected =" at ${i}: ${line}`);
      i += 2;
      let v = '';
      for (;;) {
        const c = line[i++];
        if (c === undefined) throw new Error(`unterminated label value: ${line}`);
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i++];
          v += e === 'n' ? '\n' : e;
        } else {
          v += c;
        }
      }
      if (lm[0] in labels) throw new Error(`duplicate label ${lm[0]}: ${line}`);
      labels[lm[0]] = v;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') throw new Error(`expected , or } at ${i}: ${line}`);
    }
    i++;
  }
  if (line[i] !== ' ') throw new Error(`expected a space before the value: ${line}`);
  const rest = line.slice(i + 1).split(' ');
  if (rest.length > 2) throw new Error(`trailing fields: ${line}`);
  const text = rest[0];
  const value = text === '+Inf' ? Infinity : text === '-Inf' ? -Infinity : text === 'NaN' ? NaN : Number(text);
  if (text === '' || (Number.isNaN(value) && text !== 'NaN')) throw new Error(`bad value "${text}": ${line}`);
  return { name, labels, value };
}

/** Parse the exposition text into families; throws if HELP/TYPE do not precede a family's samples. */
function parseExposition(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const families = new Map<string, Family>();
  let cur: Family | null = null;
  for (const line of text.slice(0, -1).split('\n')) {
    if (line.startsWith('# HELP ')) {
      const [name, ...help] = line.slice(7).split(' ');
      if (families.has(name)) throw new Error(`family ${name} appears twice`);
      cur = { name, help: help.join(' '), type: '', samples: [] };
      families.set(name, cur);
    } else if (line.startsWith('# TYPE ')) {
      const [name, type] = line.slice(7).split(' ');
      if (!cur || cur.name !== name || cur.samples.length > 0) throw new Error(`TYPE for ${name} not right after its HELP`);
      if (!['counter', 'gauge', 'summary', 'histogram', 'untyped'].includes(type)) throw new Error(`bad type ${type}`);
      cur.type = type;
    } else if (line.startsWith('#') || line === '') {
      throw new Error(`unexpected line: "${line}"`);
    } else {
      const s = parseSample(line);
      if (!cur || cur.name !== s.name || cur.type === '') throw new Error(`sample ${s.name} without HELP and TYPE before it`);
      cur.samples.push(s);
    }
  }
  for (const f of families.values()) {
    if (f.type === 'counter' && !f.name.endsWith('_total')) throw new Error(`counter ${f.name} does not end in _total`);
    if (f.help === '') throw new Error(`${f.name} has no help text`);
  }
  return families;
}

function get(url: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const value = (fams: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined =>
  fams.get(name)?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v) && Object.keys(s.labels).length === Object.keys(labels).length)?.value;

t.test('GET /metrics on a running switch matches zcswitch stats --json', async (t) => {
  const port = await freePort();
  const sw = await startSwitch(t, { ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']], metrics: { listen: `127.0.0.1:${port}` } });
  const base = `http://127.0.0.1:${port}`;
  const sink = vm(sw, 'vm2', ['--mode', 'sink']);
  t.teardown(() => sink.child.kill());
  await waitAttached(sw, 'vm2');
  const g = await vm(sw, 'vm1', ['--mode', 'gen', '--count', '300', '--size', '256']).result;
  t.equal(g.code, 0);

  const res = await get(`${base}/metrics`);
  t.equal(res.status, 200);
  t.equal(res.type, 'text/plain; version=0.0.4; charset=utf-8');
  const fams = parseExposition(res.body);
  const statsRun = run(['stats', '--json', '--control', sw.control]);
  t.equal((await statsRun.exited).code, 0);
  const s = JSON.parse(statsRun.stdout()) as SwitchStats;

  for (const name of ['zcswitch_port_rx_packets_total', 'zcswitch_port_drops_total', 'zcswitch_port_buffers_owned', 'zcswitch_port_attached',
    'zcswitch_ledger_balanced', 'zcswitch_pool_buffers', 'zcswitch_port_learned_macs']) {
    t.ok(fams.has(name), `has ${name} (${fams.get(name)?.type})`);
  }
  t.equal(fams.get('zcswitch_port_rx_packets_total')!.type, 'counter');
  t.equal(fams.get('zcswitch_port_buffers_owned')!.type, 'gauge');
  t.equal(value(fams, 'zcswitch_ledger_balanced'), s.ledger.ok ? 1 : 0, 'ledger_balanced');
  t.equal(value(fams, 'zcswitch_ledger_balanced'), 1);
  t.equal(value(fams, 'zcswitch_pool_buffers'), s.sharedBuffers.pool, 'pool_buffers');
  t.equal(value(fams, 'zcswitch_shared_buffers'), s.sharedBuffers.bufCount);
  t.equal(value(fams, 'zcswitch_info', { mode: 'pair' }), 1);
  const pairs: [string, string][] = [
    ['rx_packets', 'rxPackets'], ['rx_bytes', 'rxBytes'], ['tx_packets', 'txPackets'], ['tx_bytes', 'txBytes'],
    ['zero_copy_packets', 'zeroCopy'], ['copied_bytes', 'copiedBytes'], ['gifts_in', 'giftsIn'], ['gifts_out', 'giftsOut'],
  ];
  for (const p of s.ports) {
    const c = p.counters as Record<string, number> & { drops: Record<string, number> };
    const L = { port: p.name };
    t.equal(value(fams, 'zcswitch_port_attached', L), p.attached ? 1 : 0, `${p.name}: attached`);
    t.equal(value(fams, 'zcswitch_port_buffers_owned', L), p.buffersOwned, `${p.name}: buffers_owned = ${p.buffersOwned}`);
    t.equal(value(fams, 'zcswitch_port_learned_macs', L), p.macs.length, `${p.name}: learned_macs`);
    t.equal(value(fams, 'zcswitch_port_shared_bar', L), p.sharedBar ? 1 : 0, `${p.name}: shared_bar`);
    for (const [metric, key] of pairs) t.equal(value(fams, `zcswitch_port_${metric}_total`, L), c[key], `${p.name}: ${metric} = ${c[key]}`);
    const drops = fams.get('zcswitch_port_drops_total')!.samples.filter((x) => x.labels.port === p.name);
    t.ok(drops.length >= 19, `${p.name}: every drop reason exported (${drops.length})`);
    for (const d of drops) t.equal(d.value, c.drops[d.labels.reason] ?? 0, `${p.name}: drops{reason="${d.labels.reason}"}`);
  }
  t.equal(value(fams, 'zcswitch_port_rx_packets_total', { port: 'vm1' }), 300, 'vm1 sent 300');
  t.equal(value(fams, 'zcswitch_port_tx_packets_total', { port: 'vm2' }), 300, 'vm2 got 300');
  t.equal(value(fams, 'zcswitch_port_rx_bytes_total', { port: 'vm1' }), 300 * 256);
  t.equal(value(fams, 'zcswitch_port_attached', { port: 'vm2' }), 1, 'vm2 (the sink) is attached');

  // Only /metrics; HEAD works; other methods are refused.
  t.equal((await get(`${base}/`)).status, 404);
  t.equal((await get(`${base}/nope`)).status, 404);
  const head = await get(`${base}/metrics`, 'HEAD');
  t.equal(head.status, 200);
  t.equal(head.body, '');
  t.equal((await get(`${base}/metrics`, 'POST')).status, 405);
  t.equal(await sw.stop(), 0);
  await t.rejects(get(`${base}/metrics`), 'the endpoint is gone after the switch stops');
});

t.test('formatMetrics: queues, learned MACs, label escaping', async (t) => {
  const stats = {
    mode: 'bridge',
    uptimeSec: 12.5,
    sharedBuffers: { bufCount: 64, bufSize: 2048, base: '0x4000000000', pool: 4 },
    ledger: { ok: false, problems: ['x'] },
    ports: [{
      name: 'we"ird\\port', socket: '/x', attached: true, ready: true, zeroCopy: true, peer: null, buffersOwned: 60,
      macs: ['02:00:00:00:00:01', '02:00:00:00:00:02'],
      queues: [
        { index: 0, rxPackets: 5, txPackets: 6, rxBytes: 500, txBytes: 600 },
        { index: 1, rxPackets: 7, txPackets: 8, rxBytes: 700, txBytes: 800 },
      ],
      counters: { rxPackets: 12, rxBytes: 1200, txPackets: 14, txBytes: 1400, zeroCopy: 12, copied: 0, copiedBytes: 0, giftsIn: 0,
        giftsOut: 0, returned: 0, kicks: 1, calls: 2, drops: { 'not-owner': 3, 'some-future-reason': 1 } },
    }],
  } as unknown as SwitchStats;
  const fams = parseExposition(formatMetrics(stats));
  const P = { port: 'we"ird\\port' };
  t.equal(value(fams, 'zcswitch_port_learned_macs', P), 2, 'label value with " and \\ survives escaping');
  t.equal(value(fams, 'zcswitch_ledger_balanced'), 0);
  t.equal(value(fams, 'zcswitch_info', { mode: 'bridge' }), 1);
  t.equal(value(fams, 'zcswitch_port_drops_total', { ...P, reason: 'not-owner' }), 3);
  t.equal(value(fams, 'zcswitch_port_drops_total', { ...P, reason: 'bad-head' }), 0, 'known reasons are exported as 0');
  t.equal(value(fams, 'zcswitch_port_drops_total', { ...P, reason: 'some-future-reason' }), 1, 'unknown reasons are exported too');
  t.equal(value(fams, 'zcswitch_queue_rx_packets_total', { ...P, queue: '1' }), 7);
  t.equal(value(fams, 'zcswitch_queue_tx_bytes_total', { ...P, queue: '0' }), 600);
  t.equal(fams.get('zcswitch_queue_rx_packets_total')!.type, 'counter');
  // No queues: no queue families.
  const single = parseExposition(formatMetrics({ ...stats, ports: [{ ...stats.ports[0], queues: undefined }] } as unknown as SwitchStats));
  t.notOk(single.has('zcswitch_queue_rx_packets_total'));
  t.throws(() => parseExposition('zcswitch_x 1\n'), /without HELP and TYPE/, 'the parser itself rejects a bare sample');
});

t.test('metrics.listen must be a loopback host:port', async (t) => {
  const ports = [{ name: 'vm1' }];
  const issue = (listen: unknown) => {
    try {
      parseConfig({ ports, metrics: { listen } });
    } catch (e) {
      t.ok(e instanceof ConfigError);
      return (e as ConfigError).issues;
    }
    return [];
  };
  t.match(issue('0.0.0.0:9478'), [{ path: 'metrics.listen', message: /host "0\.0\.0\.0" is not a loopback address/ }]);
  t.match(issue('192.168.1.10:9478'), [{ path: 'metrics.listen', message: /not a loopback address/ }]);
  t.match(issue('[::]:9478'), [{ path: 'metrics.listen', message: /host "::" is not a loopback address/ }]);
  t.match(issue('example.com:9478'), [{ path: 'metrics.listen', message: /not a loopback address/ }]);
  t.match(issue('127.0.0.1:0'), [{ path: 'metrics.listen', message: 'port must be within 1..65535, got 0' }]);
  t.match(issue('127.0.0.1:65536'), [{ path: 'metrics.listen', message: 'port must be within 1..65535, got 65536' }]);
  t.match(issue('127.0.0.1:http'), [{ path: 'metrics.listen', message: /port must be a whole number/ }]);
  t.match(issue('127.0.0.1'), [{ path: 'metrics.listen', message: /must be "host:port"/ }]);
  t.match(issue(9478), [{ path: 'metrics.listen', message: /must be a string/ }]);
  t.match(issue(undefined), [{ path: 'metrics.listen', message: 'is required' }]);
  t.throws(() => parseConfig({ ports, metrics: { listen: '127.0.0.1:1', path: '/m' } }), /metrics: unknown field "path"/);
  t.same(parseConfig({ ports, metrics: { listen: '127.0.0.2:9478' } }).metrics, { listen: '127.0.0.2:9478', host: '127.0.0.2', port: 9478 });
  t.same(parseConfig({ ports, metrics: { listen: '[::1]:9478' } }).metrics, { listen: '[::1]:9478', host: '::1', port: 9478 });
  t.same(parseConfig({ ports, metrics: { listen: 'localhost:1' } }).metrics?.port, 1);
  t.equal(parseConfig({ ports }).metrics, undefined, 'absent: metrics off');

  // The user's view: zcswitch start refuses, names the field, leaves no socket.
  const dir = tempDir(t);
  const file = path.join(dir, 'bad.json');
  fs.writeFileSync(file, JSON.stringify({ socketDir: path.join(dir, 's'), ports, metrics: { listen: '0.0.0.0:9478' } }));
  const p = run(['start', '-c', file]);
  t.equal((await p.exited).code, 2, 'exit 2');
  t.match(p.stderr(), /metrics\.listen: host "0\.0\.0\.0" is not a loopback address/, p.stderr().trim());
  t.notOk(fs.existsSync(path.join(dir, 's', 'vm1.sock')), 'no socket left behind');
});

t.test('a metrics port already in use: the switch does not start', async (t) => {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => srv.close());
  const port = (srv.address() as net.AddressInfo).port;
  const dir = tempDir(t);
  const file = path.join(dir, 'busy.json');
  fs.writeFileSync(file, JSON.stringify({ socketDir: dir, ports: [{ name: 'vm1' }], metrics: { listen: `127.0.0.1:${port}` } }));
  const p = run(['start', '-c', file]);
  t.equal((await p.exited).code, 1);
  t.match(p.stderr(), new RegExp(`metrics\\.listen 127\\.0\\.0\\.1:${port}: cannot listen: address already in use`));
  t.notOk(fs.existsSync(path.join(dir, 'vm1.sock')), 'port sockets removed again');
});
