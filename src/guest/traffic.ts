/**
 * The roles a test "VM" plays on top of GuestDriver (what `zcswitch vm`
 * runs): gen (send self-checking frames, and verify whatever comes back),
 * sink (verify and count), echo (send every frame back, zero-copy when it
 * arrived in a shared buffer). One loop, spin-then-sleep: it polls while
 * there is work and for spinUs after (yielding the core on empty passes),
 * then sleeps on the call eventfds.
 */
import { performance } from 'node:perf_hooks';
import { schedYield } from '../../bindings';
import { VIRTIO_NET_HDR_SIZE } from '../virtio/defs';
import { GuestDriver } from './driver';
import { GSO_OFFLOAD, GSO_SHIFT, GsoFrameChecker, GsoHeaderWriter, gsoHeaderIntact, gsoHeaderIntactWords } from './gso-frame';
import { FrameChecker, SequenceTracker, TestHeaderWriter, Verdict, writeAnnounceFrame, writeTestFrame } from './test-packet';

export type VmMode = 'gen' | 'sink' | 'echo';

export interface TrafficOptions {
  mode: VmMode;
  /** Ethernet frame size in bytes. */
  size: number;
  /** gen: packets to send (0 = unlimited); sink/echo: stop after receiving this many (0 = unlimited). */
  count: number;
  /** gen: packets per second (0 = as fast as possible). */
  rate: number;
  /** Stop after this many seconds (0 = no limit). */
  durationSec: number;
  burst: number;
  spinUs: number;
  /** Write and check the payload pattern (off for pure packet-rate runs). */
  verifyPayload: boolean;
  /** Send through private memory (the copy path) instead of shared buffers. */
  copyMode: boolean;
  /** gen: after the last send, wait this long for stragglers (echoes). */
  lingerMs: number;
  /** gen: done as soon as this many packets came back (an echo peer); 0 = rely on linger. */
  expect: number;
  stream: number;
  /** Run id written into generated frames (1..MAX_RUN_ID; fresh per run, so a sink tells two runs of one stream apart). */
  run: number;
  /** Destination then source MAC (12 bytes) written into generated frames. */
  macs: Uint8Array;
  /** Send one broadcast frame from our MAC first, so a bridge learns where we are. */
  announce: boolean;
  /**
   * TSO frames (gso-frame.ts): gen sends each frame as a TCP segment with a
   * TSO virtio_net_hdr; gen and sink check received frames as such (the
   * header unchanged, the test frame GSO_SHIFT bytes in; with --no-verify
   * the frame's TCP/IP headers alone name it). Shared buffers only.
   */
  gso: boolean;
}

export interface TrafficSummary {
  mode: VmMode;
  sent: number;
  received: number;
  bytesSent: number;
  bytesReceived: number;
  verified: number;
  notTest: number;
  badLength: number;
  badChecksum: number;
  lost: number;
  dup: number;
  /** Different streams (stream id and run id) among the verified frames. */
  streams: number;
  giftsSent: number;
  giftsReceived: number;
  returned: number;
  rxErrors: number;
  buffersOwned: number;
  /** Tx entries (frames, gift chains) the switch has not completed yet at the end (waiting in our rings: back-pressure). */
  txInFlight: number;
  elapsedSec: number;
  txPps: number;
  rxPps: number;
  /**
   * Wall time of the loop's turns that moved at least one packet (s): the
   * VM's own work without its idle spinning. A turn is up to
   * PASSES_PER_TURN passes; the idle pass that ends a working turn counts
   * too (one clock read per turn: a read per pass was a cost of its own).
   * Busy time ÷ packets is the VM's cost per packet (what the bench
   * reports beside the switch's).
   */
  busySec: number;
  /** --gso: frames that arrived with their TSO header unchanged, and with it changed. */
  gsoIntact: number;
  gsoChanged: number;
  /** Turns of the loop that moved at least one packet (those busySec counts): packets ÷ busyTurns is the batch a turn moves. */
  busyTurns: number;
  /**
   * gen: passes that had a budget to send, and of those the ones that sent
   * less for want of free buffers (the peer's gifts or swaps not back yet)
   * or for want of room on the tx ring (the switch not taking them yet):
   * what holds a sender back when it is not its own work. Counted where a
   * burst of shared buffers goes out at once (one queue pair, no --gso, no
   * --copy: what the bench runs).
   */
  sendPasses: number;
  shortOfBuffers: number;
  shortOfRoom: number;
}

/** Most passes (bursts each way) between two turns of the event loop. */
const PASSES_PER_TURN = 16;

export class TrafficVm {
  private sent = 0;
  private gsoIntact = 0;
  private gsoChanged = 0;
  /** Received test frames by Verdict (Ok: verified), one entry per Verdict value. */
  private readonly verdicts = new Float64Array(Verdict.BadChecksum + 1);
  private readonly checker = new FrameChecker();
  /** --gso with --no-verify: frames checked by their TCP/IP headers. */
  private readonly gsoChecker = new GsoFrameChecker();
  private readonly seq = new SequenceTracker();
  /** Benchmarks (no payload): the header from a template. */
  private readonly header: TestHeaderWriter;
  /** --gso: the TSO frame's Ethernet/IPv4/TCP headers, written over the test frame's first bytes. */
  private readonly gsoHeader: GsoHeaderWriter | null;
  /** The mode as booleans: the per-packet code tests these, not the option string (a string compare per packet showed in perf). */
  private readonly echo: boolean;
  private readonly gen: boolean;
  private start = 0;
  private lastSendAt = 0;
  private lastRxAt = 0;
  private idleSince = -1;
  /** The rate clock: sends are paced from here (reset when the switch comes back, so a gen does not burst to catch up). */
  private rateStart = 0;
  private rateSent = 0;
  private done = false;
  /** See TrafficSummary.busySec (ms here). */
  private busyMs = 0;
  private busyTurns = 0;
  private sendPasses = 0;
  private shortOfBuffers = 0;
  private shortOfRoom = 0;
  private finish!: (s: TrafficSummary) => void;

  constructor(private readonly drv: GuestDriver, private readonly o: TrafficOptions) {
    this.header = new TestHeaderWriter(o.gso ? o.size - GSO_SHIFT : o.size, o.stream, o.macs, o.run);
    this.gsoHeader = o.gso ? new GsoHeaderWriter(o.macs, o.stream, o.run) : null;
    this.echo = o.mode === 'echo';
    this.gen = o.mode === 'gen';
  }

  run(): Promise<TrafficSummary> {
    this.start = this.rateStart = this.lastRxAt = performance.now();
    return new Promise((resolve) => {
      this.finish = resolve;
      this.drv.pollMode();
      if (this.o.announce) this.announce();
      setImmediate(this.loop);
    });
  }

  /** End now (signal, switch gone) and resolve with what was counted. */
  stop(): void {
    if (this.done) return;
    this.done = true;
    // Count what the switch already put on our rx ring: a stop signal should
    // not make delivered packets look lost.
    if (this.o.mode !== 'echo' && !this.drv.isClosed) {
      for (let i = 0; i < 10_000 && this.receiveBatch(performance.now()) > 0; i++);
    }
    this.finish(this.summary());
  }

  /** The switch went away (the driver is reattaching): nothing to do but wait. */
  disconnected(): void {
    this.idleSince = -1;
  }

  /** The driver is attached again: pace sends from now, and announce our MAC again (a new bridge has not learnt it). */
  reconnected(): void {
    this.rateStart = performance.now();
    this.rateSent = this.sent;
    if (this.o.announce && !this.done) this.announce();
  }

  summary(): TrafficSummary {
    const d = this.drv.counters;
    const el = (performance.now() - this.start) / 1000;
    return {
      mode: this.o.mode, sent: this.sent, received: d.rxPackets, bytesSent: d.txBytes, bytesReceived: d.rxBytes,
      verified: this.verdicts[Verdict.Ok], notTest: this.verdicts[Verdict.NotTest], badLength: this.verdicts[Verdict.BadLength],
      badChecksum: this.verdicts[Verdict.BadChecksum],
      lost: this.seq.lost, dup: this.seq.dup, streams: this.seq.streams, giftsSent: d.giftsSent, giftsReceived: d.giftsReceived,
      returned: d.returned, rxErrors: d.rxErrors, buffersOwned: this.drv.freeCount,
      txInFlight: this.drv.isClosed ? 0 : this.drv.txInFlight(), elapsedSec: el,
      txPps: el > 0 ? this.sent / el : 0, rxPps: el > 0 ? d.rxPackets / el : 0, busySec: this.busyMs / 1000,
      gsoIntact: this.gsoIntact, gsoChanged: this.gsoChanged,
      busyTurns: this.busyTurns, sendPasses: this.sendPasses, shortOfBuffers: this.shortOfBuffers, shortOfRoom: this.shortOfRoom,
    };
  }

  private readonly loop = (): void => {
    if (this.done) return;
    // One clock read per turn: its passes share it (a pass takes
    // microseconds; without a read per pass one way went 15.85 -> 16.09 Mpps).
    const now = performance.now();
    let work = 0;
    let moved = 0;
    // Several passes per turn of the event loop while they find work: every
    // turn costs an epoll_wait, about as much as a pass.
    for (let pass = 0; pass < PASSES_PER_TURN; pass++) {
      work = this.receiveBatch(now);
      if (this.gen) work += this.sendBatch(now);
      this.drv.flush();
      moved += work;
      if (work === 0 || this.finished(now)) break;
    }
    // Busy time: a turn that moved packets counts whole, the idle pass that
    // ended it included (TrafficSummary.busySec).
    if (moved > 0) {
      this.busyMs += performance.now() - now;
      this.busyTurns++;
    }
    if (this.finished(now)) return this.stop();
    if (moved > 0) this.idleSince = -1;
    else if (this.idleSince < 0) this.idleSince = now;
    if (this.idleSince >= 0 && now - this.idleSince >= this.o.spinUs / 1000) {
      this.idleSince = -1;
      if (this.gen && this.rateLimited(now)) {
        setTimeout(this.loop, 1);
      } else {
        // Sleep on the call eventfds; a timer bounds the wait for duration/linger checks.
        // Whichever comes first wakes the loop, once (a wake parked while the
        // driver reconnects may come long after the timer).
        let woken = false;
        const t = setTimeout(() => {
          woken = true;
          this.loop();
        }, 50);
        this.drv.waitForWork(() => {
          if (woken) return;
          woken = true;
          clearTimeout(t);
          this.drv.pollMode();
          this.loop();
        });
      }
      return;
    }
    // Spinning: give the core away if someone else wants it (see PollLoop).
    if (work === 0) schedYield();
    setImmediate(this.loop);
  };

  private receiveBatch(now: number): number {
    const drv = this.drv;
    // An echo takes no more than it can send back at once, so nothing is dropped at our tx.
    const n = drv.receive(this.echo ? Math.min(this.o.burst, this.minTxFree()) : this.o.burst);
    if (n > 0) this.lastRxAt = now;
    // The common receiver (a sink, or a gen taking echoes back) checking headers only: a loop of its own.
    if (!this.echo && !this.o.gso && !this.o.verifyPayload) return this.checkHeaders(n);
    // An echo on one queue pair sends its shared frames back as one burst after the loop.
    const echoBurst = this.echo && !this.o.copyMode && drv.queuePairs === 1;
    if (echoBurst) this.burstRoom(n);
    let k = 0;
    for (let i = 0; i < n; i++) {
      const tok = drv.rxToken[i];
      const len = drv.rxLen[i];
      const mem = drv.packetMem(tok);
      const off = drv.packetOffset(tok);
      // --gso: the header first, then the test frame GSO_SHIFT bytes in.
      let at = off;
      let tlen = len;
      if (this.o.gso) {
        const hdr = off - VIRTIO_NET_HDR_SIZE;
        const intact = tok >= 0 && (hdr & 3) === 0 ? gsoHeaderIntactWords(drv.shared!.mem32, hdr >>> 2) : gsoHeaderIntact(mem, hdr);
        if (intact) this.gsoIntact++;
        else this.gsoChanged++;
        at += GSO_SHIFT;
        tlen -= GSO_SHIFT;
      }
      const gsoHeaders = this.o.gso && !this.o.verifyPayload;
      const ck = gsoHeaders ? this.gsoChecker : this.checker;
      const verdict = gsoHeaders
        ? this.gsoChecker.verify(mem, off, len)
        : tok >= 0 && !this.o.verifyPayload
          ? this.checker.verifyHeader(drv.shared!.mem32, at >>> 2, tlen)
          : this.checker.verify(mem, at, tlen, this.o.verifyPayload);
      this.verdicts[verdict]++;
      if (verdict === Verdict.Ok && !this.echo) this.seq.see(ck.lastStream, ck.lastSeq, ck.lastRun);
      if (this.echo) {
        // Back on the queue pair it came in on.
        const q = drv.rxQueue[i];
        if (tok >= 0 && echoBurst) {
          this.burstBufs[k] = tok;
          this.burstLens[k++] = len;
          continue;
        }
        if (tok >= 0 && !this.o.copyMode) {
          if (drv.send(tok, len, 0, q)) {
            this.sent++;
            continue;
          }
        } else if (drv.sendCopy(mem, off, len, q)) {
          this.sent++;
        }
      }
      drv.release(tok);
    }
    if (k > 0) {
      const sent = drv.sendBurst(this.burstBufs, this.burstLens, k, 0);
      this.sent += sent;
      for (let i = sent; i < k; i++) drv.release(this.burstBufs[i]);
    }
    return n;
  }

  /**
   * receiveBatch for frames checked by their test header alone (no echo,
   * no --gso, no payload check): a loop that only checks and counts, the
   * fields it uses read once, and the buffers handed back in one call
   * after it (docs/performance-log.md, "The guest driver's loops over locals").
   */
  private checkHeaders(n: number): number {
    const drv = this.drv;
    const tokens = drv.rxToken;
    const lens = drv.rxLen;
    const sh = drv.shared;
    const verdicts = this.verdicts;
    for (let i = 0; i < n; i++) {
      // Shared buffers in one loop over locals; a private slot (the copy path) alone.
      if (sh !== null) i = this.seq.seeHeaders(sh.mem32, sh.bufSize >>> 2, tokens, lens, i, n, verdicts);
      if (i === n) break;
      const tok = tokens[i];
      const ck = this.checker;
      const verdict = ck.verify(drv.packetMem(tok), drv.packetOffset(tok), lens[i], false);
      if (verdict === Verdict.Ok) this.seq.see(ck.lastStream, ck.lastSeq, ck.lastRun);
      verdicts[verdict]++;
    }
    drv.releaseBurst(tokens, n);
    return n;
  }

  /** The burst arrays hold at least n entries (grown once, not per packet). */
  private burstRoom(n: number): void {
    if (this.burstBufs.length >= n) return;
    this.burstBufs = new Int32Array(n);
    this.burstLens = new Uint32Array(n);
  }

  private announce(): void {
    const drv = this.drv;
    const src = this.o.macs.subarray(6, 12);
    const b = drv.shared && !this.o.copyMode ? drv.alloc() : -1;
    if (b >= 0) {
      drv.send(b, writeAnnounceFrame(drv.shared!.mem, drv.frameOffset(b), src));
    } else {
      const f = new Uint8Array(60);
      drv.sendCopy(f, 0, writeAnnounceFrame(f, 0, src));
    }
    drv.flush();
  }

  private minTxFree(): number {
    let m = Infinity;
    for (let q = 0; q < this.drv.queuePairs; q++) m = Math.min(m, this.drv.txFree(q));
    return m;
  }

  private rateLimited(now: number): boolean {
    return this.o.rate > 0 && this.sent - this.rateSent >= ((now - this.rateStart) / 1000) * this.o.rate;
  }

  private sendBatch(now: number): number {
    const o = this.o;
    const drv = this.drv;
    let budget = o.burst;
    if (o.count > 0) budget = Math.min(budget, o.count - this.sent);
    if (o.rate > 0) budget = Math.min(budget, Math.floor(((now - this.rateStart) / 1000) * o.rate) - (this.sent - this.rateSent));
    // One queue pair, no offload header: the burst goes out in one sendBurst (the common zero-copy case).
    if (!o.copyMode && !o.gso && drv.queuePairs === 1) return this.sendShared(budget, now);
    let n = 0;
    for (; n < budget; n++) {
      if (o.copyMode) {
        if (!this.sendCopied()) break;
        continue;
      }
      const b = drv.alloc();
      if (b < 0) break;
      const sh = drv.shared!;
      const f = drv.frameOffset(b);
      const at = o.gso ? f + GSO_SHIFT : f;
      const tlen = o.gso ? o.size - GSO_SHIFT : o.size;
      if (o.verifyPayload) writeTestFrame(sh.mem, at, tlen, o.stream, this.sent, true, o.macs, o.run);
      // --gso without payload checks: the TCP/IP headers name the frame (gso-frame.ts), no test header behind them.
      else if (!o.gso) this.header.write(sh.mem32, sh.mem, at >>> 2, this.sent);
      if (this.gsoHeader !== null) this.gsoHeader.write(sh.mem32, sh.mem, f, o.size, this.sent);
      // Spread over the queue pairs in turn (one flow each would need a hash; round robin is the stress case).
      if (!drv.send(b, o.size, 0, this.sent % drv.queuePairs, o.gso ? GSO_OFFLOAD : null)) {
        drv.release(b);
        break;
      }
      this.sent++;
    }
    if (n > 0) this.lastSendAt = now;
    return n;
  }

  /** Buffers and frame lengths of the burst being sent (sendShared, and an echo's frames going back). */
  private burstBufs = new Int32Array(0);
  private burstLens = new Uint32Array(0);

  /**
   * sendBatch for one queue pair without offloads: take the burst's
   * buffers, write their frames, send them at once. The headers are
   * written in a loop of their own, with nothing else stored in it: each
   * buffer's line was last read by the receiver, its stores wait for the
   * line, and stores leave a core in order, so other stores between them
   * would keep fewer of the burst's lines on their way at once
   * (docs/performance-log.md, "The guest driver's loops over locals").
   */
  private sendShared(budget: number, now: number): number {
    const o = this.o;
    const drv = this.drv;
    if (budget <= 0) return 0;
    this.sendPasses++;
    this.burstRoom(budget);
    const bufs = this.burstBufs;
    const lens = this.burstLens;
    const n = drv.allocBurst(bufs, budget);
    if (n < budget) this.shortOfBuffers++;
    // None also while the switch is away (reconnecting: no region mapped).
    if (n === 0) return 0;
    const sh = drv.shared!;
    const mem = sh.mem;
    const mem32 = sh.mem32;
    const seq0 = this.sent;
    if (o.verifyPayload) for (let i = 0; i < n; i++) writeTestFrame(mem, drv.frameOffset(bufs[i]), o.size, o.stream, seq0 + i, true, o.macs, o.run);
    else for (let i = 0; i < n; i++) this.header.write(mem32, mem, drv.frameOffset(bufs[i]) >>> 2, seq0 + i);
    lens.fill(o.size, 0, n);
    const sent = drv.sendBurst(bufs, lens, n, 0);
    if (sent < n) this.shortOfRoom++;
    // No room on the rings for the rest: back to the pool (their frames are written again next time).
    for (let i = sent; i < n; i++) drv.release(bufs[i]);
    this.sent += sent;
    if (sent > 0) this.lastSendAt = now;
    return sent;
  }

  private scratch = new Uint8Array(0);
  private sendCopied(): boolean {
    if (this.scratch.length < this.o.size) this.scratch = new Uint8Array(this.o.size);
    writeTestFrame(this.scratch, 0, this.o.size, this.o.stream, this.sent, this.o.verifyPayload, this.o.macs, this.o.run);
    if (!this.drv.sendCopy(this.scratch, 0, this.o.size, this.sent % this.drv.queuePairs)) return false;
    this.sent++;
    return true;
  }

  private finished(now: number): boolean {
    const o = this.o;
    if (o.durationSec > 0 && now - this.start >= o.durationSec * 1000) return true;
    if (this.gen) {
      if (o.count === 0 || this.sent < o.count) return false;
      // Sent means taken by the switch: frames still in our tx ring may wait there (back-pressure).
      if (this.drv.txInFlight() > 0) return false;
      if (o.expect > 0 && this.drv.counters.rxPackets >= o.expect) return true;
      // All sent: wait for echoes until they stop coming.
      return now - Math.max(this.lastSendAt, this.lastRxAt) >= o.lingerMs;
    }
    // Foreign frames (IPv6 neighbour discovery from a host bridge, ...) do not count.
    return o.count > 0 && this.drv.counters.rxPackets - this.verdicts[Verdict.NotTest] >= o.count;
  }
}
