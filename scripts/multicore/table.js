#!/usr/bin/env node
// The multi-core table from run.sh's results: DIR/p<P>-w<W>/*.json (zc-oneway
// at 64 B with P pairs over W workers) and DIR/memif/*.json (the memif pair),
// as markdown on stdout. Medians over the runs, [min–max] beside them.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const dir = process.argv[2];
if (!dir) {
  console.error('usage: table.js RESULTDIR');
  process.exit(2);
}

/** The one scenario of group `group` in the results JSON under sub, or null (with why). */
function scenario(sub, group) {
  const d = path.join(dir, sub);
  const files = fs.existsSync(d) ? fs.readdirSync(d).filter((f) => f.endsWith('.json')) : [];
  if (files.length === 0) return { why: 'no results' };
  const json = JSON.parse(fs.readFileSync(path.join(d, files[0]), 'utf8'));
  const s = json.scenarios.find((x) => x.group === group);
  if (!s) return { why: `no ${group} scenario` };
  if (s.status !== 'ok' || !s.summary?.mpps) return { why: s.status + (s.errors?.length ? `: ${s.errors[0]}` : '') };
  return { s, machine: json.machine };
}

const fmt = (m) => `${m.median.toFixed(2)} [${m.min.toFixed(2)}–${m.max.toFixed(2)}]`;
const cells = fs.readdirSync(dir).map((n) => /^p(\d+)-w(\d+)$/.exec(n)).filter(Boolean)
  .map((m) => ({ p: +m[1], w: +m[2], sub: m[0] }));
const ps = [...new Set(cells.map((c) => c.p))].sort((a, b) => a - b);
const ws = [...new Set(cells.map((c) => c.w))].sort((a, b) => a - b);
const memif = scenario('memif', 'memif');

const out = [];
out.push('Aggregate Mpps at 64 B, zero-copy one way, pinned (median [min–max] of the runs); rows: pairs, columns: workers.', '');
out.push(`| pairs \\ workers | ${ws.join(' | ')} |`, `| --: | ${ws.map(() => '--:').join(' | ')} |`);
let best = 0;
for (const p of ps) {
  const row = ws.map((w) => {
    const c = cells.find((x) => x.p === p && x.w === w);
    if (!c) return '';
    const r = scenario(c.sub, 'zc-oneway');
    if (!r.s) return `(${r.why})`;
    best = Math.max(best, r.s.summary.mpps.median);
    return fmt(r.s.summary.mpps);
  });
  out.push(`| ${p} | ${row.join(' | ')} |`);
}
out.push('');
out.push(`Best aggregate: ${best.toFixed(2)} Mpps (goal ≥ 30).`);
const one = scenario('p1-w1', 'zc-oneway');
if (memif.s) {
  out.push(`memif pair, same machine: ${fmt(memif.s.summary.mpps)} Mpps.`);
  if (one.s) out.push(`One pair on one worker ÷ memif pair: ${(one.s.summary.mpps.median / memif.s.summary.mpps.median).toFixed(2)}× (goal ≥ 1.0×).`);
} else {
  out.push(`memif pair: ${memif.why}.`);
}
out.push('', 'Per worker (busy share of the window) and per pair (Mpps), first run of each cell:', '');
for (const c of cells.sort((a, b) => a.p - b.p || a.w - b.w)) {
  const r = scenario(c.sub, 'zc-oneway');
  const x = r.s?.runs?.[0]?.extra;
  if (!x) continue;
  const workers = (x.perWorker ?? []).map((w) => `w${w.index}@${w.cpus.join(',')} ${(w.busyLoad * 100).toFixed(0)}%`).join(', ');
  const pairs = Object.values(x.perPair ?? {}).map((v) => v.toFixed(2)).join(' ');
  out.push(`- ${c.p} pairs, ${c.w} workers: ${workers || 'main thread'}; pairs ${pairs}`);
}
// One pair, each process on its own core, by exchange (run.sh's one-<exchange> folders).
const ones = fs.readdirSync(dir).map((n) => /^one-(\w+)$/.exec(n)).filter(Boolean);
if (ones.length) {
  const med = (runs, f) => {
    const v = runs.map(f).filter((x) => typeof x === 'number').sort((a, b) => a - b);
    return v.length ? v[Math.floor(v.length / 2)] : null;
  };
  const n = (x, d = 1) => (x === null ? '—' : x.toFixed(d));
  const pct = (x) => (x === null ? '—' : `${Math.round(x * 100)}%`);
  out.push('', 'One pair, a core per process (main thread forwards), medians of the runs: busy ns per packet and busy load of each process; the sender\'s send passes short of buffers / of ring room; packets per busy turn of each VM.', '');
  out.push('| exchange | Mpps | switch ns, load | sender ns, load | receiver ns, load | sender short of buffers / room | packets per turn (sender, receiver) |');
  out.push('| :-- | --: | --: | --: | --: | --: | --: |');
  for (const [sub, x] of ones) {
    const r = scenario(sub, 'zc-oneway');
    if (!r.s) {
      out.push(`| ${x} | (${r.why}) | | | | | |`);
      continue;
    }
    const runs = r.s.runs;
    const st = (vm, k) => med(runs, (u) => u.extra?.vmStalls?.[vm]?.[k]);
    out.push(`| ${x} | ${fmt(r.s.summary.mpps)} | ${n(med(runs, (u) => u.switchBusyNsPerPkt))}, ${n(med(runs, (u) => u.switchBusyLoad), 2)} | ` +
      `${n(med(runs, (u) => u.vm1BusyNsPerPkt))}, ${n(med(runs, (u) => u.vm1BusyLoad), 2)} | ${n(med(runs, (u) => u.vm2BusyNsPerPkt))}, ${n(med(runs, (u) => u.vm2BusyLoad), 2)} | ` +
      `${pct(st('vm1', 'shortOfBuffers'))} / ${pct(st('vm1', 'shortOfRoom'))} | ${n(st('vm1', 'packetsPerBusyTurn'), 0)}, ${n(st('vm2', 'packetsPerBusyTurn'), 0)} |`);
    if (memif.s) out.push(`|  | ÷ memif ${(r.s.summary.mpps.median / memif.s.summary.mpps.median).toFixed(2)}× | | | | | |`);
  }
}
const m = one.machine ?? memif.machine;
if (m) out.push('', `Machine: ${JSON.stringify(m)}`);
console.log(out.join('\n'));
