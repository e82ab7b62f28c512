/**
 * The fuzz run: a target switch (our own `zcswitch start` on a private
 * config, or one already running), a bystander pair forwarding verified
 * traffic beside the attack, batches of hostile cases over parallel
 * connections, and the checks after every batch (switch alive and
 * answering, hostile ports released, ledger balanced, bystander still
 * moving every frame, fd count and RSS within bounds). A crash is narrowed
 * down to the case that causes it by replaying the batch one case at a time.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { SwitchStats } from '../src/switch/stats';
import { sleep } from '../test/helpers/wait';
import { type CaseResult, type Kind, KINDS, kindOf, runCase } from './cases';
import { FdFactory } from './hostile';
import { BYSTANDER, Churn, type Shape, Target, type TargetOptions, running, until } from './target';

export { SHAPES, type Shape } from './target';

export interface FuzzOptions extends TargetOptions {
  cases: number;
  seed: number;
  batch: number;
  kinds: Kind[];
  onlyCase?: number;
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
  const held = released() ? t.hostileMemory() : null;
  if (held !== null && held.fds + held.maps > 0) {
    failures.push({ check: 'memory-released', detail: `the released hostile ports' memfds are still held: ${held.fds} fds, ${held.maps} mappings` });
  }
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
      const churnError = churn === null ? null : await churn.stop();
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
      if (churnError !== null) c.failures.push({ check: 'churn', detail: `a port could not be removed or added again: ${churnError}` });
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
