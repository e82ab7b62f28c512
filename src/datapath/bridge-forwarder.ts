/**
 * Bridge mode (docs/protocol.md "Bridge mode", VALE style): every port on one learning Ethernet
 * switch. Unicast between two ports that mapped the region moves the frame
 * by **swapping** buffers: the sender's buffer goes into the receiver's
 * posted rx descriptor, the receiver's empty buffer into the sender's tx
 * descriptor, so both keep their buffer count and no byte is copied.
 * Flooded frames (broadcast, multicast, unknown unicast) are copied to all
 * destinations but the last, which gets the swap when it can. Classic ports
 * always take the copy path. No hairpin: a frame never goes back out of the
 * port it came in on.
 *
 * Sharing domains (docs/design.md, "Trust model"): the swap happens only
 * between two ports of one domain. A frame for a port in another domain is
 * copied into that port's own posted empty buffers (of its own domain's
 * region) or its copy targets, and the sender's buffer stays with the
 * sender (its tx descriptor is completed unchanged).
 *
 * Tenants (docs/design.md, "Tenants: bridges, VLANs, port security, rate limits"):
 * every frame is admitted by its port's policy (VLAN, allowed MACs, rx
 * limit), learned and looked up in its own bridge's table for its VLAN, and
 * goes only to ports of that bridge carrying that VLAN (isolation and the
 * tx limit checked per destination). A frame whose tag must change on the
 * way out is copied from a re-tagged view (src/datapath/vlan.ts), never
 * swapped.
 */
import { bufAtInBlock } from '../shm/geometry';
import { bswap32 } from '../virtio/bytes';
import { ChainSegments } from '../virtio/chain';
import type { DeviceQueue } from '../virtio/device-queue';
import { VIRTIO_NET_HDR_SIZE } from '../virtio/defs';
import { Drop, type PortCounters, countRx, countTx } from './counters';
import { ClassicRxFiller } from './classic-rx';
import { ResolvedChain, copyPacketInto, resolveChain } from './copy';
import { FlowControl } from './flow-control';
import { MirrorDir, mirrorChain } from './mirror';
import type { PortPolicy } from './port-policy';
import type { PortQueues } from './port-queues';
import type { TapPort } from './tap-port';
import { Offloads } from './segment';
import { swapBuffers } from './swap';
import { HeaderTouch } from './touch-ahead';
import { Tenancy } from './tenancy';
import { MAX_PACKET, MIN_PACKET, TxClass } from './tx-class';
import { TPID_8021Q, copyResolved, retag } from './vlan';
import { Bits, forwardSwapped, laneOpen } from './zc-lane';

const TPID_HI = TPID_8021Q >>> 8;
const TPID_LO = TPID_8021Q & 0xff;
/** The 802.1Q TPID as a frame's bytes 12..13 read in a little-endian 16-bit half word. */
const TPID_LE = (TPID_LO << 8) | TPID_HI;

/** A bridge port: a vhost-user port's queues, or the TAP uplink. */
export type BridgePort = PortQueues | TapPort;

export class BridgeForwarder {
  /** The bridges' MAC tables and every port's policy. */
  readonly tenancy: Tenancy;
  private readonly seg = new ChainSegments();
  private readonly classic = new ClassicRxFiller();
  private readonly src = new ResolvedChain();
  private readonly dst = new ResolvedChain();
  /** Checks each frame's virtio_net_hdr; cuts or checksums for a receiver that cannot take it as it is. */
  private readonly offloads = new Offloads();
  /** Loads the burst's buffer headers ahead of the per-packet work. */
  private readonly touch = new HeaderTouch();
  /** Bytes 0..15 of the frame (dst, src MAC, ethertype, TCI), whichever descriptors they are in. */
  private readonly eth = new Uint8Array(16);
  /** The frame as received while this.src holds its re-tagged view (view = 1). */
  private readonly orig = new ResolvedChain();
  private readonly tagScratch = new Uint8Array(32);
  private view = 0;
  private readonly ethRes = new ResolvedChain();
  /** The frame's destinations, targets[0..nTargets): filled in place (emptying an array by its length frees its storage). */
  private readonly targets: BridgePort[] = [];
  private nTargets = 0;
  /** The Ethernet words of the lane's run (laneRun). */
  private readonly laneEth = new Uint32Array(4);
  /** Frames read from / gathered for the TAP uplink. */
  private readonly tapIn = new Uint8Array(MAX_PACKET);
  private readonly tapOut = new Uint8Array(MAX_PACKET);
  private now = 0;
  /** Transmit queue being served (its index picks the receive queue on the other side). */
  private qi = 0;

  constructor(
    /** forwarding.burst (a reload may change it between rounds). */
    public burst: number,
    /** Every port by id (vhost ports and uplinks). */
    private readonly ports: BridgePort[],
    macTableSize: number,
    ageingMs: number,
    /** Back-pressure toward a destination without rx buffers (forwarding.rxWaitMs; 0: drop at once). */
    readonly flow = new FlowControl(0),
  ) {
    this.tenancy = new Tenancy(macTableSize, ageingMs);
    this.ethRes.mem[0] = this.eth;
    this.ethRes.off[0] = 0;
    this.ethRes.len[0] = 16;
    this.ethRes.count = 1;
    this.ethRes.total = 16;
  }

  /**
   * Forward up to `burst` frames from src's tx queue qi; returns tx entries
   * consumed. Stops early, leaving the rest in the ring, when the frame at
   * the head waits for its one destination's rx buffer (back-pressure,
   * FlowControl; bounded by that destination's deadline).
   */
  forward(src: PortQueues, qi: number, now: number): number {
    src.txBlocked[qi] = 0;
    const n = src.txPending(qi, this.burst);
    if (n === 0) return 0;
    const txq = src.txqs[qi]!;
    // The burst's header misses at once, before the per-packet work (touch-ahead.ts); with small buffers not even a call.
    if (src.zeroCopy && src.win.touchAhead) this.touch.txHeaders(txq, src.win, n);
    this.now = now;
    this.qi = qi;
    const { seg } = this;
    const { tx } = src;
    const c = src.counters;
    const num = txq.ring.num;
    const walker = src.txWalkers[qi]!;
    const sp = this.tenancy.policies[src.id];
    // The common case (laneRun): a plain access port's shared buffers swapped with a known destination's, run by run.
    const lane = src.zeroCopy && src.mirror === null && src.win.oneBlock && sp.plainIn;
    let k = 0;
    for (; k < n; k++) {
      if (lane) {
        k += this.laneRun(src, sp, qi, txq, n - k, now);
        if (k === n) break;
      }
      const head = txq.popAvail();
      const cnt = walker.walk(txq.ring, head, seg);
      const cls = tx.classify(seg, cnt, src.zeroCopy, src.id);
      if (cls === TxClass.Drop) {
        c.drop(tx.drop);
        if (head < num) txq.pushUsed(head, 0);
        continue;
      }
      if (cls === TxClass.Gift) {
        // Gifts mean nothing on a bridge (every VM keeps its count): the buffers just come back.
        tx.checkGiftLinks(seg, cnt, src.id, c);
        txq.pushUsed(head, 0);
        continue;
      }
      const b = cls === TxClass.Shared ? tx.buf : -1;
      const total = seg.totalLen;
      if (total < MIN_PACKET || total > MAX_PACKET) {
        c.drop(total < MIN_PACKET ? Drop.TooShort : Drop.TooLong);
        txq.pushUsed(head, 0);
        continue;
      }
      if (!resolveChain(seg, 0, cnt, src.mem, src.zeroCopy ? src.win : null, this.src)) {
        c.drop(Drop.BadAddress);
        txq.pushUsed(head, 0);
        continue;
      }
      const bad = this.offloads.inspect(this.src, total);
      if (bad >= 0) {
        c.drop(bad);
        txq.pushUsed(head, 0);
        continue;
      }
      if (!this.switchFrame(src, txq, head, b, total)) {
        txq.unpopAvail();
        src.txBlocked[qi] = 1;
        break;
      }
      if (this.offloads.gso) c.gsoFrames++;
    }
    return k;
  }

  /**
   * The zero-copy fast lane on a bridge: the run of frames at the head of
   * src's tx queue qi that have the first one's Ethernet addresses and
   * ethertype, when that first one is untagged unicast from a unicast
   * address, its destination is learnt on another plain access port of the
   * same bridge and VLAN, and the pair lane may run between the two ports
   * (laneOpen): looked up once, learnt once it took a frame, swapped as a pair with the
   * swap exchange does (zc-lane.ts, forwardSwapped, which ends the run at
   * the first frame with other addresses or anything it does not take).
   * Every frame it takes, the general path below would have swapped to the
   * same port with the same counters, and learnt its source the same; what
   * it leaves is the general path's, and teaches the table nothing here
   * (test/unit/bridge-lane-differential.test.ts).
   * Returns how many frames it took.
   */
  private laneRun(src: PortQueues, sp: PortPolicy, qi: number, txq: DeviceQueue, max: number, now: number): number {
    const ring = txq.ring;
    const head = ring.avail[2 + (txq.lastAvail & ring.mask)];
    if (head >= ring.num) return 0;
    const d32 = ring.desc32;
    // One descriptor holding at least an Ethernet header (frameBufAt in the lane checks the rest).
    if ((d32[4 * head + 3] & Bits.DescKind) !== 0 || d32[4 * head + 2] < MIN_PACKET) return 0;
    const win = src.win;
    const b = bufAtInBlock(d32[4 * head], d32[4 * head + 1], win.baseLo, win.baseHi, win.size, win.bufShift, win.bufSize);
    if (b < 0) return 0;
    // Frame bytes 0..13 after the buffer's 12-byte header: words 3..6 of the buffer, little-endian.
    const m32 = win.mem32;
    const w = b * (win.bufSize >>> 2) + 3;
    const dstW = m32[w];
    const midW = m32[w + 1];
    const srcW = m32[w + 2];
    const type = m32[w + 3] & 0xffff;
    // To a group address, from one (never learnt), or tagged: the general path's.
    if ((dstW & 1) !== 0 || (midW & 0x10000) !== 0 || type === TPID_LE) return 0;
    const vlan = sp.vlan;
    const macs = this.tenancy.tables[sp.bridge];
    // As switchFrame keys them: the VLAN and bytes 0..1 (6..7) big-endian, then bytes 2..5 (8..11).
    const srcHi = (vlan << 16) | ((midW >>> 8) & 0xff00) | (midW >>> 24);
    const srcLo = bswap32(srcW);
    const dstHi = (vlan << 16) | ((dstW & 0xff) << 8) | ((dstW >>> 8) & 0xff);
    const dstLo = bswap32(((dstW >>> 16) | (midW << 16)) >>> 0);
    // To its own source address: the general path's (it learns first, so that is a hairpin).
    if (srcHi === dstHi && srcLo === dstLo) return 0;
    const known = macs.lookup(dstHi, dstLo, now);
    if (known < 0 || known === src.id) return 0;
    const dst = this.ports[known];
    if (dst.isTap) return 0;
    const dp = this.tenancy.policies[known];
    if (!dp.plainOut || dp.bridge !== sp.bridge || dp.vlan !== vlan || !laneOpen(src, dst)) return 0;
    const eth = this.laneEth;
    eth[0] = dstW;
    eth[1] = midW;
    eth[2] = srcW;
    eth[3] = type;
    const k = forwardSwapped(src, qi, txq, dst, max, eth);
    // Learnt once the lane took the frame: one it leaves may be one the general path drops before learning (a buffer
    // not the sender's, an offload header, a bad length), and a dropped frame teaches the table nothing.
    if (k > 0) macs.learn(srcHi, srcLo, src.id, now);
    return k;
  }

  /** Forward up to `burst` frames waiting on the TAP uplink. */
  forwardTap(tap: TapPort, now: number): number {
    this.now = now;
    this.qi = 0;
    const buf = this.tapIn;
    const res = this.src;
    let k = 0;
    for (; k < this.burst; k++) {
      const n = tap.read(buf);
      if (n < 0) break;
      if (n < MIN_PACKET) {
        tap.counters.drop(Drop.TooShort);
        continue;
      }
      res.mem[0] = buf;
      res.off[0] = 0;
      res.len[0] = n;
      res.count = 1;
      res.total = n;
      const bad = this.offloads.inspect(res, n);
      if (bad >= 0) {
        tap.counters.drop(bad);
        continue;
      }
      if (this.offloads.gso) tap.counters.gsoFrames++;
      this.switchFrame(tap, null, -1, -1, n);
    }
    return k;
  }

  /**
   * Learn, look up, deliver; completes the tx head if any (possibly with a
   * swapped buffer). False: nothing was done, the frame waits in the
   * sender's ring for its one destination's rx buffer (only frames from a
   * tx ring wait; flooded frames and frames from the uplink never do).
   */
  private switchFrame(src: BridgePort, txq: DeviceQueue | null, head: number, b: number, total: number): boolean {
    const eth = this.eth;
    // The Ethernet addresses follow the 12-byte virtio_net_hdr in the byte stream.
    readStream(this.src, VIRTIO_NET_HDR_SIZE, eth, this.ethRes);
    const c = src.counters;
    const payload = total - VIRTIO_NET_HDR_SIZE;
    const sp = this.tenancy.policies[src.id];
    let vlan = sp.vlan;
    // Fast path: an access port with nothing more to check, and an untagged frame.
    if (!sp.plainIn || (eth[12] === TPID_HI && eth[13] === TPID_LO)) {
      vlan = sp.admit(eth, payload, this.now);
      if (vlan < 0) return this.refuse(c, -1 - vlan, txq, head);
    }
    this.view = 0;
    const macs = this.tenancy.tables[sp.bridge];
    const srcHi = (vlan << 16) | (eth[6] << 8) | eth[7];
    const srcLo = ((eth[8] << 24) | (eth[9] << 16) | (eth[10] << 8) | eth[11]) >>> 0;
    if ((eth[6] & 1) === 0) macs.learn(srcHi, srcLo, src.id, this.now);
    const targets = this.targets;
    this.nTargets = 0;
    let known = -1;
    if ((eth[0] & 1) === 0) {
      known = macs.lookup((vlan << 16) | (eth[0] << 8) | eth[1], ((eth[2] << 24) | (eth[3] << 16) | (eth[4] << 8) | eth[5]) >>> 0, this.now);
    }
    if (known >= 0) {
      if (known === src.id) return this.refuse(c, Drop.Hairpin, txq, head);
      const p = this.ports[known];
      const dp = this.tenancy.policies[known];
      // Fast path: a destination with nothing to check but bridge and VLAN.
      if (!(dp.plainOut && dp.bridge === sp.bridge && dp.vlan === vlan) && p.nq > 0) {
        const why = dp.mayReach(sp, vlan, payload, this.now);
        // A destination's own limit counts on it; anything else on the sender.
        if (why === Drop.TxLimit) return this.refuse(p.counters, why, txq, head);
        if (why >= 0) return this.refuse(c, why === Drop.Count ? Drop.PeerDown : why, txq, head);
      }
      if (p.nq > 0) targets[this.nTargets++] = p;
    } else {
      this.floodTargets(src, sp, vlan, payload);
    }
    const nTargets = this.nTargets;
    if (nTargets === 0) {
      c.drop(Drop.PeerDown);
      txq?.pushUsed(head, 0);
      return true;
    }
    const last = targets[nTargets - 1];
    const dq = last.isTap ? -1 : last.rxQueueFor(this.qi);
    // b >= 0: src is a vhost port that sent a shared buffer; the swap needs the receiver in the same domain.
    const swappable = b >= 0 && txq !== null && !last.isTap && last.domain === (src as PortQueues).domain && last.zeroCopy && dq >= 0 &&
      this.offloads.fits(last.offloadCaps, last.mtu);
    // Back-pressure (FlowControl): a frame from a tx ring with one destination and no room there waits.
    // A zero-copy receiver's room is its own empty buffers: the frame waits for the swap rather than being copied.
    if (txq !== null && nTargets === 1 && !last.isTap && dq >= 0 && this.flow.waitMs > 0 && !(swappable ? last.hasOwnBuffer(dq) : this.hasRoom(last, dq))) {
      if (this.flow.shouldWait(last)) {
        // The frame will be examined again: give back the rate-limit tokens it took (no-ops without a limit).
        sp.rx.give(payload);
        this.tenancy.policies[last.id].tx.give(payload);
        return false;
      }
      if (!this.hasRoom(last, dq)) {
        c.drop(Drop.RxWaitTimeout);
        txq.pushUsed(head, 0);
        return true;
      }
    }
    countRx(src, this.qi, payload);
    if (src.mirror !== null) mirrorChain(src.mirror, this.src, VIRTIO_NET_HDR_SIZE, MirrorDir.FromVm);
    // All but the last destination get a copy; the last gets the swap when both sides can.
    for (let i = 0; i < nTargets - 1; i++) this.copyTagged(src, targets[i], total, sp, vlan);
    // The swap also needs the frame unchanged (its tag stays as it is).
    if (swappable && last.postings.ownCount(dq) > 0 && this.tenancy.policies[last.id].isTrunk === sp.isTrunk) {
      if (this.view !== 0) this.useView(0, total, sp, vlan);
      if (swapBuffers(src as PortQueues, txq, head, b, last, dq, total)) {
        if (last.mirror !== null) mirrorChain(last.mirror, this.src, VIRTIO_NET_HDR_SIZE, MirrorDir.ToVm);
        c.zeroCopy++;
        countTx(last, dq, payload);
        return true;
      }
    }
    this.copyTagged(src, last, total, sp, vlan);
    txq?.pushUsed(head, 0);
    return true;
  }

  /** Whether vhost port dst can take a copy on rx queue dq now: an own empty buffer or a copy target. */
  private hasRoom(dst: PortQueues, dq: number): boolean {
    return (dst.zeroCopy && dst.postings.ownCount(dq) > 0) || dst.hasCopyTarget(dq);
  }

  /** Count the drop and complete the tx head (if any) unchanged. */
  private refuse(c: PortCounters, why: Drop, txq: DeviceQueue | null, head: number): true {
    c.drop(why);
    txq?.pushUsed(head, 0);
    return true;
  }

  /** Every port of the frame's bridge carrying its VLAN and allowed to get it (isolation, tx limit) but src. */
  private floodTargets(src: BridgePort, sp: PortPolicy, vlan: number, payload: number): void {
    for (let i = 0; i < this.ports.length; i++) {
      const p = this.ports[i];
      if (p === src || p.nq === 0) continue;
      const why = this.tenancy.policies[i].mayReach(sp, vlan, payload, this.now);
      if (why < 0) this.targets[this.nTargets++] = p;
      else if (why === Drop.TxLimit) p.counters.drop(why);
    }
  }

  /** Copy the frame to dst with the tag dst's side wants: as received, or re-tagged (this.src becomes that view). */
  private copyTagged(src: BridgePort, dst: BridgePort, total: number, sp: PortPolicy, vlan: number): void {
    const want = this.tenancy.policies[dst.id].isTrunk !== sp.isTrunk ? 1 : 0;
    if (want !== this.view && !this.useView(want, total, sp, vlan)) return src.counters.drop(Drop.ChainTooLong);
    this.copyTo(src, dst, this.src.total);
  }

  /** Make this.src the frame as received (0) or re-tagged (1); false if the re-tagged view cannot be built. */
  private useView(view: number, total: number, sp: PortPolicy, vlan: number): boolean {
    if (view === 1) {
      if (this.view === 0) copyResolved(this.src, this.orig);
      this.orig.total = total;
      // From an access port a tag is added; from a trunk the tag is removed.
      if (!retag(this.orig, this.src, this.tagScratch, sp.isTrunk ? 0 : vlan)) return false;
    } else {
      copyResolved(this.orig, this.src);
    }
    this.view = view;
    return true;
  }

  /** The uplink takes a frame (with its header) in one write; gather it first if it is in pieces. */
  private toTap(src: BridgePort, tap: TapPort, total: number, res: ResolvedChain): void {
    let ok: boolean;
    if (res.count === 1) {
      ok = tap.write(res.mem[0], res.off[0], total);
    } else {
      const out = this.tapOut;
      let w = 0;
      for (let i = 0; i < res.count; i++) {
        out.set(res.mem[i].subarray(res.off[i], res.off[i] + res.len[i]), w);
        w += res.len[i];
      }
      ok = tap.write(out, 0, total);
    }
    if (!ok) return src.counters.drop(Drop.NoRxBuffer);
    const payload = total - VIRTIO_NET_HDR_SIZE;
    src.counters.copied++;
    src.counters.copiedBytes += payload;
    countTx(tap, 0, payload);
    if (tap.mirror !== null) mirrorChain(tap.mirror, res, VIRTIO_NET_HDR_SIZE, MirrorDir.ToVm);
  }

  /**
   * Copy the frame in res (this.src: the frame being switched) into one of
   * dst's rx buffers (own shared buffer or classic chain).
   */
  private copyTo(src: BridgePort, dst: BridgePort, total: number, res = this.src): void {
    if (res === this.src && !this.offloads.fits(dst.offloadCaps, dst.mtu)) return this.copyInSoftware(src, dst, total);
    if (dst.isTap) return this.toTap(src, dst, total, res);
    const c = src.counters;
    const dq = dst.rxQueueFor(this.qi);
    if (dq < 0) return c.drop(Drop.PeerDown);
    const rxq = dst.rxqs[dq]!;
    const out = this.dst;
    if (dst.zeroCopy && dst.postings.ownCount(dq) > 0) {
      // One of the receiver's own shared buffers (in its own domain's region): it keeps it, now holding a copy.
      const shared = dst.shared;
      const own = dst.postings.nextOwnBuf(dq);
      const head = dst.postings.takeOwn(dq);
      out.mem[0] = shared.mem;
      out.off[0] = shared.offsetOf(own);
      out.len[0] = shared.bufSize;
      out.count = 1;
      out.total = shared.bufSize;
      if (out.total < total) {
        rxq.pushUsed(head, 0);
        return c.drop(Drop.RxTooSmall);
      }
      copyPacketInto(res, out);
      rxq.pushUsed(head, total);
    } else {
      const err = this.classic.fill(dst, dq, res, total);
      if (err >= 0) return c.drop(err);
    }
    if (dst.mirror !== null) mirrorChain(dst.mirror, res, VIRTIO_NET_HDR_SIZE, MirrorDir.ToVm);
    const payload = total - VIRTIO_NET_HDR_SIZE;
    c.copied++;
    c.copiedBytes += payload;
    countTx(dst, dq, payload);
  }

  /** dst did not negotiate what the frame in this.src needs (or it is over dst's MTU): cut it or complete its checksum, and copy each frame. */
  private copyInSoftware(src: BridgePort, dst: BridgePort, total: number): void {
    const off = this.offloads;
    if (!off.cutsToFit(dst.mtu)) return src.counters.drop(Drop.OverMtu);
    const gso = off.gso;
    off.begin(this.src, total, dst.offloadCaps);
    for (let n = off.next(); n > 0; n = off.next()) {
      const delivered = dst.counters.txPackets;
      this.copyTo(src, dst, n, off.out);
      if (dst.counters.txPackets === delivered) continue;
      if (gso) dst.counters.segmented++;
      else dst.counters.checksummed++;
    }
  }
}

/** Copy bytes [from, from+out.total) of a resolved chain into out's single segment. */
function readStream(res: ResolvedChain, from: number, dst: Uint8Array, out: ResolvedChain): void {
  let skip = from;
  let w = 0;
  for (let i = 0; i < res.count && w < out.total; i++) {
    const len = res.len[i];
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const m = res.mem[i];
    const base = res.off[i] + skip;
    const n = Math.min(len - skip, out.total - w);
    for (let j = 0; j < n; j++) dst[w + j] = m[base + j];
    w += n;
    skip = 0;
  }
  for (; w < out.total; w++) dst[w] = 0;
}
