/** forwarding.workers as a number: "auto" is one worker per CPU this process may use, less the main thread's. */
import os from 'node:os';

export function resolveWorkers(v: number | 'auto'): number {
  if (v !== 'auto') return v;
  return Math.max(1, os.availableParallelism() - 1);
}
