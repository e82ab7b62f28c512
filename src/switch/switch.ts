/**
 * The switch process: owns the Shared Buffers region and the ownership
 * ledger, listens on one vhost-user socket per port, runs the data path in
 * a PollLoop, and answers the control socket (stats). Pair mode today; the
 * forwarding policy is the only mode-specific part.
 */
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { FdWatcher, closeFd, unixAccept, unixConnect, unixListen } from '../../bindings';
import type { SwitchConfig } from '../config';
import type { Logger } from '../log';
import { OwnershipLedger, POOL, type LedgerCheck } from '../shm/ledger';
import { SharedBuffers } from '../shm/shared-buffers';
import { PROTOCOL_F_REPLY_ACK, PROTOCOL_F_SHARED_BUFFERS, PROTOCOL_F_STATUS } from '../vhost/protocol';
import { VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, bit } from '../virtio/defs';
import { BridgeForwarder } from './bridge-forwarder';
import { ControlServer } from './control';
import { PairForwarder } from './pair-forwarder';
import { PollLoop } from './poll-loop';
import { Port, type PortContext } from './port';

export const OFFERED_FEATURES = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_RING_F_EVENT_IDX);
export const OFFERED_PROTOCOL_FEATURES = bit(PROTOCOL_F_REPLY_ACK) | bit(PROTOCOL_F_STATUS) | bit(PROTOCOL_F_SHARED_BUFFERS);

export interface PortStats {
  name: string;
  socket: string;
  attached: boolean;
  /** Both queues running: the port can carry traffic. */
  ready: boolean;
  zeroCopy: boolean;
  peer: string | null;
  buffersOwned: number;
  /** Bridge mode: MAC addresses learned on this port. */
  macs: string[];
  counters: Record<string, unknown>;
}

export interface SwitchStats {
  mode: string;
  uptimeSec: number;
  sharedBuffers: { bufCount: number; bufSize: number; base: string; pool: number };
  ledger: LedgerCheck;
  ports: PortStats[];
}

export class Switch {
  readonly shared: SharedBuffers;
  readonly ledger: OwnershipLedger;
  readonly ports: Port[] = [];
  private readonly peers = new Map<Port, Port | null>();
  private readonly listeners: { fd: number; watcher: FdWatcher; path: string }[] = [];
  private readonly forwarder: PairForwarder;
  private bridge: BridgeForwarder | null = null;
  private readonly loop: PollLoop;
  private control: ControlServer | null = null;
  private statsTimer: NodeJS.Timeout | null = null;
  private safetyTimer: NodeJS.Timeout | null = null;
  private readonly started = Date.now();
  private stopped = false;

  constructor(readonly cfg: SwitchConfig, readonly log: Logger) {
    const sb = cfg.sharedBuffers;
    this.shared = new SharedBuffers(sb.bufCount, sb.bufSize, Number(sb.base));
    this.ledger = new OwnershipLedger(sb.bufCount);
    this.forwarder = new PairForwarder(this.shared, this.ledger, cfg.forwarding.burst);
    this.loop = new PollLoop(this, cfg.forwarding.pollMode, cfg.forwarding.spinUs);
  }

  /** Listen on every port socket and the control socket. On failure nothing is left behind. */
  async start(): Promise<void> {
    const cfg = this.cfg;
    try {
      fs.mkdirSync(cfg.socketDir, { recursive: true });
      const ctx: PortContext = {
        shared: this.shared,
        ledger: this.ledger,
        log: this.log,
        features: OFFERED_FEATURES,
        protocolFeatures: OFFERED_PROTOCOL_FEATURES,
        giftHigh: cfg.gift.highWater,
        giftLow: cfg.gift.lowWater,
        swap: cfg.mode === 'bridge',
        wake: () => this.loop.wake(),
        attached: () => this.loop.wake(),
        detached: (port) => {
          this.bridge?.macs.forgetPort(port.id);
          this.loop.wake();
        },
      };
      cfg.ports.forEach((pc, id) => {
        const sock = path.join(cfg.socketDir, `${pc.name}.sock`);
        const port = new Port(id, pc.name, sock, pc.partition, ctx);
        this.ports.push(port);
        this.listen(port);
      });
      if (cfg.mode === 'bridge') {
        this.bridge = new BridgeForwarder(this.shared, this.ledger, cfg.forwarding.burst, this.ports, cfg.bridge.macTableSize, cfg.bridge.ageingSec * 1000);
      }
      const byName = new Map(this.ports.map((p) => [p.name, p]));
      for (const p of this.ports) this.peers.set(p, null);
      for (const [a, b] of cfg.pairs) {
        this.peers.set(byName.get(a)!, byName.get(b)!);
        this.peers.set(byName.get(b)!, byName.get(a)!);
      }
      this.control = new ControlServer(cfg.controlSocket, this.log, (cmd) => this.command(cmd));
      await this.control.listen();
    } catch (e) {
      this.stop();
      throw e;
    }
    // Safety net: a lost kick (or a front-end without kick fds) costs at most this much latency.
    this.safetyTimer = setInterval(() => this.loop.wake(), 100);
    if (cfg.stats.intervalMs > 0) {
      this.statsTimer = setInterval(() => this.log.info({ stats: this.stats().ports }, 'port stats'), cfg.stats.intervalMs);
    }
    this.log.info({ mode: cfg.mode, bufCount: cfg.sharedBuffers.bufCount, bufSize: cfg.sharedBuffers.bufSize }, 'switch started');
  }

  private listen(port: Port): void {
    removeStaleSocket(port.socketPath, port.name);
    const fd = unixListen(port.socketPath, 4);
    const watcher = new FdWatcher(fd, () => {
      for (let c = unixAccept(fd); c >= 0; c = unixAccept(fd)) {
        if (port.attached) {
          this.log.warn({ port: port.name }, 'port busy: a front-end is already attached; refusing a second connection');
          closeFd(c);
        } else {
          port.accept(c);
        }
      }
    });
    watcher.start();
    this.listeners.push({ fd, watcher, path: port.socketPath });
  }

  /** One data-path pass: ingest posted rx buffers, forward every tx queue, publish and notify. */
  round(): number {
    let work = 0;
    const ports = this.ports;
    for (let i = 0; i < ports.length; i++) work += ports[i].ingestRx();
    const bridge = this.bridge;
    if (bridge !== null) {
      const now = performance.now();
      for (let i = 0; i < ports.length; i++) if (ports[i].txq !== null) work += bridge.forward(ports[i], now);
    } else {
      for (let i = 0; i < ports.length; i++) {
        const p = ports[i];
        if (p.txq !== null) work += this.forwarder.forward(p, this.peers.get(p) ?? null);
      }
    }
    for (let i = 0; i < ports.length; i++) ports[i].flush();
    return work;
  }

  setKicks(on: boolean): number {
    let pending = 0;
    for (const p of this.ports) pending += p.setKicks(on);
    return pending;
  }

  stats(): SwitchStats {
    const macs = this.bridge ? this.bridge.macs.entries(performance.now()) : [];
    return {
      mode: this.cfg.mode,
      uptimeSec: (Date.now() - this.started) / 1000,
      sharedBuffers: {
        bufCount: this.shared.bufCount, bufSize: this.shared.bufSize,
        base: `0x${this.shared.base.toString(16)}`, pool: this.ledger.pool,
      },
      ledger: this.ledger.check(),
      ports: this.ports.map((p) => ({
        name: p.name,
        socket: p.socketPath,
        attached: p.attached,
        ready: p.rxq !== null && p.txq !== null,
        zeroCopy: p.zeroCopy,
        peer: this.peers.get(p)?.name ?? null,
        buffersOwned: this.ledger.owned[p.id],
        macs: macs.filter((m) => m.port === p.id).map((m) => m.mac),
        counters: p.counters.snapshot(),
      })),
    };
  }

  private command(cmd: { cmd?: unknown }): unknown {
    switch (cmd.cmd) {
      case 'stats':
        return this.stats();
      case 'reset-counters':
        for (const p of this.ports) p.counters.reset();
        return { ok: true };
      default:
        return { error: `unknown command ${JSON.stringify(cmd.cmd)}; known: stats, reset-counters` };
    }
  }

  /** Close every connection and socket, unmap memory. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.loop.stop();
    if (this.safetyTimer) clearInterval(this.safetyTimer);
    if (this.statsTimer) clearInterval(this.statsTimer);
    for (const p of this.ports) p.disconnect('switch shutting down');
    for (const l of this.listeners) {
      l.watcher.close();
      closeFd(l.fd);
      fs.rmSync(l.path, { force: true });
    }
    this.listeners.length = 0;
    this.control?.close();
    this.shared.close();
    this.log.info('switch stopped');
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

export { POOL };
