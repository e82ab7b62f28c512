/**
 * Touch ahead (docs/PERFORMANCE.md, "64 KiB frames"): before a burst, load
 * the first byte of each shared packet the burst's tx entries name,
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

  /** Load the byte each of the next n avail entries of q names, where it is inside the window (n ≤ what availPending said). */
  txHeaders(q: DeviceQueue, win: PortWindow, n: number): void {
    if (!win.touchAhead) return;
    const r = q.ring;
    const avail = r.avail;
    const d32 = r.desc32;
    const mask = r.mask;
    const num = r.num;
    const mem = win.mem;
    const base = win.base;
    const size = win.size;
    let at = q.lastAvail;
    let s = 0;
    for (let i = 0; i < n; i++) {
      const head = avail[2 + (at & mask)];
      at = (at + 1) & 0xffff;
      if (head >= num) continue;
      // The byte the descriptor's address names (a shared packet's starts its buffer): no division on the way.
      const off = d32[4 * head + 1] * 0x1_0000_0000 + d32[4 * head] - base;
      if (off >= 0 && off < size) s += mem[off];
    }
    this.sum = s;
  }
}
