/**
 * Finding the devices the in-guest driver uses, when not named on the
 * command line: the virtio-net function (modern or transitional id, no
 * kernel driver bound), the ivshmem-plain device whose BAR2 ends in the
 * region header magic (the shared BAR), and another ivshmem-plain device
 * for the driver's rings (the ring BAR).
 */
import { munmap } from '../../../bindings';
import { REGION_HEADER_SIZE, REGION_MAGIC } from '../../shm/region-header';
import { PCI_SYSFS, SysfsPciFunction } from './sysfs-function';
import { VIRTIO_NET_PCI_IDS, VIRTIO_PCI_VENDOR } from './virtio-pci';

export const IVSHMEM_VENDOR = 0x1af4;
export const IVSHMEM_DEVICE = 0x1110;
/** ivshmem-plain's shared memory BAR. */
export const IVSHMEM_MEM_BAR = 2;

function functions(root: string): SysfsPciFunction[] {
  return SysfsPciFunction.list(root).map((bdf) => new SysfsPciFunction(bdf, root));
}

/** Virtio-net functions no kernel driver holds. */
export function findVirtioNet(root = PCI_SYSFS): string[] {
  return functions(root)
    .filter((f) => f.vendorId === VIRTIO_PCI_VENDOR && VIRTIO_NET_PCI_IDS.includes(f.deviceId) && f.boundDriver === null)
    .map((f) => f.bdf);
}

/** Whether an ivshmem device's memory BAR ends in a region header (magic "zcswitch"). */
export function carriesRegionHeader(f: SysfsPciFunction): boolean {
  const info = f.bar(IVSHMEM_MEM_BAR);
  if (!info || info.size < REGION_HEADER_SIZE) return false;
  f.enable();
  const { buffer } = f.mapBar(IVSHMEM_MEM_BAR);
  try {
    const at = info.size - REGION_HEADER_SIZE;
    return Buffer.from(buffer, at, REGION_MAGIC.length).toString('latin1') === REGION_MAGIC;
  } finally {
    munmap(buffer);
  }
}

/** ivshmem-plain devices, split into those carrying a region header and the others. */
export function findIvshmem(root = PCI_SYSFS): { shared: string[]; plain: string[] } {
  const out = { shared: [] as string[], plain: [] as string[] };
  for (const f of functions(root)) {
    if (f.vendorId !== IVSHMEM_VENDOR || f.deviceId !== IVSHMEM_DEVICE) continue;
    (carriesRegionHeader(f) ? out.shared : out.plain).push(f.bdf);
  }
  return out;
}
