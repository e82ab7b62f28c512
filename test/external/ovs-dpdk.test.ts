/**
 * The bench's ovs-dpdk peer (issue 14) with the real OVS-DPDK
 * (openvswitch-switch-dpdk) and dpdk-testpmd: a short run at 64 B must give
 * a rate, its PMD's busy and CPU time, the ÷ ovs-dpdk ratio and report
 * columns, skip frames beyond OVS-DPDK's largest MTU, and leave no tap
 * behind. No performance thresholds.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { findDpdk } from '../../bench/runners/dpdk';
import { findOvs } from '../../bench/runners/ovs';
import type { BenchResults } from '../../bench/types';
import { requireExternal } from '../helpers/external';
import { run as runCli, tempDir, within } from '../helpers/procs';

const dpdk = findDpdk();
const ovs = findOvs();
// .ci/run installs openvswitch-switch-dpdk (and runs as root, for its network namespace).
const noOvs = requireExternal(t, 'OVS-DPDK (openvswitch-switch-dpdk)', !dpdk.ok ? dpdk.reason : ovs.ok ? null : ovs.reason);
t.test('the ovs-dpdk peer runs when OVS-DPDK is installed: rate, busy and CPU of its PMD, ratio columns', { skip: noOvs }, async (t) => {
  const out = tempDir(t, 'zcs-bench-');
  const p = runCli(['bench', '--only', 'zc-oneway,ovs-dpdk', '--sizes', '64,65535', '--runs', '1', '--warmup', '0.2', '--duration', '1',
    '--out', out, '--progress', 'lines']);
  if (!(await within(p.exited, 180000))) p.child.kill('SIGKILL');
  const r = { code: (await p.exited).code, err: p.stderr() };
  if (r.code !== 0) t.comment(r.err.slice(-2000));
  t.equal(r.code, 0, 'exit 0');
  const json = JSON.parse(fs.readFileSync(one(out, '.json'), 'utf8')) as BenchResults;
  const md = fs.readFileSync(one(out, '.md'), 'utf8');
  const byId = new Map(json.scenarios.map((s) => [s.id, s]));
  const s = byId.get('ovs-dpdk/64')!;
  t.equal(s.status, 'ok', `${s.id} ran: ${s.errors.join('; ')}`);
  const run = s.runs[0];
  t.ok(run && run.mpps > 0, `positive rate from the rx VM's stats (${run?.mpps.toFixed(3)} Mpps)`);
  t.ok(run && Math.abs(run.avgLen! - 64) <= 1, `the rx VM received 64 B frames (${run?.avgLen})`);
  t.ok(run.switchCpuNsPerPkt! > 0, `ovs-vswitchd CPU per packet (${run.switchCpuNsPerPkt?.toFixed(0)} ns)`);
  t.ok(run.switchBusyNsPerPkt! > 0, `its PMD's busy time per packet (${run.switchBusyNsPerPkt?.toFixed(0)} ns)`);
  t.ok(run.switchBusyLoad! > 0 && run.switchBusyLoad! <= 1.05, `PMD busy load within the window (${run.switchBusyLoad?.toFixed(3)})`);
  t.ok(run.vm1CpuNsPerPkt! > 0 && run.vm2CpuNsPerPkt! > 0, 'both VMs\' CPU measured');
  t.equal(byId.get('ovs-dpdk/65535')!.status, 'skipped', 'a 64 KiB frame is beyond OVS-DPDK');
  t.match(byId.get('ovs-dpdk/65535')!.reason, /OVS-DPDK carries frames up to 9724 B/);
  t.ok(byId.get('zc-oneway/64')!.ratios['ovs-dpdk']! > 0, 'zcswitch has a ratio to OVS-DPDK');
  t.match(md, /zc one-way ÷ ovs-dpdk/, 'the summary table has the ÷ ovs-dpdk column');
  t.match(md, /\| ovs-dpdk\/64 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/, 'the cost table has its busy and CPU time');
  // Nothing left behind: no daemon, no tap in our namespace.
  t.notOk(fs.readdirSync('/sys/class/net').includes('br0'), 'no br0 tap in the test\'s network namespace');
});


function one(dir: string, ext: string): string {
  const f = fs.readdirSync(dir).filter((x) => x.endsWith(ext));
  if (f.length !== 1) throw new Error(`expected one ${ext} file in ${dir}, found ${f.join(', ') || 'none'}`);
  return path.join(dir, f[0]);
}
