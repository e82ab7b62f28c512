/**
 * The Shared Buffers region as the guest driver sees it, and
 * GET_SHARED_BUFFERS from the driver's side: ask for the region, check the
 * reply's geometry, map the memfd that came with it, and work out the gift
 * watermarks (none on a bridge, which keeps every VM's count). Buffer
 * addresses, offsets and indices come from RegionGeometry, the definition
 * the switch's SharedBuffers uses too (docs/protocol.md, "Descriptors").
 */
import { F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, HUGE_PAGE_SIZE, adviseHugePages, closeFd, fdSeals, mmapRegion } from '../../bindings';
import { RegionGeometry } from '../shm/geometry';
import { ProtocolError, decodeSharedBuffersInfo } from '../vhost/codec';
import { Req, SHARED_BUFFERS_F_HUGE_PAGES, SHARED_BUFFERS_F_SWAP } from '../vhost/protocol';
import type { VhostUserFrontend } from './frontend';

export class SharedRegion extends RegionGeometry {
  /** The mapping; per-packet code reads it, so a plain field rather than a getter. */
  readonly mem: Uint8Array;
  /** The same memory as 32-bit words (headers are written word-wise). */
  readonly mem32: Uint32Array;

  constructor(
    buffer: ArrayBuffer, base: number, bufSize: number, bufCount: number,
    /** The buffers this VM owns at attach: [partitionStart, partitionStart + partitionCount). */
    readonly partitionStart: number,
    readonly partitionCount: number,
    /**
     * Bridge semantics: post our own empty buffers on rx; completions carry
     * the buffer address the switch wrote into the descriptor.
     */
    readonly swap: boolean,
  ) {
    super(base, bufSize, bufCount);
    this.mem = new Uint8Array(buffer, 0, this.size);
    this.mem32 = new Uint32Array(buffer, 0, this.size >>> 2);
  }

  /** Whether buffer b is in the partition this VM was given at attach. */
  inPartition(b: number): boolean {
    return b >= this.partitionStart && b < this.partitionStart + this.partitionCount;
  }
}

export interface FetchedRegion {
  region: SharedRegion;
  /** The mapping (to unmap on close). */
  buffer: ArrayBuffer;
  giftHigh: number;
  giftLow: number;
}

/** The seals the switch puts on the region (docs/protocol.md): nobody can change its size any more. */
export const REGION_SEALS = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

/**
 * Why the region behind `fd` may not be mapped, or null: it must carry
 * REGION_SEALS, or a peer holding the same fd could shrink it and every
 * mapping of it would fault (SIGBUS) at the next touch.
 */
export function regionSealProblem(fd: number): string | null {
  let seals: number;
  try {
    seals = fdSeals(fd);
  } catch (e) {
    return `the Shared Buffers fd cannot be sealed (${(e as Error).message})`;
  }
  const missing = REGION_SEALS & ~seals;
  if (missing === 0) return null;
  const names = [[F_SEAL_SHRINK, 'F_SEAL_SHRINK'], [F_SEAL_GROW, 'F_SEAL_GROW'], [F_SEAL_SEAL, 'F_SEAL_SEAL']]
    .filter(([bit]) => missing & (bit as number)).map(([, n]) => n);
  return `the Shared Buffers region is not sealed (seals 0x${seals.toString(16)}, missing ${names.join(' | ')}): ` +
    'a peer could shrink it under our mapping; refusing it (allowUnsealed / --allow-unsealed to accept)';
}

export async function fetchSharedRegion(
  fe: VhostUserFrontend, opts: { giftHigh?: number; giftLow?: number; allowUnsealed?: boolean },
): Promise<FetchedRegion> {
  const reply = await fe.call(Req.GET_SHARED_BUFFERS);
  if (reply.fds.length !== 1) {
    for (const fd of reply.fds) closeFd(fd);
    throw new ProtocolError(`GET_SHARED_BUFFERS reply carried ${reply.fds.length} fds, expected 1`);
  }
  const fd = reply.fds[0];
  try {
    const info = decodeSharedBuffersInfo(reply);
    const size = Number(info.size);
    if (size !== info.bufSize * info.bufCount || info.partitionStart + info.partitionCount > info.bufCount) {
      throw new ProtocolError('GET_SHARED_BUFFERS reply has inconsistent geometry');
    }
    if (!opts.allowUnsealed) {
      const problem = regionSealProblem(fd);
      if (problem) throw new ProtocolError(`GET_SHARED_BUFFERS: ${problem}`);
    }
    const buffer = mmapRegion(fd, size);
    // The switch backs the region with huge pages: map them as such here too (without this the kernel
    // left about half of a 256 MiB region on 4 KiB entries in a VM). A refusal only costs speed.
    if ((info.flags & SHARED_BUFFERS_F_HUGE_PAGES) !== 0 && size >= HUGE_PAGE_SIZE) adviseHugePages(buffer, size);
    const region = new SharedRegion(
      buffer, Number(info.base), info.bufSize, info.bufCount,
      info.partitionStart, info.partitionCount, (info.flags & SHARED_BUFFERS_F_SWAP) !== 0,
    );
    if (region.swap) return { region, buffer, giftHigh: Infinity, giftLow: Infinity };
    const giftHigh = opts.giftHigh ?? (info.giftHigh || Infinity);
    return { region, buffer, giftHigh, giftLow: opts.giftLow ?? (info.giftLow || giftHigh) };
  } finally {
    closeFd(fd);
  }
}
