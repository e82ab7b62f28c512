/**
 * The markdown report: summary tables by packet size (Mpps and Gbit/s),
 * every scenario in detail, the burst and poll-mode sweeps; every table
 * carries zcswitch/peer ratios from the same run.
 */
import type { Spread } from '../lib/util';
import { sig, spread } from '../lib/util';
import { bufSizeFor } from '../runners/common';
import { type BenchResults, GROUP_LABELS, GSO_REFERENCE_ID, type Group, PEER_GROUPS, type RunMetrics, type ScenarioResult, SWEEP_GROUPS, type VmStallsByVm } from '../types';

const SHORT: Record<Group, string> = {
  'zc-oneway': 'zc one-way', 'zc-bidir': 'zc bidir', 'zc-bridge': 'zc bridge', 'copy-oneway': 'copy one-way', 'classic-flood': 'classic flood', 'zc-burst': 'zc burst', 'zc-poll': 'zc poll', 'zc-gso': 'zc gso',
  kernel: 'kernel', 'dpdk-vhost': 'dpdk-vhost', memif: 'memif', 'memif-zc': 'memif-zc', 'ovs-dpdk': 'ovs-dpdk', 'qemu-zc': 'qemu guests zc',
};

function table(head: string[], rows: string[][], align?: ('l' | 'r')[]): string {
  const sep = head.map((_, i) => ((align?.[i] ?? 'r') === 'l' ? ':--' : '--:'));
  return [head, sep, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n') + '\n';
}

const med = (s: Spread | null, digits = 3) => (s ? sig(s.median, digits) : '—');
const range = (s: Spread | null) => (s ? (s.n > 1 ? `${sig(s.median)} [${sig(s.min)}–${sig(s.max)}]` : sig(s.median)) : '—');
const ratio = (x: number | null | undefined) => (x === null || x === undefined ? '—' : `${sig(x, 2)}×`);

/** Peers that produced at least one number (their ratio columns). */
function peersWithData(res: BenchResults): Group[] {
  return PEER_GROUPS.filter((g) => res.scenarios.some((s) => s.group === g && s.summary.mpps));
}

function ratiosOf(r: ScenarioResult | undefined, peers: Group[]): string[] {
  return peers.map((p) => ratio(r?.ratios[p]));
}

function bySize(res: BenchResults, metric: 'mpps' | 'gbps'): string {
  const groups = SWEEP_GROUPS.filter((g) => res.scenarios.some((s) => s.group === g));
  const peers = peersWithData(res);
  // Ratios for the one-way modes (the peers are one-way); bidirectional ratios are in the detail table.
  const zcRows = (['zc-oneway', 'copy-oneway'] as Group[]).filter((g) => groups.includes(g));
  const ratioHeads = zcRows.flatMap((z) => peers.map((p) => `${SHORT[z]} ÷ ${p}`));
  const sizes = [...new Set(res.scenarios.filter((s) => SWEEP_GROUPS.includes(s.group)).map((s) => s.size))].sort((a, b) => a - b);
  const rows = sizes.map((size) => {
    const at = (g: Group) => res.scenarios.find((s) => s.group === g && s.size === size);
    const cell = (g: Group) => {
      const s = at(g);
      if (!s) return '—';
      if (s.status === 'skipped') return 'skipped';
      if (!s.summary[metric]) return 'failed';
      return med(s.summary[metric]);
    };
    return [String(size), ...groups.map(cell), ...zcRows.flatMap((z) => ratiosOf(at(z), peers))];
  });
  return table(['size B', ...groups.map((g) => SHORT[g]), ...ratioHeads], rows);
}

function detail(res: BenchResults, list: ScenarioResult[], peers: Group[]): string {
  const head = ['scenario', 'size B', 'burst', 'poll', 'Mpps median [min–max]', 'Gbit/s', 'switch CPU ns/pkt', 'switch CPU load',
    'all CPU ns/pkt', 'copied B/pkt', 'gifts /1000 pkts', 'drops', 'avg len B', 'runs', ...peers.map((p) => `÷ ${p}`)];
  const rows = list.map((s) => {
    const sm = s.summary;
    if (s.status === 'skipped') return [s.id, String(s.size), '', '', `skipped`, ...Array(head.length - 5).fill('')];
    return [
      s.id, String(s.size), String(s.burst), s.pollMode ?? '', s.summary.mpps ? range(sm.mpps) : `failed`,
      med(sm.gbps), med(sm.switchCpuNsPerPkt), med(sm.switchCpuLoad, 2), med(sm.totalCpuNsPerPkt), med(sm.copiedBytesPerPkt),
      med(sm.giftsPer1000), med(sm.drops), sm.avgLen ? String(Math.round(sm.avgLen.median * 10) / 10) : '—', String(s.runs.length),
      ...(s.system === 'zcswitch' ? ratiosOf(s, peers) : peers.map(() => '')),
    ];
  });
  return table(head, rows, ['l', 'r', 'r', 'l']);
}

/**
 * Who does the work: per scenario, each process's busy time (its work
 * without idle polling) and CPU time per delivered packet, and its busy
 * share of the window. The process whose busy load is near 1 (or, pinned,
 * the processes sharing a CPU whose loads add up to near 1) sets the rate.
 */
function costs(res: BenchResults): string {
  const list = res.scenarios.filter((s) => s.status !== 'skipped' && s.summary.mpps);
  if (list.length === 0) return '';
  const head = ['scenario', 'Mpps', 'switch busy ns/pkt', 'switch CPU ns/pkt', 'switch busy load', 'switch CPU load',
    'vm1 busy ns/pkt', 'vm1 CPU ns/pkt', 'vm1 busy load', 'vm2 busy ns/pkt', 'vm2 CPU ns/pkt', 'vm2 busy load', 'all CPU ns/pkt',
    'vm1 short of buffers / room'];
  const rows = list.map((s) => {
    const m = s.summary;
    return [s.id, med(m.mpps), med(m.switchBusyNsPerPkt), med(m.switchCpuNsPerPkt), med(m.switchBusyLoad, 2), med(m.switchCpuLoad, 2),
      med(m.vm1BusyNsPerPkt), med(m.vm1CpuNsPerPkt), med(m.vm1BusyLoad, 2), med(m.vm2BusyNsPerPkt), med(m.vm2CpuNsPerPkt),
      med(m.vm2BusyLoad, 2), med(m.totalCpuNsPerPkt), senderStalls(s.runs)];
  });
  return table(head, rows, ['l']);
}

/** A sender's send passes short of free buffers / of tx ring room (medians over the runs, %), or — where it does not count them. */
function senderStalls(runs: readonly RunMetrics[]): string {
  const share = (k: 'shortOfBuffers' | 'shortOfRoom') => {
    const m = spread(runs.map((r) => (r.extra?.vmStalls as VmStallsByVm | undefined)?.vm1?.[k]));
    return m ? `${Math.round(m.median * 100)}%` : null;
  };
  const b = share('shortOfBuffers');
  const r = share('shortOfRoom');
  return b === null || r === null ? '—' : `${b} / ${r}`;
}

function sweep(res: BenchResults, kind: 'burst' | 'poll', peers: Group[]): string {
  const st = res.settings;
  const size = kind === 'burst' ? st.burstSize : st.pollSize;
  const base = res.scenarios.find((s) => s.group === 'zc-oneway' && s.size === size);
  const list = res.scenarios.filter((s) => s.group === (kind === 'burst' ? 'zc-burst' : 'zc-poll'));
  if (list.length === 0) return '';
  const all = [...list, ...(base ? [base] : [])].sort((a, b) =>
    kind === 'burst' ? a.burst - b.burst : (a.pollMode ?? '').localeCompare(b.pollMode ?? ''));
  const head = [kind === 'burst' ? 'burst' : 'poll mode', 'Mpps median [min–max]', 'Gbit/s', 'switch busy ns/pkt', 'switch CPU ns/pkt', 'switch CPU load',
    'gifts /1000 pkts', 'drops', ...peers.map((p) => `÷ ${p}`)];
  const rows = all.map((s) => [
    kind === 'burst' ? String(s.burst) + (s === base ? ' (default)' : '') : (s.pollMode ?? '') + (s === base ? ' (default)' : ''),
    s.summary.mpps ? range(s.summary.mpps) : s.status, med(s.summary.gbps), med(s.summary.switchBusyNsPerPkt), med(s.summary.switchCpuNsPerPkt),
    med(s.summary.switchCpuLoad, 2), med(s.summary.giftsPer1000), med(s.summary.drops), ...ratiosOf(s, peers),
  ]);
  const title = kind === 'burst'
    ? `### Burst size (zero-copy one-way, ${size} B; switch forwarding.burst = VM --burst)\n\n`
    : `### Poll mode (zero-copy one-way, ${size} B; switch forwarding.pollMode)\n\n`;
  return title + table(head, rows, ['l']) + '\n';
}

/**
 * zc-gso against 64-byte frames: in the same 64 KiB buffers (its reference
 * scenario: what the frame's size and TSO header cost) and, when it ran,
 * zc-oneway/64 in its own small buffers (what the buffer stride adds).
 */
function gso(res: BenchResults): string {
  const tso = res.scenarios.find((s) => s.group === 'zc-gso' && s.gso && s.summary.mpps);
  if (tso === undefined) return '';
  const ref = res.scenarios.find((s) => s.id === GSO_REFERENCE_ID && s.summary.mpps);
  const small = res.scenarios.find((s) => s.group === 'zc-oneway' && s.size === 64 && s.summary.mpps);
  const rows = [[tso.id, med(tso.summary.mpps), '1×']];
  const of = (s: ScenarioResult) => ratio(tso.summary.mpps!.median / s.summary.mpps!.median);
  if (ref) rows.push([`${ref.id} (64 B frames in the same ${res.settings.bufSize ?? ref.bufSize} B buffers)`, med(ref.summary.mpps), of(ref)]);
  if (small) rows.push([`${small.id} (64 B frames in ${res.settings.bufSize ?? bufSizeFor(64)} B buffers)`, med(small.summary.mpps), of(small)]);
  return '## 64 KiB TSO frames against 64-byte frames\n\n' + table(['scenario', 'Mpps', 'zc-gso ÷ this'], rows, ['l']) + '\n';
}

/** "4096 (2048 for 65535 B)": the bufCount each scenario's switch config used. */
function bufCountText(res: BenchResults): string {
  const bySize = new Map<number, number>();
  for (const s of res.scenarios) {
    const n = ((s.setup?.config as { sharedBuffers?: { bufCount?: number } } | undefined)?.sharedBuffers?.bufCount);
    if (typeof n === 'number') bySize.set(s.size, n);
  }
  if (bySize.size === 0) return String(res.settings.bufCount ?? 'default');
  const counts = [...bySize.values()];
  const common = counts.sort((a, b) => counts.filter((x) => x === b).length - counts.filter((x) => x === a).length)[0];
  const odd = [...bySize].filter(([, n]) => n !== common).sort((a, b) => a[0] - b[0]);
  return String(common) + (odd.length ? ` (${odd.map(([size, n]) => `${n} for ${size} B`).join(', ')})` : '');
}

export function renderSummaryTable(res: BenchResults): string {
  return `Mpps (median of ${res.settings.runs} run${res.settings.runs > 1 ? 's' : ''}) by packet size, zcswitch/peer ratios:\n\n` +
    bySize(res, 'mpps');
}

export function renderMarkdown(res: BenchResults): string {
  const m = res.machine;
  const st = res.settings;
  const peers = peersWithData(res);
  const lc = m.lscpu;
  let md = `# zcswitch bench, ${res.startedAt}\n\n`;
  md += `Machine: ${m.cpuModel}, ${m.cpus} CPU${m.cpus > 1 ? 's' : ''}` +
    (lc['Hypervisor vendor'] ? ` (${lc['Virtualization type'] ?? 'virtual'}, ${lc['Hypervisor vendor']})` : '') +
    `, ${m.memGiB} GiB, ${m.os}, Linux ${m.kernel}, Node ${m.node}. Load average at start ${m.loadAvgStart.join(' ')}` +
    (m.loadAvgEnd ? `, at end ${m.loadAvgEnd.join(' ')}` : '') + `.\n\n`;
  md += `Settings: ${st.runs} run${st.runs > 1 ? 's' : ''} per scenario (fresh processes each run, scenarios interleaved), ` +
    `${st.warmupSec} s warm-up then ${st.durationSec} s measured; median [min–max] over runs. ` +
    `zcswitch: ${bufCountText(res)} shared buffers of ${st.bufSize ? `${st.bufSize} B (--buf-size)` : 'the smallest multiple of 64 ≥ size + 12 B'}, burst ${st.defaultBurst}, ` +
    `poll mode ${st.defaultPollMode} unless the row says otherwise${st.workers ? `, forwarding.workers ${st.workers} (--workers)` : ''}${st.pairExchange ? `, forwarding.pairExchange ${st.pairExchange} (--pair-exchange)` : ''}${st.pairs && st.pairs > 1 ? `; zc-oneway rows are the sum of ${st.pairs} pairs at once (--pairs)` : ''}. ` +
    (st.cpus ? `Processes pinned to CPUs ${st.cpus.join(', ')} (--cpus): the switch (or a peer's receiver), the receiver, the sender, in that order. `
      : st.pin ? 'Processes pinned (--pin): the switch (or a peer\'s receiver) alone on CPU 0, the others round robin on the rest. ' : '') +
    `Elapsed ${Math.round(res.elapsedSec)} s` +
    (res.aborted ? ' (**interrupted: partial results**)' : '') + `.\n\n`;
  md += `Peers:\n\n`;
  for (const p of res.peers) {
    md += `- ${p.group} (${GROUP_LABELS[p.group]}): ${p.status === 'ok' ? `ran, ${p.program}` : `**${p.status}**: ${p.reason}`}\n`;
  }
  md += `\nRatios (÷ peer) divide zcswitch's median Mpps by the peer's median Mpps at the same packet size in this same run; ` +
    `bidirectional rows count both directions against the peer's one-way rate.\n\n`;
  md += `## Packet rate by size (Mpps, median)\n\n${bySize(res, 'mpps')}\n`;
  md += `## Payload throughput by size (Gbit/s of Ethernet frame bytes, median)\n\n${bySize(res, 'gbps')}\n`;
  md += `## Sweeps\n\n${sweep(res, 'burst', peers)}${sweep(res, 'poll', peers)}`;
  md += `## Every scenario\n\n${detail(res, res.scenarios, peers)}\n`;
  md += gso(res);
  md += `## Cost per packet by process\n\n${costs(res)}\n`;
  md += `Busy = the process's work without its idle polling: zcswitch, the wall time of its poll rounds that moved at least one ` +
    `descriptor (stats dataPath.busySec); the zcswitch VMs, the wall time of their loop turns that moved at least one packet ` +
    `(the idle pass that ends a turn included; SIGUSR2 snapshots); OVS-DPDK, its PMD's processing share of the cycles (dpif-netdev/pmd-stats-show) times its PMD thread's ` +
    `CPU time; testpmd and the kernel ` +
    `peer do not report it (—). Busy and CPU time ÷ the packets delivered in the window (ns/pkt), or ÷ the window (load: 1.0 = ` +
    `a whole CPU). Short of buffers / room: the share of the zcswitch sender's send passes that sent less than a burst ` +
    `because its free buffers ran out (the peer's gifts or swaps not back yet) or its tx ring was full (the switch not taking ` +
    `them yet); a sender that is neither is held back by its own work. vm1 sends (gen, testpmd txonly, memif client, UDP sender), vm2 receives (sink or echo, testpmd rxonly, memif ` +
    `server, UDP receiver). Busy time is wall time: on a loaded machine it includes time the process lost its CPU in the middle of ` +
    `work, so it can exceed CPU time there.\n\n`;
  md += `Columns: Mpps and Gbit/s are measured at the receiver over the measured window (zcswitch: packets the switch ` +
    `delivered to the sink's rx queue; kernel: the receiver's recvmmsg count; DPDK: the rxonly testpmd's Rx-pps). ` +
    `Switch CPU = utime+stime of the switch process from /proc/<pid>/stat over the window ÷ packets (load: CPU s per s). ` +
    `All CPU adds the VM / peer processes. Copied B/pkt and gifts are the switch's counters ÷ packets. ` +
    `Drops: switch drop counters (zcswitch), socket overflows (kernel), vhost TX errors + RX missed (DPDK), tx + rx drops of the bridge ports (OVS-DPDK). ` +
    `See docs/PERFORMANCE.md.\n\n`;
  const problems = res.scenarios.filter((s) => s.status !== 'ok' || s.errors.length);
  if (problems.length) {
    md += `## Skipped and failed\n\n`;
    for (const s of problems) md += `- ${s.id}: ${s.status}${s.reason ? `: ${s.reason}` : ''}${s.errors.length && s.status === 'ok' ? ` (${s.errors.join('; ')})` : ''}\n`;
    md += '\n';
  }
  const warnings = new Map<string, string[]>();
  for (const s of res.scenarios) {
    for (const r of s.runs) for (const w of r.warnings) warnings.set(`${s.id}: ${w}`, []);
  }
  if (warnings.size) {
    md += `## Warnings\n\n${[...warnings.keys()].map((w) => `- ${w}`).join('\n')}\n`;
  }
  return md;
}
