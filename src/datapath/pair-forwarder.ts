/**
 * Pair mode (docs/protocol.md, "Ownership"): every packet a VM transmits goes
 * to its one peer. A shared buffer moves by completing the peer's posted rx
 * descriptor for the same buffer (address match through Port.rxSlot) and
 * the ledger records the new owner; nothing else is touched. Anything else
 * is copied into a classic rx buffer, or dropped with a counted reason, and
 * a shared buffer that was not delivered goes back to its sender.
 */
import type { OwnershipLedger } from '../shm/ledger';
import type { SharedBuffers } from '../shm/shared-buffers';
import { ChainSegments } from '../virtio/chain';
import { ETH_MAX_JUMBO, ETH_MIN_FRAME, VIRTIO_NET_HDR_SIZE } from '../virtio/defs';
import { Drop, countRx, countTx } from './counters';
import { ClassicRxFiller } from './classic-rx';
import { ResolvedChain, resolveChain } from './copy';
import { MirrorDir, mirrorChain } from './mirror';
import { type Port, chainDrop } from '../switch/port';

const MIN_PACKET = VIRTIO_NET_HDR_SIZE + ETH_MIN_FRAME;
const MAX_PACKET = VIRTIO_NET_HDR_SIZE + ETH_MAX_JUMBO;

export class PairForwarder {
  private readonly seg = new ChainSegments();
  private readonly srcRes = new ResolvedChain();
  private readonly classic = new ClassicRxFiller();

  constructor(
    private readonly shared: SharedBuffers,
    private readonly ledger: OwnershipLedger,
    private readonly burst: number,
  ) {}

  /**
   * Move up to `burst` packets from src's tx queue qi to dst; returns how
   * many tx entries were consumed. The per-queue burst is the fairness
   * budget: every queue of every port gets at most this much per round.
   */
  forward(src: Port, qi: number, dst: Port | null): number {
    const n = src.txPending(qi, this.burst);
    if (n === 0) return 0;
    const txq = src.txqs[qi]!;
    const { shared, ledger, seg } = this;
    const c = src.counters;
    const walker = src.txWalkers[qi]!;
    const num = txq.ring.num;
    const srcId = src.id;
    const dstUp = dst !== null && dst.nq > 0;
    for (let k = 0; k < n; k++) {
      const head = txq.popAvail();
      const cnt = walker.walk(txq.ring, head, seg);
      if (cnt < 0) {
        c.drop(chainDrop(cnt));
        if (head < num) txq.pushUsed(head, 0);
        continue;
      }
      txq.pushUsed(head, 0);
      if (seg.readable !== cnt) {
        c.drop(Drop.BadOrder);
        continue;
      }
      const addr = seg.addr[0];
      const b = src.zeroCopy ? shared.indexOf(addr) : -1;
      if (b < 0) {
        this.copyPacket(src, qi, dst, cnt);
        continue;
      }
      // A gift is a header with no frame (length 12), alone or as a chain of
      // such links: the switch knows it by its length and never reads the
      // buffer (in a jumbo region every header is a TLB miss). Several
      // shared buffers in one chain can only be a gift chain.
      if (cnt > 1 || seg.len[0] === VIRTIO_NET_HDR_SIZE) {
        this.gifts(src, dst, cnt);
        continue;
      }
      // A packet in a shared buffer: one descriptor, starting at the buffer, within it.
      const len = seg.len[0];
      if (addr !== shared.addrOf(b) || len > shared.bufSize) {
        c.drop(Drop.BadZcDesc);
        continue;
      }
      if (ledger.owner[b] !== srcId) {
        c.drop(Drop.NotOwner);
        continue;
      }
      const off = shared.offsetOf(b);
      if (len < MIN_PACKET) {
        c.drop(Drop.TooShort);
        if (!src.returnBuffer(b)) c.drop(Drop.NoReturnSlot);
        continue;
      }
      if (dstUp && dst!.rxSlot[b] < 0) dst!.ingestRx();
      const dq = dstUp ? dst!.slotQueue(b) : -1;
      if (dst !== null && dstUp && dst.completeSlot(b, len)) {
        ledger.transfer(b, dst.id);
        if (src.mirror !== null || dst.mirror !== null) this.mirrorShared(src, dst, off, len);
        const bytes = len - VIRTIO_NET_HDR_SIZE;
        c.zeroCopy++;
        countRx(src, qi, bytes);
        countTx(dst, dq, bytes);
        continue;
      }
      // No matching rx descriptor at the peer: copy if we can, and in any
      // case hand the buffer back to its sender.
      if (dstUp) this.copyPacket(src, qi, dst!, 1);
      else c.drop(Drop.PeerDown);
      if (!src.returnBuffer(b)) c.drop(Drop.NoReturnSlot);
    }
    return n;
  }

  /**
   * A gift of cnt buffers (1, or a chain of up to GIFT_CHAIN_MAX): each link
   * a whole buffer of 12 bytes, the sender's, delivered to the peer's rx
   * posting for it or handed back. A bad link is counted and skipped.
   */
  private gifts(src: Port, dst: Port | null, cnt: number): void {
    const { shared, ledger, seg } = this;
    const c = src.counters;
    const srcId = src.id;
    const dstUp = dst !== null && dst.nq > 0;
    for (let i = 0; i < cnt; i++) {
      const addr = seg.addr[i];
      const b = shared.indexOf(addr);
      if (b < 0 || addr !== shared.addrOf(b) || seg.len[i] !== VIRTIO_NET_HDR_SIZE) {
        c.drop(Drop.BadZcDesc);
        continue;
      }
      if (ledger.owner[b] !== srcId) {
        c.drop(Drop.NotOwner);
        continue;
      }
      c.giftsIn++;
      if (dstUp) {
        if (dst!.rxSlot[b] < 0) dst!.ingestRx();
        if (dst!.completeSlot(b, VIRTIO_NET_HDR_SIZE)) {
          ledger.transfer(b, dst!.id);
          dst!.counters.giftsOut++;
          continue;
        }
      }
      if (!src.returnBuffer(b)) c.drop(Drop.NoReturnSlot);
    }
  }

  private mirrorShared(src: Port, dst: Port, off: number, len: number): void {
    const mem = this.shared.mem;
    const f = off + VIRTIO_NET_HDR_SIZE;
    const n = len - VIRTIO_NET_HDR_SIZE;
    src.mirror?.frame(mem, f, n, MirrorDir.FromVm);
    dst.mirror?.frame(mem, f, n, MirrorDir.ToVm);
  }

  /** Deliver the chain in this.seg by copying into dst's next classic rx buffer. */
  private copyPacket(src: Port, qi: number, dst: Port | null, cnt: number): void {
    const c = src.counters;
    const total = this.seg.totalLen;
    if (total < MIN_PACKET) return c.drop(Drop.TooShort);
    if (total > MAX_PACKET) return c.drop(Drop.TooLong);
    const srcMem = src.backend?.mem ?? null;
    if (!resolveChain(this.seg, 0, cnt, srcMem, src.zeroCopy ? this.shared : null, this.srcRes)) return c.drop(Drop.BadAddress);
    const dq = dst === null ? -1 : dst.rxQueueFor(qi);
    if (dst === null || dq < 0) return c.drop(Drop.PeerDown);
    const err = this.classic.fill(dst, dq, this.srcRes, total);
    if (err >= 0) return c.drop(err);
    if (src.mirror !== null) mirrorChain(src.mirror, this.srcRes, VIRTIO_NET_HDR_SIZE, MirrorDir.FromVm);
    if (dst.mirror !== null) mirrorChain(dst.mirror, this.srcRes, VIRTIO_NET_HDR_SIZE, MirrorDir.ToVm);
    const payload = total - VIRTIO_NET_HDR_SIZE;
    c.copied++;
    c.copiedBytes += payload;
    countRx(src, qi, payload);
    countTx(dst, dq, payload);
  }
}
