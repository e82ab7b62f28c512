/** The machine a bench ran on: lscpu summary, kernel, memory, load. */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import type { MachineInfo } from './types';

const LSCPU_KEYS = [
  'Architecture', 'CPU(s)', 'On-line CPU(s) list', 'Model name', 'Thread(s) per core', 'Core(s) per socket', 'Socket(s)',
  'CPU max MHz', 'BogoMIPS', 'Hypervisor vendor', 'Virtualization type', 'L1d cache', 'L2 cache', 'L3 cache', 'NUMA node(s)',
];

export function machineInfo(): MachineInfo {
  const lscpu: Record<string, string> = {};
  try {
    const out = execFileSync('lscpu', [], { encoding: 'utf8', timeout: 5000, env: { ...process.env, LC_ALL: 'C' } });
    for (const line of out.split('\n')) {
      const m = /^([^:]+):\s*(.*)$/.exec(line);
      if (m && LSCPU_KEYS.includes(m[1].trim())) lscpu[m[1].trim()] = m[2].trim();
    }
  } catch {
    /* lscpu missing: os.cpus() below still says something */
  }
  let osName = `${os.type()} ${os.release()}`;
  try {
    const rel = fs.readFileSync('/etc/os-release', 'utf8');
    const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(rel);
    if (m) osName = m[1];
  } catch {
    /* keep uname */
  }
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    os: osName,
    kernel: os.release(),
    node: process.version,
    cpus: cpus.length,
    cpuModel: lscpu['Model name'] ?? cpus[0]?.model ?? 'unknown',
    lscpu,
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadAvgStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** sysconf(_SC_CLK_TCK), the unit of /proc/<pid>/stat times. */
export function clockTicksPerSec(): number {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 }).trim());
    if (n > 0) return n;
  } catch {
    /* fall through */
  }
  return 100;
}
