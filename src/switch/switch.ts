/**
 * The switch process: owns one Shared Buffers region and ownership ledger
 * per sharing domain (src/shm/domain.ts), listens on one vhost-user socket per port (and opens the TAP
 * uplinks), runs the data path in a PollLoop, and answers the control
 * socket (stats, capture) and the optional Prometheus endpoint. This is
 * the control plane: it sets up ports and pairs, then hands the per-packet
 * work to a DataPath (src/datapath/) and never sits in a per-packet call.
 */
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { FdWatcher, type NativeError, closeFd, unixAccept, unixConnect, unixListen } from '../../bindings';
import { type SwitchConfig, prepareSocketDir, readGroups, resolveGroup, socketDirListenError } from '../config';
import { BridgeForwarder, type BridgePort } from '../datapath/bridge-forwarder';
import { DataPath } from '../datapath/data-path';
import type { Mirror } from '../datapath/mirror';
import { PairForwarder } from '../datapath/pair-forwarder';
import { PollLoop } from '../datapath/poll-loop';
import { TapPort } from '../datapath/tap-port';
import type { Logger } from '../log';
import { SharingDomain, checkDomains } from '../shm/domain';
import { closeFdQuiet } from '../vhost/memory-table';
import {
  PROTOCOL_F_MQ, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_SHARED_BUFFERS, PROTOCOL_F_STATUS, VHOST_USER_F_PROTOCOL_FEATURES,
} from '../vhost/protocol';
import { VIRTIO_F_VERSION_1, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_EVENT_IDX, bit } from '../virtio/defs';
import { captureCommand } from './capture';
import { PortConnector } from './connector';
import { ControlServer } from './control';
import { type MetricsServer, startMetrics } from './metrics';
import { Port, type PortContext } from './port';
import { type ResolvedPerms, bindSecurely } from './socket-file';
import type { SwitchStats } from './stats';

export const OFFERED_FEATURES =
  bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_NET_F_MQ) |
  bit(VIRTIO_NET_F_MRG_RXBUF);
export const OFFERED_PROTOCOL_FEATURES =
  bit(PROTOCOL_F_REPLY_ACK) | bit(PROTOCOL_F_STATUS) | bit(PROTOCOL_F_MQ) | bit(PROTOCOL_F_SHARED_BUFFERS);

export class Switch {
  /** One region and ledger per sharing domain, in order of first appearance in the config's ports. */
  readonly domains: SharingDomain[] = [];
  /** vhost-user ports. */
  readonly ports: Port[] = [];
  /** TAP uplinks (bridge mode). */
  readonly taps: TapPort[] = [];
  /** Every port by id (= its index in the config). */
  private readonly byId: (Port | TapPort)[] = [];
  /** Every port's data side by id: what the bridge and capture see. */
  readonly dataPorts: BridgePort[] = [];
  private readonly peers = new Map<Port, Port | null>();
  private readonly listeners: { fd: number; watcher: FdWatcher; path: string }[] = [];
  /** Cancel each listener's pending accept retry (see listen). */
  private readonly acceptRetries: (() => void)[] = [];
  /** Client-mode ports (`ports[].connect`): the switch connects to a listening front-end. */
  private readonly connectors = new Map<Port, PortConnector>();
  private readonly bridge: BridgeForwarder | null;
  private readonly dataPath: DataPath;
  private readonly loop: PollLoop;
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

  constructor(readonly cfg: SwitchConfig, readonly log: Logger) {
    const sb = cfg.sharedBuffers;
    let refused: string | null = null;
    try {
      for (const pc of cfg.ports) {
        if (pc.domain === null || this.domains.some((d) => d.name === pc.domain)) continue;
        const d = new SharingDomain(this.domains.length, pc.domain, sb.bufCount, sb.bufSize, Number(sb.base));
        this.domains.push(d);
        refused ??= sb.hugePages ? d.shared.useHugePages() : 'disabled by sharedBuffers.hugePages';
      }
    } catch (e) {
      for (const d of this.domains) d.close();
      throw e;
    }
    this.hugePagesRefused = refused;
    const fw = cfg.forwarding;
    this.bridge = cfg.mode === 'bridge'
      ? new BridgeForwarder(fw.burst, this.dataPorts, cfg.bridge.macTableSize, cfg.bridge.ageingSec * 1000)
      : null;
    const pair = this.bridge === null ? new PairForwarder(fw.burst) : null;
    this.dataPath = new DataPath(pair, this.bridge);
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
      const ctx: Omit<PortContext, 'domain'> = {
        log: this.log,
        features: OFFERED_FEATURES,
        protocolFeatures: OFFERED_PROTOCOL_FEATURES,
        giftHigh: cfg.gift.highWater,
        giftLow: cfg.gift.lowWater,
        handshakeMs: cfg.limits.handshakeSec * 1000,
        queuePairs: cfg.forwarding.queuePairs,
        swap: cfg.mode === 'bridge',
        wake: () => this.loop.wake(),
        attached: () => this.loop.wake(),
        detached: (port) => {
          this.bridge?.macs.forgetPort(port.id);
          this.loop.wake();
          this.connectors.get(port)?.lost();
        },
      };
      cfg.ports.forEach((pc, id) => {
        if (pc.type === 'tap') {
          const tap = new TapPort(id, pc.name, pc.ifname, this.log, ctx.wake);
          this.taps.push(tap);
          this.byId.push(tap);
          this.dataPorts.push(tap);
          this.dataPath.taps.push(tap);
          try {
            tap.open();
          } catch (e) {
            const err = e as NodeJS.ErrnoException;
            const hint = err.code === 'EPERM' ? ' (creating a TAP interface needs CAP_NET_ADMIN)' : '';
            throw new Error(`port ${pc.name}: cannot open TAP interface ${pc.ifname}: ${err.message}${hint}`);
          }
          return;
        }
        const sock = path.join(cfg.socketDir, `${pc.name}.sock`);
        const domain = this.domains.find((d) => d.name === pc.domain)!;
        const port = new Port(id, pc.name, sock, pc.partition, { ...ctx, domain });
        this.ports.push(port);
        this.byId.push(port);
        this.dataPorts.push(port.queues);
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
        this.dataPath.ports.push(p.queues);
        this.dataPath.peers.push(this.peers.get(p)?.queues ?? null);
      }
      this.control = new ControlServer(cfg.controlSocket, this.log, (cmd) => this.command(cmd), cfg.sockets.controlMode);
      await this.control.listen();
      this.metrics = await startMetrics(cfg.metrics, () => this.stats(), this.log);
    } catch (e) {
      this.stop();
      throw e;
    }
    // Safety net: a lost kick (or a front-end without kick fds) costs at most this much latency.
    this.safetyTimer = setInterval(() => this.loop.wake(), 100);
    if (cfg.stats.intervalMs > 0) {
      this.statsTimer = setInterval(() => this.log.info({ stats: this.stats().ports }, 'port stats'), cfg.stats.intervalMs);
    }
    const sb = cfg.sharedBuffers;
    this.log.info(
      {
        mode: cfg.mode, bufCount: sb.bufCount, bufSize: sb.bufSize, domains: this.domains.map((d) => d.name),
        sharedBytes: this.domains.length * sb.bufCount * sb.bufSize, hugePages: this.hugePagesRefused ?? true,
      },
      'switch started',
    );
    this.running = true;
  }

  /** Client mode: no socket of our own; connect to the front-end's, and again whenever it goes away (connector.ts). */
  private connect(port: Port, target: string): void {
    const c = new PortConnector(port, target, this.log);
    this.connectors.set(port, c);
    c.start();
  }

  private listen(port: Port, perms: ResolvedPerms): void {
    removeStaleSocket(port.socketPath, port.name);
    let fd: number;
    try {
      // Bound in a private staging directory, given its mode and group, then renamed into place (socket-file.ts).
      fd = bindSecurely(port.socketPath, perms, (tmp) => unixListen(tmp, 4), closeFd);
    } catch (e) {
      throw socketDirListenError(this.cfg.socketDir, port.socketPath, e);
    }
    let lastBusyLog = -Infinity;
    let refused = 0;
    // accept failures (EMFILE, ENFILE, ENOMEM...): stop watching, retry after a backoff, log once per streak.
    let failures = 0;
    let retry: NodeJS.Timeout | null = null;
    const acceptAll = () => {
      for (;;) {
        let c: number;
        try {
          c = unixAccept(fd);
        } catch (e) {
          const err = e as NativeError;
          const delayMs = Math.min(1000, 50 << Math.min(failures, 5));
          if (failures++ === 0) {
            this.log.error({ port: port.name, code: err.code, retryMs: delayMs }, `accept failed: ${err.message}; pausing accepts on this port and retrying`);
          }
          watcher.stop();
          retry = setTimeout(() => {
            retry = null;
            if (this.stopped) return;
            watcher.start();
            acceptAll();
          }, delayMs);
          retry.unref();
          return;
        }
        // accept worked (a connection, or none waiting): the fd table has room again.
        if (failures > 0) {
          this.log.info({ port: port.name, failures }, 'accepting connections again');
          failures = 0;
        }
        if (c < 0) return;
        if (port.attached) {
          // A refused QEMU retries in a tight loop: log the first refusal, then once every 10 s.
          const now = Date.now();
          refused++;
          if (now - lastBusyLog >= 10_000) {
            this.log.warn({ port: port.name, refused }, 'port busy: a front-end is already attached; refusing other connections');
            lastBusyLog = now;
            refused = 0;
          }
          closeFd(c);
          continue;
        }
        try {
          port.accept(c);
        } catch (e) {
          // A connection that cannot be served is closed; the port stays free and the listener goes on.
          this.log.error({ port: port.name, err: e }, `cannot serve a new connection: ${(e as Error).message}`);
          if (port.attached) port.disconnect(`cannot serve the connection: ${(e as Error).message}`);
          else closeFdQuiet(c);
        }
      }
    };
    const watcher = new FdWatcher(fd, acceptAll);
    watcher.start();
    this.acceptRetries.push(() => retry !== null && clearTimeout(retry));
    this.listeners.push({ fd, watcher, path: port.socketPath });
  }

  stats(): SwitchStats {
    const macs = this.bridge ? this.bridge.macs.entries(performance.now()) : [];
    const sb = this.cfg.sharedBuffers;
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
          bufCount: d.shared.bufCount, pool: c.pool, ledgerOk: c.ok,
        };
      }),
      ports: this.byId.map((p) => {
        const d = p.isTap ? p : p.queues;
        return {
          name: p.name,
          socket: p.isTap ? `tap:${p.ifname}` : this.connectors.has(p) ? `connect:${this.connectors.get(p)!.path}` : p.socketPath,
          domain: p.isTap ? null : p.queues.domain.name,
          attached: p.attached,
          ready: d.ready,
          zeroCopy: d.zeroCopy,
          peer: p.isTap ? null : (this.peers.get(p)?.name ?? null),
          buffersOwned: p.isTap ? 0 : p.queues.ledger.owned[p.id],
          macs: macs.filter((m) => m.port === p.id).map((m) => m.mac),
          queues: Array.from({ length: d.nq }, (_, q) => ({
            index: q,
            rxPackets: d.queueCounters[4 * q], rxBytes: d.queueCounters[4 * q + 1],
            txPackets: d.queueCounters[4 * q + 2], txBytes: d.queueCounters[4 * q + 3],
          })),
          counters: d.counters.snapshot(),
        };
      }),
    };
  }

  private command(cmd: { cmd?: unknown }): unknown {
    switch (cmd.cmd) {
      case 'stats':
        return this.stats();
      case 'reset-counters':
        for (const p of this.dataPorts) {
          p.counters.reset();
          p.queueCounters.fill(0);
        }
        return { ok: true };
      case 'capture': // streams pcap on this connection: src/switch/capture.ts
        return captureCommand(this, cmd as Record<string, unknown>);
      default:
        return { error: `unknown command ${JSON.stringify(cmd.cmd)}; known: stats, reset-counters, capture` };
    }
  }

  /** Attach (or with null, detach) a mirror to a port; false if there is no such port. */
  setMirror(portName: string, mirror: Mirror | null): boolean {
    const p = this.dataPorts.find((x) => x.name === portName);
    if (!p) return false;
    p.mirror = mirror;
    return true;
  }

  /** Close every connection and socket, unmap memory. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.loop.stop();
    if (this.safetyTimer) clearInterval(this.safetyTimer);
    if (this.statsTimer) clearInterval(this.statsTimer);
    for (const c of this.connectors.values()) c.stop();
    for (const p of this.ports) p.disconnect('switch shutting down');
    for (const tap of this.taps) tap.close();
    for (const cancel of this.acceptRetries) cancel();
    for (const l of this.listeners) {
      l.watcher.close();
      closeFd(l.fd);
      fs.rmSync(l.path, { force: true });
    }
    this.listeners.length = 0;
    this.control?.close();
    this.metrics?.close();
    for (const d of this.domains) d.close();
    if (this.running) this.log.info('switch stopped');
  }
}

/** A socket file left by a dead switch is removed; one with a live listener is an error. */
function removeStaleSocket(p: string, port: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`port ${port}: ${p} exists and is not a socket; refusing to replace it`);
  try {
    const fd = unixConnect(p);
    closeFd(fd);
  } catch {
    fs.rmSync(p, { force: true });
    return;
  }
  throw new Error(`port ${port}: ${p} is in use by another running switch`);
}

