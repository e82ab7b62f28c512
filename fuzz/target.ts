/**
 * The switch the fuzzer attacks and what stands beside it: our own
 * `zcswitch start` on a private config shaped by `--shape` and `--workers`
 * (or one already running), the bystander pair that forwards verified
 * traffic through it, and port churn over its control socket.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { controlRequest } from '../src/switch/control';
import type { SwitchStats } from '../src/switch/stats';
import { memfdHeld } from '../test/helpers/fds';
import { prngU32 } from '../test/helpers/prng';
import { sleep } from '../test/helpers/wait';

const CLI = path.join(__dirname, '..', 'src', 'cli', 'main.js');
export const BYSTANDER = ['by-a', 'by-b'] as const;

/**
 * What the fuzzer's own switch forwards with (`--shape`): pairs with gifts
 * (the default), pairs with swaps, or a learning bridge. On a bridge the
 * hostile ports share bridge vale0 and its sharing domain, and the
 * bystanders have a bridge (and so a MAC table and a domain) of their own:
 * on one bridge a hostile port may lawfully send the sink frames (flooded
 * ones learnt its MAC) or write into their in-flight buffers (one domain),
 * and the sink would count those as bad or lost with the switch doing
 * nothing wrong. Between bridges nothing may pass.
 */
export const SHAPES = ['pair', 'swap', 'bridge'] as const;
export type Shape = (typeof SHAPES)[number];

/** What the target needs of the run's options (FuzzOptions in harness.ts has them all). */
export interface TargetOptions {
  connections: number;
  /** Use a running switch: its socket dir (and control socket, pid for fd/RSS). */
  socketDir?: string;
  control?: string;
  pid?: number;
  ports?: string[];
  bystanderRate: number;
  /** Our own switch only: its forwarding (SHAPES) and data-path workers (`forwarding.workers`). */
  shape: Shape;
  workers: number;
}

interface Proc {
  child: ChildProcess;
  out: string;
  err: string;
}

/** Children still running: killed if the fuzzer itself exits abruptly. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/**
 * A node child in its own process group: Ctrl-C (or `timeout -s INT`) on the
 * fuzzer must not stop the switch behind its back and read as a crash; the
 * fuzzer stops its children itself.
 */
function spawnNode(args: string[]): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  live.add(child);
  child.on('close', () => live.delete(child));
  const p: Proc = { child, out: '', err: '' };
  // Keep only the tails: a fuzz run is long.
  child.stdout!.on('data', (d) => (p.out = (p.out + d).slice(-16384)));
  child.stderr!.on('data', (d) => (p.err = (p.err + d).slice(-16384)));
  return p;
}

export const running = (p: Proc | null): boolean => !!p && p.child.exitCode === null && p.child.signalCode === null;

async function stopProc(p: Proc | null, graceMs = 3000): Promise<void> {
  if (!p || !running(p)) return;
  const gone = new Promise((res) => p.child.once('close', res));
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(t);
}

export async function until(what: string, fn: () => Promise<boolean> | boolean, ms: number, pollMs = 20): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      if (await fn()) return;
    } catch {
      /* not yet */
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(pollMs);
  }
}

/** The switch under test and its bystander pair. */
export class Target {
  sw: Proc | null = null;
  gen: Proc | null = null;
  sink: Proc | null = null;
  dir = '';
  control = '';
  pid = 0;
  ports: string[] = [];
  private ownDir: string | null = null;
  lastVerified = 0;
  /** When the sink's verified count last grew (Date.now()). */
  verifiedAt = 0;
  /** The switch's count of frames delivered to the sink's port, and when it last grew. */
  lastDelivered = 0;
  deliveredAt = 0;
  baseFd = 0;
  baseRss = 0;

  constructor(private readonly o: TargetOptions) {}

  get own(): boolean {
    return !this.o.socketDir;
  }

  async start(): Promise<void> {
    const o = this.o;
    if (this.own) {
      this.dir = this.ownDir = fs.mkdtempSync(path.join(os.tmpdir(), 'zcs-fuzz-'));
      this.ports = Array.from({ length: o.connections }, (_, i) => `fz${i}`);
      const cfg = switchConfig(this.dir, this.ports, o.shape, o.workers);
      const cfgPath = path.join(this.dir, 'switch.json');
      fs.writeFileSync(cfgPath, JSON.stringify(cfg, null, 2));
      this.sw = spawnNode(['start', '-c', cfgPath]);
      await until('the switch to start', () => {
        if (!running(this.sw)) throw new Error(`switch exited at start: ${this.sw!.err}`);
        return this.sw!.out.includes('control:');
      }, 20000).catch((e) => {
        throw new Error(`${(e as Error).message}\n${this.sw?.err ?? ''}`);
      });
      this.pid = this.sw.child.pid!;
      this.control = path.join(this.dir, 'zcswitch.ctl');
    } else {
      this.dir = o.socketDir!;
      this.control = o.control ?? path.join(this.dir, 'zcswitch.ctl');
      this.pid = o.pid ?? 0;
      this.ports = o.ports ?? Array.from({ length: o.connections }, (_, i) => `fz${i}`);
    }
    // The bystander pair: a sink, then a generator at a modest rate, both endless.
    this.sink = spawnNode(['vm', '--socket-dir', this.dir, '--port', BYSTANDER[1], '--mode', 'sink']);
    await until(`bystander sink on ${BYSTANDER[1]} to attach`, async () => (await this.stats()).ports.find((p) => p.name === BYSTANDER[1])?.ready === true, 15000);
    this.gen = spawnNode(['vm', '--socket-dir', this.dir, '--port', BYSTANDER[0], '--mode', 'gen', '--rate', String(o.bystanderRate)]);
    this.lastVerified = 0;
    await until('bystander traffic to arrive', () => this.sinkProgress().verified > 0, 15000);
    this.lastVerified = this.sinkProgress().verified;
    this.lastDelivered = this.delivered(await this.stats());
    this.verifiedAt = this.deliveredAt = Date.now();
    const m = this.measure();
    this.baseFd = m.fd ?? 0;
    this.baseRss = m.rssKb ?? 0;
  }

  sockOf(slot: number): string {
    return path.join(this.dir, `${this.ports[slot % this.ports.length]}.sock`);
  }

  stats(): Promise<SwitchStats> {
    return controlRequest(this.control, { cmd: 'stats' }, 5000) as Promise<SwitchStats>;
  }

  command(cmd: Record<string, unknown>): Promise<unknown> {
    return controlRequest(this.control, cmd, 5000);
  }

  alive(): boolean {
    if (this.sw) return running(this.sw);
    if (!this.pid) return true; // judged by the stats answer
    try {
      process.kill(this.pid, 0);
      return true;
    } catch {
      return false;
    }
  }

  deathNote(): string {
    if (!this.sw) return `pid ${this.pid} is gone`;
    const c = this.sw.child;
    // The switch's own last word, if it had one (a signal like SIGBUS leaves none).
    const fatal = this.sw.err.trim().split('\n').reverse().find((l) => l.includes('"level":60'));
    let why = '';
    if (fatal) {
      try {
        const j = JSON.parse(fatal) as { msg?: string; err?: { message?: string; stack?: string } };
        const at = j.err?.stack?.split('\n')[1]?.trim() ?? '';
        why = `: ${j.msg}: ${j.err?.message ?? ''} ${at}`;
      } catch {
        why = `: ${fatal.slice(0, 300)}`;
      }
    }
    return `switch exited (status ${c.exitCode}${c.signalCode ? `, signal ${c.signalCode}` : ''})${why}`;
  }

  /** Frames the switch has delivered to the bystander sink's port (its txPackets: given to the VM). */
  delivered(st: SwitchStats): number {
    return Number(st.ports.find((p) => p.name === BYSTANDER[1])?.counters.txPackets ?? 0);
  }

  /** The sink's totals from its last per-second line. */
  sinkProgress(): { verified: number; lost: number; dup: number; bad: number } {
    const lines = (this.sink?.out ?? '').trim().split('\n');
    for (let i = lines.length - 1; i >= 0; i--) {
      const m = /verified (\d+), lost (\d+), dup (\d+), bad (\d+)/.exec(lines[i]);
      if (m) return { verified: +m[1], lost: +m[2], dup: +m[3], bad: +m[4] };
    }
    return { verified: 0, lost: 0, dup: 0, bad: 0 };
  }

  measure(): { fd: number | null; rssKb: number | null } {
    if (!this.pid) return { fd: null, rssKb: null };
    try {
      const fd = fs.readdirSync(`/proc/${this.pid}/fd`).length;
      const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${this.pid}/status`, 'utf8'));
      return { fd, rssKb: m ? +m[1] : null };
    } catch {
      return { fd: null, rssKb: null };
    }
  }

  /**
   * What the switch still holds of the hostile front-ends' memfds (the
   * fuzzer names them all `zcfuzz*`, hostile.ts): open fds and mappings. Once
   * every hostile port is released it must be nothing: a mapping left for
   * the garbage collector to find, or an fd kept for a worker, is a leak a
   * front-end can repeat (src/vhost/vrings.ts, setMemTable). Null when the
   * process cannot be read.
   */
  hostileMemory(): { fds: number; maps: number } | null {
    if (!this.pid) return null;
    try {
      return memfdHeld(this.pid, 'zcfuzz');
    } catch {
      return null;
    }
  }

  async stop(): Promise<void> {
    await stopProc(this.gen);
    await stopProc(this.sink);
    await stopProc(this.sw);
    this.gen = this.sink = this.sw = null;
    if (this.ownDir) fs.rmSync(this.ownDir, { recursive: true, force: true });
    this.ownDir = null;
  }
}

/**
 * Port churn (`--churn`): while a batch runs, one hostile pair (or, on a
 * bridge, one port) after another is removed and added again over the
 * control socket. The switch then drops front-ends mid-case, reclaims
 * their buffers, frees a domain's region and makes a new one, and with
 * workers places the new ports again. Not part of any case: a replayed
 * case runs without it.
 */
export class Churn {
  private stopping = false;
  private readonly done: Promise<void>;
  /** Why the churn stopped early: a port that could not be removed or added again. */
  error: string | null = null;
  ports = 0;

  constructor(private readonly t: Target, private readonly shape: Shape, seed: number) {
    this.done = this.run(prngU32(seed ^ 0x63687572));
  }

  private async command(cmd: Record<string, unknown>): Promise<void> {
    const r = (await this.t.command(cmd)) as { ok?: boolean; error?: string };
    if (r?.ok !== true) throw new Error(`${cmd.cmd} ${String(cmd.name)}: ${r?.error ?? JSON.stringify(r)}`);
  }

  private async run(rnd: () => number): Promise<void> {
    const ports = this.t.ports;
    while (!this.stopping) {
      const k = rnd() % Math.floor(ports.length / 2);
      const [a, b] = this.shape === 'bridge' ? [ports[2 * k + (rnd() & 1)], null] : [ports[2 * k], ports[2 * k + 1]];
      try {
        await this.command({ cmd: 'port-del', name: a });
        if (b !== null) await this.command({ cmd: 'port-del', name: b });
        await this.command({ cmd: 'port-add', name: a });
        if (b !== null) await this.command({ cmd: 'port-add', name: b, pair: a });
        this.ports += b === null ? 1 : 2;
      } catch (e) {
        this.error = (e as Error).message;
        return;
      }
      await sleep(5 + (rnd() % 20));
    }
  }

  /** Stop after the pair in hand; null if every port is back, else why not. */
  async stop(): Promise<string | null> {
    this.stopping = true;
    await this.done;
    return this.error;
  }
}

/** The config of our own switch: the bystander pair and the hostile ports (paired fz0-fz1, fz2-fz3, ... or on a bridge), as `shape` says. */
function switchConfig(dir: string, hostile: string[], shape: Shape, workers: number): Record<string, unknown> {
  const cfg: Record<string, unknown> = { socketDir: dir, log: { level: 'error' } };
  if (workers > 0) cfg.forwarding = { workers };
  if (shape === 'bridge') {
    cfg.mode = 'bridge';
    cfg.ports = [...BYSTANDER.map((name) => ({ name, bridge: 'by' })), ...hostile.map((name) => ({ name }))];
    return cfg;
  }
  if (shape === 'swap') cfg.forwarding = { ...(cfg.forwarding as object), pairExchange: 'swap' };
  cfg.ports = [...BYSTANDER, ...hostile].map((name) => ({ name }));
  const pairs: string[][] = [[BYSTANDER[0], BYSTANDER[1]]];
  for (let i = 0; i + 1 < hostile.length; i += 2) pairs.push([hostile[i], hostile[i + 1]]);
  cfg.pairs = pairs;
  return cfg;
}
