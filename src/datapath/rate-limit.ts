/**
 * A token bucket per port and direction (`ports[].limit`): frames/s and
 * bits/s, each optional. It refills from the round's clock (one
 * performance.now() per data-path round, passed in), so a check is a few
 * float operations and allocates nothing. It never lends: a frame passes
 * only when the tokens are there, so the rate is never exceeded by more than
 * the bucket (burstMs of the rate) and, for bits, one frame; a loop that sleeps longer than burstMs
 * loses the tokens of the excess (it under-delivers, never over-delivers).
 */
import type { RateConfig } from '../config/schema';

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
    const wasFrames = this.on && this.framesPerMs > 0;
    const wasBits = this.on && this.bitsPerMs > 0;
    this.framesPerMs = r.pps / 1000;
    this.bitsPerMs = r.bps / 1000;
    // The frame bucket holds at least one frame: else nothing would ever pass.
    this.frameCap = Math.max(1, this.framesPerMs * r.burstMs);
    this.bitCap = this.bitsPerMs * r.burstMs;
    if (!this.on) this.last = now;
    this.on = r.pps > 0 || r.bps > 0;
    // A measure limited before keeps its tokens (up to the new bucket); a new one starts full.
    this.frames = wasFrames ? Math.min(this.frames, this.frameCap) : this.frameCap;
    this.bits = wasBits ? Math.min(this.bits, this.bitCap) : this.bitCap;
  }

  /** Undo a take() of a frame that was not consumed after all (it waits in its ring and will be taken again). */
  give(bytes: number): void {
    if (!this.on) return;
    if (this.framesPerMs > 0) this.frames = Math.min(this.frameCap, this.frames + 1);
    if (this.bitsPerMs > 0) this.bits = Math.min(this.bitCap, this.bits + bytes * 8);
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
    // Bits: a frame passes while the bucket is not in debt and may leave it in debt (so a frame larger
    // than the bucket still passes, and the rate holds within one frame).
    if ((this.framesPerMs > 0 && this.frames < 1) || (this.bitsPerMs > 0 && this.bits <= 0)) return false;
    if (this.framesPerMs > 0) this.frames -= 1;
    if (this.bitsPerMs > 0) this.bits -= bytes * 8;
    return true;
  }
}
