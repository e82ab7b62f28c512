/**
 * The switch process: owns one Shared Buffers region and ownership ledger
 * per sharing domain (src/shm/domain.ts), listens on one vhost-user socket per port (and opens the TAP
 * uplinks), runs the data path in a PollLoop, and answers the control
 * socket (stats, capture, ports and pairs at run time, reload) and the
 * optional Prometheus endpoint. This is the control plane: it sets up ports
 * and pairs (at start and at run time: docs/operations.md, "Adding and
 * removing ports"), then hands the per-packet work to a DataPath
 * (src/datapath/) and never sits in a per-packet call.
 */
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import {
  ConfigError, DOMAIN_NAME_RE, LIMITS, type LogLevel, type PortConfig, type PortPolicyConfig, type SwitchConfig, bridgeDomain, diffConfig,
  loadConfig, portNameProblem, resolvePolicy,
  prepareSocketDir, readGroups, resolveGroup,
} from '../config';
import { BridgeForwarder, type BridgePort } from '../datapath/bridge-forwarder';
import type { BridgeMacEntry } from '../datapath/tenancy';
import { DataPath } from '../datapath/data-path';
import type { Mirror } from '../datapath/mirror';
import { PairForwarder } from '../datapath/pair-forwarder';
import { FlowControl } from '../datapath/flow-control';
import { PollLoop } from '../datapath/poll-loop';
import { TapPort } from '../datapath/tap-port';
import type { Logger } from '../log';
import { SharingDomain, checkDomains } from '../shm/domain';
import { MAX_PORTS } from '../shm/ledger';
import {
  PROTOCOL_F_MQ, PROTOCOL_F_NET_MTU, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_RETURNED_IN_USED, PROTOCOL_F_RX_BY_BUFFER, PROTOCOL_F_SHARED_BUFFERS, PROTOCOL_F_STATUS, PROTOCOL_F_SWAP_IN_USED, VHOST_USER_F_PROTOCOL_FEATURES,
} from '../vhost/protocol';
import {
  VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MTU, MTU_DEFAULT, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_EVENT_IDX, bit,
} from '../virtio/defs';
import { type CommandTarget, type PortInfo, Refused, handleCommand } from './commands';
import { PortConnector } from './connector';
import { ControlServer } from './control';
import { type MetricsServer, startMetrics } from './metrics';
import { Port, type PortContext } from './port';
import { PortListener, socketPathProblem } from './port-listener';
import type { ResolvedPerms } from './socket-file';
import { publishRegionFile, removeRegionFile } from './region-file';
import type { SwitchStats, WorkerInfo } from './stats';
import { DataPathWorkers, type DataPathWorker } from '../workers/pool';
import { assignShards } from '../workers/shard';
import { resolveWorkers } from '../workers/count';
import type { MirrorSink } from '../workers/mirror-ring';
import { PlacementRefused, WorkerPorts } from './worker-ports';

/**
 * Checksum and TCP segmentation offloads (src/datapath/segment.ts), offered
 * unless a port's `offloads` is false. No UFO or USO: see segment.ts.
 */
export const OFFLOAD_FEATURES =
  bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) |
  bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN) | bit(VIRTIO_NET_F_GUEST_ECN);
export const OFFERED_FEATURES =
  bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_NET_F_MQ) |
  bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_NET_F_MTU) | OFFLOAD_FEATURES;
export const OFFERED_PROTOCOL_FEATURES =
  bit(PROTOCOL_F_REPLY_ACK) | bit(PROTOCOL_F_STATUS) | bit(PROTOCOL_F_MQ) | bit(PROTOCOL_F_SHARED_BUFFERS) | bit(PROTOCOL_F_NET_MTU) |
  bit(PROTOCOL_F_RX_BY_BUFFER) | bit(PROTOCOL_F_SWAP_IN_USED) | bit(PROTOCOL_F_RETURNED_IN_USED);


export class Switch implements CommandTarget {
  /** One region and ledger per sharing domain, in order of first appearance in the config's ports. */
  readonly domains: SharingDomain[] = [];
  /** vhost-user ports. */
  readonly ports: Port[] = [];
  /** TAP uplinks (bridge mode). */
  readonly taps: TapPort[] = [];
  /**
   * Every port by id: config ports have their index in the config; a port
   * added at run time takes the smallest free id (a removed port's id is
   * reused only once no ledger shows it owning a buffer).
   */
  private readonly byId: (Port | TapPort | undefined)[] = [];
  /**
   * The bridge's ports by id. A removed port's slot keeps its (detached,
   * nq = 0) queues until the id is reused: never a destination, and the MAC
   * table has forgotten it.
   */
  private readonly bridgeById: BridgePort[] = [];
  /** Bridge mode: every port's tenant settings by id, as the data path was last given them. */
  private readonly policyById: (PortPolicyConfig | undefined)[] = [];
  private readonly peers = new Map<Port, Port | null>();
  private readonly listeners = new Map<Port, PortListener>();
  /** The config file as last loaded (start or reload): what a reload diffs against. */
  private fileCfg: SwitchConfig;
  /** The config file the switch was started with (reload re-reads it); null: none (tests). */
  configPath: string | null = null;
  private nextDomainId = 0;
  private portCtx: Omit<PortContext, 'domain'> | null = null;
  /** Mode and group of the regions' links (the sockets' defaults), set at start. */
  private regionPerms: ResolvedPerms | null = null;
  /** Client-mode ports (`ports[].connect`): the switch connects to a listening front-end. */
  private readonly connectors = new Map<Port, PortConnector>();
  private readonly bridge: BridgeForwarder | null;
  private readonly pair: PairForwarder | null;
  private readonly dataPath: DataPath;
  private readonly loop: PollLoop;
  /** Back-pressure toward receivers without rx buffers (forwarding.rxWaitMs). */
  private readonly flow: FlowControl;
  private control: ControlServer | null = null;
  private metrics: MetricsServer | null = null;
  private statsTimer: NodeJS.Timeout | null = null;
  private safetyTimer: NodeJS.Timeout | null = null;
  private readonly started = Date.now();
  private stopped = false;
  /** start() finished: only then is "switch stopped" worth a log line. */
  private running = false;
  /** Why the regions are not on huge pages; null when they are. */
  readonly hugePagesRefused: string | null;
  /** forwarding.workers resolved ("auto": a number); 0: the main thread forwards. */
  readonly workerCount: number;
  /** The data-path worker threads (null: none, the main thread forwards). */
  private workers: DataPathWorkers | null = null;
  /** Which worker forwards for each port and domain, and the changes to that (null: no workers). */
  private onWorkers: WorkerPorts | null = null;

  constructor(readonly cfg: SwitchConfig, readonly log: Logger) {
    this.fileCfg = structuredClone(cfg);
    const sb = cfg.sharedBuffers;
    let refused: string | null = null;
    this.workerCount = resolveWorkers(cfg.forwarding.workers);
    try {
      for (const pc of cfg.ports) {
        if (pc.domain === null || this.domains.some((d) => d.name === pc.domain)) continue;
        const d = new SharingDomain(
          this.nextDomainId++, pc.domain, sb.bufCount, sb.bufSize, Number(sb.base), this.workerCount > 0 ? 'shared' : undefined,
        );
        this.domains.push(d);
        refused ??= sb.hugePages ? d.shared.useHugePages() : 'disabled by sharedBuffers.hugePages';
      }
    } catch (e) {
      for (const d of this.domains) {
      removeRegionFile(d);
      d.close();
    }
      throw e;
    }
    this.hugePagesRefused = refused;
    const fw = cfg.forwarding;
    this.flow = new FlowControl(fw.rxWaitMs);
    this.bridge = cfg.mode === 'bridge'
      ? new BridgeForwarder(fw.burst, this.bridgeById, cfg.bridge.macTableSize, cfg.bridge.ageingSec * 1000, this.flow)
      : null;
    this.pair = this.bridge === null ? new PairForwarder(fw.burst, this.flow, fw.pairExchange === 'swap') : null;
    this.dataPath = new DataPath(this.pair, this.bridge);
    this.loop = new PollLoop(this.dataPath, fw.pollMode, fw.spinUs);
  }

  /** Listen on every port socket and the control socket. On failure nothing is left behind. */
  async start(): Promise<void> {
    const cfg = this.cfg;
    try {
      // Groups first: an unknown one is a config error, before anything is made.
      const groups = readGroups();
      const defaultGid = resolveGroup(cfg.sockets.group, 'sockets.group', groups);
      const portPerms = cfg.ports.map((pc, i): ResolvedPerms => {
        const own = pc.socket.group !== cfg.sockets.group;
        const groupField = own ? `ports[${i}].socket.group` : 'sockets.group';
        return { mode: pc.socket.mode, gid: own ? resolveGroup(pc.socket.group, groupField, groups) : defaultGid, groupField };
      });
      prepareSocketDir(cfg.socketDir, defaultGid);
      // Getters: a reload changes the watermarks and the handshake limit for every port from then on.
      const ctx: Omit<PortContext, 'domain'> = {
        log: this.log,
        features: OFFERED_FEATURES,
        protocolFeatures: OFFERED_PROTOCOL_FEATURES,
        get giftHigh() { return cfg.gift.highWater; },
        get giftLow() { return cfg.gift.lowWater; },
        get handshakeMs() { return cfg.limits.handshakeSec * 1000; },
        queuePairs: cfg.forwarding.queuePairs,
        // Bridge mode always swaps; pair mode as forwarding.pairExchange says.
        swap: cfg.mode === 'bridge' || cfg.forwarding.pairExchange === 'swap',
        wake: () => this.loop.wake(),
        attached: () => this.loop.wake(),
        detached: (port) => {
          this.forgetMacs(port.id);
          this.loop.wake();
          this.connectors.get(port)?.lost();
        },
      };
      this.portCtx = ctx;
      if (this.workerCount > 0) this.startWorkers();
      cfg.ports.forEach((pc, id) => {
        this.setPolicy(id, pc.policy);
        if (pc.type === 'tap') {
          const tap = new TapPort(id, pc.name, pc.ifname, this.log, ctx.wake, pc.offloads, pc.mtu);
          this.taps.push(tap);
          this.byId.push(tap);
          this.bridgeById.push(tap);
          // With workers this thread keeps the interface open but does not watch it: its bridge's worker serves a dup.
          const w = this.onWorkers?.workerOf.get(id);
          if (w === undefined) this.dataPath.taps.push(tap);
          try {
            tap.open(w === undefined);
          } catch (e) {
            const err = e as NodeJS.ErrnoException;
            const hint = err.code === 'EPERM' ? ' (creating a TAP interface needs CAP_NET_ADMIN)' : '';
            throw new Error(`port ${pc.name}: cannot open TAP interface ${pc.ifname}: ${err.message}${hint}`);
          }
          if (w !== undefined) this.onWorkers!.addTap(w, tap, pc.offloads);
          return;
        }
        const sock = path.join(cfg.socketDir, `${pc.name}.sock`);
        const domain = this.domains.find((d) => d.name === pc.domain)!;
        const port = new Port(id, pc.name, sock, pc.partition, this.portContextFor(portContext(ctx, domain, pc.offloads, pc.mtu), id));
        this.ports.push(port);
        this.byId.push(port);
        this.bridgeById.push(port.queues);
        if (pc.connect !== undefined) this.connect(port, pc.connect);
        else this.listen(port, portPerms[id]!);
      });
      const byName = new Map(this.ports.map((p) => [p.name, p]));
      for (const p of this.ports) this.peers.set(p, null);
      for (const [a, b] of cfg.pairs) {
        this.peers.set(byName.get(a)!, byName.get(b)!);
        this.peers.set(byName.get(b)!, byName.get(a)!);
      }
      for (const p of this.ports) {
        const w = this.onWorkers?.workerOf.get(p.id);
        if (w !== undefined) {
          w.call({ op: 'port', id: p.id, name: p.name, partitionCount: p.partition.count, domain: p.queues.domain.id, mtu: cfg.ports[p.id].mtu ?? MTU_DEFAULT });
          continue;
        }
        this.dataPath.ports.push(p.queues);
        this.dataPath.peers.push(this.peers.get(p)?.queues ?? null);
      }
      for (const [p, peer] of this.peers) {
        const w = this.onWorkers?.workerOf.get(p.id);
        if (w !== undefined && peer !== null) w.call({ op: 'peer', id: p.id, peer: peer.id });
      }
      for (const d of this.domains) this.publishDomain(d);
      this.regionPerms = { mode: cfg.sockets.mode, gid: defaultGid, groupField: 'sockets.group' };
      for (const d of this.domains) publishRegionFile(d, cfg.socketDir, this.regionPerms);
      this.control = new ControlServer(cfg.controlSocket, this.log, (cmd) => handleCommand(this, cmd), cfg.sockets.controlMode);
      await this.control.listen();
      this.metrics = await startMetrics(cfg.metrics, () => this.stats(), this.log);
    } catch (e) {
      this.stop();
      throw e;
    }
    // Safety net: a lost kick (or a front-end without kick fds) costs at most this much latency.
    this.safetyTimer = setInterval(() => {
      this.loop.wake();
      for (const w of this.workers?.workers ?? []) w.wake();
    }, 100);
    this.startStatsTimer();
    const sb = cfg.sharedBuffers;
    this.log.info(
      {
        mode: cfg.mode, ...(cfg.mode === 'pair' ? { pairExchange: cfg.forwarding.pairExchange } : {}), bufCount: sb.bufCount, bufSize: sb.bufSize, domains: this.domains.map((d) => d.name),
        sharedBytes: this.domains.length * sb.bufCount * sb.bufSize, hugePages: this.hugePagesRefused ?? true,
        ...(this.workers === null ? {} : { workers: this.workers.workers.map((w) => ({ index: w.index, cpu: w.cpu, ports: w.ports, domains: w.domains })) }),
      },
      'switch started',
    );
    this.running = true;
  }

  /**
   * forwarding.workers > 0: start the worker threads, place every L2 domain
   * (pairs, sharing domains and bridges with their TAP uplinks, shard.ts) on
   * one, and hand each its domains.
   */
  private startWorkers(): void {
    const cfg = this.cfg;
    const fw = cfg.forwarding;
    const all = cfg.ports.map((pc, id) => ({ id, name: pc.name, domain: pc.domain }));
    // A bridge (a tenant's L2 domain) stays whole like a pair: its ports are joined as if paired.
    const joins: [string, string][] = [...cfg.pairs];
    if (cfg.mode === 'bridge') {
      const first = new Map<string, string>();
      for (const pc of cfg.ports) {
        const b = pc.policy?.bridge ?? 'bridge';
        const f = first.get(b);
        if (f === undefined) first.set(b, pc.name);
        else joins.push([f, pc.name]);
      }
    }
    const shards = assignShards(all, joins, this.workerCount);
    const byId = (id: number): Port | undefined => this.ports.find((p) => p.id === id);
    this.workers = new DataPathWorkers(
      this.workerCount, fw.cpus,
      {
        logLevel: cfg.log.level as LogLevel, queuePairs: fw.queuePairs,
        settings: { burst: fw.burst, pollMode: fw.pollMode, spinUs: fw.spinUs, rxWaitMs: fw.rxWaitMs },
        mode: cfg.mode, pairExchange: fw.pairExchange, bridge: { macTableSize: cfg.bridge.macTableSize, ageingMs: cfg.bridge.ageingSec * 1000 },
      },
      {
        broken: (id, reason) => byId(id)?.disconnect(reason),
        fault: (id, where, message) => byId(id)?.fault(where, new Error(message)),
        guestFault: (id) => byId(id)?.guestMemoryFault(),
        mirror: (id) => this.onWorkers?.drainMirror(id),
        died: (index, reason) => {
          if (this.stopped) return;
          this.log.error({ worker: index, reason }, 'a data-path worker thread died; disconnecting its ports');
          for (const p of this.ports) if (this.onWorkers?.workerOf.get(p.id)?.index === index) p.disconnect(`its data-path worker died (${reason})`);
        },
      },
      this.log,
    );
    const workers = this.workers.workers;
    const peers = this.peers;
    const policyById = this.policyById;
    const on = (this.onWorkers = new WorkerPorts(this.workers, {
      ports: this.ports, domains: this.domains, log: this.log,
      peerOf: (p) => peers.get(p) ?? null,
      bridgeOf: (id) => policyById[id]?.bridge,
    }));
    for (const [id, w] of shards.workerOf) on.workerOf.set(id, workers[w]);
    shards.workers.forEach((s, w) => {
      workers[w].ports.push(...s.ports);
      for (const name of s.domains) on.addDomain(workers[w], this.domains.find((d) => d.name === name)!);
    });
  }

  /** A port's context; a port a worker forwards for wakes that worker and tells it every change. */
  private portContextFor(ctx: PortContext, id: number): PortContext {
    return this.onWorkers === null ? ctx : Object.assign(ctx, this.onWorkers.link(id));
  }

  /** Bridge mode: give port id its tenant settings (between rounds; this runs on the event loop). */
  private setPolicy(id: number, policy: PortPolicyConfig): void {
    if (this.bridge === null) return;
    this.policyById[id] = structuredClone(policy);
    // This thread's tenancy knows every bridge's name; a worker's forwards for its ports.
    this.bridge.tenancy.configure(id, policy, performance.now());
    const w = this.onWorkers?.workerOf.get(id);
    if (w?.alive) w.call({ op: 'policy', id, policy });
  }

  /** The learned MAC table of every bridge, or of one (`zcswitch macs`). */
  macTable(bridge?: string): { bridge: string; vlan: number; mac: string; port: string; ageSec: number }[] {
    if (this.bridge === null) throw new Refused('MAC tables are for bridge mode; this switch is in pair mode');
    const names = this.bridge.tenancy.names;
    if (bridge !== undefined && !names.includes(bridge)) {
      throw new Refused(`no bridge named "${bridge}" (bridges are ${names.map((n) => `"${n}"`).join(', ')})`);
    }
    return this.macEntries(bridge).map((e) => ({
      bridge: e.bridge, vlan: e.vlan, mac: e.mac, port: this.byId[e.port]?.name ?? `#${e.port}`, ageSec: e.ageSec,
    }));
  }

  /** Bridge mode: a port's learned MACs go, in whichever thread forwards for it. */
  private forgetMacs(id: number): void {
    this.bridge?.tenancy.forgetPort(id);
    const w = this.onWorkers?.workerOf.get(id);
    if (this.bridge !== null && w?.alive) w.call({ op: 'forget', id });
  }

  /** Bridge mode: the learned MAC tables of this thread and of every worker. */
  private macEntries(bridge?: string): BridgeMacEntry[] {
    const out = this.bridge!.tenancy.entries(performance.now(), bridge);
    for (const w of this.workers?.workers ?? []) {
      if (!w.alive) continue;
      for (const e of w.call({ op: 'macs' })) if (bridge === undefined || e.bridge === bridge) out.push(e);
    }
    return out;
  }

  /** Client mode: no socket of our own; connect to the front-end's, and again whenever it goes away (connector.ts). */
  private connect(port: Port, target: string): void {
    const c = new PortConnector(port, target, this.log);
    this.connectors.set(port, c);
    c.start();
  }

  private listen(port: Port, perms: ResolvedPerms): void {
    this.listeners.set(port, new PortListener(port, perms, this.cfg.socketDir, this.log, () => this.stopped));
  }

  private startStatsTimer(): void {
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.statsTimer = null;
    const ms = this.cfg.stats.intervalMs;
    if (ms > 0) this.statsTimer = setInterval(() => this.log.info({ stats: this.stats().ports }, 'port stats'), ms);
  }

  /** Every port's data side, in id order: what capture and reset-counters see. */
  get dataPorts(): BridgePort[] {
    return this.live().map((p) => (p.isTap ? p : p.queues));
  }

  private live(): (Port | TapPort)[] {
    return this.byId.filter((p): p is Port | TapPort => p !== undefined);
  }

  stats(): SwitchStats {
    const macs = this.bridge ? this.macEntries() : [];
    const sb = this.cfg.sharedBuffers;
    // Worker threads' counters into this thread's view of their ports first.
    const fromWorkers = this.workers?.collect((id) => this.ports.find((p) => p.id === id)?.queues ?? this.taps.find((p) => p.id === id)) ?? null;
    const workers: WorkerInfo[] = (this.workers?.workers ?? []).map((w, i) => ({
      index: w.index, cpu: w.cpu, cpus: w.cpus, ports: w.ports, domains: w.domains,
      busySec: fromWorkers!.perWorker[i].busyMs / 1000, busyRounds: fromWorkers!.perWorker[i].busyRounds,
    }));
    return {
      mode: this.cfg.mode,
      uptimeSec: (Date.now() - this.started) / 1000,
      sharedBuffers: {
        bufCount: sb.bufCount, bufSize: sb.bufSize,
        base: `0x${sb.base.toString(16)}`, pool: this.domains.reduce((n, d) => n + d.ledger.pool, 0),
        hugePages: this.hugePagesRefused === null,
        domains: this.domains.length,
        totalBytes: this.domains.length * sb.bufCount * sb.bufSize,
      },
      ledger: checkDomains(this.domains),
      domains: this.domains.map((d) => {
        const c = d.ledger.check();
        return {
          name: d.name, ports: this.ports.filter((p) => p.queues.domain === d).map((p) => p.name),
          bufCount: d.shared.bufCount, pool: c.pool, ledgerOk: c.ok, regionFile: d.regionFile, regionSize: d.shared.regionSize,
        };
      }),
      ports: this.live().map((p) => {
        const d = p.isTap ? p : p.queues;
        return {
          name: p.name,
          socket: p.isTap ? `tap:${p.ifname}` : this.connectors.has(p) ? `connect:${this.connectors.get(p)!.path}` : p.socketPath,
          domain: p.isTap ? null : p.queues.domain.name,
          attached: p.attached,
          ready: d.ready,
          zeroCopy: d.zeroCopy,
          sharedBar: p.isTap || p.sharedBar === null ? null : `0x${p.sharedBar.toString(16)}`,
          peer: p.isTap ? null : (this.peers.get(p)?.name ?? null),
          buffersOwned: p.isTap ? 0 : p.queues.ledger.owned[p.id],
          macs: macs.filter((m) => m.port === p.id).map((m) => m.mac),
          ...(this.policyById[p.id] !== undefined ? { policy: this.policyById[p.id] } : {}),
          queues: Array.from({ length: d.nq }, (_, q) => ({
            index: q,
            rxPackets: d.queueCounters[4 * q], rxBytes: d.queueCounters[4 * q + 1],
            txPackets: d.queueCounters[4 * q + 2], txBytes: d.queueCounters[4 * q + 3],
          })),
          counters: d.counters.snapshot(),
        };
      }),
      dataPath: {
        busySec: (this.loop.busyMs + (fromWorkers?.busyMs ?? 0)) / 1000, busyRounds: this.loop.busyRounds + (fromWorkers?.busyRounds ?? 0),
      },
      workers,
    };
  }

  /** Test hook: data-path worker `index` dies of an uncaught error, as a bug would kill it (now, or while handling the next request). */
  crashWorker(index: unknown, onNextRequest: boolean): unknown {
    const w = typeof index === 'number' ? this.workers?.workers[index] : undefined;
    if (w === undefined || !w.alive) return { error: `"worker" must be the index of a running data-path worker` };
    w.call({ op: 'test-crash', onNextRequest });
    return { ok: true };
  }

  /** Zero every port's counters, in the workers too. */
  resetCounters(): void {
    for (const p of this.dataPorts) {
      p.counters.reset();
      p.queueCounters.fill(0);
    }
    for (const w of this.workers?.workers ?? []) w.call({ op: 'reset' });
  }

  get bridgeMode(): boolean {
    return this.bridge !== null;
  }

  listPorts(): PortInfo[] {
    return this.live().map((p) => ({
      name: p.name, id: p.id, type: p.isTap ? 'tap' : 'vhost',
      socket: p.isTap ? `tap:${p.ifname}` : this.connectors.has(p) ? `connect:${this.connectors.get(p)!.path}` : p.socketPath,
      domain: p.isTap ? null : p.queues.domain.name,
      peer: p.isTap ? null : (this.peers.get(p)?.name ?? null),
      attached: p.attached,
      runtime: !p.isTap && !p.staticRange,
      quota: p.isTap ? 0 : p.partition.count,
    }));
  }

  private byName(name: string): Port | TapPort | undefined {
    return this.live().find((p) => p.name === name);
  }

  private vhostPort(name: string, role: string): Port {
    const p = this.byName(name);
    if (p === undefined) throw new Refused(`${role}: no port named "${name}" (ports are ${this.live().map((x) => `"${x.name}"`).join(', ') || 'none'})`);
    if (p.isTap) throw new Refused(`${role}: port "${name}" is a TAP uplink, not a vhost-user port`);
    return p;
  }

  /**
   * Add a vhost-user port while the switch runs. Its domain: `domain` if
   * given, else its pair peer's, else the mode's default ("bridge", or
   * "port:<name>"). A new domain gets a new region. The port has no static
   * partition: it starts empty and the pool gifts it buffers as it posts,
   * up to its quota (the domain's bufCount shared equally among its ports,
   * this one included, or `quota` when given: a reload passes the file's).
   */
  addPort(
    name: string,
    o: { pair?: string; domain?: string; connect?: string; quota?: number; socket?: PortConfig['socket']; offloads?: boolean; mtu?: number; policy?: PortPolicyConfig } = {},
  ): PortInfo {
    this.checkNewPort(name, o.domain, o.socket);
    if (o.connect !== undefined && (!path.isAbsolute(o.connect) || Buffer.byteLength(o.connect) > LIMITS.maxSocketPathBytes)) {
      throw new Refused(`--connect must be an absolute socket path of at most ${LIMITS.maxSocketPathBytes} bytes, got ${JSON.stringify(o.connect)}`);
    }
    const peer = o.pair === undefined ? null : this.vhostPort(o.pair, '--pair');
    if (peer !== null) this.checkPairable(peer, null);
    const ctx = this.portCtx!;
    const cfg = this.cfg;
    const domainName = o.domain ?? peer?.queues.domain.name ?? (cfg.mode === 'bridge' ? bridgeDomain(o.policy?.bridge) : `port:${name}`);
    const id = this.freeId();
    const perms = this.permsFor(name, o.socket);
    let domain = this.domains.find((d) => d.name === domainName);
    const newDomain = domain === undefined;
    // With workers: the worker it goes to, and a move its pair needs, are settled before anything is made.
    const bridge = cfg.mode === 'bridge' ? (o.policy ?? resolvePolicy()).bridge : undefined;
    const on = this.onWorkers;
    let worker: DataPathWorker | null = null;
    try {
      worker = on === null ? null : on.place(name, domain, bridge, peer);
    } catch (e) {
      if (e instanceof PlacementRefused) throw new Refused(e.message);
      throw e;
    }
    const peerMove = on !== null && peer !== null && on.workerOf.get(peer.id) !== worker ? on.unmovable(peer) : null;
    if (peerMove !== null) {
      throw new Refused(`cannot add port ${name} paired with "${peer!.name}": its domain "${domainName}" is forwarded by data-path worker ${worker!.index}, "${peer!.name}" by another, and ${peerMove}`);
    }
    if (domain === undefined) {
      const sb = cfg.sharedBuffers;
      domain = new SharingDomain(this.nextDomainId++, domainName, sb.bufCount, sb.bufSize, Number(sb.base), worker !== null ? 'shared' : undefined);
      if (sb.hugePages) domain.shared.useHugePages();
    }
    const members = this.ports.filter((p) => p.queues.domain === domain).length + 1;
    const quota = o.quota ?? Math.floor(domain.shared.bufCount / members);
    if (worker !== null) on!.workerOf.set(id, worker);
    const portCtx = this.portContextFor(portContext(ctx, domain, o.offloads ?? true, o.mtu), id);
    const port = new Port(id, name, path.join(cfg.socketDir, `${name}.sock`), { start: 0, count: quota }, portCtx, false);
    try {
      if (newDomain) publishRegionFile(domain, cfg.socketDir, this.regionPerms!);
      if (o.connect !== undefined) this.connect(port, o.connect);
      else this.listen(port, perms);
    } catch (e) {
      on?.workerOf.delete(id);
      if (newDomain) {
        removeRegionFile(domain);
        domain.close();
      }
      throw new Refused(`cannot add port ${name}: ${(e as Error).message}`);
    }
    if (newDomain) this.domains.push(domain);
    if (worker !== null) on!.add(worker, port, newDomain);
    this.ports.push(port);
    this.publishDomain(domain);
    this.byId[id] = port;
    this.bridgeById[id] = port.queues;
    this.peers.set(port, null);
    this.setPolicy(id, o.policy ?? resolvePolicy());
    if (worker === null) this.dataPath.addPort(port.queues);
    if (peer !== null) this.setPair(port, peer);
    this.log.info({
      port: name, id, domain: domainName, newDomain, quota, peer: peer?.name ?? null, socket: port.socketPath,
      ...(on === null ? {} : { worker: on.workerOf.get(id)!.index }),
    }, 'port added');
    this.loop.wake();
    return this.listPorts().find((p) => p.name === name)!;
  }

  /** Rewrite a domain's region header with its ports as they are now (a VM that maps the region reads its partition there). */
  private publishDomain(domain: SharingDomain): void {
    domain.publishPorts(this.ports.filter((p) => p.queues.domain === domain).map((p) => p.regionEntry()));
  }

  /** Everything that could refuse a new port, before anything is made. */
  private checkNewPort(name: string, domain: string | undefined, socket: PortConfig['socket'] | undefined): void {
    const bad = portNameProblem(name);
    if (bad !== undefined) throw new Refused(`port name "${name}": ${bad}`);
    if (this.byName(name) !== undefined) throw new Refused(`a port named "${name}" already exists`);
    if (domain !== undefined && !DOMAIN_NAME_RE.test(domain)) {
      throw new Refused(`domain "${domain}": must be 1..${LIMITS.maxDomainNameLength} characters of letters, digits, "_", ".", ":", "+" or "-"`);
    }
    if (this.live().length >= LIMITS.maxPorts) throw new Refused(`the switch has ${LIMITS.maxPorts} ports, the most it takes`);
    const sock = path.join(this.cfg.socketDir, `${name}.sock`);
    if (Buffer.byteLength(sock) > LIMITS.maxSocketPathBytes) {
      throw new Refused(`socket path "${sock}" is longer than ${LIMITS.maxSocketPathBytes} bytes; use a shorter name`);
    }
    const problem = socketPathProblem(sock);
    if (problem !== null) throw new Refused(`port ${name}: ${problem}`);
    this.permsFor(name, socket);
  }

  private permsFor(name: string, socket: PortConfig['socket'] | undefined): ResolvedPerms {
    const s = this.cfg.sockets;
    const own = socket !== undefined && socket.group !== s.group;
    try {
      const groups = readGroups();
      const field = own ? `ports[${name}].socket.group` : 'sockets.group';
      return { mode: socket?.mode ?? s.mode, gid: resolveGroup(own ? socket.group : s.group, field, groups), groupField: field };
    } catch (e) {
      throw new Refused(`port ${name}: ${(e as Error).message}`);
    }
  }

  /** The smallest id no live port has and no domain's ledger shows owning a buffer (a reclaimed id owns nothing). */
  private freeId(): number {
    for (let id = 0; id < MAX_PORTS; id++) {
      if (this.byId[id] !== undefined) continue;
      if (this.domains.some((d) => d.ledger.owned[id] !== 0)) {
        this.log.error({ id }, 'a free port id still owns buffers in a ledger; not reusing it');
        continue;
      }
      return id;
    }
    throw new Refused(`no free port id (the ledger has ${MAX_PORTS})`);
  }

  /**
   * Remove a port while the switch runs: unpair it, disconnect its VM (its
   * buffers return to the pool), close and remove its socket; the last port
   * of a domain takes the domain's region with it.
   */
  removePort(name: string): void {
    const p = this.byName(name);
    if (p === undefined) throw new Refused(`no port named "${name}" (ports are ${this.live().map((x) => `"${x.name}"`).join(', ') || 'none'})`);
    if (p.isTap) {
      (p.mirror as unknown as { shutdown?: () => void } | null)?.shutdown?.();
      // Its worker lets go of the dup lent to it first (closed then), then this thread closes the interface.
      this.onWorkers?.removeTap(p);
      p.close();
      this.dataPath.taps.splice(this.dataPath.taps.indexOf(p), 1);
      this.taps.splice(this.taps.indexOf(p), 1);
      this.bridge?.tenancy.forgetPort(p.id);
      this.byId[p.id] = undefined;
      this.log.info({ port: name }, 'port removed');
      return;
    }
    const peer = this.peers.get(p) ?? null;
    if (peer !== null) this.unpair(p, peer);
    const mirror = p.queues.mirror as unknown as { shutdown?: () => void } | null;
    mirror?.shutdown?.();
    p.disconnect('port removed');
    this.listeners.get(p)?.close();
    this.listeners.delete(p);
    this.connectors.get(p)?.stop();
    this.connectors.delete(p);
    this.dataPath.removePort(p.queues);
    this.peers.delete(p);
    this.ports.splice(this.ports.indexOf(p), 1);
    this.byId[p.id] = undefined;
    this.bridge?.tenancy.forgetPort(p.id);
    const domain = p.queues.domain;
    const reclaimed = domain.ledger.reclaim(p.id);
    const last = !this.ports.some((x) => x.queues.domain === domain);
    this.onWorkers?.remove(p, last);
    if (last) {
      removeRegionFile(domain);
      domain.close();
      this.domains.splice(this.domains.indexOf(domain), 1);
    } else {
      this.publishDomain(domain);
    }
    this.log.info({ port: name, id: p.id, domain: domain.name, reclaimed, domainFreed: last }, 'port removed');
    this.loop.wake();
  }

  private checkPairable(p: Port, other: Port | null): void {
    if (this.cfg.mode === 'bridge') throw new Refused('pairs are for pair mode; this switch is a bridge (every port is on the one bridge)');
    const cur = this.peers.get(p) ?? null;
    if (cur !== null && cur !== other) throw new Refused(`port "${p.name}" is already paired with "${cur.name}"; pair del it first`);
  }

  addPair(a: string, b: string): void {
    const pa = this.vhostPort(a, 'first port');
    const pb = this.vhostPort(b, 'second port');
    if (pa === pb) throw new Refused(`pairs port "${a}" with itself; a pair needs two different ports`);
    this.checkPairable(pa, null);
    this.checkPairable(pb, null);
    const move = this.onWorkers?.pairMove(pa, pb) ?? null;
    if (typeof move === 'string') throw new Refused(move);
    this.setPair(pa, pb);
    this.log.info({ a, b, domains: [pa.queues.domain.name, pb.queues.domain.name] }, 'pair added');
    this.loop.wake();
  }

  removePair(a: string, b: string): void {
    const pa = this.vhostPort(a, 'first port');
    const pb = this.vhostPort(b, 'second port');
    if (this.cfg.mode === 'bridge') throw new Refused('pairs are for pair mode; this switch is a bridge');
    if (this.peers.get(pa) !== pb) throw new Refused(`ports "${a}" and "${b}" are not a pair`);
    this.unpair(pa, pb);
    this.log.info({ a, b }, 'pair removed');
    this.loop.wake();
  }

  /** Both directions, between rounds (this runs on the event loop, never inside DataPath.round). */
  private setPair(a: Port, b: Port): void {
    // Both on one worker first (the callers checked that a move is possible).
    const cannot = this.onWorkers?.join(a, b) ?? null;
    if (cannot !== null) throw new Refused(cannot);
    this.peers.set(a, b);
    this.peers.set(b, a);
    this.setPeer(a, b);
    this.setPeer(b, a);
  }

  private unpair(a: Port, b: Port): void {
    this.peers.set(a, null);
    this.peers.set(b, null);
    this.setPeer(a, null);
    this.setPeer(b, null);
  }

  /** In whichever thread forwards for p. */
  private setPeer(p: Port, peer: Port | null): void {
    if (this.onWorkers === null || !this.onWorkers.setPeer(p, peer)) this.dataPath.setPeer(p.queues, peer?.queues ?? null);
  }

  /**
   * Re-read the config file, validate it completely, then apply only what
   * changed (src/config/diff.ts). A file that is invalid, or that conflicts
   * with what the switch runs now (a port it adds exists, a pair it adds
   * takes a port paired elsewhere), changes nothing and the reply says why.
   */
  reload(): unknown {
    if (this.configPath === null) throw new Refused('this switch was not started from a config file; nothing to reload');
    let next: SwitchConfig;
    try {
      next = loadConfig(this.configPath);
    } catch (e) {
      this.log.error({ file: this.configPath }, `reload refused, nothing changed: ${(e as Error).message}`);
      throw e instanceof ConfigError ? e : new Refused((e as Error).message);
    }
    const diff = diffConfig(this.fileCfg, next);
    const problems: string[] = [];
    const restart = diff.restart.map((c) => ({ ...c, from: show(c.from), to: show(c.to) }));
    // Simulate: the names that exist and who is paired with whom after the change.
    const removing = new Set(diff.removePorts.filter((n) => this.byName(n) !== undefined));
    const adding = diff.addPorts.filter((p) => {
      if (p.type === 'tap') {
        // A TAP uplink is opened at start only.
        restart.push({ path: `ports[${p.name}]`, from: null, to: 'tap' });
        return false;
      }
      return true;
    });
    const peerOf = new Map<string, string | null>();
    for (const p of this.ports) if (!removing.has(p.name)) peerOf.set(p.name, this.peers.get(p)?.name ?? null);
    for (const p of adding) {
      if (peerOf.has(p.name)) problems.push(`ports: "${p.name}" is new in the file but a port of that name exists (added at run time?); port del it first`);
      else {
        try {
          this.checkNewPortForReload(p, adding.length + this.live().length - removing.size);
        } catch (e) {
          problems.push((e as Error).message);
        }
        peerOf.set(p.name, null);
      }
    }
    const removePairs = diff.removePairs.filter(([a, b]) => peerOf.get(a) === b);
    for (const [a, b] of removePairs) {
      peerOf.set(a, null);
      peerOf.set(b, null);
    }
    const addPairs: [string, string][] = [];
    for (const [a, b] of diff.addPairs) {
      if (peerOf.get(a) === b) continue;
      for (const n of [a, b]) {
        if (!peerOf.has(n)) problems.push(`pairs: [${a}, ${b}]: no port "${n}" runs or is added`);
        else if (peerOf.get(n) !== null) problems.push(`pairs: [${a}, ${b}]: port "${n}" is paired with "${peerOf.get(n)}"`);
      }
      peerOf.set(a, b);
      peerOf.set(b, a);
      addPairs.push([a, b]);
    }
    if (this.onWorkers !== null) problems.push(...this.onWorkers.reloadProblems(removing, adding, addPairs, this.cfg.mode === 'bridge'));
    if (problems.length > 0) {
      const msg = `reload refused, nothing changed (${this.configPath}):\n${problems.map((p) => `  ${p}`).join('\n')}`;
      this.log.error({ file: this.configPath, problems }, msg);
      throw new Refused(msg);
    }
    // Apply: pairs and ports going away first, then new ports and pairs, then live settings.
    for (const [a, b] of removePairs) this.removePair(a, b);
    for (const n of removing) this.removePort(n);
    for (const p of adding) {
      this.addPort(p.name, { domain: p.domain ?? undefined, connect: p.connect, quota: p.partition.count, socket: p.socket, offloads: p.offloads, mtu: p.mtu, policy: p.policy });
    }
    for (const [a, b] of addPairs) this.addPair(a, b);
    const live = diff.live.map((c) => ({ ...c, from: show(c.from), to: show(c.to) }));
    this.applyLive(next);
    this.fileCfg = next;
    // The headers carry the gift watermarks, which a reload may have changed.
    for (const d of this.domains) this.publishDomain(d);
    const reply = {
      ok: true, file: this.configPath,
      portsAdded: adding.map((p) => p.name), portsRemoved: [...removing],
      pairsAdded: addPairs, pairsRemoved: removePairs, live, restart,
    };
    this.log.info(reply, restart.length > 0 ? 'config reloaded; some changes need a restart' : 'config reloaded');
    return reply;
  }

  private checkNewPortForReload(p: PortConfig, total: number): void {
    if (total > LIMITS.maxPorts) throw new Refused(`ports: ${total} ports would be more than ${LIMITS.maxPorts}`);
    try {
      const bad = portNameProblem(p.name);
      if (bad !== undefined) throw new Refused(bad);
      const sock = path.join(this.cfg.socketDir, `${p.name}.sock`);
      const problem = socketPathProblem(sock);
      if (problem !== null) throw new Refused(problem);
      this.permsFor(p.name, p.socket);
    } catch (e) {
      throw new Refused(`ports[${p.name}]: ${(e as Error).message}`);
    }
  }

  /** The settings a running switch can change (src/config/diff.ts, LIVE_SETTINGS). */
  private applyLive(next: SwitchConfig): void {
    const cfg = this.cfg;
    cfg.forwarding.burst = next.forwarding.burst;
    cfg.forwarding.pollMode = next.forwarding.pollMode;
    cfg.forwarding.spinUs = next.forwarding.spinUs;
    cfg.forwarding.rxWaitMs = next.forwarding.rxWaitMs;
    this.flow.waitMs = next.forwarding.rxWaitMs;
    if (this.pair) this.pair.burst = next.forwarding.burst;
    if (this.bridge) this.bridge.burst = next.forwarding.burst;
    this.loop.mode = next.forwarding.pollMode;
    this.loop.spinUs = next.forwarding.spinUs;
    const fw = next.forwarding;
    for (const w of this.workers?.workers ?? []) {
      w.call({ op: 'settings', settings: { burst: fw.burst, pollMode: fw.pollMode, spinUs: fw.spinUs, rxWaitMs: fw.rxWaitMs } });
    }
    cfg.gift.highWater = next.gift.highWater;
    cfg.gift.lowWater = next.gift.lowWater;
    cfg.limits.handshakeSec = next.limits.handshakeSec;
    // Tenant settings of ports that stay: all but the bridge apply at once (a bridge change needs a restart: diff.ts).
    for (const pc of next.ports) {
      const p = this.byName(pc.name);
      const was = p === undefined ? undefined : this.policyById[p.id];
      if (p !== undefined && was !== undefined) this.setPolicy(p.id, { ...pc.policy, bridge: was.bridge });
    }
    cfg.sockets.mode = next.sockets.mode;
    cfg.sockets.group = next.sockets.group;
    if (cfg.log.level !== next.log.level) {
      cfg.log.level = next.log.level;
      this.log.level = next.log.level as LogLevel;
    }
    if (cfg.stats.intervalMs !== next.stats.intervalMs) {
      cfg.stats.intervalMs = next.stats.intervalMs;
      this.startStatsTimer();
    }
    this.loop.wake();
  }

  /** Attach (or with null, detach) a mirror to a port; false if there is no such port. */
  setMirror(portName: string, mirror: (Mirror & MirrorSink) | null): boolean {
    const p = this.dataPorts.find((x) => x.name === portName);
    if (!p) return false;
    this.onWorkers?.setMirror(p.id, mirror);
    p.mirror = mirror;
    return true;
  }

  /** Close every connection and socket, unmap memory. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.loop.stop();
    // Workers stop forwarding and drop their mappings and fds before anything here goes away.
    void this.workers?.stop();
    if (this.safetyTimer) clearInterval(this.safetyTimer);
    if (this.statsTimer) clearInterval(this.statsTimer);
    for (const c of this.connectors.values()) c.stop();
    for (const p of this.ports) p.disconnect('switch shutting down');
    for (const tap of this.taps) tap.close();
    for (const l of this.listeners.values()) l.close();
    this.listeners.clear();
    this.control?.close();
    this.metrics?.close();
    for (const d of this.domains) {
      removeRegionFile(d);
      d.close();
    }
    if (this.running) this.log.info('switch stopped');
  }
}

/** A port's context: the switch's shared one (its getters stay live) with the port's domain. */
function portContext(ctx: Omit<PortContext, 'domain'>, domain: SharingDomain, offloads: boolean, mtu = MTU_DEFAULT): PortContext {
  return Object.assign(Object.create(ctx) as PortContext, { domain, mtu, features: offloads ? ctx.features : ctx.features & ~OFFLOAD_FEATURES });
}

/** A value as a reload reply shows it (bigints as hex). */
function show(v: unknown): unknown {
  return typeof v === 'bigint' ? `0x${v.toString(16)}` : v;
}
