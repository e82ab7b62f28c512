/**
 * Test helpers that run the real programs: a switch process on a temp
 * config, guest-driver VM processes, and polling with deadlines (a test
 * never hangs: every wait has a timeout that fails with a message).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Test } from 'tap';
import { controlRequest } from '../../src/switch/control';
import type { SwitchStats } from '../../src/switch/stats';
import { tempDir } from './tmp';
import { waitFor, within } from './wait';

export { tempDir } from './tmp';
export { sleep, waitFor, within } from './wait';

export const CLI = path.join(__dirname, '..', '..', 'src', 'cli', 'main.js');


export interface Proc {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawn any program with its output collected. */
export function spawnProc(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; detached?: boolean } = {}): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env }, cwd: opts.cwd, detached: opts.detached });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Run the CLI; `prefix` runs it under another command (e.g. ip netns exec NS). */
export function run(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; prefix?: string[] } = {}): Proc {
  const argv = [...(opts.prefix ?? []), process.execPath, CLI, ...args];
  return spawnProc(argv[0], argv.slice(1), opts);
}

export const running = (p: Proc) => p.child.exitCode === null && p.child.signalCode === null;

/**
 * Wait until `p` has printed what `ready` looks for on stdout. If it exits
 * first, fail at once with its exit status and stderr (not after the
 * timeout, which would hide why).
 */
export async function waitForOutput(p: Proc, what: string, ready: (stdout: string) => boolean, timeoutMs = 15000): Promise<void> {
  await waitFor(what, () => ready(p.stdout()) || !running(p), timeoutMs);
  if (!ready(p.stdout())) {
    const r = await p.exited;
    throw new Error(`exited (status ${r.code}${r.signal ? `, signal ${r.signal}` : ''}) before ${what}:\n${p.stderr().trim() || '(no stderr)'}\n${p.stdout().trim()}`);
  }
}

/** SIGTERM, then SIGKILL if it is still there after `graceMs`; resolves with the exit status. */
export async function stopProc(p: Proc, graceMs = 5000): Promise<number | null> {
  if (running(p)) p.child.kill('SIGTERM');
  const r = await within(p.exited, graceMs);
  if (r) return r.code;
  p.child.kill('SIGKILL');
  return (await p.exited).code;
}

export interface SwitchProc extends Proc {
  dir: string;
  configPath: string;
  control: string;
  stats(): Promise<SwitchStats>;
  port(name: string): Promise<SwitchStats['ports'][number]>;
  stop(): Promise<number | null>;
}

/**
 * Start `zcswitch start` on a config in a private temp dir (socketDir is that
 * dir). When `t` ends the switch is stopped (if the test did not) and the
 * dir removed. `prefix` runs it under another command (ip netns exec NS);
 * `env` adds to its environment (ZCSWITCH_TEST_HOOKS: docs/operations.md).
 */
export async function startSwitch(t: Test, config: Record<string, unknown>, opts: { prefix?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<SwitchProc> {
  const dir = tempDir(t);
  const configPath = path.join(dir, 'switch.json');
  fs.writeFileSync(configPath, JSON.stringify({ socketDir: dir, ...config }, null, 2));
  return launchSwitch(t, dir, configPath, opts.prefix, opts.env);
}

/**
 * Start the switch again on the same config and directory as `sw` (after
 * the test killed or stopped it): the restart a VM must survive. The new
 * process is stopped in teardown like the first, before the dir goes.
 */
export function restartSwitch(t: Test, sw: SwitchProc, opts: { prefix?: string[] } = {}): Promise<SwitchProc> {
  if (running(sw)) throw new Error('restartSwitch: the switch is still running (kill or stop it first)');
  return launchSwitch(t, sw.dir, sw.configPath, opts.prefix);
}

async function launchSwitch(t: Test, dir: string, configPath: string, prefix?: string[], env?: NodeJS.ProcessEnv): Promise<SwitchProc> {
  const p = run(['start', '-c', configPath], { prefix, env });
  // Registered after tempDir's: teardowns run last-in first-out, so the switch stops before its dir goes.
  t.teardown(() => stopProc(p));
  await waitForOutput(p, 'the switch to print its control socket', (out) => out.includes('control:'));
  const control = path.join(dir, 'zcswitch.ctl');
  const stats = async () => (await controlRequest(control, { cmd: 'stats' })) as SwitchStats;
  return {
    ...p, dir, configPath, control, stats,
    port: async (name: string) => (await stats()).ports.find((x) => x.name === name)!,
    stop: () => stopProc(p),
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

/**
 * The first line of the switch's log (stderr) that matches `re`, once there
 * is one. The log comes over a pipe: a reply the switch sent later on a
 * socket can reach the test before it, so a check right after a reply waits.
 */
export async function waitForLog(sw: SwitchProc, re: RegExp, timeoutMs = 10000): Promise<Record<string, unknown>> {
  const [line] = await waitForLogLines(sw, 0, (l) => re.test(JSON.stringify(l)), 1, timeoutMs);
  return line;
}

/** The switch's JSON log lines (stderr) from offset `from` on (sw.stderr().length marks a point); a line that does not parse is { unparsed }. */
export function logLines(sw: SwitchProc, from = 0): Record<string, unknown>[] {
  return sw.stderr().slice(from).split('\n').filter((l) => l.startsWith('{')).map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      return { unparsed: l };
    }
  });
}

/**
 * The switch's JSON log lines from offset `from` that match `pred`, once
 * there are at least `n` (as waitForLog: the log may trail what the test saw
 * on a socket). A caller that counts them checks the count itself.
 */
export async function waitForLogLines(
  sw: SwitchProc, from: number, pred: (l: Record<string, unknown>) => boolean, n = 1, timeoutMs = 10000,
): Promise<Record<string, unknown>[]> {
  const lines = await waitFor(`${n} log line(s) matching ${pred}`, () => {
    const m = logLines(sw, from).filter(pred);
    return m.length >= n ? m : null;
  }, timeoutMs);
  return lines as Record<string, unknown>[];
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
