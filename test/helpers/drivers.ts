/**
 * Guest drivers (src/guest/driver.ts) run inside a test's own process,
 * attached to a test switch's ports, and a look into their data path for
 * tests that check descriptors and slots.
 */
import path from 'node:path';
import type { Test } from 'tap';
import { GuestDriver, type GuestDriverOptions } from '../../src/guest/driver';
import type { QueuePair } from '../../src/guest/queue-pair';
import { type SwitchProc, waitAttached } from './procs';

/** One guest driver per named port of sw (with opts), closed when t tears down; resolves once the switch reports them all attached. */
export async function attachDrivers(t: Test, sw: SwitchProc, names: string[], opts: Omit<GuestDriverOptions, 'socketPath'> = {}): Promise<GuestDriver[]> {
  const drivers: GuestDriver[] = [];
  t.teardown(() => {
    for (const d of drivers) d.close();
  });
  for (const name of names) drivers.push(await GuestDriver.attach({ ...opts, socketPath: path.join(sw.dir, `${name}.sock`) }));
  await waitAttached(sw, ...names);
  return drivers;
}

/** The parts of a driver's GuestDataPath these tests read (private there). */
export interface DataPathView {
  swapRuns: boolean;
  swapInUsed: boolean;
  returnedInUsed: boolean;
  privTxTop: number;
  qps: QueuePair[];
}
export const dataPathOf = (d: GuestDriver): DataPathView => (d as unknown as { dp: DataPathView }).dp;

/** One turn of the event loop (the switch process runs meanwhile). */
export const settle = (): Promise<void> => new Promise((r) => setImmediate(r));
