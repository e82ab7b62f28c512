/**
 * 802.1Q on the bridge: which VLAN a frame belongs to, and the frame with
 * its tag added or removed on the way out.
 *
 * Zero-copy and tags: a shared buffer holds the frame at a fixed offset
 * after its virtio_net_hdr, with no headroom the switch could use, and the
 * sender's bytes are the sender's. So the switch never edits a frame in
 * place: a frame whose tag must change (access port <-> trunk) takes the
 * copy path, and the copy is made from a re-tagged view of the frame: the
 * header and MACs from a 28-byte scratch, the 4-byte tag (or none), then the
 * rest of the frame where it lies. A frame that keeps its tag (access to
 * access, trunk to trunk) can still be swapped.
 */
import { VIRTQ_MAX_CHAIN, VIRTIO_NET_HDR_SIZE } from '../virtio/defs';
import type { ResolvedChain } from './copy';

export const TPID_8021Q = 0x8100;
export const VLAN_TAG_SIZE = 4;
/** virtio_net_hdr fields that count from the frame's start, moved by a tag (virtio 1.x). */
const NEEDS_CSUM = 1;
const HDR_LEN = 2;
const CSUM_START = 6;
/** Bytes of the stream before the tag: virtio_net_hdr + destination and source MACs. */
const BEFORE_TAG = VIRTIO_NET_HDR_SIZE + 12;

/** Copy src's segments into out (both resolved chains). */
export function copyResolved(src: ResolvedChain, out: ResolvedChain): void {
  for (let i = 0; i < src.count; i++) {
    out.mem[i] = src.mem[i];
    out.off[i] = src.off[i];
    out.len[i] = src.len[i];
  }
  out.count = src.count;
  out.total = src.total;
}

/**
 * out := src with an 802.1Q tag for `vlan` added after the MACs (vlan > 0)
 * or its tag removed (vlan = 0). `scratch` (at least 28 bytes) holds the new
 * beginning. False if the result would have more segments than a chain may.
 */
export function retag(src: ResolvedChain, out: ResolvedChain, scratch: Uint8Array, vlan: number): boolean {
  readBytes(src, 0, scratch, BEFORE_TAG);
  const delta = vlan > 0 ? VLAN_TAG_SIZE : -VLAN_TAG_SIZE;
  // Offload fields that point into the frame move with it.
  if ((scratch[0] & NEEDS_CSUM) !== 0) addU16(scratch, CSUM_START, delta);
  if (scratch[1] !== 0) addU16(scratch, HDR_LEN, delta);
  let headLen = BEFORE_TAG;
  let from = BEFORE_TAG;
  if (vlan > 0) {
    scratch[BEFORE_TAG] = TPID_8021Q >>> 8;
    scratch[BEFORE_TAG + 1] = TPID_8021Q & 0xff;
    scratch[BEFORE_TAG + 2] = vlan >>> 8;
    scratch[BEFORE_TAG + 3] = vlan & 0xff;
    headLen += VLAN_TAG_SIZE;
  } else {
    from += VLAN_TAG_SIZE;
  }
  out.mem[0] = scratch;
  out.off[0] = 0;
  out.len[0] = headLen;
  let k = 1;
  let skip = from;
  for (let i = 0; i < src.count; i++) {
    const len = src.len[i];
    if (skip >= len) {
      skip -= len;
      continue;
    }
    if (k === VIRTQ_MAX_CHAIN) return false;
    out.mem[k] = src.mem[i];
    out.off[k] = src.off[i] + skip;
    out.len[k] = len - skip;
    skip = 0;
    k++;
  }
  out.count = k;
  out.total = src.total + delta;
  return true;
}

function addU16(b: Uint8Array, at: number, delta: number): void {
  const v = (b[at] | (b[at + 1] << 8)) + delta;
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
}

/** Bytes [from, from+n) of a resolved chain's stream into dst (zeros past its end). */
function readBytes(res: ResolvedChain, from: number, dst: Uint8Array, n: number): void {
  let skip = from;
  let w = 0;
  for (let i = 0; i < res.count && w < n; i++) {
    const len = res.len[i];
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const m = res.mem[i];
    const base = res.off[i] + skip;
    const c = Math.min(len - skip, n - w);
    for (let j = 0; j < c; j++) dst[w + j] = m[base + j];
    w += c;
    skip = 0;
  }
  for (; w < n; w++) dst[w] = 0;
}
