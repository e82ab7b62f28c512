/**
 * A bystander pair for attack tests: while a hostile front-end works on one
 * port, two `zcswitch vm` processes on two other ports exchange verified
 * traffic; afterwards the test checks that every frame arrived and the
 * ledger still balances. Usage:
 *
 *   const sw = await startSwitch(t, bystanderConfig([{ name: 'evil' }]));
 *   const by = await startBystander(t, sw);
 *   ... attack ...
 *   await by.check(t);      // every frame sent was received and verified, ledger ok
 */
import type { Test } from 'tap';
import { type SwitchProc, stopProc, vm, waitAttached } from './procs';

/** Ports of the bystander pair (names chosen not to clash with a test's own). */
export const BYSTANDER_PORTS = ['by-a', 'by-b'] as const;

/** A switch config with the bystander pair plus the test's own ports (and pairs). */
export function bystanderConfig(
  ports: Record<string, unknown>[], extra: Record<string, unknown> & { pairs?: string[][] } = {},
): Record<string, unknown> {
  const [a, b] = BYSTANDER_PORTS;
  return { ...extra, ports: [{ name: a }, { name: b }, ...ports], pairs: [[a, b], ...(extra.pairs ?? [])] };
}

export interface Bystander {
  /** Wait for the pair to finish and assert: frames sent == received == verified, nothing lost, ledger balanced. */
  check(t: Test): Promise<void>;
}

/**
 * Start the pair: a sink on by-b, then a generator on by-a sending `rate`
 * frames/s for `seconds` (long enough to cover the attack).
 */
export async function startBystander(t: Test, sw: SwitchProc, opts: { rate?: number; seconds?: number } = {}): Promise<Bystander> {
  const [a, b] = BYSTANDER_PORTS;
  const rate = opts.rate ?? 20000;
  const seconds = opts.seconds ?? 8;
  const count = rate * seconds;
  const sink = vm(sw, b, ['--mode', 'sink', '--count', String(count), '--duration', String(seconds + 20)]);
  t.teardown(() => stopProc(sink));
  await waitAttached(sw, b);
  const gen = vm(sw, a, ['--mode', 'gen', '--rate', String(rate), '--count', String(count)]);
  t.teardown(() => stopProc(gen));
  return {
    async check(t: Test) {
      const [g, s] = await Promise.all([gen.result, sink.result]);
      t.equal(g.code, 0, `bystander generator exited 0 ${g.stderr}`);
      t.equal(s.code, 0, `bystander sink exited 0 ${s.stderr}`);
      t.equal(g.summary.sent, count, `bystander sent all ${count} frames`);
      t.same([s.summary.verified, s.summary.lost, s.summary.dup, s.summary.badLength, s.summary.badChecksum], [count, 0, 0, 0, 0],
        'bystander: every frame received and verified; none lost, duplicated or bad');
      const st = await sw.stats();
      t.equal(st.ledger.ok, true, `ledger balanced after the attack: ${JSON.stringify(st.ledger)}`);
    },
  };
}
