/**
 * `zcswitch stats`: ask a running switch for its per-port counters and print
 * a table (or the raw JSON with --json).
 */
import { controlRequest } from '../switch/control';
import type { PortStats, SwitchStats } from '../switch/stats';

export async function statsCommand(o: { control: string; json: boolean }): Promise<void> {
  let s: SwitchStats;
  try {
    s = (await controlRequest(o.control, { cmd: 'stats' })) as SwitchStats;
  } catch (e) {
    process.stderr.write(`zcswitch stats: ${(e as Error).message}\n`);
    process.exit(1);
  }
  if (o.json) {
    process.stdout.write(JSON.stringify(s, null, 2) + '\n');
    return;
  }
  process.stdout.write(renderStats(s));
}

interface QueueRow {
  index: number;
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
}

/** Learned MACs as one cell: all of them when few, else the count and the first two. */
/** An access port's VLAN, a trunk's "t:" list; "i" marks an isolated port, "lim" a rate limit. */
function vlanCell(p: PortStats['policy']): string {
  if (p === undefined) return '-';
  let s = p.trunk.length > 0 ? `t:${p.trunk.join(',')}` : String(p.vlan);
  if (p.isolated) s += ' i';
  if (p.limit.rx.pps || p.limit.rx.bps || p.limit.tx.pps || p.limit.tx.bps) s += ' lim';
  return s;
}

function macCell(macs: readonly string[]): string {
  if (macs.length === 0) return '-';
  if (macs.length <= 2) return macs.join(',');
  return `${macs.length}: ${macs.slice(0, 2).join(',')},...`;
}

/**
 * The table: one row per port, then (when the switch reports queues) one
 * indented row per queue pair with its packet counts. Bridge mode adds the
 * learned MACs.
 */
export function renderStats(s: SwitchStats): string {
  const bridge = s.mode === 'bridge';
  const head = ['port', 'domain', 'attached', 'zc', 'owned', 'rx pkts', 'tx pkts', 'rx bytes', 'tx bytes', 'zero-copy', 'copied B', 'gifts in/out', 'returned', 'gso/cut/csum'];
  if (bridge) head.push('bridge', 'vlan', 'macs');
  head.push('drops');
  const RX = head.indexOf('rx pkts');
  const TX = head.indexOf('tx pkts');
  const rows: string[][] = [];
  for (const p of s.ports) {
    const c = p.counters as Record<string, number> & { drops: Record<string, number> };
    // A front-end whose memory vanished under the switch (it was disconnected) shows with the drops.
    const events = Object.entries(c.drops).map(([k, v]) => `${k}=${v}`);
    if (c.guestMemoryFaults > 0) events.push(`guest-memory-fault=${c.guestMemoryFaults}`);
    const drops = events.join(',') || '0';
    // The zero-copy share: of the packets the switch took from this VM, how many moved without a copy.
    const share = c.rxPackets > 0 ? ` (${Math.round((100 * c.zeroCopy) / c.rxPackets)}%)` : '';
    const row = [p.name, p.domain ?? '-', p.attached ? 'yes' : 'no', p.zeroCopy ? 'yes' : 'no', String(p.buffersOwned), String(c.rxPackets),
      String(c.txPackets), String(c.rxBytes), String(c.txBytes), `${c.zeroCopy}${share}`, String(c.copiedBytes),
      `${c.giftsIn}/${c.giftsOut}`, String(c.returned), `${c.gsoFrames ?? 0}/${c.segmented ?? 0}/${c.checksummed ?? 0}`];
    if (bridge) row.push(p.policy?.bridge ?? '-', vlanCell(p.policy), macCell(p.macs ?? []));
    row.push(drops);
    rows.push(row);
    const queues = (p as { queues?: QueueRow[] }).queues;
    if (Array.isArray(queues)) {
      for (const q of queues) {
        const qr = head.map(() => '');
        qr[0] = `  q${q.index}`;
        qr[RX] = String(q.rxPackets);
        qr[TX] = String(q.txPackets);
        qr[RX + 2] = String(q.rxBytes);
        qr[TX + 2] = String(q.txBytes);
        rows.push(qr);
      }
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd() + '\n';
  const sb = s.sharedBuffers;
  const domains = sb.domains === undefined ? '' : ` per domain, ${sb.domains} domain${sb.domains === 1 ? '' : 's'}`;
  let out = `${s.mode} mode, up ${s.uptimeSec.toFixed(0)} s, shared buffers ${sb.bufCount} x ${sb.bufSize} B${domains}${sb.hugePages ? ' (huge pages)' : ''}, pool ${sb.pool}, ` +
    `ledger ${s.ledger.ok ? 'balanced' : 'UNBALANCED: ' + s.ledger.problems.join('; ')}\n`;
  out += line(head) + rows.map(line).join('');
  return out;
}
