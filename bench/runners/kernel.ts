/**
 * The kernel peer: two processes exchanging UDP over loopback with
 * sendmmsg/recvmmsg (bench/peers/udp_mmsg.c, compiled here with cc at run
 * time into bench/.build/, which git ignores). The receiver's own counts
 * give the rate; SIGUSR1 asks it for a timestamped sample.
 */
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { type Child, startChild } from '../lib/child';
import { cpuPlan, onCpu } from '../lib/pin';
import { sleep, treeCpuSec, waitFor, which } from '../lib/util';
import type { RunMetrics, Scenario } from '../types';
import { type RunContext, processCosts, checkLength, perPacket, windowRates } from './common';

/** Ethernet (14) + IPv4 (20) + UDP (8): a frame of `size` bytes carries size - 42 bytes of UDP payload. */
export const UDP_OVERHEAD = 42;
const MAX_UDP_PAYLOAD = 65507;

export type HelperBuild = { ok: true; bin: string; cc: string } | { ok: false; reason: string };

/** Compile bench/peers/udp_mmsg.c (once; again only when the source is newer). */
export async function buildKernelHelper(repoRoot: string): Promise<HelperBuild> {
  const cc = which(process.env.CC || 'cc');
  if (!cc) return { ok: false, reason: `no C compiler: "${process.env.CC || 'cc'}" is not on PATH` };
  const src = path.join(repoRoot, 'bench', 'peers', 'udp_mmsg.c');
  if (!fs.existsSync(src)) return { ok: false, reason: `helper source ${src} is missing` };
  const dirs = [path.join(repoRoot, 'bench', '.build'), path.join(os.tmpdir(), `zcswitch-bench-build-${process.getuid?.() ?? 0}`)];
  let lastErr = '';
  for (const dir of dirs) {
    const bin = path.join(dir, 'udp_mmsg');
    try {
      fs.mkdirSync(dir, { recursive: true });
      const fresh = fs.existsSync(bin) && fs.statSync(bin).mtimeMs >= fs.statSync(src).mtimeMs;
      if (!fresh) await promisify(execFile)(cc, ['-O2', '-Wall', '-o', bin, src], { timeout: 60000 });
      return { ok: true, bin, cc };
    } catch (e) {
      lastErr = (e as { stderr?: string; message: string }).stderr || (e as Error).message;
    }
  }
  return { ok: false, reason: `cannot build the UDP helper with ${cc}: ${lastErr.trim().split('\n').slice(0, 3).join(' ')}` };
}

function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

interface Sample {
  ns: bigint;
  pkts: number;
  bytes: number;
  drops: number;
}

export function kernelPayload(size: number): number {
  return Math.min(MAX_UDP_PAYLOAD, Math.max(1, size - UDP_OVERHEAD));
}

export async function runKernel(s: Scenario, ctx: RunContext, bin: string): Promise<RunMetrics> {
  const port = await freeUdpPort();
  const payload = kernelPayload(s.size);
  const frameLen = payload + UDP_OVERHEAD;
  const cores = ctx.pin ? cpuPlan(2, undefined, ctx.cpus) : [null, null];
  ctx.setup({
    ...(ctx.pin ? { cpus: { receiver: cores[0], sender: cores[1] } } : {}),
    receiver: `udp_mmsg recv <port> ${s.burst}`,
    sender: `udp_mmsg send <port> ${payload} ${s.burst}`,
    udpPayload: payload,
    note: `frame-equivalent size = UDP payload + ${UDP_OVERHEAD} (Ethernet + IPv4 + UDP headers)`,
  });
  const children: Child[] = [];
  const warnings: string[] = [];
  try {
    const recv = startChild('udp recv', ...onCpu(cores[0], bin, ['recv', String(port), String(s.burst)]));
    children.push(recv);
    const samples: Sample[] = [];
    recv.onLine((line) => {
      const m = /^sample (\d+) (\d+) (\d+) (\d+)/.exec(line);
      if (m) samples.push({ ns: BigInt(m[1]), pkts: Number(m[2]), bytes: Number(m[3]), drops: Number(m[4]) });
    });
    await waitFor('the UDP receiver to bind', () => recv.stdout().includes('ready') || !recv.running(), 10000);
    if (!recv.running()) throw new Error(`UDP receiver exited:\n${recv.tail()}`);
    const send = startChild('udp send', ...onCpu(cores[1], bin, ['send', String(port), String(payload), String(s.burst)]));
    children.push(send);
    const sample = async (): Promise<Sample> => {
      const n = samples.length;
      recv.child.kill('SIGUSR1');
      await waitFor('a sample from the UDP receiver', () => samples.length > n || !recv.running(), 5000, 2);
      if (samples.length === n) throw new Error(`UDP receiver exited:\n${recv.tail()}`);
      return samples[samples.length - 1];
    };
    await waitFor('UDP traffic to flow', async () => {
      if (!send.running()) throw new Error(`UDP sender exited:\n${send.tail()}`);
      return (await sample()).pkts > 0;
    }, 10000, 50);
    await sleep(ctx.warmupSec * 1000);
    const cpu = () => ({ recv: treeCpuSec(recv.pid), send: treeCpuSec(send.pid) });
    const c0 = cpu();
    const t0 = performance.now();
    const a = await sample();
    await sleep(ctx.durationSec * 1000);
    const c1 = cpu();
    const b = await sample();
    const t1 = performance.now();
    const windowSec = Number(b.ns - a.ns) / 1e9;
    const packets = b.pkts - a.pkts;
    if (!(packets > 0)) throw new Error('no packets received in the measured window');
    const avgLen = (b.bytes - a.bytes) / packets + UDP_OVERHEAD;
    checkLength(avgLen, frameLen, warnings);
    if (frameLen !== s.size) warnings.push(`UDP caps the frame at ${frameLen} B`);
    const bytes = packets * frameLen;
    const delta = (k: 'recv' | 'send') => (c0[k] !== null && c1[k] !== null ? c1[k]! - c0[k]! : null);
    const recvCpu = delta('recv');
    const sendCpu = delta('send');
    const totalCpu = recvCpu !== null && sendCpu !== null ? recvCpu + sendCpu : null;
    await send.stop();
    await recv.stop();
    const sent = /sent (\d+)/.exec(send.stdout());
    return {
      ...windowRates(ctx.run, windowSec, packets, bytes),
      avgLen,
      ...processCosts(packets, windowSec, { vm1: { cpuSec: sendCpu, busySec: null }, vm2: { cpuSec: recvCpu, busySec: null } }),
      totalCpuNsPerPkt: perPacket(totalCpu, packets, 1e9),
      copiedBytesPerPkt: null,
      giftsPer1000: null,
      drops: b.drops - a.drops,
      extra: { harnessWindowSec: (t1 - t0) / 1000, senderTotal: sent ? Number(sent[1]) : null, udpPayload: payload },
      warnings,
    };
  } finally {
    for (const c of children.reverse()) await c.stop();
  }
}
