/**
 * The switch's JSON configuration: zod schema for the file format, the
 * resolved TypeScript type (after defaults), and the limits/defaults the
 * schema enforces.
 *
 * The zod schema here checks every field on its own (type, range, format) and
 * fills per-field defaults. Checks that relate several fields (partitions vs.
 * bufCount, pairs vs. ports, lowWater vs. highWater, ...) and the derived
 * defaults (controlSocket, partitions) live in ./checks.ts; ./load.ts ties
 * both together. Every object is .strict(): unknown fields are errors.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';
import { MTU_DEFAULT, MTU_MAX, MTU_MIN } from '../virtio/defs';

// ---------------------------------------------------------------------------
// Resolved configuration (what the rest of the switch codes against)
// ---------------------------------------------------------------------------

export const POLL_MODES = ['busy-poll', 'spin-then-sleep', 'eventfd'] as const;
export type PollMode = (typeof POLL_MODES)[number];
/** Pair mode: how a shared buffer reaches the peer (docs/protocol.md, "Pair mode"). */
export const PAIR_EXCHANGES = ['swap', 'gift'] as const;
export type PairExchange = (typeof PAIR_EXCHANGES)[number];

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const MODES = ['pair', 'bridge'] as const;
export type SwitchMode = (typeof MODES)[number];

export interface PortConfig {
  name: string;
  /** vhost: a vhost-user socket (VMs); tap: a TAP interface to the host's kernel stack (bridge mode). */
  type: 'vhost' | 'tap';
  /** tap: the interface name (default: the port name). */
  ifname: string;
  /** vhost: the shared buffers this port owns at first attach, in its domain's region; tap: none ({0, 0}). */
  partition: { start: number; count: number };
  /** vhost: mode and group of the socket file (`ports[].socket`, else `sockets.mode`/`sockets.group`); tap: the defaults, unused. */
  socket: SocketPerms;
  /**
   * vhost: the sharing domain (its own Shared Buffers region; docs/design.md,
   * "Trust model"), as written or by default (pair mode "pair:<a>+<b>", an
   * unpaired port "port:<name>", bridge mode "bridge"); tap: null (no region).
   */
  domain: string | null;
  /**
   * vhost, client mode (`ports[].connect`): the switch connects to a
   * front-end that listens at this path (QEMU `server=on`, DPDK virtio-user
   * `server=1`, libvirt `mode='server'`) instead of listening itself; absent
   * for a listening port.
   */
  connect?: string;
  /**
   * `ports[].offloads`, default true. vhost: offer the front-end checksum
   * and TCP segmentation offloads (CSUM, GUEST_CSUM, HOST/GUEST_TSO4/6,
   * HOST/GUEST_ECN); false: a plain virtio-net device, the switch completes
   * checksums and cuts segments for it. tap: TUNSETOFFLOAD (the kernel
   * hands in and takes 64 KiB TCP segments); false: plain frames only.
   */
  offloads: boolean;
  /**
   * `ports[].mtu`, default 1500 (68..65535): the largest IP packet this port
   * receives; a longer frame is cut (TSO) or dropped as over-mtu. vhost: the
   * most a front-end may announce with NET_SET_MTU (QEMU host_mtu=), which
   * then applies; tap: the interface's MTU, set on open.
   */
  mtu: number;
  /** Bridge mode: the tenant settings (src/datapath/port-policy.ts); pair mode: the defaults, unused. */
  policy: PortPolicyConfig;
}

/** A token bucket's rates; 0 = no limit on that measure. */
export interface RateConfig {
  /** Frames per second. */
  pps: number;
  /** Bits per second of Ethernet frame (the virtio_net_hdr not counted). */
  bps: number;
  /** How much the bucket holds, in milliseconds of its rate (what a burst may exceed the rate by). */
  burstMs: number;
}

/** `ports[].bridge`, `vlan`, `trunk`, `macs`, `isolated`, `limit` after defaults. */
export interface PortPolicyConfig {
  /** The bridge (L2 domain, its own MAC table) the port is on. */
  bridge: string;
  /** Access VLAN (frames untagged on the port); 0 when the port is a trunk. */
  vlan: number;
  /** Trunk: the VLANs the port carries, tagged (802.1Q); empty for an access port. */
  trunk: number[];
  /** Allowed source MACs ("02:00:00:00:00:01"); empty = any. */
  macs: string[];
  /** May talk only to non-isolated ports (the uplink included). */
  isolated: boolean;
  /** rx: what the switch takes from the port (the VM's transmit); tx: what it delivers to the port. */
  limit: { rx: RateConfig; tx: RateConfig };
}

/** Permissions given to a socket file between bind and the moment it becomes reachable (src/switch/socket-file.ts). */
export interface SocketPerms {
  /** Permission bits, 0..0o777. */
  mode: number;
  /** Group name or gid to chown the socket to; null = leave the switch's own group. Names are looked up at start. */
  group: string | number | null;
}

export interface SwitchConfig {
  /** Ports listen on `${socketDir}/${name}.sock`. */
  socketDir: string;
  /** Default `${socketDir}/zcswitch.ctl`. */
  controlSocket: string;
  /** Defaults for the port sockets (`ports[].socket` overrides) and the control socket's mode. */
  sockets: { mode: number; group: string | number | null; controlMode: number };
  /** pair: each port forwards to its one peer (docs/protocol.md, "Ownership"); bridge: a learning Ethernet switch. */
  mode: SwitchMode;
  /** Bridge mode: MAC learning. */
  bridge: { ageingSec: number; macTableSize: number };
  sharedBuffers: {
    /** Buffers in each sharing domain's region (every domain has its own region of bufCount × bufSize). */
    bufCount: number;
    bufSize: number;
    /** Guest physical address at which every VM sees the shared region. */
    base: bigint;
    /** Back the region with 2 MiB transparent huge pages when the kernel allows it. */
    hugePages: boolean;
  };
  ports: PortConfig[];
  pairs: [string, string][];
  /** queuePairs: the most queue pairs a port offers (VHOST_USER_PROTOCOL_F_MQ). */
  /**
   * workers: data-path worker threads (0: the main thread forwards, as always; "auto": one per CPU but the main thread's);
   * cpus: CPUs the workers pin themselves to, in turn (absent: no pinning).
   */
  forwarding: {
    burst: number; pollMode: PollMode; spinUs: number; queuePairs: number; rxWaitMs: number; pairExchange: PairExchange;
    workers: number | 'auto'; cpus?: number[];
  };
  gift: { highWater: number; lowWater: number };
  log: { level: LogLevel };
  stats: { intervalMs: number };
  /** Per-connection limits: a front-end that has not made queue pair 0 ready within handshakeSec is disconnected. */
  limits: { handshakeSec: number };
  /** Prometheus endpoint (GET /metrics) on a loopback address; absent = off. */
  metrics?: MetricsConfig;
}

export interface MetricsConfig {
  /** As written: "127.0.0.1:9478", "[::1]:9478", "localhost:9478". */
  listen: string;
  /** Without brackets: "127.0.0.1", "::1", "localhost". */
  host: string;
  port: number;
}

// ---------------------------------------------------------------------------
// Defaults and limits
// ---------------------------------------------------------------------------

export const DEFAULTS = {
  socketDir: '/tmp/zcswitch',
  controlSocketName: 'zcswitch.ctl',
  mode: 'pair',
  bufCount: 4096,
  bufSize: 2048,
  base: 0x40_0000_0000n,
  burst: 64,
  pollMode: 'spin-then-sleep',
  spinUs: 50,
  /** Back-pressure: longest a frame waits in its sender's ring for one receiver's rx buffer. */
  rxWaitMs: 50,
  /**
   * Pair mode moves buffers by address match and gifts (the proposal's exchange): with the guest driver's loops over
   * fixed descriptors, swapping measures slower both one way and both ways (docs/PERFORMANCE.md, "Pair mode: swap
   * instead of gifts").
   */
  pairExchange: 'gift',
  highWater: 1.25,
  lowWater: 1.0,
  logLevel: 'info',
  statsIntervalMs: 0,
  queuePairs: 8,
  /** 0: the data path runs on the main thread, as it always did. */
  workers: 0,
  ageingSec: 300,
  macTableSize: 4096,
  /** Port sockets: owner and group may connect. */
  socketMode: 0o660,
  /** Control socket: owner only (it can stop captures, read stats, ...). */
  controlSocketMode: 0o600,
  /** A socketDir the switch creates. */
  socketDirMode: 0o750,
  handshakeSec: 10,
  /** Bridge of a port that names none (VALE's first switch). */
  bridgeName: 'vale0',
  /** Access VLAN of a port that names none (802.1Q's default VLAN). */
  vlan: 1,
  /** A rate limit's bucket holds this many milliseconds of its rate. */
  burstMs: 50,
} as const;

export const LIMITS = {
  /** virtio's maximum queue size; every VM's rx ring must hold all buffers. */
  maxBufCount: 32768,
  minBufSize: 128,
  maxBufSize: 262144,
  /** Cache line. */
  bufSizeAlign: 64,
  /** Page size. */
  baseAlign: 4096n,
  /** Guest addresses must stay below 2^48. */
  addressLimit: 1n << 48n,
  /** Largest shared region, bytes (16 GiB); also the most all domains' regions together may take. */
  maxRegionBytes: 16 * 1024 ** 3,
  maxDomainNameLength: 140,
  minPorts: 1,
  maxPorts: 64,
  maxPortNameLength: 63,
  maxBurst: 1024,
  maxSpinUs: 1_000_000,
  /** Longest back-pressure wait per destination (forwarding.rxWaitMs). */
  maxRxWaitMs: 10_000,
  /** Data-path worker threads (forwarding.workers). */
  maxWorkers: 64,
  /** Highest CPU number forwarding.cpus may name (CPU_SETSIZE - 1). */
  maxCpu: 1023,
  maxWater: 64,
  maxStatsIntervalMs: 3_600_000,
  maxHandshakeSec: 3600,
  /** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
  maxSocketPathBytes: 107,
  /**
   * Sockets are bound as `<dir>/.zcsXXXXXX/s` first (a private staging
   * directory, see src/switch/socket-file.ts): the bytes that adds to the
   * directory's path.
   */
  stagingSuffixBytes: '/.zcsXXXXXX/s'.length,
  /** Largest gid (2^32 - 2; -1 means "unchanged" to chown). */
  maxGid: 0xffff_fffe,
  /** 802.1Q VLAN ids usable on a port (0 and 4095 are reserved). */
  minVlan: 1,
  maxVlan: 4094,
  /** Allowed source MACs per port. */
  maxPortMacs: 64,
  /** Rate limits: 100 Mpps, 1 Tbit/s, a bucket of up to 10 s. */
  maxPps: 100_000_000,
  maxBps: 1e12,
  maxBurstMs: 10_000,
} as const;

/** A port name becomes a socket file name. */
export const PORT_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
/** A sharing domain name: like a port name, plus ":" and "+" (the defaults are "pair:a+b", "port:a"). */
export const DOMAIN_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,139}$/;

// ---------------------------------------------------------------------------
// Message helpers
// ---------------------------------------------------------------------------

/** Short human description of a JSON value for "got ..." in messages. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return v.length === 0 ? 'an empty array' : 'an array';
  if (typeof v === 'string') {
    const s = JSON.stringify(v);
    return s.length > 42 ? `${s.slice(0, 40)}..."` : s;
  }
  if (typeof v === 'bigint') return `0x${v.toString(16)}`;
  if (typeof v === 'object') return 'an object';
  return String(v);
}

export function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}

function intProblem(v: unknown, min: number, max: number): string | undefined {
  if (v === undefined) return 'is required';
  if (typeof v !== 'number') return `must be an integer, got ${describeValue(v)}`;
  if (!Number.isInteger(v)) return `must be a whole number, got ${describeValue(v)}`;
  if (v < min) return `must be at least ${min}, got ${v}`;
  if (v > max) return `must be at most ${max}, got ${v}`;
  return undefined;
}

/** An integer in [min, max], with readable messages; `extra` adds checks. */
function integer(min: number, max: number, extra?: (v: number) => string | undefined) {
  return z.custom<number>().superRefine((v, ctx) => {
    const problem = intProblem(v, min, max) ?? extra?.(v);
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
  });
}

/** A finite number in (0, max]. */
function positiveNumber(max: number) {
  return z.custom<number>().superRefine((v, ctx) => {
    let problem: string | undefined;
    if (v === undefined) problem = 'is required';
    else if (typeof v !== 'number' || !Number.isFinite(v)) problem = `must be a number, got ${describeValue(v)}`;
    else if (v <= 0) problem = `must be greater than 0, got ${v}`;
    else if (v > max) problem = `must be at most ${max}, got ${v}`;
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
  });
}

export function portNameProblem(s: string): string | undefined {
  if (PORT_NAME_RE.test(s)) return undefined;
  if (s.length === 0) return 'must not be empty';
  if (s.length > LIMITS.maxPortNameLength) {
    return `must be at most ${LIMITS.maxPortNameLength} characters (it becomes a socket file name), got ${s.length}`;
  }
  if (!/^[A-Za-z0-9]/.test(s)) {
    return `must start with a letter or digit (it becomes a socket file name), got ${describeValue(s)}`;
  }
  return `may contain only letters, digits, "_", "." and "-" (it becomes a socket file name), got ${describeValue(s)}`;
}

// ---------------------------------------------------------------------------
// Field schemas (exported so cross-field checks can re-parse single fields)
// ---------------------------------------------------------------------------

const nonEmptyString = () => z.string().min(1);

export const bufCountSchema = integer(1, LIMITS.maxBufCount).default(DEFAULTS.bufCount);

export const bufSizeSchema = integer(LIMITS.minBufSize, LIMITS.maxBufSize, (v) =>
  v % LIMITS.bufSizeAlign === 0
    ? undefined
    : `must be a multiple of ${LIMITS.bufSizeAlign} (cache line), got ${v}`,
).default(DEFAULTS.bufSize);

/**
 * Guest address of the shared region: a hex string "0x..." or a non-negative
 * integer (a bigint is accepted too when the config is built in code).
 */
export const baseSchema = z.any().transform((v: unknown, ctx): bigint => {
  const fail = (message: string): never => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  let b: bigint;
  if (v === undefined) return DEFAULTS.base;
  if (typeof v === 'string') {
    if (!/^0[xX][0-9a-fA-F]+$/.test(v)) {
      return fail(`must be a hex string like "0x4000000000" or a non-negative integer, got ${describeValue(v)}`);
    }
    b = BigInt(v);
  } else if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0) return fail(`must be a non-negative integer or a hex string "0x...", got ${v}`);
    if (!Number.isSafeInteger(v)) {
      return fail(`${v} is too large to be exact as a JSON number; write it as a hex string "0x..."`);
    }
    b = BigInt(v);
  } else if (typeof v === 'bigint') {
    if (v < 0n) return fail(`must not be negative, got ${v}`);
    b = v;
  } else {
    return fail(`must be a hex string like "0x4000000000" or a non-negative integer, got ${describeValue(v)}`);
  }
  if (b % LIMITS.baseAlign !== 0n) {
    return fail(`must be a multiple of ${LIMITS.baseAlign} (page size), got ${hex(b)}`);
  }
  if (b >= LIMITS.addressLimit) {
    return fail(`must be below 2^48 (${hex(LIMITS.addressLimit)}), got ${hex(b)}`);
  }
  return b;
});

export const sharedBuffersSchema = z
  .object({
    bufCount: bufCountSchema,
    bufSize: bufSizeSchema,
    base: baseSchema,
    hugePages: z.boolean().default(true),
  })
  .strict();

export const portNameSchema = z.string().superRefine((s, ctx) => {
  const problem = portNameProblem(s);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
});

export const domainNameSchema = z.string().superRefine((s, ctx) => {
  if (DOMAIN_NAME_RE.test(s)) return;
  const message =
    s.length === 0 ? 'must not be empty'
    : s.length > LIMITS.maxDomainNameLength ? `must be at most ${LIMITS.maxDomainNameLength} characters, got ${s.length}`
    : `must start with a letter or digit and contain only letters, digits, "_", ".", ":", "+" and "-", got ${describeValue(s)}`;
  ctx.addIssue({ code: 'custom', message });
});

export const partitionSchema = z
  .object({
    start: integer(0, LIMITS.maxBufCount),
    count: integer(0, LIMITS.maxBufCount),
  })
  .strict();

/**
 * Permission bits of a socket file: an octal string "0660" / "660" (what
 * chmod takes) or a JSON number (decimal! 432 is 0o660). Only the 0o777
 * bits: setuid/setgid/sticky mean nothing on a socket.
 */
export const socketModeSchema = z.any().transform((v: unknown, ctx): number => {
  const fail = (message: string): never => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  const form = 'an octal string like "0660" or an integer 0..511 (0o777)';
  if (typeof v === 'string') {
    if (!/^0?[0-7]{3}$/.test(v)) return fail(`must be ${form}, got ${describeValue(v)}`);
    return parseInt(v, 8);
  }
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0) return fail(`must be ${form}, got ${v}`);
    if (v > 0o777) {
      const hint = /^[0-7]{3,4}$/.test(String(v)) ? `; a JSON number is decimal: write the octal mode as a string, "${String(v).padStart(4, '0')}"` : '';
      return fail(`must be at most 511 (0o777), got ${v}${hint}`);
    }
    return v;
  }
  return fail(`must be ${form}, got ${describeValue(v)}`);
});

/** A group: a name (looked up in the group database at start) or a numeric gid (a number or a string of digits). */
export const socketGroupSchema = z.any().transform((v: unknown, ctx): string | number => {
  const fail = (message: string): never => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  const form = 'a group name like "kvm" or a numeric gid';
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0 || v > LIMITS.maxGid) return fail(`must be ${form} (0..${LIMITS.maxGid}), got ${v}`);
    return v;
  }
  if (typeof v === 'string') {
    if (/^\d+$/.test(v)) {
      const n = Number(v);
      if (n > LIMITS.maxGid) return fail(`gid must be at most ${LIMITS.maxGid}, got ${v}`);
      return n;
    }
    if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/.test(v)) return fail(`must be ${form}, got ${describeValue(v)}`);
    return v;
  }
  return fail(`must be ${form}, got ${describeValue(v)}`);
});

/** `sockets`: defaults for every port socket, and the control socket's mode. */
export const socketsSchema = z
  .object({
    mode: socketModeSchema.default(DEFAULTS.socketMode),
    group: socketGroupSchema.optional(),
    controlMode: socketModeSchema.default(DEFAULTS.controlSocketMode),
  })
  .strict();

/** `ports[].socket`: this port's overrides of `sockets.mode` / `sockets.group`. */
export const portSocketSchema = z
  .object({
    mode: socketModeSchema.optional(),
    group: socketGroupSchema.optional(),
  })
  .strict();

/** `ports[].connect`: the socket path of a listening front-end; absolute, and it must fit in sun_path. */
export const connectPathSchema = z.string().superRefine((s, ctx) => {
  const bytes = Buffer.byteLength(s);
  if (!s.startsWith('/')) ctx.addIssue({ code: 'custom', message: `must be an absolute path (the front-end's listening socket), got ${describeValue(s)}` });
  else if (s.includes('\0')) ctx.addIssue({ code: 'custom', message: 'must not contain a NUL character' });
  else if (bytes > LIMITS.maxSocketPathBytes) {
    ctx.addIssue({ code: 'custom', message: `is ${bytes} bytes; unix socket paths are limited to ${LIMITS.maxSocketPathBytes}` });
  }
});

/** A bridge name: like a port name (it shows in stats and `zcswitch macs --bridge`). */
export const bridgeNameSchema = portNameSchema;

export const vlanSchema = integer(LIMITS.minVlan, LIMITS.maxVlan);

export const trunkSchema = z.array(vlanSchema).min(1).max(LIMITS.maxVlan).superRefine((a, ctx) => {
  const seen = new Set<number>();
  a.forEach((v, i) => {
    if (seen.has(v)) ctx.addIssue({ code: 'custom', path: [i], message: `VLAN ${v} is listed twice` });
    seen.add(v);
  });
});

/** A unicast MAC "02:00:00:00:00:01" (any case, ":" or "-"); stored lower case with ":". */
export const macSchema = z.any().transform((v: unknown, ctx): string => {
  if (typeof v !== 'string' || !/^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$/.test(v)) {
    ctx.addIssue({ code: 'custom', message: `must be a MAC address like "02:00:00:00:00:01", got ${describeValue(v)}` });
    return z.NEVER;
  }
  const mac = v.toLowerCase().replace(/-/g, ':');
  if ((parseInt(mac.slice(0, 2), 16) & 1) !== 0) {
    ctx.addIssue({ code: 'custom', message: `must be a unicast MAC (a multicast or broadcast address never sends), got ${describeValue(v)}` });
    return z.NEVER;
  }
  return mac;
});

export const rateSchema = z
  .object({
    pps: integer(1, LIMITS.maxPps).optional(),
    bps: positiveNumber(LIMITS.maxBps).optional(),
    burstMs: integer(1, LIMITS.maxBurstMs).default(DEFAULTS.burstMs),
  })
  .strict();

export const limitSchema = z
  .object({
    rx: rateSchema.optional(),
    tx: rateSchema.optional(),
  })
  .strict();

export const portSchema = z
  .object({
    name: portNameSchema,
    type: z.enum(['vhost', 'tap']).default('vhost'),
    ifname: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,15}$/, 'must be 1..15 characters of letters, digits, "_", "." or "-" (a Linux interface name)')
      .optional(),
    partition: partitionSchema.optional(),
    socket: portSocketSchema.optional(),
    domain: domainNameSchema.optional(),
    connect: connectPathSchema.optional(),
    offloads: z.boolean().default(true),
    mtu: z.number().int().min(MTU_MIN).max(MTU_MAX).default(MTU_DEFAULT),
    bridge: bridgeNameSchema.optional(),
    vlan: vlanSchema.optional(),
    trunk: trunkSchema.optional(),
    macs: z.array(macSchema).max(LIMITS.maxPortMacs).optional(),
    isolated: z.boolean().optional(),
    limit: limitSchema.optional(),
  })
  .strict();

export const portsSchema = z.array(portSchema).min(LIMITS.minPorts).max(LIMITS.maxPorts);

export const pairSchema = z
  .array(z.string())
  .superRefine((a, ctx) => {
    if (a.length !== 2) {
      ctx.addIssue({ code: 'custom', message: `must name exactly 2 ports, got ${a.length}` });
    }
  })
  .transform((a): [string, string] => [a[0]!, a[1]!]);

export const forwardingSchema = z
  .object({
    burst: integer(1, LIMITS.maxBurst).default(DEFAULTS.burst),
    pollMode: z.enum(POLL_MODES).default(DEFAULTS.pollMode),
    spinUs: integer(0, LIMITS.maxSpinUs).default(DEFAULTS.spinUs),
    queuePairs: integer(1, 16).default(DEFAULTS.queuePairs),
    rxWaitMs: integer(0, LIMITS.maxRxWaitMs).default(DEFAULTS.rxWaitMs),
    pairExchange: z.enum(PAIR_EXCHANGES).default(DEFAULTS.pairExchange),
    workers: z
      .custom<number | 'auto'>()
      .superRefine((v, ctx) => {
        const problem = v === 'auto' ? undefined : intProblem(v, 0, LIMITS.maxWorkers);
        if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `${problem} (or "auto")` });
      })
      .default(DEFAULTS.workers),
    cpus: z.array(integer(0, LIMITS.maxCpu)).min(1).max(LIMITS.maxWorkers).optional(),
  })
  .strict();

export const giftSchema = z
  .object({
    highWater: positiveNumber(LIMITS.maxWater).default(DEFAULTS.highWater),
    lowWater: positiveNumber(LIMITS.maxWater).default(DEFAULTS.lowWater),
  })
  .strict();

export const bridgeSchema = z
  .object({
    ageingSec: integer(1, 86400).default(DEFAULTS.ageingSec),
    macTableSize: integer(16, 1 << 20).default(DEFAULTS.macTableSize),
  })
  .strict();

export const logSchema = z
  .object({
    level: z.enum(LOG_LEVELS).default(DEFAULTS.logLevel),
  })
  .strict();

export const statsSchema = z
  .object({
    intervalMs: integer(0, LIMITS.maxStatsIntervalMs).default(DEFAULTS.statsIntervalMs),
  })
  .strict();

export const limitsSchema = z
  .object({
    handshakeSec: positiveNumber(LIMITS.maxHandshakeSec).default(DEFAULTS.handshakeSec),
  })
  .strict();

/** Is `host` (no brackets) a loopback address: 127.0.0.0/8, ::1 (any spelling) or localhost? */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true;
  if (isIPv4(host)) return host.split('.')[0] === '127';
  if (isIPv6(host)) {
    try {
      return new URL(`http://[${host}]/`).hostname === '[::1]';
    } catch {
      return false;
    }
  }
  return false;
}

/** "host:port" with a loopback host and a port 1..65535; resolves to { listen, host, port }. */
export const listenSchema = z.any().transform((v: unknown, ctx): MetricsConfig => {
  const fail = (message: string): never => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  const form = '"host:port" with a loopback host, like "127.0.0.1:9478" or "[::1]:9478"';
  if (v === undefined) return fail('is required');
  if (typeof v !== 'string') return fail(`must be a string ${form}, got ${describeValue(v)}`);
  const m = /^(?:\[([^\]]*)\]|([^:\[\]]*)):([^:]*)$/.exec(v);
  if (!m) return fail(`must be ${form}, got ${describeValue(v)}`);
  const host = m[1] ?? m[2] ?? '';
  const portText = m[3] ?? '';
  if (host === '') return fail(`has no host; must be ${form}, got ${describeValue(v)}`);
  if (m[1] !== undefined && !isIPv6(host)) return fail(`"[${host}]" is not an IPv6 address; must be ${form}`);
  if (!isLoopbackHost(host)) {
    return fail(
      `host "${host}" is not a loopback address; the metrics endpoint listens only on 127.0.0.0/8, [::1] or localhost, got ${describeValue(v)}`,
    );
  }
  if (!/^\d+$/.test(portText)) return fail(`port must be a whole number within 1..65535, got "${portText}"`);
  const port = Number(portText);
  if (port < 1 || port > 65535) return fail(`port must be within 1..65535, got ${port}`);
  return { listen: v, host, port };
});

export const metricsSchema = z
  .object({
    listen: listenSchema,
  })
  .strict();

export const socketDirSchema = nonEmptyString().default(DEFAULTS.socketDir);
export const controlSocketSchema = nonEmptyString().optional();

/**
 * The config file as written (per-field checks and per-field defaults only).
 * Its output still lacks derived defaults (controlSocket, partitions); see
 * resolveConfig() in ./checks.ts.
 */
export const configFileSchema = z
  .object({
    socketDir: socketDirSchema,
    controlSocket: controlSocketSchema,
    sockets: socketsSchema.default({}),
    mode: z.enum(MODES).default(DEFAULTS.mode),
    bridge: bridgeSchema.default({}),
    sharedBuffers: sharedBuffersSchema.default({}),
    ports: portsSchema,
    pairs: z.array(pairSchema).default([]),
    forwarding: forwardingSchema.default({}),
    gift: giftSchema.default({}),
    log: logSchema.default({}),
    stats: statsSchema.default({}),
    limits: limitsSchema.default({}),
    metrics: metricsSchema.optional(),
  })
  .strict();

/** The JSON file's shape as a TS type (what you may write). */
export type ConfigFileInput = z.input<typeof configFileSchema>;
/** The file after per-field defaults, before derived defaults. */
export type ConfigFile = z.output<typeof configFileSchema>;
