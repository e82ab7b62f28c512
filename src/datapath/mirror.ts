/**
 * Port mirroring (for `zcswitch capture`): a port with a Mirror attached
 * reports every frame it sends or receives. The data path only tests
 * `port.mirror !== null`; a Mirror copies what it keeps, so nothing is
 * copied for ports nobody captures.
 */
import type { ResolvedChain } from './copy';

export const enum MirrorDir {
  /** The VM transmitted it (the switch received it). */
  FromVm = 0,
  /** The switch delivered it to the VM. */
  ToVm = 1,
}

export interface Mirror {
  /** An Ethernet frame (no virtio_net_hdr) of len bytes at mem[off]. Must not keep mem. */
  frame(mem: Uint8Array, off: number, len: number, dir: MirrorDir): void;
}

const scratch = new Uint8Array(65536);

/** Mirror a frame held in a resolved chain whose first `skip` bytes are the virtio_net_hdr. */
export function mirrorChain(m: Mirror, res: ResolvedChain, skip: number, dir: MirrorDir): void {
  let w = 0;
  for (let i = 0; i < res.count; i++) {
    const len = res.len[i];
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const from = res.off[i] + skip;
    const n = Math.min(len - skip, scratch.length - w);
    scratch.set(res.mem[i].subarray(from, from + n), w);
    w += n;
    skip = 0;
  }
  m.frame(scratch, 0, w, dir);
}
