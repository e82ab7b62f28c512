/**
 * `zcswitch macs [--bridge NAME]`: the learned MAC table of a running bridge
 * (every bridge, or one), one line per entry: bridge, VLAN, MAC, port, age.
 */
import { controlRequest } from '../switch/control';

export interface MacRow {
  bridge: string;
  vlan: number;
  mac: string;
  port: string;
  ageSec: number;
}

export function renderMacs(rows: readonly MacRow[]): string {
  const head = ['bridge', 'vlan', 'mac', 'port', 'age s'];
  const sorted = [...rows].sort((a, b) => a.bridge.localeCompare(b.bridge) || a.vlan - b.vlan || a.mac.localeCompare(b.mac));
  const cells = sorted.map((r) => [r.bridge, String(r.vlan), r.mac, r.port, r.ageSec.toFixed(1)]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (r: string[]) => r.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd() + '\n';
  return line(head) + cells.map(line).join('') + `${rows.length} learned\n`;
}

export async function macsCommand(o: { control: string; bridge?: string; json?: boolean }): Promise<void> {
  let r: Record<string, unknown>;
  try {
    r = (await controlRequest(o.control, { cmd: 'macs', bridge: o.bridge }, 10000)) as Record<string, unknown>;
  } catch (e) {
    process.stderr.write(`zcswitch macs: ${(e as Error).message}\n`);
    process.exit(1);
  }
  if (typeof r.error === 'string') {
    process.stderr.write(`zcswitch macs: ${r.error}\n`);
    process.exit(1);
  }
  const rows = r.macs as MacRow[];
  process.stdout.write(o.json ? JSON.stringify(rows) + '\n' : renderMacs(rows));
}
