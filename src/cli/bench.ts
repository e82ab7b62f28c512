/**
 * `zcswitch bench` (also `npm run bench`): the pps harness of bench/. Thin:
 * option parsing lives in main.ts, everything else in bench/harness.ts.
 */
import type { PollMode } from '../config';
import { type BenchOptions, parseGroups, parsePollModes, rerender, runBench } from '../../bench/harness';

/** The harness's options as the command line gives them: names still unchecked strings. */
export type BenchCliOptions = Omit<BenchOptions, 'pollModes' | 'only' | 'skip' | 'peers'> & {
  pollModes?: string[];
  only?: string[];
  skip?: string[];
  peers: boolean;
  /** Re-render an earlier result instead of running. */
  report?: string;
};

export async function benchCommand(o: BenchCliOptions): Promise<void> {
  if (o.report) {
    try {
      rerender(o.report);
      process.exit(0);
    } catch (e) {
      process.stderr.write(`zcswitch bench: ${(e as Error).message}\n`);
      process.exit(1);
    }
  }
  let opts: BenchOptions;
  try {
    opts = {
      quick: o.quick, runs: o.runs, warmup: o.warmup, duration: o.duration, sizes: o.sizes, burst: o.burst, bursts: o.bursts,
      pollModes: o.pollModes ? (parsePollModes(o.pollModes) as PollMode[]) : undefined,
      only: o.only ? parseGroups(o.only) : undefined, skip: o.skip ? parseGroups(o.skip) : undefined,
      peers: o.peers, testpmd: o.testpmd, out: o.out, progress: o.progress, bufCount: o.bufCount,
      pin: o.pin,
    };
  } catch (e) {
    process.stderr.write(`zcswitch bench: ${(e as Error).message}\n`);
    process.exit(2);
  }
  try {
    const res = await runBench(opts);
    process.exit(res.aborted ? 130 : 0);
  } catch (e) {
    process.stderr.write(`zcswitch bench: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
