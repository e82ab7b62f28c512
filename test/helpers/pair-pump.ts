/**
 * One step of one-way traffic between two guest drivers in a test: the
 * sender publishes what it queued and takes back what came home (gifts),
 * the receiver takes its frames, each checked and then released. The
 * receiver's flush (which gifts its surplus back) is left to the caller.
 */
import type { GuestDriver } from '../../src/guest/driver';
import { type FrameChecker, type Verdict } from '../../src/guest/test-packet';

/** Returns how many frames the receiver took; onFrame sees each one's verdict and sequence number. */
export function pumpOneWay(tx: GuestDriver, rx: GuestDriver, check: FrameChecker, onFrame: (v: Verdict, seq: number) => void): number {
  tx.flush();
  tx.receive(256); // gifts coming back
  tx.flush();
  const n = rx.receive(256);
  for (let i = 0; i < n; i++) {
    const tok = rx.rxToken[i];
    onFrame(check.verify(rx.packetMem(tok), rx.packetOffset(tok), rx.rxLen[i]), check.lastSeq);
    rx.release(tok);
  }
  return n;
}
