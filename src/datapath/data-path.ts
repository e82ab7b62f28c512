/**
 * One pass of the data path over every port (what the PollLoop runs):
 *
 * 1. every port: consume new rx postings (PortQueues.ingestRx);
 * 2. every TAP uplink (bridge), then every running tx queue of every port:
 *    one burst each through the mode's forwarder (fairness: no queue gets
 *    more than `burst` per pass);
 * 3. every port: publish used indices once and send the calls the VMs
 *    asked for.
 *
 * Once per slice of rounds (endSlice), guest-memory faults are polled.
 *
 * A tx queue whose head waits for a receiver's rx buffer (back-pressure,
 * src/datapath/flow-control.ts) adds no work, so a round that finds only
 * such queues is idle and the poll loop goes to sleep; wakeAt() tells it
 * when the first wait runs out.
 *
 * Ports and pairs are plain arrays indexed by position, set up by the
 * control plane (src/switch/switch.ts) and changed by it at run time
 * (addPort, removePort, setPeer) only between rounds, never during one
 * (they throw if called from inside a round); nothing here logs,
 * allocates or looks anything up by name.
 */
import { performance } from 'node:perf_hooks';
import { pollGuestFaults } from '../vhost/guest-faults';
import type { BridgeForwarder } from './bridge-forwarder';
import type { PairForwarder } from './pair-forwarder';
import type { PollTarget } from './poll-loop';
import type { PortQueues } from './port-queues';
import type { TapPort } from './tap-port';

export class DataPath implements PollTarget {
  /** vhost-user ports' queues. */
  readonly ports: PortQueues[] = [];
  /** peers[i]: the port ports[i] is paired with (pair mode), or null. */
  readonly peers: (PortQueues | null)[] = [];
  /** TAP uplinks (bridge mode). */
  readonly taps: TapPort[] = [];

  constructor(
    /** Exactly one of the two forwarders is set, by the switch's mode. */
    private readonly pair: PairForwarder | null,
    private readonly bridge: BridgeForwarder | null,
  ) {}

  /**
   * Fault boundaries: each port's part of each step runs in its own
   * try/catch (per port per round, not per packet: V8 optimises it away to
   * nothing on the path that does not throw). A throw disconnects that port
   * (PortQueues.onFault, logged with its name) and the round goes on with
   * the others.
   */
  round(): number {
    this.inRound = true;
    try {
      return this.pass();
    } finally {
      this.inRound = false;
      if (this.leaving.length > 0) this.removeLeaving();
    }
  }

  /** Ports found broken during the round in progress, taken out when it ends (removePortAfterRound). */
  private readonly leaving: PortQueues[] = [];

  /**
   * Take p out of the data path as removePort does, but from inside a round
   * too (a port found broken mid-round: a worker thread stops serving it at
   * once, before its control plane hears of it): then at the round's end,
   * so the arrays still change only between rounds. Until then the rest of
   * the round may still look at it; its broken rings make every part stop
   * at once, as they did when it was found.
   */
  removePortAfterRound(p: PortQueues): void {
    if (!this.inRound) return this.removePort(p);
    if (!this.leaving.includes(p)) this.leaving.push(p);
  }

  private removeLeaving(): void {
    for (const p of this.leaving) this.removePort(p);
    this.leaving.length = 0;
  }

  /** Set while round() runs: the port arrays must not change then. */
  private inRound = false;

  private assertBetweenRounds(what: string): void {
    if (this.inRound) throw new Error(`DataPath.${what} called during a round; port arrays change only between rounds`);
  }

  /** A port added at run time (unpaired until setPeer). */
  addPort(p: PortQueues): void {
    this.assertBetweenRounds('addPort');
    if (this.ports.includes(p)) return;
    this.ports.push(p);
    this.peers.push(null);
  }

  /** A port removed at run time: gone from the arrays, and no port has it as its peer any more. */
  removePort(p: PortQueues): void {
    this.assertBetweenRounds('removePort');
    const i = this.ports.indexOf(p);
    if (i >= 0) {
      this.ports.splice(i, 1);
      this.peers.splice(i, 1);
    }
    for (let k = 0; k < this.peers.length; k++) if (this.peers[k] === p) this.peers[k] = null;
  }

  /** Pair mode: p forwards to peer (null: unpaired). The caller sets both directions. */
  setPeer(p: PortQueues, peer: PortQueues | null): void {
    this.assertBetweenRounds('setPeer');
    const i = this.ports.indexOf(p);
    if (i < 0) throw new Error(`DataPath.setPeer: port ${p.name} is not in the data path`);
    this.peers[i] = peer;
  }

  /** Back-pressure deadlines: the latest round's earliest one (FlowControl), for the poll loop's sleep. */
  wakeAt(): number {
    return (this.bridge ?? this.pair!).flow.wakeAt;
  }

  private pass(): number {
    let work = 0;
    const ports = this.ports;
    (this.bridge ?? this.pair!).flow.startRound();
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i];
      try {
        work += p.ingestRx();
      } catch (e) {
        p.onFault('rx postings', e);
      }
    }
    const bridge = this.bridge;
    if (bridge !== null) {
      const now = performance.now();
      for (let i = 0; i < this.taps.length; i++) work += bridge.forwardTap(this.taps[i], now);
      for (let i = 0; i < ports.length; i++) {
        const p = ports[i];
        try {
          for (let q = 0; q < p.nq; q++) if (p.txqs[q] !== null) work += bridge.forward(p, q, now);
        } catch (e) {
          p.onFault('forwarding its tx queues', e);
        }
      }
    } else {
      const pair = this.pair!;
      for (let i = 0; i < ports.length; i++) {
        const p = ports[i];
        const peer = this.peers[i];
        try {
          for (let q = 0; q < p.nq; q++) if (p.txqs[q] !== null) work += pair.forward(p, q, peer);
        } catch (e) {
          p.onFault('forwarding its tx queues', e);
        }
      }
    }
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i];
      try {
        p.flush();
      } catch (e) {
        p.onFault('publishing used entries and calls', e);
      }
    }
    return work;
  }

  /**
   * Once per PollLoop slice: a front-end mapping that faulted during the
   * slice (its memory vanished; the SIGBUS guard zero-filled it) costs its
   * port the connection. One atomic load through the addon when none did.
   */
  endSlice(): void {
    pollGuestFaults();
  }

  setKicks(on: boolean): number {
    let pending = 0;
    for (let i = 0; i < this.ports.length; i++) pending += this.ports[i].setKicks(on);
    return pending;
  }
}
