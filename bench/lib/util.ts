/**
 * Small helpers for the bench harness: waiting with deadlines, statistics,
 * formatting, PATH lookup, and CPU time of a process tree from /proc.
 */
import fs from 'node:fs';
import path from 'node:path';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll fn until it returns something truthy; fail with a message naming `what` after timeoutMs. */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs: number, everyMs = 20): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out after ${(timeoutMs / 1000).toFixed(1)} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** Median, min and max of the finite values; null when there are none. */
export function spread(values: (number | null | undefined)[]): Spread | null {
  const v = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  const median = v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  return { median, min: v[0], max: v[v.length - 1], n: v.length };
}

/** A program on PATH (or an explicit path), or null. */
export function which(prog: string): string | null {
  if (prog.includes('/')) return isExecutable(prog) ? path.resolve(prog) : null;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    const p = path.join(dir, prog);
    if (isExecutable(p)) return p;
  }
  return null;
}

function isExecutable(p: string): boolean {
  try {
    const st = fs.statSync(p);
    if (!st.isFile()) return false;
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

let clkTck = 100;
/** Clock ticks per second for /proc/<pid>/stat (sysconf(_SC_CLK_TCK); 100 on Linux/x86 and arm64). */
export function setClockTicks(n: number): void {
  if (Number.isFinite(n) && n > 0) clkTck = n;
}
export function clockTicks(): number {
  return clkTck;
}

interface ProcStat {
  ppid: number;
  ticks: number;
}

function readStat(pid: number, file = `/proc/${pid}/stat`): ProcStat | null {
  let s: string;
  try {
    s = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  // comm may contain spaces and parentheses: the fields start after the last ')'.
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
}

/**
 * CPU seconds (user + system) used so far by a process and all its live
 * descendants (a wrapper script around testpmd, stdbuf, ...).
 */
export function treeCpuSec(rootPid: number | undefined): number | null {
  if (rootPid === undefined) return null;
  const root = readStat(rootPid);
  if (root === null) return null;
  let ticks = root.ticks;
  const children = new Map<number, number[]>();
  let entries: string[] = [];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    /* no /proc listing: the root alone */
  }
  const stats = new Map<number, ProcStat>();
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    const st = pid === rootPid ? root : readStat(pid);
    if (st === null) continue;
    stats.set(pid, st);
    const list = children.get(st.ppid);
    if (list) list.push(pid);
    else children.set(st.ppid, [pid]);
  }
  const todo = [...(children.get(rootPid) ?? [])];
  while (todo.length) {
    const pid = todo.pop()!;
    ticks += stats.get(pid)!.ticks;
    todo.push(...(children.get(pid) ?? []));
  }
  return ticks / clkTck;
}

/** CPU seconds of one process only (its threads included). */
export function processCpuSec(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  const st = readStat(pid);
  return st === null ? null : st.ticks / clkTck;
}

/** CPU seconds of the threads of a process whose name (comm) starts with `prefix` (OVS's PMD threads: "pmd-c00/id:8"). */
export function threadsCpuSec(pid: number | undefined, prefix: string): number | null {
  if (pid === undefined) return null;
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  let ticks = 0;
  let found = false;
  for (const tid of tids) {
    try {
      if (!fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith(prefix)) continue;
      const st = readStat(Number(tid), `/proc/${pid}/task/${tid}/stat`);
      if (st === null) continue;
      ticks += st.ticks;
      found = true;
    } catch {
      /* the thread ended */
    }
  }
  return found ? ticks / clkTck : null;
}

export function fmtDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '?';
  const s = Math.round(sec);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** 3 significant digits, no exponent for the ranges we print. */
export function sig(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '—';
  if (x === 0) return '0';
  const a = Math.abs(x);
  const d = Math.max(0, digits - 1 - Math.floor(Math.log10(a)));
  return x.toFixed(Math.min(d, 6));
}
