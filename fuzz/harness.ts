/**
 * The fuzz run: a target switch (our own `zcswitch start` on a private
 * config, or one already running), a bystander pair forwarding verified
 * traffic beside the attack, batches of hostile cases over parallel
 * connections, and the checks after every batch (switch alive and
 * answering, hostile ports released, ledger balanced, bystander still
 * moving every frame, fd count and RSS within bounds). A crash is narrowed
 * down to the case that causes it by replaying the batch one case at a time.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { controlRequest } from '../src/switch/control';
import type { SwitchStats } from '../src/switch/stats';
import { prngU32 } from '../test/helpers/prng';
import { sleep } from '../test/helpers/wait';
import { type CaseResult, type Kind, KINDS, kindOf, runCase } from './cases';
import { FdFactory } from './hostile';

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

export interface FuzzOptions {
  cases: number;
  seed: number;
  connections: number;
  batch: number;
  kinds: Kind[];
  onlyCase?: number;
  /** Use a running switch: its socket dir (and control socket, pid for fd/RSS). */
  socketDir?: string;
  control?: string;
  pid?: number;
  ports?: string[];
  bystanderRate: number;
  /** Our own switch only: its forwarding (SHAPES) and data-path workers (`forwarding.workers`). */
  shape: Shape;
  workers: number;
  /** Remove and add hostile ports again while each batch runs (Churn). */
  churn: boolean;
  maxFdGrowth: number;
  /** After the last batch: what a leak of a few fds over the whole run would exceed. */
  maxFdFinal: number;
  maxRssGrowthMb: number;
  /** Stop at the first failure instead of restarting the switch and going on. */
  stopOnFailure: boolean;
  json: boolean;
  verbose: boolean;
}

export interface Failure {
  check: string;
  detail: string;
  batch: number;
  /** The case indices of the batch (all of them until narrowed down). */
  cases: number[];
  kinds: Kind[];
  culprit?: { index: number; kind: Kind; what: string; replay: string };
}

export interface FuzzSummary {
  seed: number;
  shape: Shape;
  workers: number;
  /** Hostile ports removed and added again (--churn). */
  churned: number;
  cases: number;
  connected: number;
  byKind: Record<string, number>;
  seconds: number;
  casesPerSec: number;
  batches: number;
  crashes: number;
  restarts: number;
  fdGrowth: { final: number | null; max: number | null; bound: number; finalBound: number };
  rssGrowthMb: { final: number | null; max: number | null; bound: number };
  bystanderVerified: number;
  failures: Failure[];
  ok: boolean;
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

const running = (p: Proc | null): boolean => !!p && p.child.exitCode === null && p.child.signalCode === null;

async function stopProc(p: Proc | null, graceMs = 3000): Promise<void> {
  if (!p || !running(p)) return;
  const gone = new Promise((res) => p.child.once('close', res));
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(t);
}

async function until(what: string, fn: () => Promise<boolean> | boolean, ms: number, pollMs = 20): Promise<void> {
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
class Target {
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

  constructor(private readonly o: FuzzOptions) {}

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

  async stop(): Promise<void> {
    await stopProc(this.gen);
    await stopProc(this.sink);
    await stopProc(this.sw);
    this.gen = this.sink = this.sw = null;
    if (this.ownDir) fs.rmSync(this.ownDir, { recursive: true, force: true });
    this.ownDir = null;
  }
}

interface CheckResult {
  failures: { check: string; detail: string }[];
  fdGrowth: number | null;
  rssGrowthMb: number | null;
  dead: boolean;
}

/**
 * The sink prints its totals once a second and the generator sends
 * `--bystander-rate` frames a second, so "still forwarding" is judged over
 * time, not per batch (a batch can take a few ms): the switch's delivery
 * count for the sink's port must grow within DELIVERY_STALE_MS and the
 * sink's verified count within VERIFIED_STALE_MS; past that the check waits
 * for growth (up to 5 s) and fails without it. A batch never sleeps for the
 * sink's next line while both are fresh.
 */
const DELIVERY_STALE_MS = 500;
const VERIFIED_STALE_MS = 2500;

/**
 * Port churn (`--churn`): while a batch runs, one hostile pair (or, on a
 * bridge, one port) after another is removed and added again over the
 * control socket. The switch then drops front-ends mid-case, reclaims
 * their buffers, frees a domain's region and makes a new one, and with
 * workers places the new ports again. Not part of any case: a replayed
 * case runs without it.
 */
class Churn {
  private stopping = false;
  private readonly done: Promise<void>;
  readonly errors: string[] = [];
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
        this.errors.push((e as Error).message);
        return;
      }
      await sleep(5 + (rnd() % 20));
    }
  }

  /** Stop after the pair in hand; the errors, none if every port was back. */
  async stop(): Promise<string[]> {
    this.stopping = true;
    await this.done;
    return this.errors;
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

/** Everything that must hold after a batch, once its hostile connections are closed; `final`: also wait for the sink's next line. */
async function checkTarget(t: Target, o: FuzzOptions, final = false): Promise<CheckResult> {
  const failures: { check: string; detail: string }[] = [];
  const res = (dead: boolean): CheckResult => {
    const m = t.measure();
    return {
      failures, dead,
      fdGrowth: m.fd === null ? null : m.fd - t.baseFd,
      rssGrowthMb: m.rssKb === null ? null : (m.rssKb - t.baseRss) / 1024,
    };
  };
  if (!t.alive()) {
    failures.push({ check: 'alive', detail: t.deathNote() });
    return res(true);
  }
  let st: SwitchStats;
  try {
    st = await t.stats();
  } catch (e) {
    failures.push({ check: t.alive() ? 'responsive' : 'alive', detail: t.alive() ? `stats: ${(e as Error).message}` : t.deathNote() });
    return res(!t.alive());
  }
  // Every hostile port must be released once we hung up. Once they are, the
  // switch has handled every message the batch sent (each connection's last
  // act was to hang up): a fault they caused has landed by now.
  const hostile = new Set(t.ports);
  const released = () => st.ports.every((p) => !hostile.has(p.name) || !p.attached);
  try {
    await until('the hostile ports to detach', async () => released() || (st = await t.stats(), released()), 3000, 2);
  } catch {
    const held = st!.ports.filter((p) => hostile.has(p.name) && p.attached).map((p) => p.name);
    failures.push({ check: 'ports-released', detail: `still attached 3 s after the fuzzer closed them: ${held.join(', ')}` });
  }
  if (!t.alive()) {
    failures.push({ check: 'alive', detail: t.deathNote() });
    return res(true);
  }
  if (!st!.ledger.ok) failures.push({ check: 'ledger', detail: JSON.stringify(st!.ledger).slice(0, 400) });
  // The bystander pair must still be moving every frame.
  if (!running(t.gen) || !running(t.sink)) {
    const who = !running(t.gen) ? t.gen : t.sink;
    failures.push({ check: 'bystander', detail: `bystander ${who === t.gen ? 'generator' : 'sink'} exited: ${who?.err.trim().slice(-300)}` });
  } else {
    const now = Date.now();
    // The switch side: frames still reach the sink's port.
    let d = t.delivered(st!);
    if (d > t.lastDelivered) {
      t.lastDelivered = d;
      t.deliveredAt = now;
    } else if (now - t.deliveredAt > DELIVERY_STALE_MS) {
      const before = t.lastDelivered;
      try {
        await until('the switch to deliver more bystander frames', async () => (d = t.delivered(await t.stats())) > before, 5000);
        t.lastDelivered = d;
        t.deliveredAt = Date.now();
      } catch {
        failures.push({ check: 'bystander', detail: `the switch delivered nothing to ${BYSTANDER[1]} in ${((Date.now() - t.deliveredAt) / 1000).toFixed(1)} s (stuck at ${before})` });
      }
    }
    // The sink side: what arrives verifies, nothing lost, duplicated or bad.
    const before = t.lastVerified;
    if (final || Date.now() - t.verifiedAt > VERIFIED_STALE_MS) {
      try {
        await until('the bystander sink to verify more frames', () => t.sinkProgress().verified > before, 5000);
      } catch {
        failures.push({ check: 'bystander', detail: `sink verified nothing new in ${((Date.now() - t.verifiedAt) / 1000).toFixed(1)} s (stuck at ${before})` });
      }
    }
    const p = t.sinkProgress();
    if (p.verified > before) {
      t.lastVerified = p.verified;
      t.verifiedAt = Date.now();
    }
    if (p.lost + p.dup + p.bad > 0) failures.push({ check: 'bystander', detail: `sink: lost ${p.lost}, dup ${p.dup}, bad ${p.bad}` });
  }
  const r = res(!t.alive());
  if (r.fdGrowth !== null && r.fdGrowth > o.maxFdGrowth) failures.push({ check: 'fd-growth', detail: `${r.fdGrowth} fds more than at start (bound ${o.maxFdGrowth})` });
  else if (final && r.fdGrowth !== null && r.fdGrowth > o.maxFdFinal) {
    // Every hostile port is released and only the bystanders remain, as at the start: what is left over leaked.
    failures.push({ check: 'fd-leak', detail: `${r.fdGrowth} fds more than at start after the last batch (bound ${o.maxFdFinal})` });
  }
  if (r.rssGrowthMb !== null && r.rssGrowthMb > o.maxRssGrowthMb) {
    failures.push({ check: 'rss-growth', detail: `RSS ${r.rssGrowthMb.toFixed(1)} MiB above start (bound ${o.maxRssGrowthMb})` });
  }
  return r;
}

function replayCmd(o: FuzzOptions, index: number): string {
  const shape = o.shape === 'pair' ? '' : ` --shape ${o.shape}`;
  const workers = o.workers > 0 ? ` --workers ${o.workers}` : '';
  return `npm run fuzz -- --seed ${o.seed}${shape}${workers} --only-case ${index}`;
}

function log(o: FuzzOptions, line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Run the batch's cases over the connections, each slot taking the next case when free. */
async function runBatch(t: Target, o: FuzzOptions, indices: number[], env: FdFactory, results: Map<number, CaseResult>): Promise<void> {
  let next = 0;
  const slots = Math.min(o.connections, t.ports.length, indices.length);
  await Promise.all(Array.from({ length: slots }, async (_, slot) => {
    while (next < indices.length) {
      const i = indices[next++];
      results.set(i, await runCase(o.seed, i, { sock: t.sockOf(slot), fds: env }));
      if (!t.alive()) return;
    }
  }));
}

/** Replay a crashed batch one case at a time on a fresh switch until one kills it. */
async function narrow(t: Target, o: FuzzOptions, indices: number[], fds: FdFactory): Promise<Failure['culprit'] | undefined> {
  for (const i of indices) {
    const r = await runCase(o.seed, i, { sock: t.sockOf(0), fds });
    await sleep(60);
    if (!t.alive()) {
      log(o, `  case ${i} (${r.kind}) kills the switch: ${t.deathNote().split('\n')[0]}`);
      return { index: i, kind: r.kind, what: r.what, replay: replayCmd(o, i) };
    }
  }
  return undefined;
}

export async function runFuzz(o: FuzzOptions): Promise<FuzzSummary> {
  const enabled = new Set(o.kinds);
  const fdDir = fs.mkdtempSync(path.join(os.tmpdir(), 'zcs-fuzzfds-'));
  const fds = new FdFactory(fdDir);
  const t = new Target(o);
  const failures: Failure[] = [];
  const byKind: Record<string, number> = Object.fromEntries(KINDS.map((k) => [k, 0]));
  let cases = 0;
  let connected = 0;
  let batches = 0;
  let crashes = 0;
  let restarts = 0;
  let churned = 0;
  let fdMax: number | null = null;
  let rssMax: number | null = null;
  let fdFinal: number | null = null;
  let rssFinal: number | null = null;
  let verifiedTotal = 0;
  let stopping = false;
  const onSig = () => (stopping = true);
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  const t0 = Date.now();
  let lastLog = t0;
  try {
    await t.start();
    let nextIndex = o.onlyCase ?? 0;
    while (!stopping && cases < (o.onlyCase !== undefined ? 1 : o.cases)) {
      const indices: number[] = [];
      const want = o.onlyCase !== undefined ? 1 : Math.min(o.batch, o.cases - cases);
      while (indices.length < want) {
        if (o.onlyCase !== undefined || enabled.has(kindOf(nextIndex))) indices.push(nextIndex);
        nextIndex++;
      }
      const results = new Map<number, CaseResult>();
      const churn = o.churn && t.own ? new Churn(t, o.shape, o.seed + batches) : null;
      await runBatch(t, o, indices, fds, results);
      const churnErrors = churn === null ? [] : await churn.stop();
      churned += churn?.ports ?? 0;
      batches++;
      cases += indices.length;
      for (const i of indices) {
        const r = results.get(i);
        byKind[kindOf(i)]++;
        if (r?.connected) connected++;
        if (o.verbose || o.onlyCase !== undefined) log(o, `case ${i} ${kindOf(i)}: ${r?.what ?? '(not run: the switch died first)'}`);
      }
      const last = stopping || cases >= (o.onlyCase !== undefined ? 1 : o.cases);
      const c = await checkTarget(t, o, last);
      for (const e of churnErrors) c.failures.push({ check: 'churn', detail: `a port could not be removed or added again: ${e}` });
      if (c.fdGrowth !== null) {
        fdFinal = c.fdGrowth;
        fdMax = Math.max(fdMax ?? -Infinity, c.fdGrowth);
      }
      if (c.rssGrowthMb !== null) {
        rssFinal = c.rssGrowthMb;
        rssMax = Math.max(rssMax ?? -Infinity, c.rssGrowthMb);
      }
      const now = Date.now();
      if (o.verbose || now - lastLog > 5000) {
        lastLog = now;
        const m = t.measure();
        const rate = cases / ((now - t0) / 1000);
        const left = (o.onlyCase !== undefined ? 1 : o.cases) - cases;
        const eta = left > 0 ? `, ETA ${(left / rate / 60).toFixed(0)} min` : '';
        log(o, `[fuzz] ${cases} cases (${rate.toFixed(0)}/s${eta}), batch ${batches}, switch fds ${m.fd} (+${c.fdGrowth}), ` +
          `RSS ${m.rssKb === null ? '?' : (m.rssKb / 1024).toFixed(0)} MiB (+${c.rssGrowthMb?.toFixed(1)}), bystander verified ${t.lastVerified}, failures ${failures.length}`);
      }
      if (c.failures.length === 0) continue;
      const kinds = [...new Set(indices.map(kindOf))];
      for (const f of c.failures) {
        const fail: Failure = { ...f, batch: batches, cases: indices, kinds };
        failures.push(fail);
        log(o, `[fuzz] FAIL batch ${batches} (cases ${indices[0]}..${indices[indices.length - 1]}, kinds ${kinds.join(',')}): ${f.check}: ${f.detail}`);
      }
      if (c.dead) crashes++;
      if (o.stopOnFailure || !t.own) break;
      // Start again; for a crash, find the case that did it.
      verifiedTotal += t.lastVerified;
      await t.stop();
      await t.start();
      restarts++;
      if (c.dead && indices.length > 1) {
        log(o, `[fuzz] replaying batch ${batches} one case at a time to find the culprit`);
        const culprit = await narrow(t, o, indices, fds);
        if (culprit) {
          failures[failures.length - c.failures.length].culprit = culprit;
          log(o, `[fuzz] culprit: case ${culprit.index} (${culprit.kind}) ${culprit.what}\n[fuzz] replay: ${culprit.replay}`);
          await t.stop();
          await t.start();
          restarts++;
        } else {
          log(o, '[fuzz] no single case of the batch kills the switch alone (it took several together)');
        }
      } else if (c.dead) {
        const i = indices[0];
        failures[failures.length - c.failures.length].culprit = { index: i, kind: kindOf(i), what: results.get(i)?.what ?? '', replay: replayCmd(o, i) };
      }
    }
  } finally {
    verifiedTotal += t.lastVerified;
    await t.stop();
    fs.rmSync(fdDir, { recursive: true, force: true });
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
  const seconds = (Date.now() - t0) / 1000;
  return {
    seed: o.seed, shape: o.shape, workers: o.workers, churned, cases, connected, byKind, seconds, casesPerSec: cases / seconds, batches, crashes, restarts,
    fdGrowth: { final: fdFinal, max: fdMax, bound: o.maxFdGrowth, finalBound: o.maxFdFinal },
    rssGrowthMb: { final: rssFinal, max: rssMax, bound: o.maxRssGrowthMb },
    bystanderVerified: verifiedTotal, failures, ok: failures.length === 0,
  };
}
