/**
 * Tx entries described apart from any one world's addresses, for the
 * differential tests of the fast lanes (test/unit/*-differential.test.ts):
 * the same entry is rendered at each world's window of the region, so two
 * worlds that see the buffers at different addresses send the same thing.
 */
import { VIRTIO_NET_HDR_SIZE, VIRTQ_DESC_F_INDIRECT } from '../../src/virtio/defs';
import { writeNetHdr } from '../../src/virtio/net-hdr';
import type { DescSpec, Vm } from './datapath-rig';

/** An address outside every window of the rigs' worlds (and outside the VMs' own memory). */
export const NOWHERE = 0x7_0000_0000;

/** A buffer as the VMs name it: an index (-1: no buffer, NOWHERE) and an offset into it. */
export interface Target { b: number; off: number }
/** One tx descriptor. */
export interface TxSpec { t: Target; len: number; write?: boolean; indirect?: boolean }

/** Target t's address as vm sees it. */
export function targetAddr(vm: Vm, t: Target): number {
  return t.b < 0 ? NOWHERE + t.off : vm.win.addrOf(t.b) + t.off;
}

/**
 * Send specs as one chain on vm's tx ring; when the first names a buffer at
 * its start, write the header (flags, gso_type) and payload there first,
 * through the VM's mapping.
 */
export function sendSpecs(vm: Vm, specs: TxSpec[], hdrFlags: number, gsoType: number, payload: Uint8Array): void {
  const first = specs[0].t;
  if (first.b >= 0 && first.off === 0) {
    const off = vm.shared.offsetOf(first.b);
    writeNetHdr(vm.region, off, hdrFlags, 0);
    vm.region[off + 1] = gsoType;
    vm.region.set(payload.subarray(0, Math.min(payload.length, vm.shared.bufSize - VIRTIO_NET_HDR_SIZE)), off + VIRTIO_NET_HDR_SIZE);
  }
  const descs: DescSpec[] = specs.map((s) => ({
    addr: targetAddr(vm, s.t), len: s.len, write: s.write, flags: s.indirect ? VIRTQ_DESC_F_INDIRECT : 0,
  }));
  vm.sendChain(descs);
}
