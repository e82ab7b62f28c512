/**
 * The zero-copy swap, for both forwarders (docs/protocol.md, "Pair mode:
 * swapping buffers" and "Bridge mode: swapping buffers"): the sender's buffer goes into the receiver's oldest posted own
 * empty buffer's rx descriptor, that empty buffer into the sender's tx
 * descriptor; both descriptors are completed and both moves recorded in the
 * ledger, so each VM keeps its buffer count and no byte is copied. Each VM
 * is given the address at which it sees its new buffer (per-port windows).
 */
import type { DeviceQueue } from '../virtio/device-queue';
import type { PortQueues } from './port-queues';

/**
 * Swap shared buffer b, sent by src in tx descriptor `head` of txq, with
 * dst's oldest own empty buffer on rx queue dq (the caller checked that dst
 * has one, that both ports are in one sharing domain and that src owns b);
 * `total` is the packet's length with its virtio_net_hdr.
 */
export function swapBuffers(src: PortQueues, txq: DeviceQueue, head: number, b: number, dst: PortQueues, dq: number, total: number): void {
  const postings = dst.postings;
  const y = postings.nextOwnBuf(dq);
  const rxHead = postings.takeOwn(dq);
  const rxq = dst.rxqs[dq]!;
  rxq.ring.setDescAddr(rxHead, dst.win.addrOf(b));
  rxq.pushUsed(rxHead, total);
  txq.ring.setDescAddr(head, src.win.addrOf(y));
  txq.pushUsed(head, 0);
  const ledger = dst.ledger;
  ledger.transfer(b, dst.id);
  ledger.transfer(y, src.id);
}
