/**
 * The zero-copy swap, for both forwarders (docs/protocol.md, "Pair mode:
 * swapping buffers" and "Bridge mode: swapping buffers"): the sender's buffer goes into the receiver's oldest posted own
 * empty buffer's rx descriptor, that empty buffer into the sender's tx
 * descriptor; both descriptors are completed and both moves recorded in the
 * ledger, so each VM keeps its buffer count and no byte is copied. Each VM
 * is given the address at which it sees its new buffer (per-port windows),
 * or, a sender that acked SWAP_IN_USED, its index in the used element.
 */
import type { DeviceQueue } from '../virtio/device-queue';
import { Drop } from './counters';
import type { PortQueues } from './port-queues';

/**
 * Swap shared buffer b, sent by src in tx descriptor `head` of txq, with
 * dst's oldest own empty buffer on rx queue dq (the caller checked that dst
 * has one posted, that both ports are in one sharing domain and that src
 * owns b); `total` is the packet's length with its virtio_net_hdr.
 *
 * An own posting whose buffer dst no longer owns (it sent the buffer after
 * posting it: a front-end that breaks the rules) is stale: it is completed
 * empty and counted (`bad-rx-desc` on dst), never swapped, so a lying
 * receiver cannot hand its peer a buffer twice. False: no valid posting
 * was left, nothing else was touched (the caller copies or drops).
 */
export function swapBuffers(src: PortQueues, txq: DeviceQueue, head: number, b: number, dst: PortQueues, dq: number, total: number): boolean {
  const postings = dst.postings;
  const rxq = dst.rxqs[dq]!;
  const owner = dst.ledger.owner;
  let y = postings.nextOwnBuf(dq);
  while (owner[y] !== dst.id) {
    rxq.pushUsed(postings.takeOwn(dq), 0);
    dst.counters.drop(Drop.BadRxDesc);
    if (postings.ownCount(dq) === 0) return false;
    y = postings.nextOwnBuf(dq);
  }
  const rxHead = postings.takeOwn(dq);
  rxq.ring.setDescAddr(rxHead, dst.win.addrOf(b));
  rxq.pushUsed(rxHead, total);
  // The sender learns y from the used element (SWAP_IN_USED) or, as the proposal has it, from its descriptor.
  if (src.swapInUsed) {
    txq.pushUsed(head, y + 1);
  } else {
    txq.ring.setDescAddr(head, src.win.addrOf(y));
    txq.pushUsed(head, 0);
  }
  const ledger = dst.ledger;
  ledger.transfer(b, dst.id);
  ledger.transfer(y, src.id);
  return true;
}
