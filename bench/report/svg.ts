/**
 * The SVG plot: Mpps (left) and Gbit/s (right) against packet size, both
 * axes logarithmic, one polyline per series (zcswitch mode or peer) per
 * panel, whiskers from min to max over the runs.
 */
import { type BenchResults, GROUP_LABELS, type Group, SWEEP_GROUPS } from '../types';

const COLORS: Record<string, string> = {
  'zc-oneway': '#1f77b4', 'zc-bidir': '#2ca02c', 'copy-oneway': '#ff7f0e', 'classic-flood': '#bcbd22', kernel: '#555555',
  'dpdk-vhost': '#d62728', memif: '#9467bd', 'memif-zc': '#8c564b', 'ovs-dpdk': '#17becf',
};
const PEERS = new Set(['kernel', 'dpdk-vhost', 'memif', 'memif-zc', 'ovs-dpdk']);

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const f = (x: number) => x.toFixed(1);

interface Point {
  size: number;
  med: number;
  min: number;
  max: number;
}

export function seriesOf(res: BenchResults, metric: 'mpps' | 'gbps'): { group: Group; points: Point[] }[] {
  const out: { group: Group; points: Point[] }[] = [];
  for (const g of SWEEP_GROUPS) {
    const points = res.scenarios
      .filter((s) => s.group === g && s.summary[metric] && s.summary[metric]!.median > 0)
      .map((s) => ({ size: s.size, med: s.summary[metric]!.median, min: s.summary[metric]!.min, max: s.summary[metric]!.max }))
      .sort((a, b) => a.size - b.size);
    if (points.length) out.push({ group: g, points });
  }
  return out;
}

function niceTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(v);
    }
  }
  return ticks;
}

const fmtTick = (v: number) => (v >= 1 ? String(Number(v.toPrecision(3))) : String(Number(v.toPrecision(2))));

function panel(res: BenchResults, metric: 'mpps' | 'gbps', x0: number, y0: number, w: number, h: number): string {
  const series = seriesOf(res, metric);
  const title = metric === 'mpps' ? 'packet rate, Mpps' : 'payload throughput, Gbit/s';
  let s = `<g class="panel" data-metric="${metric}">\n`;
  s += `<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="#ffffff" stroke="#999999"/>\n`;
  s += `<text x="${f(x0 + w / 2)}" y="${y0 - 8}" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>\n`;
  const sizes = [...new Set(res.scenarios.filter((r) => SWEEP_GROUPS.includes(r.group)).map((r) => r.size))].sort((a, b) => a - b);
  if (series.length === 0 || sizes.length === 0) {
    s += `<text x="${f(x0 + w / 2)}" y="${f(y0 + h / 2)}" text-anchor="middle" font-size="12">no data</text>\n</g>\n`;
    return s;
  }
  const xs = sizes.map(Math.log2);
  let xlo = Math.min(...xs), xhi = Math.max(...xs);
  if (xhi - xlo < 1) { xlo -= 0.5; xhi += 0.5; }
  const pad = (xhi - xlo) * 0.05;
  xlo -= pad; xhi += pad;
  const vals = series.flatMap((x) => x.points.flatMap((p) => [p.min, p.max, p.med])).filter((v) => v > 0);
  let ylo = Math.min(...vals), yhi = Math.max(...vals);
  ylo = 10 ** (Math.floor(Math.log10(ylo) * 2) / 2);
  yhi = 10 ** (Math.ceil(Math.log10(yhi) * 2) / 2);
  if (yhi / ylo < 10) { ylo /= 3; yhi *= 3; }
  const X = (size: number) => x0 + ((Math.log2(size) - xlo) / (xhi - xlo)) * w;
  const Y = (v: number) => y0 + h - ((Math.log10(Math.max(v, ylo)) - Math.log10(ylo)) / (Math.log10(yhi) - Math.log10(ylo))) * h;
  for (const t of niceTicks(ylo, yhi)) {
    s += `<line x1="${x0}" y1="${f(Y(t))}" x2="${x0 + w}" y2="${f(Y(t))}" stroke="#e6e6e6"/>\n`;
    s += `<text x="${x0 - 5}" y="${f(Y(t) + 4)}" text-anchor="end" font-size="10">${fmtTick(t)}</text>\n`;
  }
  for (const size of sizes) {
    s += `<line x1="${f(X(size))}" y1="${y0}" x2="${f(X(size))}" y2="${y0 + h}" stroke="#f0f0f0"/>\n`;
    s += `<text x="${f(X(size))}" y="${y0 + h + 14}" text-anchor="middle" font-size="10">${size}</text>\n`;
  }
  s += `<text x="${f(x0 + w / 2)}" y="${y0 + h + 30}" text-anchor="middle" font-size="11">packet size, bytes (log scale)</text>\n`;
  for (const { group, points } of series) {
    const c = COLORS[group];
    const dash = PEERS.has(group) ? ' stroke-dasharray="6 3"' : '';
    s += `<polyline data-series="${group}" data-metric="${metric}" fill="none" stroke="${c}" stroke-width="2"${dash} points="` +
      points.map((p) => `${f(X(p.size))},${f(Y(p.med))}`).join(' ') + `"/>\n`;
    for (const p of points) {
      if (p.max > p.min) s += `<line x1="${f(X(p.size))}" y1="${f(Y(p.min))}" x2="${f(X(p.size))}" y2="${f(Y(p.max))}" stroke="${c}" stroke-width="1"/>\n`;
      s += `<circle cx="${f(X(p.size))}" cy="${f(Y(p.med))}" r="3" fill="${c}"><title>${esc(`${group} ${p.size} B: ${p.med.toPrecision(3)}`)}</title></circle>\n`;
    }
  }
  return s + `</g>\n`;
}

export function renderSvg(res: BenchResults): string {
  const W = 1000, H = 530;
  const pw = 400, ph = 330, top = 72;
  const m = res.machine;
  let s = `<?xml version="1.0" encoding="UTF-8"?>\n`;
  s += `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">\n`;
  s += `<rect x="0" y="0" width="${W}" height="${H}" fill="#fafafa"/>\n`;
  s += `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">` +
    `${esc(`zcswitch bench ${res.startedAt.slice(0, 16).replace('T', ' ')} UTC`)}</text>\n`;
  s += `<text x="${W / 2}" y="40" text-anchor="middle" font-size="11">` +
    `${esc(`median of ${res.settings.runs} run(s), bars min–max; ${m.cpus} CPUs, ${m.cpuModel}`)}</text>\n`;
  s += panel(res, 'mpps', 70, top, pw, ph);
  s += panel(res, 'gbps', 70 + pw + 90, top, pw, ph);
  const groups = seriesOf(res, 'mpps').map((x) => x.group);
  const ly = top + ph + 55;
  groups.forEach((g, i) => {
    const col = i % 2, row = Math.floor(i / 2);
    const x = 70 + col * 460, y = ly + row * 18;
    const dash = PEERS.has(g) ? ' stroke-dasharray="6 3"' : '';
    s += `<line x1="${x}" y1="${y}" x2="${x + 30}" y2="${y}" stroke="${COLORS[g]}" stroke-width="2"${dash}/>\n`;
    s += `<text x="${x + 38}" y="${y + 4}" font-size="11">${esc(GROUP_LABELS[g])}</text>\n`;
  });
  return s + `</svg>\n`;
}
