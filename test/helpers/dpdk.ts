/**
 * Run DPDK's dpdk-testpmd (from Debian's dpdk-dev) the way this machine
 * allows: no hugepages, no PCI, no shared config. Started with -a
 * (auto-start forwarding); "quit" is an Enter on stdin; the final forward
 * statistics are parsed from its output.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import { which } from './external';
import { type SwitchProc, type VmResult, counters } from './procs';
import { waitFor, within } from './wait';

export function testpmdPath(): string | null {
  const env = process.env.ZC_DPDK_TESTPMD;
  if (env) return env;
  return which('dpdk-testpmd');
}

export interface Testpmd {
  child: ChildProcess;
  output: () => string;
  /** Press Enter: testpmd stops forwarding, prints statistics and exits. */
  quit(): Promise<ForwardStats>;
  kill(): void;
  /** testpmd has exited (and its runtime folder is gone). */
  exited: Promise<void>;
}

export interface ForwardStats {
  rxPackets: number;
  rxDropped: number;
  txPackets: number;
  txDropped: number;
}

let prefixes = 0;

/** Start testpmd with one vdev and a forwarding mode; resolves once it forwards. */
export async function startTestpmd(vdev: string, fwdArgs: string[]): Promise<Testpmd> {
  const bin = testpmdPath();
  if (!bin) throw new Error('dpdk-testpmd not found');
  const prefix = `zct${process.pid}-${prefixes++}`;
  const args = [
    '-l', '0-1', '--no-huge', '--no-pci', '--no-shconf', '-m', '512', `--file-prefix=${prefix}`,
    '--log-level', 'lib.eal:error', '--vdev', vdev, '--', '--total-num-mbufs=8192', '-a', ...fwdArgs,
  ];
  // testpmd's stdout is block-buffered into a pipe: unbuffer it so "Press enter" shows up.
  const child = spawn('stdbuf', ['-o0', '-e0', bin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  // EAL leaves a runtime folder per file prefix even with --no-shconf.
  const exited = new Promise<void>((r) =>
    child.on('close', () => {
      fs.rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
      r();
    }),
  );
  await waitFor('testpmd to start forwarding', () => out.includes('Press enter to exit') || child.exitCode !== null, 30000);
  if (child.exitCode !== null) throw new Error(`testpmd exited: ${out}`);
  return {
    child,
    output: () => out,
    quit: async () => {
      child.stdin!.write('\n');
      await within(exited, 10000);
      if (child.exitCode === null) child.kill('SIGKILL');
      return parseForwardStats(out);
    },
    kill: () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
    exited,
  };
}

/** The "Accumulated forward statistics" block testpmd prints when it stops. */
export function parseForwardStats(out: string): ForwardStats {
  const block = out.slice(out.lastIndexOf('Accumulated forward statistics'));
  const num = (re: RegExp) => Number(block.match(re)?.[1] ?? NaN);
  return {
    rxPackets: num(/RX-packets:\s+(\d+)/),
    rxDropped: num(/RX-dropped:\s+(\d+)/),
    txPackets: num(/TX-packets:\s+(\d+)/),
    txDropped: num(/TX-dropped:\s+(\d+)/),
  };
}

/**
 * End a testpmd txonly run into a guest-driver sink on vm2 (testpmd on vm1):
 * quit testpmd, wait for vm1 to detach, stop the sink; returns testpmd's
 * forward stats, the sink's result and both ports' counters.
 */
export async function endTxonlyRun(sw: SwitchProc, pmd: Testpmd, sink: { child: ChildProcess; result: Promise<VmResult> }) {
  const st = await pmd.quit();
  await waitFor('vm1 to detach', async () => !(await sw.port('vm1')).attached);
  sink.child.kill('SIGTERM');
  const k = await sink.result;
  const s = await sw.stats();
  const c1 = counters(s.ports.find((p) => p.name === 'vm1')!);
  const c2 = counters(s.ports.find((p) => p.name === 'vm2')!);
  return { st, k, s, c1, c2 };
}
