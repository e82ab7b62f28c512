/**
 * Seeded short runs of the fuzzer (`npm run fuzz`, fuzz/README.md): its own
 * switch, 16 hostile connections, every case kind, checks after every batch
 * (alive, ports released, ledger, bystander pair verified with nothing lost,
 * fd and RSS growth, and no fd left over at the end). Four switches: pairs
 * with gifts on the main thread, a bridge on one data-path worker, pairs
 * with swaps on two (the fd leak fixed in src/vhost/vrings.ts setMemTable
 * showed only with workers), and pairs on two workers whose ports are
 * removed and added again under the cases (--churn). ZC_FUZZ_KINDS narrows
 * the kinds, ZC_FUZZ_CASES the count of each run.
 */
import path from 'node:path';
import t from 'tap';
import { spawnProc } from '../helpers/procs';

const FUZZ = path.join(__dirname, '..', '..', 'fuzz', 'main.js');
const CASES = Number(process.env.ZC_FUZZ_CASES ?? 5000);
const KINDS = process.env.ZC_FUZZ_KINDS ?? 'all';

const SWITCHES = [
  { shape: 'pair', workers: 0, churn: false },
  { shape: 'bridge', workers: 1, churn: false },
  { shape: 'swap', workers: 2, churn: false },
  // Ports removed and added again while the cases run (its regions raise the RSS plateau: fuzz/README.md).
  { shape: 'pair', workers: 2, churn: true },
];

for (const { shape, workers, churn } of SWITCHES) t.test(`fuzz: ${CASES} cases, seed 1, kinds ${KINDS}, ${shape}, ${workers} workers${churn ? ', churn' : ''}`, async (t) => {
  const p = spawnProc(process.execPath, [
    FUZZ, '--cases', String(CASES), '--seed', '1', '--kinds', KINDS, '--shape', shape, '--workers', String(workers), '--json', '--stop-on-failure',
    ...(churn ? ['--churn', '--max-rss-growth', '384'] : []),
  ]);
  const r = await p.exited;
  const lines = p.stdout().trim().split('\n');
  let s: Record<string, any> = {};
  try {
    s = JSON.parse(lines[lines.length - 1]);
  } catch {
    /* the assertions below show the output */
  }
  t.equal(r.code, 0, `fuzzer exited 0\n${p.stdout()}\n${p.stderr().slice(-3000)}`);
  t.equal(s.cases, CASES, `ran all ${CASES} cases`);
  // Under churn a case may find its port removed for a moment.
  t.ok(s.connected >= CASES * (churn ? 0.5 : 0.9), `most cases got a connection (${s.connected})`);
  t.equal(s.crashes, 0, 'no crash');
  t.same(s.failures, [], 'no check failed');
  t.ok(s.fdGrowth.max !== null && s.fdGrowth.max <= 16, `switch fd growth ${s.fdGrowth.max} <= 16`);
  t.ok(s.fdGrowth.final !== null && s.fdGrowth.final <= 4, `switch fd growth after the last batch ${s.fdGrowth.final} <= 4`);
  t.same([s.shape, s.workers], [shape, workers], 'the switch was shaped as asked');
  const rssBound = churn ? 384 : 128;
  t.ok(s.rssGrowthMb.max !== null && s.rssGrowthMb.max <= rssBound, `switch RSS growth ${s.rssGrowthMb.max?.toFixed?.(1)} MiB <= ${rssBound}`);
  if (churn) t.ok(s.churned > 0, `${s.churned} ports removed and added again under the cases`);
  t.ok(s.bystanderVerified > 0, `bystander verified ${s.bystanderVerified} frames, none lost`);
  t.ok(s.casesPerSec > 5, `${s.casesPerSec?.toFixed?.(0)} cases/s`);
});
