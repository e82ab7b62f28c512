/**
 * A token bucket per port and direction (`ports[].limit`): frames/s and
 * bits/s, each optional. It refills from the round's clock (one
 * performance.now() per data-path round, passed in), so a check is a few
 * float operations and allocates nothing. It never lends: a frame passes
 * only when the tokens are there, so the rate is never exceeded by more than
 * the bucket (burstMs of the rate); a loop that sleeps longer than burstMs
 * loses the tokens of the excess (it under-delivers, never over-delivers).
 */
import type { RateConfig } from '../config/schema';
import { MAX_PACKET } from './tx-class';

export class TokenBucket {
  /** False: no limit (take() is one branch). */
  on = false;
  /** Frames and bits added per millisecond; 0 = that measure is not limited. */
  private framesPerMs = 0;
  private bitsPerMs = 0;
  private frameCap = 0;
  private bitCap = 0;
  private frames = 0;
  private bits = 0;
  private last = 0;

  /** (Re)configure; a running bucket keeps its tokens up to the new capacity. */
  set(r: RateConfig, now: number): void {
    this.framesPerMs = r.pps / 1000;
    this.bitsPerMs = r.bps / 1000;
    // The bucket holds at least one frame (of the largest size): else nothing would ever pass.
    this.frameCap = Math.max(1, this.framesPerMs * r.burstMs);
    this.bitCap = Math.max(MAX_PACKET * 8, this.bitsPerMs * r.burstMs);
    const wasOn = this.on;
    this.on = r.pps > 0 || r.bps > 0;
    if (!wasOn) {
      this.frames = this.frameCap;
      this.bits = this.bitCap;
      this.last = now;
    }
    this.frames = Math.min(this.frames, this.frameCap);
    this.bits = Math.min(this.bits, this.bitCap);
  }

  /** May a frame of `bytes` (Ethernet frame) pass at time now (ms)? Takes its tokens if so. */
  take(bytes: number, now: number): boolean {
    if (!this.on) return true;
    const dt = now - this.last;
    if (dt > 0) {
      this.last = now;
      this.frames = Math.min(this.frameCap, this.frames + dt * this.framesPerMs);
      this.bits = Math.min(this.bitCap, this.bits + dt * this.bitsPerMs);
    }
    const b = bytes * 8;
    if ((this.framesPerMs > 0 && this.frames < 1) || (this.bitsPerMs > 0 && this.bits < b)) return false;
    this.frames -= 1;
    this.bits -= b;
    return true;
  }
}
