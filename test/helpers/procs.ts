/**
 * Test helpers that run the real programs: a switch process on a temp
 * config, guest-driver VM processes, and polling with deadlines (a test
 * never hangs: every wait has a timeout that fails with a message).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { controlRequest } from '../../src/switch/control';
import type { SwitchStats } from '../../src/switch/stats';

export const CLI = path.join(__dirname, '..', '..', 'src', 'cli', 'main.js');

export function tempDir(prefix = 'zcs-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10000, everyMs = 20): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface Proc {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Run the CLI; `prefix` runs it under another command (e.g. ip netns exec NS). */
export function run(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; prefix?: string[] } = {}): Proc {
  const argv = [...(opts.prefix ?? []), process.execPath, CLI, ...args];
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env }, cwd: opts.cwd });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return { child, stdout: () => out, stderr: () => err, exited };
}

export interface SwitchProc extends Proc {
  dir: string;
  configPath: string;
  control: string;
  stats(): Promise<SwitchStats>;
  port(name: string): Promise<SwitchStats['ports'][number]>;
  stop(): Promise<number | null>;
}

/** Start `zcswitch start` on a temp config (socketDir set to a fresh temp dir). */
export async function startSwitch(config: Record<string, unknown>): Promise<SwitchProc> {
  const dir = tempDir();
  const configPath = path.join(dir, 'switch.json');
  fs.writeFileSync(configPath, JSON.stringify({ socketDir: dir, ...config }, null, 2));
  const p = run(['start', '-c', configPath]);
  const control = path.join(dir, 'zcswitch.ctl');
  await waitFor('the switch to print its control socket', () => p.stdout().includes('control:') || p.child.exitCode !== null, 15000);
  if (p.child.exitCode !== null) throw new Error(`switch exited early: ${p.stderr()}`);
  const stats = async () => (await controlRequest(control, { cmd: 'stats' })) as SwitchStats;
  return {
    ...p, dir, configPath, control, stats,
    port: async (name: string) => (await stats()).ports.find((x) => x.name === name)!,
    stop: async () => {
      if (p.child.exitCode === null) p.child.kill('SIGTERM');
      const r = await p.exited;
      return r.code;
    },
  };
}

export interface VmResult {
  code: number | null;
  summary: Record<string, number>;
  stdout: string;
  stderr: string;
}

/** Run `zcswitch vm` and resolve with its --json summary. */
export function vm(sw: { dir: string }, port: string, args: string[]): Proc & { result: Promise<VmResult> } {
  const p = run(['vm', '--socket-dir', sw.dir, '--port', port, '--json', '--quiet', ...args]);
  const result = p.exited.then(({ code }) => {
    const lines = p.stdout().trim().split('\n');
    let summary: Record<string, number> = {};
    try {
      summary = JSON.parse(lines[lines.length - 1]);
    } catch {
      /* leave empty: the assertion on it will fail with the output shown */
    }
    return { code, summary, stdout: p.stdout(), stderr: p.stderr() };
  });
  return { ...p, result };
}

/** Wait until the switch shows these ports attached with running queues. */
export async function waitAttached(sw: SwitchProc, ...names: string[]): Promise<void> {
  await waitFor(`ports ${names.join(', ')} to attach`, async () => {
    const s = await sw.stats();
    return names.every((n) => s.ports.find((p) => p.name === n)?.ready);
  }, 15000);
}

export function counters(p: SwitchStats['ports'][number]): Record<string, number> & { drops: Record<string, number> } {
  return p.counters as Record<string, number> & { drops: Record<string, number> };
}
