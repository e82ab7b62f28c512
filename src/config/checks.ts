/**
 * Cross-field checks and derived defaults.
 *
 * These run on the raw (parsed JSON) input rather than on zod's output so that
 * they still run when some unrelated field is broken: every issue in the file
 * is reported at once. Each check only uses fields that passed their own
 * per-field checks; a check whose inputs already failed is skipped.
 */
import type { ZodType, ZodTypeDef } from 'zod';
import {
  type ConfigFile,
  type PortConfig,
  type PortPolicyConfig,
  type RateConfig,
  type SwitchConfig,
  DEFAULTS,
  LIMITS,
  bridgeNameSchema,
  baseSchema,
  bufCountSchema,
  bufSizeSchema,
  connectPathSchema,
  controlSocketSchema,
  domainNameSchema,
  giftSchema,
  hex,
  pairSchema,
  partitionSchema,
  portNameSchema,
  socketDirSchema,
} from './schema';

export type PathSegment = string | number;

export interface RawIssue {
  path: PathSegment[];
  message: string;
  /** Unknown-field issues do not make the object's known fields unusable. */
  unknownField?: boolean;
}

const UNUSABLE: unique symbol = Symbol('unusable');

/** Value at `path` in raw JSON; undefined if absent; UNUSABLE if a parent has the wrong type. */
function valueAt(raw: unknown, path: readonly PathSegment[]): unknown {
  let cur: unknown = raw;
  for (const seg of path) {
    if (cur === undefined) return undefined;
    if (typeof seg === 'number') {
      if (!Array.isArray(cur)) return UNUSABLE;
      cur = cur[seg];
    } else {
      if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return UNUSABLE;
      cur = Object.prototype.hasOwnProperty.call(cur, seg) ? (cur as Record<string, unknown>)[seg] : undefined;
    }
  }
  return cur;
}

function startsWith(path: readonly PathSegment[], prefix: readonly PathSegment[]): boolean {
  return prefix.length <= path.length && prefix.every((seg, i) => path[i] === seg);
}

/** Socket path under a directory, tolerant of a trailing slash. */
export function socketPathIn(dir: string, file: string): string {
  return dir.endsWith('/') ? `${dir}${file}` : `${dir}/${file}`;
}

/** Drop trailing slashes ("/tmp/zcswitch/" -> "/tmp/zcswitch"), keeping "/" itself. */
export function normalizeDir(dir: string): string {
  const trimmed = dir.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}

/**
 * Every port's sharing domain (docs/design.md, "Trust model"): the one it
 * names, else by default: bridge mode "bridge" (the whole bridge); pair mode
 * the domain its peer names if only the peer names one, else "pair:<a>+<b>"
 * (as the pair is written); an unpaired port "port:<name>". TAP ports have
 * none (null). Pairs whose names are unknown or repeated are ignored here
 * (the pair checks report them).
 */
export function portDomains(
  mode: string,
  ports: readonly { name: string | undefined; tap: boolean; domain: string | undefined; bridge?: string }[],
  pairs: readonly (readonly [string, string])[],
): (string | null)[] {
  const index = new Map<string, number>();
  ports.forEach((p, i) => {
    if (p.name !== undefined && !index.has(p.name)) index.set(p.name, i);
  });
  const pairDefault = new Map<number, string>();
  if (mode !== 'bridge') {
    for (const [a, b] of pairs) {
      const i = index.get(a);
      const j = index.get(b);
      if (i === undefined || j === undefined || i === j || pairDefault.has(i) || pairDefault.has(j)) continue;
      const d = ports[i].domain ?? ports[j].domain ?? `pair:${a}+${b}`;
      pairDefault.set(i, d);
      pairDefault.set(j, d);
    }
  }
  return ports.map((p, i) => {
    if (p.tap) return null;
    if (p.domain !== undefined) return p.domain;
    if (mode === 'bridge') return bridgeDomain(p.bridge);
    return pairDefault.get(i) ?? `port:${p.name ?? i}`;
  });
}

/** A bridge port's default sharing domain: "bridge" on the first bridge (vale0), "bridge:<name>" on the others. */
export function bridgeDomain(bridge: string | undefined): string {
  return bridge === undefined || bridge === DEFAULTS.bridgeName ? 'bridge' : `bridge:${bridge}`;
}

/** The port keys that only mean something on a bridge (src/datapath/port-policy.ts). */
export const POLICY_KEYS = ['bridge', 'vlan', 'trunk', 'macs', 'isolated', 'limit'] as const;

/**
 * Run the cross-field checks. `known` are the issues found so far (per-field);
 * returns new issues only.
 */
export function crossCheck(raw: unknown, known: readonly RawIssue[]): RawIssue[] {
  const out: RawIssue[] = [];
  const add = (path: PathSegment[], message: string): void => {
    out.push({ path, message });
  };
  const failed = (path: readonly PathSegment[]): boolean =>
    known.some((i) => !i.unknownField && startsWith(i.path, path));

  /** The field's value after its own schema (defaults applied), or undefined if it failed. */
  function pick<T>(path: PathSegment[], schema: ZodType<T, ZodTypeDef, unknown>): T | undefined {
    if (failed(path)) return undefined;
    const v = valueAt(raw, path);
    if (v === UNUSABLE) return undefined;
    const r = schema.safeParse(v);
    return r.success ? r.data : undefined;
  }

  // --- shared buffer region ------------------------------------------------
  const bufCount = pick(['sharedBuffers', 'bufCount'], bufCountSchema);
  const bufSize = pick(['sharedBuffers', 'bufSize'], bufSizeSchema);
  const base = pick(['sharedBuffers', 'base'], baseSchema);
  if (bufCount !== undefined && bufSize !== undefined) {
    const bytes = bufCount * bufSize;
    if (bytes > LIMITS.maxRegionBytes) {
      add(
        ['sharedBuffers'],
        `bufCount*bufSize (${bufCount}*${bufSize} = ${bytes} bytes) exceeds the 16 GiB limit on the shared region`,
      );
    } else if (base !== undefined) {
      const end = base + BigInt(bytes);
      if (end >= LIMITS.addressLimit) {
        add(
          ['sharedBuffers', 'base'],
          `the region ends at ${hex(end)} (base + bufCount*bufSize), which must be below 2^48 (${hex(LIMITS.addressLimit)}); lower the base`,
        );
      }
    }
  }

  // --- ports -----------------------------------------------------------------
  const rawPorts = valueAt(raw, ['ports']);
  const ports: unknown[] = Array.isArray(rawPorts) ? rawPorts : [];
  const names: (string | undefined)[] = ports.map((_, i) => pick(['ports', i, 'name'], portNameSchema));
  const label = (i: number): string => {
    const n = names[i];
    return n === undefined ? `ports[${i}]` : `ports[${i}] ("${n}")`;
  };

  const firstIndex = new Map<string, number>();
  names.forEach((name, i) => {
    if (name === undefined) return;
    const prev = firstIndex.get(name);
    if (prev !== undefined) add(['ports', i, 'name'], `duplicate port name "${name}" (also ports[${prev}])`);
    else firstIndex.set(name, i);
  });

  // TAP ports: bridge mode only, no shared buffers, an interface name that fits.
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  const isTap = ports.map((p) => isObj(p) && p.type === 'tap');
  isTap.forEach((tap, i) => {
    if (!tap) return;
    if (valueAt(raw, ['mode']) !== 'bridge') add(['ports', i, 'type'], 'tap ports need "mode": "bridge" (the uplink is a port of the learning bridge)');
    if ((ports[i] as Record<string, unknown>).partition !== undefined) add(['ports', i, 'partition'], 'a tap port uses no shared buffers; remove the partition');
    if ((ports[i] as Record<string, unknown>).socket !== undefined) add(['ports', i, 'socket'], 'a tap port has no socket; remove it');
    if ((ports[i] as Record<string, unknown>).connect !== undefined) add(['ports', i, 'connect'], 'a tap port has no vhost-user front-end to connect to; remove connect');
    const n = names[i];
    if ((ports[i] as Record<string, unknown>).ifname === undefined && n !== undefined && n.length > 15) {
      add(['ports', i, 'ifname'], `the port name "${n}" is too long for an interface name (15 characters); give "ifname"`);
    }
  });

  // Tenant settings: bridge mode only; a port is an access port (vlan) or a trunk, not both.
  ports.forEach((p, i) => {
    if (!isObj(p)) return;
    if (valueAt(raw, ['mode']) !== 'bridge') {
      for (const k of POLICY_KEYS) {
        if (p[k] !== undefined) add(['ports', i, k], `"${k}" is a bridge setting; remove it or use "mode": "bridge"`);
      }
    }
    if (p.vlan !== undefined && p.trunk !== undefined) {
      add(['ports', i, 'trunk'], 'a port is either an access port of one VLAN ("vlan") or a trunk ("trunk"), not both; remove one');
    }
    for (const dir of ['rx', 'tx'] as const) {
      const r = valueAt(raw, ['ports', i, 'limit', dir]);
      if (isObj(r) && r.pps === undefined && r.bps === undefined) {
        add(['ports', i, 'limit', dir], 'limits nothing: give "pps" (frames/s), "bps" (bits/s) or both');
      }
    }
  });

  // Client-mode ports (connect): no socket of their own, one front-end per path.
  const connects = new Map<string, number>();
  ports.forEach((p, i) => {
    if (!isObj(p) || isTap[i] || p.connect === undefined) return;
    if (p.socket !== undefined) add(['ports', i, 'socket'], 'a client-mode port (connect) has no socket of its own; remove socket');
    const c = pick(['ports', i, 'connect'], connectPathSchema);
    if (c === undefined) return;
    const prev = connects.get(c);
    if (prev !== undefined) add(['ports', i, 'connect'], `"${c}" is also the connect path of ${label(prev)}`);
    else connects.set(c, i);
  });

  // Sharing domains: none on a TAP port; every domain has its own region of bufCount buffers.
  const explicitDomains = ports.map((p, i) => (isObj(p) && !isTap[i] ? pick(['ports', i, 'domain'], domainNameSchema.optional()) : undefined));
  isTap.forEach((tap, i) => {
    if (tap && (ports[i] as Record<string, unknown>).domain !== undefined) {
      add(['ports', i, 'domain'], 'a tap port maps no shared buffers (every frame to or from it is copied); remove the domain');
    }
  });
  const rawPairList = valueAt(raw, ['pairs']);
  const validPairs = Array.isArray(rawPairList)
    ? rawPairList.map((_, k) => pick(['pairs', k], pairSchema)).filter((x): x is [string, string] => x !== undefined)
    : [];
  const modeValue = valueAt(raw, ['mode']);
  const domains = portDomains(
    typeof modeValue === 'string' ? modeValue : DEFAULTS.mode,
    ports.map((p, i) => ({
      name: names[i], tap: isTap[i], domain: explicitDomains[i],
      bridge: isObj(p) ? pick(['ports', i, 'bridge'], bridgeNameSchema.optional()) : undefined,
    })),
    validPairs,
  );
  const domainCount = new Set(domains.filter((d) => d !== null)).size;
  if (bufCount !== undefined && bufSize !== undefined && domainCount > 1) {
    const bytes = bufCount * bufSize;
    const total = bytes * domainCount;
    if (bytes <= LIMITS.maxRegionBytes && total > LIMITS.maxRegionBytes) {
      add(
        ['sharedBuffers', 'bufCount'],
        `${domainCount} sharing domains of bufCount*bufSize (${bufCount}*${bufSize}) bytes each take ${total} bytes, ` +
          'more than the 16 GiB limit on shared memory; lower bufCount or put ports in fewer domains (ports[].domain)',
      );
    }
  }
  const domainLabel = (d: string | null): string => (d === null ? '' : ` of domain "${d}"`);

  // Partitions (vhost ports): all or none.
  const gives = ports.map((p, i) => isObj(p) && !isTap[i] && p.partition !== undefined);
  const firstGiving = gives.indexOf(true);
  const firstMissing = ports.findIndex((p, i) => isObj(p) && !isTap[i] && !gives[i]);
  if (firstGiving >= 0 && firstMissing >= 0) {
    const who = names[firstMissing] === undefined ? 'this port' : `port "${names[firstMissing]}"`;
    add(
      ['ports', firstMissing, 'partition'],
      `${who} has no partition, but ${label(firstGiving)} has one; either every port gives a partition or none does`,
    );
  }

  if (firstGiving >= 0) {
    // Explicit partitions: bounds and overlaps.
    const parts = ports.map((_, i) => (gives[i] ? pick(['ports', i, 'partition'], partitionSchema) : undefined));
    parts.forEach((p, i) => {
      if (p === undefined) return;
      const end = p.start + p.count;
      if (bufCount !== undefined && end > bufCount) {
        add(['ports', i, 'partition'], `start+count (${end}) exceeds sharedBuffers.bufCount (${bufCount})`);
      }
      if (p.count === 0) return;
      for (let j = 0; j < i; j++) {
        const q = parts[j];
        // Partitions are per domain: two domains' regions are different memory.
        if (q === undefined || q.count === 0 || domains[j] !== domains[i]) continue;
        const lo = Math.max(p.start, q.start);
        const hi = Math.min(end, q.start + q.count);
        if (lo < hi) {
          const who = names[i] === undefined ? 'this port' : `port "${names[i]}"`;
          const range = hi - lo === 1 ? `buffer ${lo} is` : `buffers ${lo}..${hi - 1} are`;
          add(['ports', i, 'partition'], `${who} overlaps ${label(j)}: ${range} in both partitions`);
        }
      }
    });
  } else if (firstMissing >= 0 && bufCount !== undefined && ports.length <= LIMITS.maxPorts) {
    // Default equal shares of each domain's region: every vhost port must get at least one buffer.
    const members = new Map<string, number>();
    for (const d of domains) if (d !== null) members.set(d, (members.get(d) ?? 0) + 1);
    for (const [d, n] of members) {
      if (Math.floor(bufCount / n) > 0) continue;
      const where = members.size === 1 ? '' : domainLabel(d);
      add(
        ['sharedBuffers', 'bufCount'],
        `${bufCount} buffer(s) cannot be shared among ${n} ports${where} (each port would get 0); raise bufCount or give explicit partitions`,
      );
    }
  }

  // --- pairs -----------------------------------------------------------------
  const rawPairs = valueAt(raw, ['pairs']);
  if (valueAt(raw, ['mode']) === 'bridge' && Array.isArray(rawPairs) && rawPairs.length > 0) {
    add(['pairs'], 'not used in bridge mode (every port is on the one bridge); remove it or use "mode": "pair"');
  }
  if (Array.isArray(rawPairs)) {
    // Existence is only judged when every port name is known and valid.
    const allNamesKnown = Array.isArray(rawPorts) && names.every((n) => n !== undefined);
    const known = new Set(names.filter((n): n is string => n !== undefined));
    const pairedIn = new Map<string, number>();
    rawPairs.forEach((_, k) => {
      const pair = pick(['pairs', k], pairSchema);
      if (pair === undefined) return;
      if (pair[0] === pair[1]) {
        add(['pairs', k], `pairs port "${pair[0]}" with itself; a pair needs two different ports`);
        return;
      }
      pair.forEach((name, m) => {
        if (allNamesKnown && !known.has(name)) {
          add(['pairs', k, m], `no port named "${name}" (ports are ${[...known].map((n) => `"${n}"`).join(', ')})`);
          return;
        }
        const prev = pairedIn.get(name);
        if (prev !== undefined) {
          add(['pairs', k, m], `port "${name}" is already in pairs[${prev}]; a port can be in at most one pair`);
        } else {
          pairedIn.set(name, k);
        }
      });
    });
  }

  // --- gift watermarks ---------------------------------------------------------
  const gift = pick(['gift'], giftSchema.default({}));
  if (gift !== undefined && gift.lowWater > gift.highWater) {
    add(['gift', 'lowWater'], `must not exceed gift.highWater (${gift.highWater}), got ${gift.lowWater}`);
  }

  // --- socket paths --------------------------------------------------------------
  const socketDir = pick(['socketDir'], socketDirSchema);
  if (socketDir !== undefined) {
    const dir = normalizeDir(socketDir);
    const portSockets = new Map<string, number>();
    // Every socket is first bound in a staging directory inside its own directory (src/switch/socket-file.ts).
    const stagingBytes = Buffer.byteLength(dir) + LIMITS.stagingSuffixBytes;
    if (stagingBytes > LIMITS.maxSocketPathBytes) {
      add(
        ['socketDir'],
        `is ${Buffer.byteLength(dir)} bytes; sockets are bound as "<socketDir>/.zcsXXXXXX/s" first, which must fit in ${LIMITS.maxSocketPathBytes} bytes, so socketDir may be at most ${LIMITS.maxSocketPathBytes - LIMITS.stagingSuffixBytes} bytes`,
      );
    }
    names.forEach((name, i) => {
      if (name === undefined) return;
      const p = socketPathIn(dir, `${name}.sock`);
      const client = connects.get(p);
      if (client !== undefined && !isTap[i] && (ports[i] as Record<string, unknown>).connect === undefined) {
        add(['ports', client, 'connect'], `is the socket of ${label(i)} on this switch, not a front-end`);
      }
      portSockets.set(p, i);
      const bytes = Buffer.byteLength(p);
      if (bytes > LIMITS.maxSocketPathBytes) {
        add(
          ['ports', i, 'name'],
          `socket path "${p}" is ${bytes} bytes; unix socket paths are limited to ${LIMITS.maxSocketPathBytes} (shorten socketDir or the name)`,
        );
      }
    });
    if (!failed(['controlSocket'])) {
      const explicit = pick(['controlSocket'], controlSocketSchema);
      const ctl = explicit ?? socketPathIn(dir, DEFAULTS.controlSocketName);
      const bytes = Buffer.byteLength(ctl);
      if (bytes > LIMITS.maxSocketPathBytes) {
        add(
          explicit === undefined ? ['socketDir'] : ['controlSocket'],
          `control socket path "${ctl}" is ${bytes} bytes; unix socket paths are limited to ${LIMITS.maxSocketPathBytes}`,
        );
      }
      const ctlDir = ctl.includes('/') ? ctl.slice(0, ctl.lastIndexOf('/')) || '/' : '.';
      if (explicit !== undefined && ctlDir !== dir && Buffer.byteLength(ctlDir) + LIMITS.stagingSuffixBytes > LIMITS.maxSocketPathBytes) {
        add(
          ['controlSocket'],
          `its directory "${ctlDir}" is too long: sockets are bound as "<dir>/.zcsXXXXXX/s" first, which must fit in ${LIMITS.maxSocketPathBytes} bytes`,
        );
      }
      if (connects.has(ctl)) add(['ports', connects.get(ctl)!, 'connect'], 'is the control socket of this switch, not a front-end');
      const clash = portSockets.get(ctl);
      if (explicit !== undefined && clash !== undefined) {
        add(['controlSocket'], `is the same path as the socket of ${label(clash)}`);
      }
    }
  }

  return out;
}

/** Apply derived defaults to a fully valid config file. */
export function resolveConfig(file: ConfigFile): SwitchConfig {
  const socketDir = normalizeDir(file.socketDir);
  const { bufCount } = file.sharedBuffers;
  const domains = portDomains(
    file.mode,
    file.ports.map((p) => ({ name: p.name, tap: p.type === 'tap', domain: p.domain, bridge: p.bridge })),
    file.pairs,
  );
  // Default partitions: equal shares of each domain's region, in config order within the domain.
  const members = new Map<string, number>();
  for (const d of domains) if (d !== null) members.set(d, (members.get(d) ?? 0) + 1);
  const next = new Map<string, number>();
  const ports: PortConfig[] = file.ports.map((p, i) => {
    const domain = domains[i];
    let partition = { start: 0, count: 0 };
    if (domain !== null) {
      if (p.partition) partition = { start: p.partition.start, count: p.partition.count };
      else {
        const share = Math.floor(bufCount / members.get(domain)!);
        const k = next.get(domain) ?? 0;
        next.set(domain, k + 1);
        partition = { start: k * share, count: share };
      }
    }
    return {
      name: p.name, type: p.type, ifname: p.ifname ?? p.name, partition, domain, offloads: p.offloads, mtu: p.mtu,
      socket: { mode: p.socket?.mode ?? file.sockets.mode, group: p.socket?.group ?? file.sockets.group ?? null },
      ...(p.connect !== undefined && p.type !== 'tap' ? { connect: p.connect } : {}),
      policy: resolvePolicy(p),
    };
  });
  return {
    socketDir,
    controlSocket: file.controlSocket ?? socketPathIn(socketDir, DEFAULTS.controlSocketName),
    sockets: { mode: file.sockets.mode, group: file.sockets.group ?? null, controlMode: file.sockets.controlMode },
    mode: file.mode,
    bridge: { ...file.bridge },
    sharedBuffers: { ...file.sharedBuffers, bufCount },
    ports,
    pairs: file.pairs.map(([a, b]): [string, string] => [a, b]),
    forwarding: { ...file.forwarding },
    gift: { ...file.gift },
    log: { ...file.log },
    stats: { ...file.stats },
    limits: { ...file.limits },
    ...(file.metrics ? { metrics: { ...file.metrics.listen } } : {}),
  };
}

/** A port's tenant settings after defaults. */
export function resolvePolicy(p: Partial<Pick<ConfigFile['ports'][number], (typeof POLICY_KEYS)[number]>> = {}): PortPolicyConfig {
  const rate = (r: { pps?: number; bps?: number; burstMs: number } | undefined): RateConfig =>
    ({ pps: r?.pps ?? 0, bps: r?.bps ?? 0, burstMs: r?.burstMs ?? DEFAULTS.burstMs });
  return {
    bridge: p.bridge ?? DEFAULTS.bridgeName,
    vlan: p.trunk !== undefined ? 0 : (p.vlan ?? DEFAULTS.vlan),
    trunk: p.trunk !== undefined ? [...p.trunk].sort((a, b) => a - b) : [],
    macs: p.macs ?? [],
    isolated: p.isolated ?? false,
    limit: { rx: rate(p.limit?.rx), tx: rate(p.limit?.tx) },
  };
}
