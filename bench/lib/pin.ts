/**
 * `--pin`: give every process of a scenario a CPU of its own where the
 * machine has enough (the "each process on its own core").
 * Process 0 is the one every packet crosses (a switch; for two-process
 * peers the receiver) and gets CPU 0 alone; the others take CPUs 1..n-1
 * round robin, so on two CPUs both VMs share CPU 1. `--cpus` names the
 * CPUs in that order instead (a placement to compare, such as a sender
 * alone on a CPU while the switch and the receiver share the other).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';

export function cpuPlan(processes: number, ncpu = os.cpus().length, cpus: readonly number[] | null = null): number[] {
  // --cpus: process k on the k-th CPU named, the last one for any beyond the list.
  if (cpus !== null && cpus.length > 0) return Array.from({ length: processes }, (_, k) => cpus[Math.min(k, cpus.length - 1)]);
  return Array.from({ length: processes }, (_, k) => (k === 0 || ncpu < 2 ? 0 : 1 + ((k - 1) % (ncpu - 1))));
}

/** Why --cpus cannot be used as given on a machine of ncpu CPUs, or null. */
export function cpusProblem(cpus: readonly number[], ncpu = os.cpus().length): string | null {
  const bad = cpus.find((c) => c >= ncpu);
  return bad === undefined ? null : `--cpus names CPU ${bad}, but this machine has CPUs 0-${ncpu - 1}`;
}

/** [cmd, args] started on one CPU through taskset (util-linux); unchanged for null. */
export function onCpu(cpu: number | null, cmd: string, args: string[]): [string, string[]] {
  return cpu === null ? [cmd, args] : ['taskset', ['-c', String(cpu), cmd, ...args]];
}

/** The kernel's view of where a process may run (Cpus_allowed_list), or null. */
export function allowedCpus(pid: number | undefined): string | null {
  if (pid === undefined) return null;
  try {
    return /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}

/** Why --pin cannot work here, or null. */
export function pinProblem(): string | null {
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
    return null;
  } catch (e) {
    return `--pin needs taskset (util-linux) and CPU 0: ${(e as Error).message.split('\n')[0]}`;
  }
}
