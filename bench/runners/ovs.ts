/**
 * OVS-DPDK as the switch of the ovs-dpdk peer (bench/runners/dpdk.ts runs
 * the two testpmd VMs around it): a private ovsdb-server and
 * ovs-vswitchd (openvswitch-switch-dpdk) with their database, sockets and
 * logs in the run's temp folder, a netdev bridge with two
 * dpdkvhostuserclient ports and one in_port flow each way.
 *
 * What this machine taught (no hugepages, OVS 3.1):
 * - dpdk-extra "--no-huge -m 1024 --legacy-mem --no-pci": without it OVS
 *   adds --in-memory, which conflicts with --no-huge;
 * - per-port-memory=true: the shared mempool asks for 262,144 mbufs and fails;
 * - frames above 1500 B need mtu_request on both ports (9710 at most);
 * - the netdev bridge makes kernel taps that outlive the daemon: the daemon
 *   runs in a network namespace of its own (unshare -n), which takes them
 *   with it, and stops with `ovs-appctl exit --cleanup`;
 * - interface statistics in the database refresh every 5 s: live counters
 *   come from `ovs-ofctl dump-ports`.
 *
 * The PMD's busy share comes from `dpif-netdev/pmd-stats-show` (processing
 * cycles ÷ all cycles since `pmd-stats-clear`); runDpdk applies it to the
 * PMD thread's CPU time.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { type Child, startChild } from '../lib/child';
import { onCpu } from '../lib/pin';
import { waitFor, which } from '../lib/util';

const run = promisify(execFile);

/** OVS-DPDK's largest MTU (NETDEV_DPDK_MAX_PKT_LEN 9728 less Ethernet header and CRC). */
export const OVS_MAX_MTU = 9710;
const ETH_HEADER = 14;

export interface OvsTools {
  vswitchd: string;
  ovsdbServer: string;
  ovsdbTool: string;
  vsctl: string;
  ofctl: string;
  appctl: string;
  unshare: string;
  schema: string;
}

export type OvsLookup = { ok: true; tools: OvsTools } | { ok: false; reason: string };

const SCHEMAS = ['/usr/share/openvswitch/vswitch.ovsschema', '/usr/local/share/openvswitch/vswitch.ovsschema'];
/** Debian's openvswitch-switch-dpdk installs its DPDK-enabled daemon here (also an alternative for ovs-vswitchd). */
const DPDK_VSWITCHD = ['/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk'];

export function findOvs(): OvsLookup {
  const install = 'apt-get install openvswitch-switch-dpdk';
  const vswitchd = DPDK_VSWITCHD.find((p) => which(p)) ?? null;
  if (!vswitchd) return { ok: false, reason: `openvswitch-switch-dpdk is not installed (no ${DPDK_VSWITCHD[0]}); ${install}` };
  const tools: Partial<OvsTools> = { vswitchd };
  for (const [k, prog] of [['ovsdbServer', 'ovsdb-server'], ['ovsdbTool', 'ovsdb-tool'], ['vsctl', 'ovs-vsctl'], ['ofctl', 'ovs-ofctl'],
    ['appctl', 'ovs-appctl'], ['unshare', 'unshare']] as const) {
    const p = which(prog) ?? which(`/usr/sbin/${prog}`);
    if (!p) return { ok: false, reason: `${prog} is not on PATH (${prog === 'unshare' ? 'util-linux' : install})` };
    tools[k] = p;
  }
  const schema = SCHEMAS.find((p) => fs.existsSync(p));
  if (!schema) return { ok: false, reason: `the OVS database schema (vswitch.ovsschema) is missing; ${install}` };
  tools.schema = schema;
  try {
    execFileSync(tools.unshare!, ['-n', 'true'], { stdio: 'ignore', timeout: 5000 });
  } catch {
    return { ok: false, reason: 'ovs-vswitchd runs in a network namespace of its own (unshare -n), which needs root (CAP_SYS_ADMIN)' };
  }
  return { ok: true, tools: tools as OvsTools };
}

/** The MTU both ports need for a frame size, or null when OVS-DPDK cannot carry it. */
export function ovsMtu(size: number): number | null {
  const mtu = Math.max(1500, size - ETH_HEADER);
  return mtu <= OVS_MAX_MTU ? mtu : null;
}

export interface PortCounters {
  rxPackets: number;
  txPackets: number;
  txDrops: number;
  rxDrops: number;
}

/** `ovs-ofctl dump-ports` output: counters by OpenFlow port number. */
export function parseDumpPorts(out: string): Map<number, PortCounters> {
  const ports = new Map<number, PortCounters>();
  let cur: PortCounters | null = null;
  for (const line of out.split('\n')) {
    let m = /port\s+(\d+):\s*rx pkts=(\d+),.*?drop=(\d+)/.exec(line);
    if (m) {
      cur = { rxPackets: Number(m[2]), rxDrops: Number(m[3]), txPackets: 0, txDrops: 0 };
      ports.set(Number(m[1]), cur);
      continue;
    }
    if (/port\s+\S+:/.test(line)) {
      cur = null; // LOCAL and other named ports
      continue;
    }
    m = /^\s*tx pkts=(\d+),.*?drop=(\d+)/.exec(line);
    if (m && cur) {
      cur.txPackets = Number(m[1]);
      cur.txDrops = Number(m[2]);
    }
  }
  return ports;
}

/** `dpif-netdev/pmd-stats-show`: the PMD threads' idle and processing cycles (the main thread's are left out). */
export function parsePmdStats(out: string): { idleCycles: number; processingCycles: number; pmds: number } {
  let idle = 0;
  let processing = 0;
  let pmds = 0;
  let inPmd = false;
  for (const line of out.split('\n')) {
    if (/^pmd thread/.test(line)) {
      inPmd = true;
      pmds++;
      continue;
    }
    if (/^main thread/.test(line)) {
      inPmd = false;
      continue;
    }
    if (!inPmd) continue;
    let m = /idle cycles:\s*(\d+)/.exec(line);
    if (m) idle += Number(m[1]);
    m = /processing cycles:\s*(\d+)/.exec(line);
    if (m) processing += Number(m[1]);
  }
  return { idleCycles: idle, processingCycles: processing, pmds };
}

/** One private OVS-DPDK instance. */
export class OvsSwitch {
  readonly children: Child[] = [];
  vswitchd: Child | null = null;
  private readonly env: NodeJS.ProcessEnv;
  private readonly db: string;

  constructor(private readonly tools: OvsTools, private readonly dir: string) {
    this.db = `unix:${path.join(dir, 'db.sock')}`;
    // Every default path of the OVS tools into the run's folder: nothing touches /var/run/openvswitch.
    this.env = { OVS_RUNDIR: dir, OVS_DBDIR: dir, OVS_LOGDIR: dir, OVS_SYSCONFDIR: dir };
  }

  private async ctl(cmd: string, args: string[], timeoutMs = 30000): Promise<string> {
    try {
      const r = await run(cmd, args, { env: { ...process.env, ...this.env }, timeout: timeoutMs, maxBuffer: 1 << 20 });
      return r.stdout;
    } catch (e) {
      const err = e as Error & { stderr?: string };
      throw new Error(`${path.basename(cmd)} ${args.join(' ')} failed: ${(err.stderr || err.message).trim().split('\n').slice(-3).join(' / ')}`);
    }
  }

  vsctl(...args: string[]): Promise<string> {
    return this.ctl(this.tools.vsctl, [`--db=${this.db}`, '--timeout=30', ...args]);
  }

  ofctl(...args: string[]): Promise<string> {
    return this.ctl(this.tools.ofctl, [...args.slice(0, 1), `unix:${path.join(this.dir, 'br0.mgmt')}`, ...args.slice(1)]);
  }

  appctl(...args: string[]): Promise<string> {
    return this.ctl(this.tools.appctl, ['-t', path.join(this.dir, 'vswitchd.ctl'), ...args]);
  }

  /**
   * Database, daemon (pmdCpu: its PMD's core, and the whole daemon held
   * there; null: OVS's own choice, one PMD) and an empty netdev bridge.
   * filePrefix: DPDK's --file-prefix for the daemon (the caller removes its
   * runtime folder afterwards).
   */
  async start(pmdCpu: number | null, filePrefix: string): Promise<void> {
    const d = this.dir;
    await this.ctl(this.tools.ovsdbTool, ['create', path.join(d, 'conf.db'), this.tools.schema]);
    const db = startChild('ovsdb-server', this.tools.ovsdbServer, [
      path.join(d, 'conf.db'), `--remote=punix:${path.join(d, 'db.sock')}`, `--unixctl=${path.join(d, 'ovsdb-server.ctl')}`,
      `--pidfile=${path.join(d, 'ovsdb-server.pid')}`, `--log-file=${path.join(d, 'ovsdb-server.log')}`,
    ], this.env);
    this.children.push(db);
    await waitFor('ovsdb-server to listen', () => {
      if (!db.running()) throw new Error(`ovsdb-server exited:\n${db.tail()}`);
      return fs.existsSync(path.join(d, 'db.sock'));
    }, 10000);
    await this.vsctl('--no-wait', 'init');
    await this.vsctl('--no-wait', 'set', 'Open_vSwitch', '.', 'other_config:dpdk-init=true',
      // Its own --file-prefix: two runs (or a system OVS-DPDK) do not fight over DPDK's runtime files.
      `other_config:dpdk-extra=--no-huge -m 1024 --legacy-mem --no-pci --file-prefix ${filePrefix}`, 'other_config:per-port-memory=true',
      ...(pmdCpu !== null ? [`other_config:pmd-cpu-mask=0x${(1 << pmdCpu).toString(16)}`] : []));
    // Its own network namespace: the bridge's kernel tap goes away with the daemon.
    const sw = startChild('ovs-vswitchd', ...onCpu(pmdCpu, this.tools.unshare, [
      '-n', this.tools.vswitchd, this.db, `--pidfile=${path.join(d, 'ovs-vswitchd.pid')}`,
      `--log-file=${path.join(d, 'ovs-vswitchd.log')}`, `--unixctl=${path.join(d, 'vswitchd.ctl')}`,
    ]), this.env);
    this.children.push(sw);
    this.vswitchd = sw;
    await waitFor('ovs-vswitchd to start', () => {
      if (!sw.running()) throw new Error(`ovs-vswitchd exited:\n${sw.tail()}\n${this.logTail()}`);
      return fs.existsSync(path.join(d, 'vswitchd.ctl'));
    }, 30000, 50);
    await this.vsctl('add-br', 'br0', '--', 'set', 'bridge', 'br0', 'datapath_type=netdev');
  }

  /** Two dpdkvhostuserclient ports (vh0, vh1) connecting to the VMs' sockets, and vh0 <-> vh1 by in_port. */
  async connect(sockets: [string, string], mtu: number): Promise<void> {
    for (let i = 0; i < 2; i++) {
      await this.vsctl('add-port', 'br0', `vh${i}`, '--', 'set', 'Interface', `vh${i}`, 'type=dpdkvhostuserclient',
        `options:vhost-server-path=${sockets[i]}`, `mtu_request=${mtu}`);
    }
    await this.ofctl('del-flows');
    await this.ofctl('add-flow', 'in_port=vh0,actions=output:vh1');
    await this.ofctl('add-flow', 'in_port=vh1,actions=output:vh0');
  }

  /** OpenFlow port numbers of vh0 and vh1. */
  async portNumbers(): Promise<[number, number]> {
    const n = async (p: string) => Number((await this.vsctl('get', 'Interface', p, 'ofport')).trim());
    return [await n('vh0'), await n('vh1')];
  }

  async dumpPorts(): Promise<Map<number, PortCounters>> {
    return parseDumpPorts(await this.ofctl('dump-ports'));
  }

  async clearPmdStats(): Promise<void> {
    await this.appctl('dpif-netdev/pmd-stats-clear');
  }

  async pmdStats(): Promise<ReturnType<typeof parsePmdStats>> {
    return parsePmdStats(await this.appctl('dpif-netdev/pmd-stats-show'));
  }

  /** The daemon's log, last lines (for error messages). */
  logTail(lines = 6): string {
    try {
      return fs.readFileSync(path.join(this.dir, 'ovs-vswitchd.log'), 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** exit --cleanup (ports and bridge go, the namespace with them), then the database; SIGTERM/SIGKILL whatever is left. */
  async stop(): Promise<void> {
    if (this.vswitchd?.running()) {
      await this.appctl('exit', '--cleanup').catch(() => undefined);
      await Promise.race([this.vswitchd.exited, new Promise((r) => setTimeout(r, 5000))]);
    }
    const db = this.children[0];
    if (db?.running()) await this.ctl(this.tools.appctl, ['-t', path.join(this.dir, 'ovsdb-server.ctl'), 'exit'], 5000).catch(() => undefined);
    for (const c of [...this.children].reverse()) await c.stop(3000);
  }
}
