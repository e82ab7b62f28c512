/**
 * The guest driver's view of one queue pair: its two rings and what each
 * of their descriptors currently holds, so completions can be turned back
 * into buffers.
 */
import type { DriverQueue } from '../virtio/driver-queue';

/** One queue pair's rings and what each of their descriptors holds. */
export class QueuePair {
  /** rx descriptor -> shared buffer index (>= 0) or private slot -(k+1). */
  readonly rxKind: Int32Array;
  /** Swap mode: rx descriptor holds one of our own buffers (not a pool-gift posting). */
  readonly rxOwn: Uint8Array;
  /** tx descriptor -> shared buffer, private slot -(k+1), or KIND_RAW. */
  readonly txKind: Int32Array;
  /** Gift chains: descriptors in the chain at this head (0 or 1: a lone descriptor). */
  readonly txSpan: Uint8Array;
  /** Gift chains: the next descriptor of each link (our copy: the ring's is the switch's to read). */
  readonly txNext: Uint16Array;
  /**
   * fixedTx: the length (word 2b) and chain word (flags | next << 16, word
   * 2b + 1) last written into tx descriptor b (fixTxDesc in
   * fixed-descs.ts): side by side, so checking both reads one line.
   */
  readonly txWords: Uint32Array;
  /** Tx entries in flight whose descriptors were allocated (not a fixed shared buffer's: GuestDataPath.fixedTx). */
  txOthers = 0;
  ownPosted = 0;
  rxDirty = false;
  txDirty = false;

  constructor(readonly rxq: DriverQueue, readonly txq: DriverQueue) {
    this.rxKind = new Int32Array(rxq.ring.num);
    this.rxOwn = new Uint8Array(rxq.ring.num);
    this.txKind = new Int32Array(txq.ring.num);
    this.txSpan = new Uint8Array(txq.ring.num);
    this.txNext = new Uint16Array(txq.ring.num);
    this.txWords = new Uint32Array(2 * txq.ring.num);
  }
}

/** txKind value for descriptors injected raw by tests. */
export const KIND_RAW = -0x40000000;
/** rxKind value for rx postings injected raw by tests: completions are dropped. */
export const RX_RAW = -0x40000001;

