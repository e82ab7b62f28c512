/**
 * Child processes of a bench run: output captured (and split into lines for
 * listeners), every child registered so that an aborted run kills them all,
 * and stop() that escalates SIGTERM -> SIGKILL.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';

export interface Child {
  name: string;
  child: ChildProcess;
  pid: number | undefined;
  stdout(): string;
  stderr(): string;
  /** Called with each complete stdout line and the time it arrived (performance.now()). */
  onLine(fn: (line: string, at: number) => void): void;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
  /** SIGTERM, then SIGKILL after graceMs; resolves when it is gone. */
  stop(graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last lines of output, for error messages. */
  tail(lines?: number): string;
}

const live = new Set<Child>();
const MAX_CAPTURE = 4 << 20;

export function startChild(name: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Child {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  let err = '';
  let partial = '';
  const listeners: ((line: string, at: number) => void)[] = [];
  let exitState: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    const at = performance.now();
    if (out.length < MAX_CAPTURE) out += d;
    else out = out.slice(-MAX_CAPTURE / 2) + d;
    partial += d;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      for (const fn of listeners) fn(line, at);
    }
  });
  child.stderr!.on('data', (d: string) => {
    if (err.length < MAX_CAPTURE) err += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (e) => {
      err += `\n${e.message}`;
      exitState = { code: 127, signal: null };
      resolve(exitState);
    });
    child.on('close', (code, signal) => {
      exitState = { code, signal };
      resolve(exitState);
    });
  });
  const c: Child = {
    name,
    child,
    pid: child.pid,
    stdout: () => out,
    stderr: () => err,
    onLine: (fn) => listeners.push(fn),
    exited,
    running: () => exitState === null,
    stop: async (graceMs = 3000) => {
      if (exitState === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => {
          if (exitState === null) child.kill('SIGKILL');
        }, graceMs);
        await exited;
        clearTimeout(t);
      }
      return exitState!;
    },
    tail: (lines = 8) => {
      const all = (out + '\n' + err).split('\n').map((l) => l.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').trimEnd()).filter((l) => l.trim());
      return all.slice(-lines).join('\n');
    },
  };
  live.add(c);
  void exited.then(() => live.delete(c));
  return c;
}

/** Kill every child still running (abort path). */
export function killAll(): void {
  for (const c of live) {
    try {
      c.child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

export function liveChildren(): number {
  return live.size;
}
