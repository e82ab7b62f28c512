/**
 * The bench harness (issue 5): `zcswitch bench --quick` must produce sane
 * numbers, a markdown table and an SVG plot. No performance thresholds:
 * only that rates are positive, zero-copy copies nothing and copy copies.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { DEFAULTS } from '../../src/config';
import { planScenarios, resolveSettings } from '../../bench/harness';
import { REGION_CAP_BYTES, bufCountFor, bufSizeFor, bufSizeProblem } from '../../bench/runners/common';
import { cpuPlan } from '../../bench/lib/pin';
import { which } from '../../bench/lib/util';
import { StatsParser, findDpdk, geometry } from '../../bench/runners/dpdk';
import { ovsMtu, parseDumpPorts, parsePmdStats } from '../../bench/runners/ovs';
import { seriesOf } from '../../bench/report/svg';
import type { BenchResults, ScenarioResult, VmStallsByVm } from '../../bench/types';
import { requireExternal } from '../helpers/external';
import { run, tempDir, within } from '../helpers/procs';

/** The checkout (this file runs from dist/test/e2e). */
const ROOT = path.join(__dirname, '..', '..', '..');

async function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 240000): Promise<{ code: number | null; out: string; err: string }> {
  const p = run(args, { env });
  if (!(await within(p.exited, timeoutMs))) p.child.kill('SIGKILL');
  const { code } = await p.exited;
  return { code, out: p.stdout(), err: p.stderr() };
}

function outputs(dir: string): { json: BenchResults; md: string; svg: string } {
  const files = fs.readdirSync(dir);
  const one = (ext: string) => {
    const f = files.filter((x) => x.endsWith(ext));
    if (f.length !== 1) throw new Error(`expected one ${ext} file in ${dir}, found ${f.join(', ') || 'none'}`);
    return fs.readFileSync(path.join(dir, f[0]), 'utf8');
  };
  return { json: JSON.parse(one('.json')) as BenchResults, md: one('.md'), svg: one('.svg') };
}

/**
 * A small XML well-formedness check (no parser in the dependencies): tags
 * nest and close, attributes are name="value", text has no stray '<' and only
 * known entities. Returns the elements seen, with their attributes.
 */
function parseXml(xml: string): { name: string; attrs: Record<string, string> }[] {
  const elements: { name: string; attrs: Record<string, string> }[] = [];
  const stack: string[] = [];
  const tok = /<\?[\s\S]*?\?>|<!--[\s\S]*?-->|<\/([A-Za-z][\w:.-]*)\s*>|<([A-Za-z][\w:.-]*)((?:\s+[A-Za-z_:][\w:.-]*\s*=\s*"[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/g;
  let m: RegExpExecArray | null;
  let rootSeen = false;
  while ((m = tok.exec(xml)) !== null) {
    if (m[6]) throw new Error(`stray '<' at offset ${m.index}: ${xml.slice(m.index, m.index + 40)}`);
    if (m[5] !== undefined) {
      if (stack.length === 0 && m[5].trim()) throw new Error(`text outside the root element at ${m.index}`);
      const bad = /&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/.exec(m[5]);
      if (bad) throw new Error(`bad entity at offset ${m.index + bad.index}`);
      continue;
    }
    if (m[1]) {
      const open = stack.pop();
      if (open !== m[1]) throw new Error(`</${m[1]}> closes <${open}>`);
      continue;
    }
    if (m[2]) {
      if (stack.length === 0) {
        if (rootSeen) throw new Error('more than one root element');
        rootSeen = true;
      }
      const attrs: Record<string, string> = {};
      for (const a of m[3].matchAll(/([A-Za-z_:][\w:.-]*)\s*=\s*"([^"]*)"/g)) {
        if (a[1] in attrs) throw new Error(`duplicate attribute ${a[1]} on <${m[2]}>`);
        attrs[a[1]] = a[2];
      }
      elements.push({ name: m[2], attrs });
      if (!m[4]) stack.push(m[2]);
    }
  }
  if (stack.length) throw new Error(`unclosed <${stack.join('>, <')}>`);
  if (!rootSeen) throw new Error('no root element');
  return elements;
}

t.test('bench --quick: expected scenarios, sane numbers, markdown table and SVG plot', async (t) => {
  const out = tempDir(t, 'zcs-bench-');
  const started = Date.now();
  const r = await runCli(['bench', '--quick', '--out', out]);
  const secs = (Date.now() - started) / 1000;
  if (r.code !== 0) t.comment(r.err.slice(-3000));
  t.equal(r.code, 0, 'bench --quick exited 0');
  t.ok(secs < 120, `--quick finished in ${secs.toFixed(1)} s`);
  const { json, md, svg } = outputs(out);
  t.equal(json.schema, 'zcswitch-bench/1');
  t.equal(json.settings.quick, true);
  t.equal(json.aborted, false);
  const byId = new Map<string, ScenarioResult>(json.scenarios.map((s) => [s.id, s]));
  const hasCc = which(process.env.CC || 'cc') !== null;
  const expected = ['zc-oneway/64', 'zc-oneway/1500', 'copy-oneway/64', 'copy-oneway/1500', ...(hasCc ? ['kernel/64', 'kernel/1500'] : [])];
  t.same([...byId.keys()].filter((id) => !id.startsWith('kernel/') || hasCc).sort(), expected.sort(), 'the --quick scenarios');
  if (!hasCc) {
    t.equal(byId.get('kernel/64')?.status ?? 'skipped', 'skipped', 'kernel peer skipped without cc');
    t.match(r.err, /peer kernel skipped: no C compiler/, 'and says why');
  }
  for (const p of ['dpdk-vhost', 'memif', 'memif-zc']) {
    t.ok(json.peers.some((x) => x.group === p && x.status === 'skipped'), `${p} is listed as skipped in --quick`);
    t.match(r.err, new RegExp(`peer ${p} skipped`), `a clear line says ${p} was skipped`);
  }
  for (const id of expected) {
    const s = byId.get(id)!;
    t.equal(s.status, 'ok', `${id} ran: ${s.errors.join('; ')}`);
    t.equal(s.runs.length, 1, `${id}: one run`);
    const run = s.runs[0];
    t.ok(run.mpps > 0 && run.packets > 0, `${id}: positive packet rate (${run.mpps.toFixed(3)} Mpps)`);
    t.ok(run.gbps > 0, `${id}: positive Gbit/s (${run.gbps.toFixed(2)})`);
    t.ok(run.windowSec > 0.5 && run.windowSec < 5, `${id}: measured window ${run.windowSec.toFixed(2)} s`);
    t.ok(Math.abs(run.avgLen! - s.size) <= 1, `${id}: received frames are ${s.size} B (${run.avgLen})`);
    t.ok(s.summary.mpps && s.summary.mpps.median === run.mpps, `${id}: summary median`);
    t.ok(run.totalCpuNsPerPkt! > 0, `${id}: CPU per packet measured`);
    if (s.system === 'zcswitch') {
      t.ok(run.switchCpuNsPerPkt! > 0, `${id}: switch CPU per packet measured (${run.switchCpuNsPerPkt!.toFixed(0)} ns)`);
      // Two well-behaved guest-driver VMs: the only drops possible are for want of an rx
      // buffer at the sink (past the back-pressure deadline), and drops is exactly the sum of its reasons.
      const reasons = run.dropReasons ?? {};
      t.same(Object.keys(reasons).filter((r) => r !== 'rx-wait-timeout' && r !== 'no-rx-buffer'), [], `${id}: only rx-buffer drops (${JSON.stringify(reasons)})`);
      t.equal(run.drops, Object.values(reasons).reduce((a, b) => a + b, 0), `${id}: drops counted, as the sum of the reasons (${run.drops})`);
    }
  }
  for (const size of [64, 1500]) {
    const zc = byId.get(`zc-oneway/${size}`)!.runs[0];
    const cp = byId.get(`copy-oneway/${size}`)!.runs[0];
    t.equal(zc.copiedBytesPerPkt, 0, `zero-copy ${size} B: 0 payload bytes copied per packet`);
    t.ok(zc.giftsPer1000! > 0, `zero-copy one-way ${size} B: the sink gifts buffers back (${zc.giftsPer1000!.toFixed(0)} per 1000)`);
    t.ok(cp.copiedBytesPerPkt! > 0, `copy ${size} B: ${cp.copiedBytesPerPkt} payload bytes copied per packet`);
    t.ok(Math.abs(cp.copiedBytesPerPkt! - size) <= 1, `copy ${size} B: the whole frame is copied`);
    if (hasCc) t.ok(byId.get(`zc-oneway/${size}`)!.ratios.kernel! > 0, `zc ${size} B has a ratio to the kernel peer`);
  }

  // Markdown: a table by size with ratio columns, and the detailed table.
  t.match(md, /^# zcswitch bench/m, 'markdown title');
  t.match(md, /\| size B \| zc one-way \| copy one-way \|/, 'summary table header');
  if (hasCc) t.match(md, /zc one-way ÷ kernel/, 'ratio column');
  t.match(md, /\| zc-oneway\/64 \| 64 \|/, 'a detail row');
  const tableLines = md.split('\n').filter((l) => l.startsWith('|'));
  t.ok(tableLines.every((l) => l.split('|').length === tableLines.find((x) => x === l)!.split('|').length), 'table rows are rows');
  t.match(r.out, /results: .*\.json/, 'stdout names the result files');

  // SVG: well-formed, one polyline per series per panel.
  t.doesNotThrow(() => parseXml(svg), 'the SVG is well-formed XML');
  const elements = parseXml(svg);
  t.equal(elements[0].name, 'svg', 'root element is <svg>');
  t.equal(elements[0].attrs.xmlns, 'http://www.w3.org/2000/svg', 'SVG namespace');
  for (const metric of ['mpps', 'gbps'] as const) {
    const series = seriesOf(json, metric).map((s) => s.group);
    t.ok(series.includes('zc-oneway') && series.includes('copy-oneway'), `${metric}: zcswitch series present`);
    for (const g of series) {
      const lines = elements.filter((e) => (e.name === 'polyline' || e.name === 'path') && e.attrs['data-series'] === g && e.attrs['data-metric'] === metric);
      t.equal(lines.length, 1, `${metric}: one polyline for ${g}`);
      t.equal(lines[0].attrs.points.trim().split(/\s+/).length, 2, `${metric}: ${g} has a point per size`);
    }
  }
});

t.test('plan: the full default matrix', async (t) => {
  const st = resolveSettings({});
  t.equal(st.runs, 5);
  t.same(st.sizes, [64, 128, 256, 512, 1500, 9000, 65535]);
  const ids = planScenarios(st).map((s) => s.id);
  for (const size of st.sizes) {
    for (const g of ['zc-oneway', 'zc-bidir', 'zc-bridge', 'copy-oneway', 'kernel', 'dpdk-vhost', 'memif', 'memif-zc']) t.ok(ids.includes(`${g}/${size}`), `${g}/${size}`);
  }
  t.ok(ids.includes('zc-burst/64/b1') && ids.includes('zc-burst/64/b256'), 'burst sweep');
  t.notOk(ids.includes('zc-burst/64/b64'), 'the default burst is zc-oneway/64 itself');
  t.ok(ids.includes('zc-poll/64/busy-poll') && ids.includes('zc-poll/64/eventfd'), 'poll-mode sweep');
  t.equal(new Set(ids).size, ids.length, 'ids are unique');
  const q = planScenarios(resolveSettings({ quick: true })).map((s) => s.id);
  t.same(q.sort(), ['copy-oneway/1500', 'copy-oneway/64', 'kernel/1500', 'kernel/64', 'zc-oneway/1500', 'zc-oneway/64']);
  t.notOk(ids.some((id) => id.startsWith('qemu-zc/')), 'the QEMU guests run only when asked for');
  const qz = planScenarios(resolveSettings({ only: ['qemu-zc'], sizes: [64, 1500, 9000] }));
  t.same(qz.map((s) => s.id), ['qemu-zc/64', 'qemu-zc/1500'], '--only qemu-zc: one scenario per size up to 1500 B');
  t.ok(qz.every((s) => s.system === 'qemu-guests'), 'run by the QEMU runner');
});

t.test('plan: --burst sets every scenario outside the sweep, peers included', async (t) => {
  const plan = planScenarios(resolveSettings({ burst: 256 }));
  const swept = plan.filter((s) => s.group === 'zc-burst');
  t.ok(plan.filter((s) => s.group !== 'zc-burst').every((s) => s.burst === 256), 'zcswitch, kernel, DPDK and memif at 256');
  t.same(swept.map((s) => s.burst), [1, 8, 32], 'the sweep leaves out 256: that is zc-oneway/64 itself');
  t.equal(planScenarios(resolveSettings({})).find((s) => s.id === 'memif/64')!.burst, 64, 'default 64');
});

t.test('bench: a bad --burst is refused by name', async (t) => {
  for (const v of ['0', '513', 'many']) {
    const r = await runCli(['bench', '--burst', v, '--no-peers'], {}, 30000);
    t.equal(r.code, 2, `--burst ${v}: exit 2`);
    t.match(r.err, /--burst/, `--burst ${v}: the error names the option`);
  }
});

t.test('zcswitch geometry: buffers fit the frame, the region stays bounded', async (t) => {
  t.equal(bufSizeFor(64), 128, '64 B frames: 128 B buffers (the minimum)');
  t.equal(bufSizeFor(1500), 1536, '1500 + 12 rounded up to 64');
  t.equal(bufSizeFor(65535), 65600, '64 KiB frames: 65600 B buffers');
  for (const size of [64, 1500, 9000, 65535]) {
    const n = bufCountFor(size);
    t.ok(bufSizeFor(size) >= size + 12 && bufSizeFor(size) % 64 === 0, `${size}: buffer holds header + frame, cache-line multiple`);
    t.ok(n <= DEFAULTS.bufCount && n * bufSizeFor(size) <= REGION_CAP_BYTES, `${size}: ${n} buffers, region ${(n * bufSizeFor(size)) >> 20} MiB`);
  }
  t.equal(bufCountFor(64), DEFAULTS.bufCount, 'small frames: the switch default');
  t.equal(bufCountFor(65535, 512), 512, '--buf-count wins');
  t.equal(bufSizeFor(64, 65600), 65600, '--buf-size wins');
  t.equal(bufCountFor(64, null, 262144), 2048, '--buf-size 256 KiB: the region cap follows it (2048 × 256 KiB = 512 MiB)');
});

t.test('--buf-size: a multiple of 64 that holds the largest zcswitch frame, else refused by name', async (t) => {
  t.equal(bufSizeProblem(65600, 65535), '', '65600 holds 65535 + 12');
  t.match(bufSizeProblem(1000, 64), /multiple of 64/);
  t.match(bufSizeProblem(4096, 9000), /below a 9000 B frame/);
  t.equal(resolveSettings({ bufSize: 4096, only: ['zc-oneway'], sizes: [64, 1500] }).bufSize, 4096);
  t.throws(() => resolveSettings({ bufSize: 4096, only: ['zc-gso'], sizes: [64] }), /--buf-size 4096 is below a 65535 B frame/,
    'zc-gso runs 65535 B frames whatever --sizes says');
  t.equal(resolveSettings({ bufSize: 128, only: ['kernel'], sizes: [1500] }).bufSize, 128, 'peers have no shared buffers: not checked');
  for (const [v, sizes, what] of [['1000', '64', /multiple of 64/], ['128', '1500', /below a 1500 B frame/], ['64', '64', /--buf-size/]] as const) {
    const r = await runCli(['bench', '--buf-size', v, '--sizes', sizes, '--only', 'zc-oneway', '--no-peers'], {}, 30000);
    t.equal(r.code, 2, `--buf-size ${v} at ${sizes} B: exit 2`);
    t.match(r.err, what, `--buf-size ${v}: the error says why`);
  }
});

t.test('--buf-size: 64 B frames in page-sized buffers, zero-copy, nothing dropped', async (t) => {
  // 4096 B buffers: the switch loads each burst's headers ahead (RegionGeometry.touchAhead).
  const out = tempDir(t, 'zcs-bench-');
  const r = await runCli(['bench', '--only', 'zc-oneway', '--sizes', '64', '--buf-size', '4096', '--runs', '1', '--warmup', '0.2',
    '--duration', '0.5', '--no-peers', '--out', out, '--progress', 'none'], {}, 60000);
  if (r.code !== 0) t.comment(r.err.slice(-2000));
  t.equal(r.code, 0, 'exit 0');
  const { json, md } = outputs(out);
  const s = json.scenarios[0];
  t.equal(s.status, 'ok', `${s.id} ran: ${s.errors.join('; ')}`);
  t.match(md, /shared buffers of 4096 B \(--buf-size\)/, 'the report says which buffers');
  t.equal((s.setup?.config as { sharedBuffers: { bufSize: number } }).sharedBuffers.bufSize, 4096, 'the switch ran with 4096 B buffers');
  const run = s.runs[0];
  t.ok(run.mpps > 0, `positive rate (${run.mpps.toFixed(2)} Mpps)`);
  t.equal(run.drops, 0, 'no drops');
  t.equal(run.copiedBytesPerPkt, 0, 'zero-copy: no bytes copied');
  t.equal(run.avgLen, 64, 'frames arrive at 64 B');
});

t.test('zc-gso runs beside its reference, 64 B frames in the same 64 KiB buffers, and the report gives the ratios', async (t) => {
  const plan = planScenarios(resolveSettings({ only: ['zc-gso'] }));
  t.same(plan.map((s) => [s.id, s.size, !!s.gso, s.bufSize ?? null]), [['zc-gso/65535', 65535, true, null], ['zc-gso/64-plain', 64, false, 65600]],
    'the TSO scenario and its reference');
  const out = tempDir(t, 'zcs-bench-');
  const r = await runCli(['bench', '--only', 'zc-gso,zc-oneway', '--sizes', '64', '--runs', '1', '--warmup', '0.2', '--duration', '0.5',
    '--no-peers', '--out', out, '--progress', 'none'], {}, 90000);
  if (r.code !== 0) t.comment(r.err.slice(-2000));
  t.equal(r.code, 0, 'exit 0');
  const { json, md } = outputs(out);
  const ref = json.scenarios.find((s) => s.id === 'zc-gso/64-plain')!;
  t.equal(ref.status, 'ok', `the reference ran: ${ref.errors.join('; ')}`);
  t.equal((ref.setup?.config as { sharedBuffers: { bufSize: number } }).sharedBuffers.bufSize, 65600, 'in 65600 B buffers');
  t.equal(ref.runs[0].avgLen, 64, 'with 64 B frames');
  t.equal(ref.runs[0].copiedBytesPerPkt, 0, 'zero-copy');
  t.match(md, /## 64 KiB TSO frames against 64-byte frames/, 'the report has the comparison');
  t.match(md, /zc-gso\/64-plain \(64 B frames in the same 65600 B buffers\) \| [0-9.]+ \| [0-9.]+×/, 'against the reference');
  t.match(md, /zc-oneway\/64 \(64 B frames in 128 B buffers\) \| [0-9.]+ \| [0-9.]+×/, 'and against zc-oneway/64');
});

t.test('zc-bridge: the two VMs on a learning bridge, every frame swapped, none flooded', async (t) => {
  const out = tempDir(t, 'zcs-bench-');
  const r = await runCli(['bench', '--only', 'zc-bridge', '--sizes', '64', '--runs', '1', '--warmup', '0.2', '--duration', '0.5',
    '--no-peers', '--out', out, '--progress', 'none'], {}, 90000);
  if (r.code !== 0) t.comment(r.err.slice(-2000));
  t.equal(r.code, 0, 'exit 0');
  const { json, md } = outputs(out);
  const s = json.scenarios.find((x) => x.id === 'zc-bridge/64')!;
  t.equal(s.status, 'ok', `it ran: ${s.errors.join('; ')}`);
  const cfg = s.setup?.config as { mode?: string; pairs?: unknown };
  t.equal(cfg.mode, 'bridge', 'the switch is a bridge');
  t.equal(cfg.pairs, undefined, 'with no pairs');
  t.match(String(s.setup?.vm2), /--announce --mac 02:00:00:00:00:ff/, 'the sink announces the address the generator sends to');
  const run = s.runs[0];
  t.ok(run.mpps > 0, `a packet rate (${run.mpps.toFixed(2)} Mpps)`);
  t.equal(run.avgLen, 64, '64 B frames');
  // A flooded frame would be copied: learnt from the announcement, every frame is a swap.
  t.equal(run.copiedBytesPerPkt, 0, 'zero-copy: nothing flooded');
  t.match(md, /\| size B \| zc bridge \|/, 'the summary table has a zc bridge column');
});

t.test('DPDK geometry: mbufs fit the frame, --txpkts segments add up', async (t) => {
  for (const size of [64, 1500, 9000, 65535]) {
    const g = geometry(size);
    t.equal(g.segments.reduce((a, b) => a + b, 0), size, `${size}: segments sum to the frame`);
    const room = (g.mbufSize ?? 2176) - 128;
    t.ok(g.segments.every((x) => x <= room), `${size}: each segment fits an mbuf (${room} B)`);
    t.ok((g.mbufSize ?? 0) <= 65535, `${size}: mbuf size fits 16 bits`);
    t.ok(g.queue >= 512 && g.queue <= g.mbufs / 4, `${size}: ring ${g.queue} leaves mbufs to spare (${g.mbufs})`);
    t.ok(g.memifBsize >= Math.min(size, 65535) && g.memifBsize <= 65535, `${size}: memif bsize ${g.memifBsize}`);
  }
});

t.test('testpmd stats parser', async (t) => {
  const p = new StatsParser();
  const text = `\x1b[2J\x1b[1;1H
Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  RX-packets: 2107968    RX-missed: 3          RX-bytes:  134909952
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 10         TX-errors: 2          TX-bytes:  640

  Throughput (since last show)
  Rx-pps:       507299          Rx-bps:    259737376
  Tx-pps:            5          Tx-bps:         2560
  ############################################################################
  ######################## NIC statistics for port 1  ########################
  RX-packets: 0          RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 7          TX-errors: 0          TX-bytes:  448

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            7          Tx-bps:         3584
  ############################################################################
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 99            RX-dropped: 0             RX-total: 99
`;
  text.split('\n').forEach((l, i) => p.feed(l, i));
  t.equal(p.blocks.length, 2, 'two port blocks, the forward statistics ignored');
  t.match(p.blocks[0], { port: 0, rxPackets: 2107968, rxMissed: 3, rxBytes: 134909952, txPackets: 10, txErrors: 2, rxPps: 507299, txPps: 5 });
  t.match(p.blocks[1], { port: 1, txPackets: 7, txPps: 7 });
  t.equal(p.at(0, 1000)!.rxPackets, 2107968, 'latest block of a port');
  t.equal(p.at(0, 0), null, 'nothing before the first block');
});

t.test('DPDK peers are skipped with a clear line when testpmd is missing', async (t) => {
  const out = tempDir(t, 'zcs-bench-');
  const r = await runCli(['bench', '--only', 'dpdk-vhost,memif', '--sizes', '64', '--runs', '1', '--out', out, '--progress', 'lines'],
    { ZC_DPDK_TESTPMD: '/nonexistent/dpdk-testpmd' }, 60000);
  if (r.code !== 0) t.comment(r.err);
  t.equal(r.code, 0, 'exit 0');
  t.match(r.err, /peer dpdk-vhost skipped: ZC_DPDK_TESTPMD=\/nonexistent\/dpdk-testpmd is not an executable file/);
  const { json, md } = outputs(out);
  t.same(json.scenarios.map((s) => [s.id, s.status]), [['dpdk-vhost/64', 'skipped'], ['memif/64', 'skipped']]);
  t.match(md, /dpdk-vhost .*\*\*skipped\*\*/, 'the report says so too');
});

t.test('--pin: one CPU per process, as the kernel sees it', async (t) => {
  t.strictSame(cpuPlan(3, 2), [0, 1, 1], 'two CPUs: the switch alone, both VMs on the other');
  t.strictSame(cpuPlan(3, 16), [0, 1, 2], 'sixteen: each its own');
  t.strictSame(cpuPlan(2, 1), [0, 0], 'one CPU: everything on it');
  const out = tempDir(t, 'zcs-bench-');
  const r = await runCli(['bench', '--pin', '--only', 'zc-oneway', '--sizes', '64', '--runs', '1', '--warmup', '0.2', '--duration', '0.5',
    '--out', out, '--progress', 'lines'], {}, 60000);
  if (r.code !== 0) t.comment(r.err.slice(-2000));
  t.equal(r.code, 0, 'exit 0');
  const { json, md } = outputs(out);
  const s = json.scenarios[0];
  t.equal(s.status, 'ok', `${s.id} ran: ${s.errors.join('; ')}`);
  t.ok(s.runs[0].mpps > 0, `positive rate (${s.runs[0].mpps.toFixed(2)} Mpps)`);
  const plan = cpuPlan(3);
  t.strictSame(s.runs[0].extra?.cpusAllowed, { switch: String(plan[0]), vm2: String(plan[1]), vm1: String(plan[2]) },
    'each process was allowed exactly the CPU the plan gave it');
  t.match(md, /Processes pinned \(--pin\)/, 'the report says the processes were pinned');

  // Busy time beside CPU time, for the switch and both VMs.
  const run = s.runs[0];
  const procs = [
    ['switch', run.switchBusyNsPerPkt, run.switchCpuNsPerPkt, run.switchBusyLoad],
    ['vm1', run.vm1BusyNsPerPkt, run.vm1CpuNsPerPkt, run.vm1BusyLoad],
    ['vm2', run.vm2BusyNsPerPkt, run.vm2CpuNsPerPkt, run.vm2BusyLoad],
  ] as const;
  for (const [who, busy, cpu, load] of procs) {
    t.ok(busy !== null && busy > 0, `${who}: busy time per packet measured (${busy?.toFixed(1)} ns)`);
    t.ok(cpu !== null && cpu > 0, `${who}: CPU time per packet measured (${cpu?.toFixed(1)} ns)`);
    // Busy time is wall time of working rounds: never more than the window, and no more
    // than the CPU time except for time the process lost its CPU mid-round (this
    // machine is shared), which the tolerance allows.
    t.ok(load !== null && load > 0 && load <= 1.05, `${who}: busy load within the window (${load?.toFixed(3)})`);
    t.ok(busy! <= cpu! * 1.25 + 20, `${who}: busy ${busy?.toFixed(1)} ns/pkt <= CPU ${cpu?.toFixed(1)} ns/pkt (up to preemption)`);
  }
  t.ok(typeof run.extra?.packetsPerBusyRound === 'number' && (run.extra.packetsPerBusyRound as number) >= 1,
    `packets per busy round (${String(run.extra?.packetsPerBusyRound)})`);
  t.match(md, /## Cost per packet by process/, 'the report has the cost table');
  t.match(md, /\| zc-oneway\/64 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/, 'with numbers for the switch busy and CPU time');

  // What held the VMs back: shares of the sender's passes, batches of both.
  const stalls = run.extra?.vmStalls as VmStallsByVm;
  for (const vm of ['vm1', 'vm2'] as const) {
    t.ok(stalls?.[vm] && stalls[vm]!.packetsPerBusyTurn >= 1, `${vm}: packets per busy turn (${stalls?.[vm]?.packetsPerBusyTurn.toFixed(1)})`);
  }
  for (const k of ['shortOfBuffers', 'shortOfRoom'] as const) {
    const v = stalls.vm1![k];
    t.ok(v !== null && v >= 0 && v <= 1, `the sender's passes ${k}: a share (${v})`);
  }
  t.equal(stalls.vm2!.shortOfBuffers, null, 'a sink sends nothing: no share');
  t.match(md, /\| zc-oneway\/64 \|.* \| \d+% \/ \d+% \|$/m, 'the cost table gives the sender\'s shares');
});

t.test('--cpus: each process on the CPU named, in --pin\'s order; refused by name where it cannot be', async (t) => {
  t.strictSame(cpuPlan(3, 2, [1, 1, 0]), [1, 1, 0], 'as named');
  t.strictSame(cpuPlan(3, 16, [4]), [4, 4, 4], 'the last CPU for processes beyond the list');
  t.strictSame(cpuPlan(2, 16, [3, 5, 7]), [3, 5], 'a two-process peer takes the first two');
  t.equal(resolveSettings({ cpus: [0] }).pin, true, '--cpus implies --pin');
  t.throws(() => resolveSettings({ cpus: [0], pairs: 2 }), /--cpus .*--pairs/, 'not with --pairs, which places its own');
  const ncpu = os.cpus().length;
  for (const [v, why] of [[String(ncpu), /--cpus names CPU \d+/], ['0,x', /--cpus/], ['-1', /--cpus/]] as const) {
    const r = await runCli(['bench', '--cpus', v, '--no-peers'], {}, 30000);
    t.equal(r.code, 2, `--cpus ${v}: exit 2`);
    t.match(r.err, why, `--cpus ${v}: the error names the option`);
  }
  // The sender alone on the last CPU, the switch and the receiver on the first.
  const plan = [0, 0, ncpu - 1];
  const out = tempDir(t, 'zcs-bench-');
  const r = await runCli(['bench', '--cpus', plan.join(','), '--only', 'zc-oneway', '--sizes', '64', '--runs', '1', '--warmup', '0.2',
    '--duration', '0.5', '--out', out, '--progress', 'none'], {}, 60000);
  if (r.code !== 0) t.comment(r.err.slice(-2000));
  t.equal(r.code, 0, 'exit 0');
  const { json, md } = outputs(out);
  const s = json.scenarios[0];
  t.equal(s.status, 'ok', `${s.id} ran: ${s.errors.join('; ')}`);
  t.strictSame(s.runs[0].extra?.cpusAllowed, { switch: String(plan[0]), vm2: String(plan[1]), vm1: String(plan[2]) },
    'each process was allowed exactly the CPU named for it');
  t.strictSame(json.settings.cpus, plan, 'the results record the placement');
  t.match(md, new RegExp(`pinned to CPUs ${plan.join(', ')} \\(--cpus\\)`), 'and the report says it');
});

t.test('OVS-DPDK output parsers: dump-ports and pmd-stats-show', async (t) => {
  const ports = parseDumpPorts(`OFPST_PORT reply (xid=0x2): 3 ports
  port LOCAL: rx pkts=0, bytes=0, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=0, bytes=0, drop=0, errs=0, coll=0
  port  1: rx pkts=4641120, bytes=297031680, drop=7, errs=?, frame=?, over=?, crc=?
           tx pkts=0, bytes=0, drop=0, errs=?, coll=?
  port  2: rx pkts=0, bytes=0, drop=0, errs=?, frame=?, over=?, crc=?
           tx pkts=80320, bytes=5140480, drop=4560800, errs=?, coll=?
`);
  t.strictSame([...ports.keys()], [1, 2], 'numbered ports only (LOCAL left out)');
  t.strictSame(ports.get(1), { rxPackets: 4641120, rxDrops: 7, txPackets: 0, txDrops: 0 });
  t.strictSame(ports.get(2), { rxPackets: 0, rxDrops: 0, txPackets: 80320, txDrops: 4560800 });
  const pmd = parsePmdStats(`pmd thread numa_id 0 core_id 0:
  packets received: 3442592
  idle cycles: 2670926584 (50.65%)
  processing cycles: 2602132834 (49.35%)
  avg processing cycles per packet: 755.86 (2602132834/3442592)
main thread:
  packets received: 0
  idle cycles: 5 (100.00%)
  processing cycles: 9 (0.00%)
`);
  t.strictSame(pmd, { idleCycles: 2670926584, processingCycles: 2602132834, pmds: 1 }, 'the PMD thread only, not the main thread');
  t.equal(ovsMtu(64), 1500, 'small frames: the default MTU');
  t.equal(ovsMtu(9000), 8986, 'jumbo frames: MTU = frame - Ethernet header');
  t.equal(ovsMtu(65535), null, 'beyond OVS-DPDK\'s largest MTU');
});

t.test('the ovs-dpdk peer is skipped with a clear line when OVS-DPDK is missing, and above its largest frame', async (t) => {
  t.strictSame(planScenarios(resolveSettings({ only: ['ovs-dpdk'], sizes: [64, 65535] })).map((s) => s.id), ['ovs-dpdk/64', 'ovs-dpdk/65535']);
  const out = tempDir(t, 'zcs-bench-');
  // Without testpmd the group cannot run whatever OVS there is: the quickest skip to provoke.
  const r = await runCli(['bench', '--only', 'ovs-dpdk', '--sizes', '64', '--runs', '1', '--out', out, '--progress', 'lines'],
    { ZC_DPDK_TESTPMD: '/nonexistent/dpdk-testpmd' }, 60000);
  t.equal(r.code, 0, 'exit 0');
  t.match(r.err, /peer ovs-dpdk skipped: ZC_DPDK_TESTPMD=\/nonexistent\/dpdk-testpmd is not an executable file/);
  const { json } = outputs(out);
  t.same(json.scenarios.map((s) => [s.id, s.status]), [['ovs-dpdk/64', 'skipped']]);
});

const dpdk = findDpdk();
// .ci/run installs DPDK: in CI its absence fails the suite; elsewhere this case is skipped, saying why.
const noDpdk = requireExternal(t, 'DPDK (dpdk-testpmd)', dpdk.ok ? null : dpdk.reason);
t.test('DPDK peers and the testpmd flood run when testpmd is installed', { skip: noDpdk }, async (t) => {
  const out = tempDir(t, 'zcs-bench-');
  const r = await runCli(['bench', '--only', 'dpdk-vhost,memif,memif-zc,classic-flood', '--sizes', '64', '--runs', '1', '--warmup', '0.2', '--duration', '1',
    '--out', out, '--progress', 'lines'], {}, 180000);
  if (r.code !== 0) t.comment(r.err.slice(-2000));
  t.equal(r.code, 0, 'exit 0');
  const { json } = outputs(out);
  for (const s of json.scenarios) {
    t.equal(s.status, 'ok', `${s.id} ran: ${s.errors.join('; ')}`);
    const run = s.runs[0];
    t.ok(run && run.mpps > 0, `${s.id}: positive rate from testpmd's stats (${run?.mpps.toFixed(3)} Mpps)`);
    t.ok(run && Math.abs(run.avgLen! - 64) <= 1, `${s.id}: received 64 B frames (${run?.avgLen})`);
    if (s.group === 'dpdk-vhost') t.ok(run.switchCpuNsPerPkt! > 0, `${s.id}: switch CPU measured`);
  }
});

t.test('--pairs 2 --workers 2: two pairs at once through two worker threads, the rate is their sum', async (t) => {
  const out = tempDir(t, 'zcs-bench-');
  const r = await runCli(['bench', '--only', 'zc-oneway', '--sizes', '64', '--runs', '1', '--warmup', '0.2', '--duration', '0.5',
    '--pairs', '2', '--workers', '2', '--out', out, '--progress', 'lines'], {}, 60000);
  if (r.code !== 0) t.comment(r.err.slice(-2000));
  t.equal(r.code, 0, 'exit 0');
  const { json, md } = outputs(out);
  const s = json.scenarios[0];
  t.equal(s.status, 'ok', `${s.id} ran: ${s.errors.join('; ')}`);
  const run = s.runs[0];
  const extra = run.extra as { pairs: number; workers: number; perPair: Record<string, number>; perWorker: { ports: string[] }[] };
  t.equal(extra.pairs, 2);
  t.same(Object.keys(extra.perPair).sort(), ['tx0->rx0', 'tx1->rx1'], 'a rate per pair');
  t.ok(Object.values(extra.perPair).every((m) => m > 0), `every pair delivered (${JSON.stringify(extra.perPair)})`);
  const sum = Object.values(extra.perPair).reduce((a, b) => a + b, 0);
  t.ok(Math.abs(sum - run.mpps) <= 0.01 * run.mpps + 1e-6, `the row is the sum (${run.mpps.toFixed(3)} = ${sum.toFixed(3)})`);
  t.same(extra.perWorker.map((w) => w.ports.length), [2, 2], 'each pair on its own worker');
  t.match(md, /forwarding\.workers 2 \(--workers\); zc-oneway rows are the sum of 2 pairs at once \(--pairs\)/, 'the report says so');

  // scripts/multicore/table.js (the multi-core table from scripts/multicore/run.sh's results) over this run's JSON:
  // a cell that ran, a cell whose scenario failed, and the memif reference absent, then present.
  const grid = tempDir(t, 'zcs-grid-');
  const write = (sub: string, results: unknown): void => {
    fs.mkdirSync(path.join(grid, sub));
    fs.writeFileSync(path.join(grid, sub, 'r.json'), JSON.stringify(results));
  };
  write('p2-w2', json);
  write('p1-w1', { ...json, scenarios: [{ ...s, status: 'error', errors: ['the switch exited'] }] });
  const table = (): string => execFileSync(process.execPath, [path.join(ROOT, 'scripts/multicore/table.js'), grid], { encoding: 'utf8' });
  const lines = table().split('\n');
  const med = s.summary.mpps!.median.toFixed(2);
  t.ok(lines.includes('| pairs \\ workers | 1 | 2 |'), 'a column per worker count');
  t.ok(lines.includes('| 1 | (error: the switch exited) |  |'), 'a failed cell says why');
  t.ok(lines.some((l) => l.startsWith(`| 2 |  | ${med} [`)), `the cell that ran: its median (${med})`);
  t.ok(lines.includes(`Best aggregate: ${med} Mpps (goal ≥ 30).`));
  t.ok(lines.includes('memif pair: no results.'));
  t.ok(lines.some((l) => /^- 2 pairs, 2 workers: w0@\S+ \d+%, w1@\S+ \d+%; pairs [\d.]+ [\d.]+$/.test(l)), 'workers and pairs of the cell');
  write('p1-w1b', {}); // not a cell name: ignored
  fs.rmSync(path.join(grid, 'p1-w1'), { recursive: true });
  write('p1-w1', json);
  write('memif', { ...json, scenarios: [{ ...s, group: 'memif', summary: { mpps: { median: 2 * s.summary.mpps!.median, min: 1, max: 99, n: 1 } } }] });
  const again = table();
  t.match(again, /One pair on one worker ÷ memif pair: 0\.50× \(goal ≥ 1\.0×\)\./, 'one pair against the memif pair');

  // The one-pair rows (run.sh's one-<exchange> folders): what held the sender back, where the run counted it.
  const stalls: VmStallsByVm = { vm1: { packetsPerBusyTurn: 800, shortOfBuffers: 0.25, shortOfRoom: 0.5 }, vm2: { packetsPerBusyTurn: 600, shortOfBuffers: null, shortOfRoom: null } };
  write('one-gift', { ...json, scenarios: [{ ...s, runs: s.runs.map((r) => ({ ...r, extra: { ...r.extra, vmStalls: stalls } })) }] });
  write('one-swap', json);
  const rows = table().split('\n');
  t.ok(rows.some((l) => l.startsWith(`| gift | ${med} [`) && l.endsWith('| 25% / 50% | 800, 600 |')), 'the gift row: its rate and the sender\'s shares');
  t.ok(rows.some((l) => l.startsWith(`| swap | ${med} [`) && l.endsWith('| — / — | —, — |')), 'a run without them: dashes');
  t.ok(rows.includes('|  | ÷ memif 0.50× | | | | | |'), 'each against the memif pair');
});
