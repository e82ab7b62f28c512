/**
 * What the guest driver counts, and where it reports received packets:
 * shared by the data path (data-path.ts) and its loops over fixed
 * descriptors (fixed-descs.ts).
 */

/** What the driver counts (exposed as GuestDriver.counters). */
export class DriverCounters {
  txPackets = 0;
  txBytes = 0;
  rxPackets = 0;
  rxBytes = 0;
  giftsSent = 0;
  giftsReceived = 0;
  returned = 0;
  /** Completions the driver could not make sense of (rejected postings). */
  rxErrors = 0;
}

/** Where received packets are reported: parallel arrays, [0, n) valid after receive(). */
export interface RxBatch {
  readonly rxToken: Int32Array;
  readonly rxLen: Uint32Array;
  readonly rxQueue: Uint8Array;
}
