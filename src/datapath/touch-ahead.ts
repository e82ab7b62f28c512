/**
 * Touch ahead (docs/PERFORMANCE.md, "64 KiB frames"): before a burst, load
 * one byte of the header of each shared buffer the burst's tx entries name,
 * so the burst's cache and TLB misses on those headers overlap instead of
 * being taken one at a time inside each packet's work (the offload check,
 * the MAC lookup). Only where the buffers are a page or more apart
 * (RegionGeometry.touchAhead): closer together the hardware prefetchers
 * already bring the next headers in, and the loop is skipped.
 *
 * The ring and the descriptors come from the guest and are only a hint here:
 * a head or an address out of range is skipped, every index is checked
 * before it is used, and nothing is written. popAvail, the chain walk and
 * every check run afterwards as if this had not happened.
 */
import type { PortWindow } from '../shm/geometry';
import type { DeviceQueue } from '../virtio/device-queue';

export class HeaderTouch {
  /** The loaded bytes' sum: kept so the compiler cannot drop the loads. */
  sum = 0;

  /** Load the first byte of the buffer each of the next n avail entries of q points into (n ≤ what availPending said). */
  txHeaders(q: DeviceQueue, win: PortWindow, n: number): void {
    if (!win.touchAhead) return;
    const bs = win.bufSize;
    const r = q.ring;
    const avail = r.avail;
    const d32 = r.desc32;
    const mask = r.mask;
    const num = r.num;
    const mem = win.mem;
    let at = q.lastAvail;
    let s = 0;
    for (let i = 0; i < n; i++) {
      const head = avail[2 + (at & mask)];
      at = (at + 1) & 0xffff;
      if (head >= num) continue;
      const b = win.indexOf(d32[4 * head + 1] * 0x1_0000_0000 + d32[4 * head]);
      if (b >= 0) s += mem[b * bs];
    }
    this.sum = s;
  }
}
