/**
 * A seeded short run of the fuzzer (`npm run fuzz`, fuzz/README.md): its own
 * switch, 16 hostile connections, every case kind, checks after every batch
 * (alive, ports released, ledger, bystander pair verified with nothing lost,
 * fd and RSS growth). ZC_FUZZ_KINDS narrows the kinds, ZC_FUZZ_CASES the count.
 */
import path from 'node:path';
import t from 'tap';
import { spawnProc } from '../helpers/procs';

const FUZZ = path.join(__dirname, '..', '..', 'fuzz', 'main.js');
const CASES = Number(process.env.ZC_FUZZ_CASES ?? 5000);
const KINDS = process.env.ZC_FUZZ_KINDS ?? 'all';

t.test(`fuzz: ${CASES} cases, seed 1, kinds ${KINDS}`, async (t) => {
  const p = spawnProc(process.execPath, [FUZZ, '--cases', String(CASES), '--seed', '1', '--kinds', KINDS, '--json', '--stop-on-failure']);
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
  t.ok(s.connected >= CASES * 0.9, `most cases got a connection (${s.connected})`);
  t.equal(s.crashes, 0, 'no crash');
  t.same(s.failures, [], 'no check failed');
  t.ok(s.fdGrowth.max !== null && s.fdGrowth.max <= 16, `switch fd growth ${s.fdGrowth.max} <= 16`);
  t.ok(s.rssGrowthMb.max !== null && s.rssGrowthMb.max <= 128, `switch RSS growth ${s.rssGrowthMb.max?.toFixed?.(1)} MiB <= 128`);
  t.ok(s.bystanderVerified > 0, `bystander verified ${s.bystanderVerified} frames, none lost`);
  t.ok(s.casesPerSec > 5, `${s.casesPerSec?.toFixed?.(0)} cases/s`);
});
