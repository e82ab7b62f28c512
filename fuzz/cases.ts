/**
 * Case generators: each case is one hostile connection's life, generated
 * from a PRNG seeded by (run seed, case index) alone, so `--seed S
 * --only-case I` replays it exactly whatever else the run did. A case
 * returns a one-line description of what it did (printed when it fails).
 */
import fs from 'node:fs';
import { memTable, u64, vringAddr, vringState } from '../src/vhost/codec';
import {
  FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, HEADER, MAX_FDS, MAX_PAYLOAD, PROTOCOL_F_REPLY_ACK, Req,
  VRING_NOFD_MASK, VIRTIO_NET_HDR_F_GIFT_BUFFER,
} from '../src/vhost/protocol';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_MAX_CHAIN, bit } from '../src/virtio/defs';
import { prngU32 } from '../test/helpers/prng';
import { sleep } from '../test/helpers/wait';
import { FD_KINDS, type FdFactory, type FdKind, GPA, Hostile, RING_STRIDE, UADDR } from './hostile';

/** The case kinds, in the order case indices cycle through them. */
export const KINDS = ['msg', 'memtable', 'shrink', 'ring', 'shared', 'notifier'] as const;
export type Kind = (typeof KINDS)[number];

export const KIND_HELP: Record<Kind, string> = {
  msg: 'vhost-user messages: every request id and unknown ones, payload sizes 0/short/exact/long/huge, 0..12 fds of every kind, bad flags',
  memtable: 'SET_MEM_TABLE that lies: region bigger than its fd, offset past the end, overlaps, the Shared Buffers window, zero size, huge addresses',
  shrink: 'a proper set-up with traffic, then the memfd is ftruncated under the switch',
  ring: 'rings full of garbage: random descriptors and chains, indexes running ahead, readable/writable mixups, addresses in and out',
  shared: 'SHARED_BUFFERS misuse: sending, gifting, posting buffers not owned, double posting, hoarding, garbage gift chains',
  notifier: 'kick/call/err fds that are not eventfds (pipe, file, /dev/zero, socket, dir, memfd), with traffic',
};

export interface CaseEnv {
  sock: string;
  fds: FdFactory;
}

export interface CaseResult {
  kind: Kind;
  what: string;
  /** The switch accepted us at all (a port still held by a previous case is not a switch failure). */
  connected: boolean;
}

/** Case index -> kind: fixed, so a replay never depends on --kinds. */
export function kindOf(index: number): Kind {
  return KINDS[index % KINDS.length];
}

/** The PRNG of one case: mixes seed and index (splitmix-like) into mulberry32's state. */
export function caseRng(seed: number, index: number): Rng {
  let x = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 0x632be5ab, 0x85ebca6b)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d) >>> 0;
  return new Rng(prngU32(x ^ (x >>> 15)));
}

export class Rng {
  constructor(readonly u32: () => number) {}
  f(): number {
    return this.u32() / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.f() * n);
  }
  chance(p: number): boolean {
    return this.f() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }
}

// ---- shared vocabulary

const V = FLAG_VERSION;
const ALL_IDS = Object.values(Req) as number[];
const UNKNOWN_IDS = [0, 41, 42, 99, 0x5a01, 0x59ff, 0x7fffffff, 0xffffffff];

function flagsOf(r: Rng): number {
  return r.pick([V, V, V, V | FLAG_NEED_REPLY, V | FLAG_NEED_REPLY, V | FLAG_REPLY, 0, 2, 3, V | FLAG_REPLY | FLAG_NEED_REPLY, r.u32()]);
}

function fdKinds(r: Rng): FdKind {
  return r.pick(FD_KINDS);
}

/** A ring index worth trying: the real ones, the next queue pairs, past the end, the no-fd bit. */
function ringIndex(r: Rng): number {
  return r.pick([0, 1, 0, 1, 2, 3, 15, 16, 17, 255, 256, VRING_NOFD_MASK | r.int(4), r.u32()]);
}

function ringNum(r: Rng): number {
  return r.pick([0, 1, 2, 3, 64, 255, 256, 256, 1024, 32768, 32769, 65535, 65536, r.u32()]);
}

/** Memory-table regions that lie, against `fdSize` bytes of real memfd. */
function lyingRegions(r: Rng, fdSize: number, window: { base: number; size: number }): { regions: Parameters<typeof memTable>[0]; lie: string } {
  const n = r.pick([1, 1, 1, 2, 3, 8, 9, 0]);
  const lies: string[] = [];
  const regions = Array.from({ length: n }, (_, i) => {
    let gpa = BigInt(GPA + i * 0x100_0000);
    let size = BigInt(fdSize);
    let ua = BigInt(UADDR + i * 0x100_0000);
    let off = 0n;
    const lie = r.pick(['none', 'bigger', 'much-bigger', 'offset-past', 'offset-unaligned', 'overlap', 'window', 'window-edge', 'zero', 'huge-gpa', 'wrap', 'huge-size', 'ua-overlap', 'offset-wrap']);
    switch (lie) {
      case 'bigger': size = BigInt(fdSize * 2); break;
      case 'much-bigger': size = 1n << 30n; break;
      case 'offset-past': off = BigInt(fdSize + 4096); break;
      case 'offset-unaligned': off = 1n + BigInt(r.int(4095)); break;
      case 'overlap': gpa = BigInt(GPA); ua = BigInt(UADDR); break;
      case 'window': gpa = BigInt(window.base + r.int(Math.max(1, window.size / 4096)) * 4096); break;
      case 'window-edge': gpa = BigInt(window.base - fdSize / 2); break;
      case 'zero': size = 0n; break;
      case 'huge-gpa': gpa = 0xffff_ffff_ffff_0000n; break;
      case 'wrap': gpa = 0xffff_ffff_ffff_f000n; size = 0x10000n; break;
      case 'huge-size': size = 0x7fff_ffff_ffff_ffffn; break;
      case 'ua-overlap': ua = BigInt(UADDR); break;
      case 'offset-wrap': off = 0xffff_ffff_ffff_f000n; break;
    }
    lies.push(lie);
    return { guestPhysAddr: gpa, memorySize: size, userspaceAddr: ua, mmapOffset: off };
  });
  return { regions, lie: lies.join('+') || 'no-regions' };
}

/** An address for a descriptor: our data slots, our rings, shared buffers (whole, inside, the end), outside, garbage. */
function addrOf(r: Rng, h: Hostile): number {
  const g = h.geo;
  const choices: (() => number)[] = [
    () => GPA + h.dataOff(r.int(64)),
    () => GPA + h.dataOff(r.int(64)) + r.int(2048),
    () => GPA + r.int(2 * h.stride),
    () => GPA + h.memSize - r.int(64),
    () => GPA + h.memSize + r.int(1 << 20),
    () => GPA - 1 - r.int(4096),
    () => 0,
    () => r.int(2 ** 48),
    () => 2 ** 53 - r.int(4096),
  ];
  if (g) {
    choices.push(
      () => g.base + r.int(g.bufCount) * g.bufSize,
      () => g.base + (g.partitionStart + r.int(Math.max(1, g.partitionCount))) * g.bufSize,
      () => g.base + r.int(g.size),
      () => g.base + g.size - r.int(64),
      () => g.base + g.size,
      () => g.base - 12,
    );
  }
  return r.pick(choices)();
}

function lenOf(r: Rng, h: Hostile): number {
  const b = h.geo?.bufSize ?? 2048;
  return r.pick([0, 1, 11, 12, 13, 25, 26, 60, 64, 1514, b - 1, b, b + 1, 65547, 0x7fffffff, 0xffffffff, r.u32(), r.int(70000)]);
}

function descFlags(r: Rng): number {
  return r.pick([0, 0, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT, 0xffff, r.u32() & 0xffff]);
}

/** Write a random chain at `head` and publish it; returns the number of descriptors. */
function garbageChain(r: Rng, h: Hostile, ring: number, head: number): number {
  const n = r.pick([1, 1, 2, 3, 4, 8, VIRTQ_MAX_CHAIN, VIRTQ_MAX_CHAIN + 1, 200]);
  const num = Math.max(1, h.num);
  for (let i = 0; i < n; i++) {
    const idx = (head + i) % num;
    const next = r.chance(0.75) ? (head + i + 1) % num : r.pick([head, idx, r.int(num), num, num + r.int(100), 0xffff]);
    const last = i === n - 1;
    let flags = descFlags(r);
    if (!last && r.chance(0.7)) flags |= VIRTQ_DESC_F_NEXT;
    if (last && r.chance(0.7)) flags &= ~VIRTQ_DESC_F_NEXT;
    h.writeDesc(ring, idx, addrOf(r, h), lenOf(r, h), flags, next);
  }
  return n;
}

/** Publish `count` heads on a ring, sometimes with the index running ahead or backwards. */
function publish(r: Rng, h: Hostile, ring: number, heads: number[], exact = false): void {
  let idx = h.availIdx(ring);
  for (const hd of heads) h.putAvail(ring, idx++, hd);
  const mode = exact ? 'exact' : r.pick(['exact', 'exact', 'exact', 'ahead', 'way-ahead', 'back', 'wild']);
  const n = Math.max(1, h.num);
  const target = { exact: idx, ahead: idx + n + 1, 'way-ahead': idx + 0x8000, back: idx - 2 * heads.length - 1, wild: r.u32() }[mode as 'exact'];
  h.setAvailIdx(ring, target);
  if (r.chance(0.1)) h.setAvailFlags(ring, r.u32());
  if (r.chance(0.1)) h.scribbleUsed(ring, r.u32(), r.u32());
}

// ---- the kinds

async function caseMsg(r: Rng, env: CaseEnv, h: Hostile): Promise<string> {
  const what: string[] = [];
  // Sometimes get part-way into a real session first, so later messages reach deeper handlers.
  if (r.chance(0.4)) {
    const ok = await h.setup({ zeroCopy: r.chance(0.6), num: 256, memSize: 256 * 1024 });
    what.push(ok ? 'setup' : 'setup-refused');
  } else if (r.chance(0.5)) {
    h.send(Req.SET_PROTOCOL_FEATURES, V, u64(bit(PROTOCOL_F_REPLY_ACK)));
    what.push('reply-ack');
  }
  const count = 1 + r.int(12);
  for (let m = 0; m < count && !h.closed; m++) {
    const req = r.chance(0.85) ? r.pick(ALL_IDS) : r.chance(0.7) ? r.pick(UNKNOWN_IDS) : r.u32();
    const flags = flagsOf(r);
    const sizeClass = r.pick(['zero', 'short', 'exact', 'exact', 'exact', 'long', 'max', 'huge', 'partial', 'noheader']);
    let payload: Buffer;
    const exact = exactPayload(r, req, h);
    switch (sizeClass) {
      case 'zero': payload = Buffer.alloc(0); break;
      case 'short': payload = exact.length > 1 ? exact.subarray(0, r.int(exact.length)) : r.bytes(1 + r.int(7)); break;
      case 'long': payload = Buffer.concat([exact, r.bytes(1 + r.int(64))]); break;
      case 'max': payload = r.bytes(r.pick([MAX_PAYLOAD, MAX_PAYLOAD + 1])); break;
      default: payload = exact;
    }
    const nfd = r.pick([0, 0, 0, 1, 1, 1, 2, 3, MAX_FDS, MAX_FDS + 1, 12]);
    const kinds: FdKind[] = [];
    const fds: number[] = [];
    for (let i = 0; i < nfd; i++) {
      const k = req === Req.SET_MEM_TABLE && r.chance(0.5) ? 'memfd' : fdKinds(r);
      kinds.push(k);
      fds.push(h.fd(k, r.pick([4096, 65536, 256 * 1024])));
    }
    let sent: boolean;
    if (sizeClass === 'huge') {
      // A header that claims more than anything legal, followed by a little.
      const hdr = HEADER.encode({ request: req, flags, size: r.pick([MAX_PAYLOAD + 1, 1 << 20, 0x7fffffff, 0xffffffff]) });
      sent = h.sendRaw(Buffer.concat([hdr, r.bytes(r.int(32))]), fds);
    } else if (sizeClass === 'partial') {
      // A header promising more than we send, then we go quiet for a moment.
      const hdr = HEADER.encode({ request: req, flags, size: exact.length + 8 });
      sent = h.sendRaw(Buffer.concat([hdr, exact.subarray(0, r.int(exact.length + 1))]), fds);
      await sleep(r.int(5));
    } else if (sizeClass === 'noheader') {
      sent = h.sendRaw(r.bytes(1 + r.int(HEADER.size - 1)), fds);
    } else {
      sent = h.send(req, flags, payload, fds);
    }
    what.push(`${req.toString(16)}/${flags.toString(16)}/${sizeClass}${payload.length}/${kinds.join('.') || 'nofd'}${sent ? '' : '!'}`);
    if (r.chance(0.3)) await h.recv(r.pick([1, 5, 20]));
  }
  if (r.chance(0.5)) await h.barrier(200);
  return what.join(' ');
}

/** A payload of the right size for `req`, with contents chosen to reach past the size check. */
function exactPayload(r: Rng, req: number, h: Hostile): Buffer {
  switch (req) {
    case Req.SET_FEATURES:
    case Req.SET_PROTOCOL_FEATURES:
    case Req.SET_LOG_BASE:
    case Req.SET_STATUS:
      return u64(r.chance(0.5) ? r.u64() : BigInt(r.u32()));
    case Req.SET_VRING_KICK:
    case Req.SET_VRING_CALL:
    case Req.SET_VRING_ERR:
      return u64(BigInt(ringIndex(r)));
    case Req.SET_VRING_NUM:
    case Req.SET_VRING_BASE:
    case Req.GET_VRING_BASE:
    case Req.SET_VRING_ENABLE:
      return vringState(ringIndex(r), ringNum(r));
    case Req.SET_VRING_ADDR: {
      const a = () => BigInt(r.pick([UADDR, UADDR + r.int(1 << 20), 0, r.u32(), UADDR - 16]));
      return vringAddr({ index: ringIndex(r), flags: r.pick([0, 1, r.u32()]), desc: a(), used: a(), avail: a(), log: r.u64() });
    }
    case Req.SET_MEM_TABLE:
      return memTable(lyingRegions(r, 65536, h.geo ?? { base: 0x40_0000_0000, size: 4096 * 2048 }).regions);
    case Req.ADD_MEM_REG:
    case Req.REM_MEM_REG:
      return Buffer.concat([Buffer.alloc(8), memTable(lyingRegions(r, 65536, { base: 0x40_0000_0000, size: 1 << 23 }).regions).subarray(8, 40)]);
    default:
      return r.chance(0.5) ? Buffer.alloc(0) : r.bytes(r.pick([8, 8, 16, 40, 48]));
  }
}

async function caseMemtable(r: Rng, env: CaseEnv, h: Hostile): Promise<string> {
  const fdSize = r.pick([4096, 65536, 256 * 1024]);
  const zc = r.chance(0.5);
  const ok = await h.setup({ zeroCopy: zc, num: 256, memSize: 256 * 1024, memTable: false, rings: false });
  if (!ok) return 'setup-refused';
  const window = h.geo ?? { base: 0x40_0000_0000, size: 4096 * 2048 };
  const { regions, lie } = lyingRegions(r, fdSize, window);
  // The fds: our real memory for region 0 (so rings placed there resolve), others of any kind.
  const fds = regions.map((_, i) => (i === 0 && r.chance(0.6) ? h.memFd : r.chance(0.7) ? h.fd('memfd', fdSize) : h.fd(fdKinds(r))));
  if (r.chance(0.1)) fds.pop(); // one fd short
  const sentTable = h.send(Req.SET_MEM_TABLE, V, memTable(regions), fds);
  let tail = '';
  if (sentTable && r.chance(0.7)) {
    // Put rings where the lie points (past the fd's end, inside the window), and traffic through it.
    const where = r.pick(['ours', 'past-fd', 'region0-end', 'window']);
    const base = { ours: UADDR, 'past-fd': UADDR + fdSize + 4096, 'region0-end': UADDR + Number(regions[0]?.memorySize ?? 0n) - 4096, window: window.base }[where as 'ours'];
    h.startRings(base);
    for (let k = 0; k < 4; k++) {
      const heads = [k];
      garbageChain(r, h, 1, k);
      publish(r, h, 1, heads);
      h.writeDesc(0, k, GPA + fdSize + r.int(1 << 20), 2048, VIRTQ_DESC_F_WRITE, 0);
      publish(r, h, 0, [k]);
      h.kickRing(0);
      h.kickRing(1);
      await sleep(1);
    }
    tail = ` rings@${where}`;
  }
  await h.barrier(300);
  return `${zc ? 'zc' : 'classic'} fd${fdSize} ${regions.length}x ${lie}${sentTable ? '' : '!'}${tail}`;
}

/** Copy-path traffic on our own memory: rx copy targets and tx frames in data slots. */
function legitTraffic(r: Rng, h: Hostile, k: number): void {
  const slot = k % 48;
  // rx: a writable copy target.
  h.writeDesc(0, k, GPA + h.dataOff(slot), 2048, VIRTQ_DESC_F_WRITE, 0);
  publish(r, h, 0, [k % h.num], true);
  // tx: header + a 60-byte frame in one descriptor.
  const off = h.dataOff(48 + (k % 8));
  if (h.mem && off + 72 <= h.memSize) {
    h.mem.fill(0, off, off + 12);
    h.mem.set([2, 0, 0, 0, 0, 0xff, 2, 0, 0, 0, 0, 0x10, 0x08, 0x00], off + 12);
  }
  h.writeDesc(1, k, GPA + off, 72, 0, 0);
  let idx = h.availIdx(1);
  h.putAvail(1, idx++, k % h.num);
  h.setAvailIdx(1, idx);
}

async function caseShrink(r: Rng, env: CaseEnv, h: Hostile): Promise<string> {
  const memSize = 256 * 1024;
  const ok = await h.setup({ zeroCopy: r.chance(0.5), num: 256, memSize });
  if (!ok) return 'setup-refused';
  const before = r.int(20);
  for (let k = 0; k < before; k++) {
    legitTraffic(r, h, k);
    h.kickRing(0);
    h.kickRing(1);
    if (r.chance(0.3)) await sleep(1);
  }
  const to = r.pick([0, 0, 4096, h.stride, 2 * h.stride, 2 * h.stride + 4096, memSize / 2 + 1]);
  const when = r.pick(['traffic', 'remap', 'idle']);
  if (when === 'remap') {
    h.truncate(to);
    h.sendMemTable(); // the switch maps it again: now bigger than the fd
  } else {
    h.truncate(to);
  }
  // Keep going: kicks, and traffic where our own memory still exists.
  for (let k = 0; k < 10; k++) {
    if (when !== 'idle') legitTraffic(r, h, before + k);
    h.kickRing(0);
    h.kickRing(1);
    await sleep(1);
  }
  if (r.chance(0.3)) h.truncate(memSize); // grow back: the hole reads as zeros
  await h.barrier(300);
  return `before=${before} truncate-to=${to} ${when}`;
}

async function caseRing(r: Rng, env: CaseEnv, h: Hostile): Promise<string> {
  const num = r.pick([256, 256, 256, 1, 2, 64, 512]);
  const zc = r.chance(0.6);
  const ok = await h.setup({ zeroCopy: zc, num, memSize: 256 * 1024 });
  if (!ok) return `num=${num} setup-refused`;
  const rounds = 1 + r.int(12);
  const acts: string[] = [];
  for (let round = 0; round < rounds && !h.closed; round++) {
    const ring = r.pick([0, 1, 1]);
    const heads: number[] = [];
    const chains = 1 + r.int(8);
    let at = r.int(Math.max(1, num));
    for (let c = 0; c < chains; c++) {
      const n = garbageChain(r, h, ring, at);
      heads.push(r.chance(0.9) ? at : r.pick([num, 0xffff, r.u32() & 0xffff]));
      at = (at + n) % Math.max(1, num);
    }
    publish(r, h, ring, heads);
    const side = r.pick(['kick', 'kick', 'none', 'remap', 'stop', 'rebase']);
    if (side === 'kick') h.kickRing(ring);
    else if (side === 'remap') h.sendMemTable();
    else if (side === 'stop') await h.call(Req.GET_VRING_BASE, V, vringState(ring, 0), [], 100);
    else if (side === 'rebase') {
      h.send(Req.SET_VRING_BASE, V, vringState(ring, r.u32() & 0xffff));
      h.send(Req.SET_VRING_ENABLE, V, vringState(ring, 1));
    }
    acts.push(`${ring}:${chains}${side[0]}`);
    await sleep(r.int(3));
  }
  await h.barrier(300);
  return `num=${num} ${zc ? 'zc' : 'classic'} ${acts.join(',')}`;
}

async function caseShared(r: Rng, env: CaseEnv, h: Hostile): Promise<string> {
  // Half the time with rx descriptors by buffer: the switch re-posts what we send, and refuses postings out of place.
  const byBuffer = r.chance(0.5);
  // Half the time told of returns in the used len (it changes only what the switch writes us).
  const returnedInUsed = r.chance(0.5);
  const ok = await h.setup({ zeroCopy: true, num: 1024, memSize: 512 * 1024, rxByBuffer: byBuffer, returnedInUsed });
  const g = h.geo;
  if (!ok || !g) return 'setup-refused';
  const buf = (b: number) => g.base + b * g.bufSize;
  const mine = () => g.partitionStart + r.int(Math.max(1, g.partitionCount));
  const notMine = () => {
    const b = r.int(g.bufCount);
    return b >= g.partitionStart && b < g.partitionStart + g.partitionCount ? (g.partitionStart + g.partitionCount + b) % g.bufCount : b;
  };
  const anyBuf = () => (r.chance(0.5) ? mine() : notMine());
  let txAt = 0;
  let rxAt = 0;
  const acts: string[] = [];
  const steps = 1 + r.int(10);
  for (let s = 0; s < steps && !h.closed; s++) {
    const act = r.pick([
      'send-not-owned', 'send-owned', 'gift-not-owned', 'gift-chain', 'post-not-owned', 'double-post', 'post-all', 'hoard', 'regift',
      'second-get', 'post-at-b', 'copy-low',
    ]);
    acts.push(act);
    switch (act) {
      case 'send-not-owned':
      case 'send-owned': {
        const heads: number[] = [];
        for (let k = 0; k < 1 + r.int(16); k++) {
          const b = act === 'send-owned' ? mine() : notMine();
          h.writeDesc(1, txAt, buf(b), r.pick([60, 64, 1514, g.bufSize, g.bufSize + 1, 12]), 0, 0);
          heads.push(txAt);
          txAt = (txAt + 1) % h.num;
        }
        publish(r, h, 1, heads);
        h.kickRing(1);
        break;
      }
      case 'gift-not-owned':
      case 'regift': {
        const b = act === 'regift' ? mine() : notMine();
        for (let k = 0; k < 2; k++) {
          // regift: the same owned buffer twice in a row (the second is no longer ours).
          h.writeDesc(1, txAt, buf(b), 12, 0, 0);
          publish(r, h, 1, [txAt]);
          txAt = (txAt + 1) % h.num;
        }
        h.kickRing(1);
        break;
      }
      case 'gift-chain': {
        const n = r.pick([2, 8, VIRTQ_MAX_CHAIN, VIRTQ_MAX_CHAIN + 1, 100]);
        const head = txAt;
        for (let i = 0; i < n; i++) {
          const idx = (head + i) % h.num;
          const addr = r.chance(0.6) ? buf(anyBuf()) : addrOf(r, h);
          const len = r.chance(0.8) ? 12 : lenOf(r, h);
          h.writeDesc(1, idx, addr, len, i < n - 1 ? VIRTQ_DESC_F_NEXT : 0, (idx + 1) % h.num);
        }
        if (h.mem) h.mem[0] = VIRTIO_NET_HDR_F_GIFT_BUFFER; // harmless: only our memory
        publish(r, h, 1, [head]);
        txAt = (head + n) % h.num;
        h.kickRing(1);
        break;
      }
      case 'post-not-owned':
      case 'double-post': {
        const b = anyBuf();
        const times = act === 'double-post' ? 2 + r.int(3) : 1;
        const heads: number[] = [];
        for (let k = 0; k < times; k++) {
          h.writeDesc(0, rxAt, buf(act === 'double-post' ? b : notMine()), r.pick([g.bufSize, g.bufSize, 12, g.bufSize - 1]), VIRTQ_DESC_F_WRITE, 0);
          heads.push(rxAt);
          rxAt = (rxAt + 1) % h.num;
        }
        publish(r, h, 0, heads);
        h.kickRing(0);
        break;
      }
      case 'post-all':
      case 'hoard': {
        // Post every buffer we do not own (what a pair VM does), so the peer's gifts and
        // the pool land here; 'hoard' then never posts back what it got.
        const heads: number[] = [];
        const n = Math.min(h.num - 1, g.bufCount);
        for (let k = 0; k < n; k++) {
          h.writeDesc(0, rxAt, buf(notMine()), g.bufSize, VIRTQ_DESC_F_WRITE, 0);
          heads.push(rxAt);
          rxAt = (rxAt + 1) % h.num;
        }
        publish(r, h, 0, heads, true);
        h.kickRing(0);
        if (act === 'hoard') await sleep(5 + r.int(20));
        break;
      }
      case 'second-get':
        await h.call(Req.GET_SHARED_BUFFERS, V, Buffer.alloc(0), [], 100);
        break;
      case 'post-at-b':
      case 'copy-low': {
        // Rx by buffer's places: buffers in their own descriptor b (a buffer we own, or one the switch
        // holds re-posted, too), or our own memory in one of those descriptors (refused under the rule).
        const heads: number[] = [];
        for (let k = 0; k < 1 + r.int(16); k++) {
          const b = r.chance(0.8) ? notMine() : mine();
          const at = b % h.num;
          if (act === 'post-at-b') h.writeDesc(0, at, buf(b), r.pick([g.bufSize, g.bufSize, g.bufSize - 1]), VIRTQ_DESC_F_WRITE, 0);
          else h.writeDesc(0, at, addrOf(r, h), 2048, VIRTQ_DESC_F_WRITE, 0);
          heads.push(at);
        }
        publish(r, h, 0, heads);
        h.kickRing(0);
        break;
      }
    }
    await sleep(r.int(3));
  }
  await h.barrier(300);
  return `part=${g.partitionStart}+${g.partitionCount} num=${h.num}${byBuffer ? ' rx-by-buffer' : ''} ${acts.join(',')}`;
}

async function caseNotifier(r: Rng, env: CaseEnv, h: Hostile): Promise<string> {
  const kick = r.chance(0.5) ? fdKinds(r) : 'eventfd';
  const call = r.chance(0.6) ? fdKinds(r) : 'eventfd';
  const ok = await h.setup({ zeroCopy: r.chance(0.5), num: 256, memSize: 256 * 1024, kickKind: kick, callKind: call });
  if (!ok) return `kick=${kick} call=${call} setup-refused`;
  const err = r.chance(0.5) ? fdKinds(r) : null;
  if (err) h.send(Req.SET_VRING_ERR, V, u64(BigInt(r.int(2))), [h.fd(err)]);
  // Replace a notifier mid-flight, sometimes with the no-fd bit.
  if (r.chance(0.3)) h.send(r.pick([Req.SET_VRING_KICK, Req.SET_VRING_CALL]), V, u64(BigInt(r.int(2) | VRING_NOFD_MASK)));
  const n = 5 + r.int(40);
  for (let k = 0; k < n; k++) {
    legitTraffic(r, h, k);
    h.kickRing(0);
    h.kickRing(1);
    // Poke the non-eventfd kick: a pipe/socket gets bytes, so it polls readable.
    if (kick === 'pipe' || kick === 'socket') {
      try {
        fs.writeSync(h.kick[1], Buffer.alloc(8, 1));
      } catch {
        /* full or not writable */
      }
    }
    if (r.chance(0.3)) await sleep(1);
  }
  await sleep(r.int(10));
  await h.barrier(300);
  return `kick=${kick} call=${call} err=${err ?? '-'} n=${n}`;
}

const RUNNERS: Record<Kind, (r: Rng, env: CaseEnv, h: Hostile) => Promise<string>> = {
  msg: caseMsg, memtable: caseMemtable, shrink: caseShrink, ring: caseRing, shared: caseShared, notifier: caseNotifier,
};

/** Run case `index` of `seed` against one port socket; never throws. */
export async function runCase(seed: number, index: number, env: CaseEnv): Promise<CaseResult> {
  const kind = kindOf(index);
  const r = caseRng(seed, index);
  const h = await Hostile.connect(env.sock, env.fds);
  if (!h) return { kind, what: 'could not attach (port busy)', connected: false };
  try {
    const what = await RUNNERS[kind](r, env, h);
    return { kind, what, connected: true };
  } catch (e) {
    return { kind, what: `case threw: ${(e as Error).message}`, connected: true };
  } finally {
    h.close();
  }
}
