/**
 * Prometheus text exposition (format 0.0.4) of the switch's stats, and the
 * optional loopback HTTP endpoint that serves it (`metrics.listen` in the
 * config; absent = off).
 *
 * formatMetrics() is a pure function of the stats object (what `zcswitch
 * stats --json` prints), so what Prometheus scrapes and what the CLI shows
 * are the same numbers. "rx" is what the switch received from the VM, "tx"
 * what it delivered to the VM, as in the stats table.
 */
import http from 'node:http';
import type { Logger } from '../log';
import { DROP_NAMES } from '../datapath/counters';
import type { SwitchStats } from './stats';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

type Labels = Record<string, string>;

interface Family {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
  samples: { labels: Labels; value: number }[];
}

/** Escape a label value: backslash, double quote and newline. */
function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Escape HELP text: backslash and newline. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function render(families: Family[]): string {
  let out = '';
  for (const f of families) {
    out += `# HELP ${f.name} ${escapeHelp(f.help)}\n# TYPE ${f.name} ${f.type}\n`;
    for (const s of f.samples) {
      const keys = Object.keys(s.labels);
      const labels = keys.length === 0 ? '' : `{${keys.map((k) => `${k}="${escapeLabel(s.labels[k]!)}"`).join(',')}}`;
      out += `${f.name}${labels} ${formatValue(s.value)}\n`;
    }
  }
  return out;
}

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v ?? 0));

/** Per-port counters exported as `zcswitch_port_<name>_total`: [metric suffix, counters key, help]. */
const PORT_COUNTERS: [string, string, string][] = [
  ['rx_packets', 'rxPackets', 'Packets the switch received from the VM (its transmit queue).'],
  ['rx_bytes', 'rxBytes', 'Frame bytes the switch received from the VM.'],
  ['tx_packets', 'txPackets', 'Packets the switch delivered to the VM (its receive queue).'],
  ['tx_bytes', 'txBytes', 'Frame bytes the switch delivered to the VM.'],
  ['zero_copy_packets', 'zeroCopy', 'Packets from the VM delivered by moving a descriptor (no payload byte copied).'],
  ['copied_packets', 'copied', 'Packets from the VM delivered by copying.'],
  ['copied_bytes', 'copiedBytes', 'Payload bytes the switch copied for the VM\'s packets.'],
  ['gifts_in', 'giftsIn', 'Gift buffers received from the VM.'],
  ['gifts_out', 'giftsOut', 'Gift buffers delivered to the VM.'],
  ['returned_buffers', 'returned', 'Shared buffers handed back to the VM (undeliverable, or delivered by copy).'],
  ['kicks', 'kicks', 'Notifications (kicks) received from the VM.'],
  ['calls', 'calls', 'Notifications (calls) sent to the VM.'],
  ['guest_memory_faults', 'guestMemoryFaults', 'Times the VM\'s memory vanished under the switch (SIGBUS survived; the VM was disconnected).'],
  ['gso_frames', 'gsoFrames', 'GSO frames (larger than the MTU, with gso_size) the switch received from the VM.'],
  ['segmented_frames', 'segmented', 'Frames the switch cut from GSO frames for the VM (it did not negotiate what they needed).'],
  ['checksummed_frames', 'checksummed', 'Frames whose open checksum the switch completed for the VM.'],
];

/** Queue counters: [metric suffix, queue entry key, help]. */
const QUEUE_COUNTERS: [string, 'rxPackets' | 'txPackets' | 'rxBytes' | 'txBytes', string][] = [
  ['rx_packets', 'rxPackets', 'Packets the switch received from the VM on this queue pair.'],
  ['rx_bytes', 'rxBytes', 'Frame bytes the switch received from the VM on this queue pair.'],
  ['tx_packets', 'txPackets', 'Packets the switch delivered to the VM on this queue pair.'],
  ['tx_bytes', 'txBytes', 'Frame bytes the switch delivered to the VM on this queue pair.'],
];

interface QueueEntry {
  index: number;
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
}

/** Multiqueue ports report per-queue-pair counters (absent in older stats). */
function queuesOf(p: SwitchStats['ports'][number]): QueueEntry[] | undefined {
  const q = (p as unknown as { queues?: unknown }).queues;
  return Array.isArray(q) ? (q as QueueEntry[]) : undefined;
}

/** The stats object as Prometheus text exposition format. */
export function formatMetrics(s: SwitchStats): string {
  const families: Family[] = [];
  const family = (name: string, type: Family['type'], help: string): Family => {
    const f: Family = { name, type, help, samples: [] };
    families.push(f);
    return f;
  };
  const gauge = (name: string, help: string, value: number, labels: Labels = {}) =>
    family(name, 'gauge', help).samples.push({ labels, value });

  gauge('zcswitch_info', 'Switch mode (pair or bridge); always 1.', 1, { mode: s.mode });
  gauge('zcswitch_uptime_seconds', 'Seconds since the switch started.', s.uptimeSec);
  gauge('zcswitch_shared_buffers', 'Buffers in each sharing domain\'s Shared Buffers region.', s.sharedBuffers.bufCount);
  gauge('zcswitch_shared_buffer_size_bytes', 'Bytes per shared buffer.', s.sharedBuffers.bufSize);
  gauge('zcswitch_pool_buffers', 'Shared buffers owned by no port (in the pools of all domains).', s.sharedBuffers.pool);
  if (s.dataPath) {
    family('zcswitch_datapath_busy_seconds_total', 'counter', 'Wall time of the poll rounds that moved at least one descriptor.')
      .samples.push({ labels: {}, value: s.dataPath.busySec });
    family('zcswitch_datapath_busy_rounds_total', 'counter', 'Poll rounds that moved at least one descriptor.')
      .samples.push({ labels: {}, value: s.dataPath.busyRounds });
  }
  gauge('zcswitch_ledger_balanced', '1 if the ownership ledger balances (every buffer has exactly one owner), else 0.', s.ledger.ok ? 1 : 0);

  const perPort = (name: string, type: Family['type'], help: string, value: (p: SwitchStats['ports'][number]) => number) => {
    const f = family(name, type, help);
    for (const p of s.ports) f.samples.push({ labels: { port: p.name }, value: value(p) });
  };
  const domain = family('zcswitch_port_domain', 'gauge', 'The port\'s sharing domain (label domain; a TAP uplink has none); always 1.');
  for (const p of s.ports) if (p.domain) domain.samples.push({ labels: { port: p.name, domain: p.domain }, value: 1 });
  // Bridge mode: each port's tenant settings (src/config/README.md).
  const tenant = family('zcswitch_port_tenant', 'gauge', 'Bridge mode: the port\'s bridge, VLANs (an access VLAN, or "trunk:" and the list) and isolation; always 1.');
  const limit = family('zcswitch_port_limit', 'gauge', 'Bridge mode: a rate limit of the port (direction rx/tx, unit pps or bps); absent when none.');
  for (const p of s.ports) {
    const t = p.policy;
    if (t === undefined) continue;
    const vlans = t.trunk.length > 0 ? `trunk:${t.trunk.join(',')}` : String(t.vlan);
    tenant.samples.push({ labels: { port: p.name, bridge: t.bridge, vlans, isolated: String(t.isolated) }, value: 1 });
    for (const dir of ['rx', 'tx'] as const) {
      for (const unit of ['pps', 'bps'] as const) {
        if (t.limit[dir][unit] > 0) limit.samples.push({ labels: { port: p.name, direction: dir, unit }, value: t.limit[dir][unit] });
      }
    }
  }
  perPort('zcswitch_port_attached', 'gauge', '1 if a front-end is connected to the port.', (p) => (p.attached ? 1 : 0));
  perPort('zcswitch_port_ready', 'gauge', '1 if the port\'s queues are running (it can carry traffic).', (p) => (p.ready ? 1 : 0));
  perPort('zcswitch_port_zero_copy', 'gauge', '1 if the front-end mapped the Shared Buffers region.', (p) => (p.zeroCopy ? 1 : 0));
  perPort('zcswitch_port_shared_bar', 'gauge', '1 if the VM maps its domain\'s region as an ivshmem BAR (found in its memory table).', (p) => (p.sharedBar ? 1 : 0));
  perPort('zcswitch_port_buffers_owned', 'gauge', 'Shared buffers the port owns now (ownership ledger).', (p) => p.buffersOwned);
  perPort('zcswitch_port_learned_macs', 'gauge', 'Bridge mode: MAC addresses learned on the port.', (p) => (p.macs ?? []).length);
  for (const [suffix, key, help] of PORT_COUNTERS) {
    perPort(`zcswitch_port_${suffix}_total`, 'counter', help, (p) => num((p.counters as Record<string, unknown>)[key]));
  }

  const drops = family('zcswitch_port_drops_total', 'counter', 'Packets or descriptors dropped, by reason (docs/operations.md).');
  for (const p of s.ports) {
    const d = ((p.counters as Record<string, unknown>).drops ?? {}) as Record<string, number>;
    // Every known reason, zeros included, so rate() works from the first scrape.
    const reasons = [...DROP_NAMES, ...Object.keys(d).filter((r) => !(DROP_NAMES as readonly string[]).includes(r))];
    for (const reason of reasons) drops.samples.push({ labels: { port: p.name, reason }, value: num(d[reason]) });
  }

  const queued = s.ports.filter((p) => (queuesOf(p)?.length ?? 0) > 0);
  if (queued.length > 0) {
    for (const [suffix, key, help] of QUEUE_COUNTERS) {
      const f = family(`zcswitch_queue_${suffix}_total`, 'counter', help);
      for (const p of queued) {
        for (const q of queuesOf(p)!) f.samples.push({ labels: { port: p.name, queue: String(q.index) }, value: num(q[key]) });
      }
    }
  }
  return render(families);
}

export interface MetricsServer {
  /** The address actually bound. */
  readonly address: string;
  close(): void;
}

/**
 * Serve GET /metrics on the configured loopback address, or do nothing when
 * metrics are off (null). Rejects with a message naming the address when it
 * cannot listen (in use, no such address).
 */
export async function startMetrics(
  cfg: { listen: string; host: string; port: number } | null | undefined,
  stats: () => SwitchStats,
  log: Logger,
): Promise<MetricsServer | null> {
  if (!cfg) return null;
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(url === '/' ? 'zcswitch: metrics are at /metrics\n' : 'not found; metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
      res.end('method not allowed\n');
      return;
    }
    let body: string;
    try {
      body = formatMetrics(stats());
    } catch (e) {
      log.error({ err: e }, 'metrics: cannot format stats');
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('internal error\n');
      return;
    }
    res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE, 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? 'address already in use' : e.code === 'EADDRNOTAVAIL' ? 'no such local address' : e.message;
      reject(new Error(`metrics.listen ${cfg.listen}: cannot listen: ${why}`));
    });
    server.listen(cfg.port, cfg.host, () => resolve());
  });
  server.on('error', (e) => log.error({ err: e }, 'metrics server error'));
  log.info({ listen: cfg.listen }, 'metrics endpoint listening (GET /metrics)');
  return {
    address: cfg.listen,
    close: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}
