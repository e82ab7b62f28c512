/**
 * The re-tagged view of a frame (src/datapath/vlan.ts): a tag added after
 * the MACs or removed, the rest of the frame left where it lies (any
 * segmentation), and the virtio_net_hdr offload fields that count from the
 * frame's start moved with it.
 */
import t from 'tap';
import { ResolvedChain, copyChain } from '../../src/datapath/copy';
import { retag } from '../../src/datapath/vlan';
import { VIRTQ_MAX_CHAIN } from '../../src/virtio/defs';

/** A chain over `bytes` cut at the given lengths. */
function chainOf(bytes: Uint8Array, cuts: number[]): ResolvedChain {
  const c = new ResolvedChain();
  let off = 0;
  for (const len of cuts) {
    c.mem[c.count] = bytes;
    c.off[c.count] = off;
    c.len[c.count] = len;
    c.count++;
    off += len;
  }
  c.total = off;
  return c;
}

/** The bytes a chain stands for. */
function flat(c: ResolvedChain): Uint8Array {
  const out = new Uint8Array(c.total);
  const dst = chainOf(out, [c.total]);
  copyChain(c, dst);
  return out;
}

/** virtio_net_hdr (NEEDS_CSUM, GSO TCPv4, hdr_len 54, csum_start 34) + MACs + ethertype + payload. */
function packet(tag: number): Uint8Array {
  const hdr = [1, 1, 54, 0, 0, 0, 34, 0, 16, 0, 0, 0];
  const macs = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
  const tci = tag > 0 ? [0x81, 0x00, tag >> 8, tag & 0xff] : [];
  const rest = Array.from({ length: 60 }, (_, i) => (i * 13) & 0xff);
  return Uint8Array.from([...hdr, ...macs, ...tci, 0x08, 0x00, ...rest]);
}

t.test('add a tag, in any segmentation', async (t) => {
  const scratch = new Uint8Array(32);
  for (const cuts of [[86], [12, 74], [5, 20, 1, 60], [30, 56]]) {
    const out = new ResolvedChain();
    t.ok(retag(chainOf(packet(0), cuts), out, scratch, 10));
    const got = flat(out);
    const want = packet(10);
    want[6] = 38; // csum_start moved by the tag
    want[2] = 58; // so did hdr_len (GSO)
    t.same(got, want, `cut at ${cuts.join('+')}: tag 10 after the MACs, offload fields +4`);
  }
});

t.test('remove a tag', async (t) => {
  const scratch = new Uint8Array(32);
  const tagged = packet(20);
  tagged[6] = 38;
  tagged[2] = 58;
  for (const cuts of [[90], [24, 4, 62], [26, 64], [12, 12, 2, 2, 62]]) {
    const out = new ResolvedChain();
    t.ok(retag(chainOf(tagged, cuts), out, scratch, 0));
    t.same(flat(out), packet(0), `cut at ${cuts.join('+')}: the tag gone, offload fields back`);
  }
});

t.test('a chain already as long as a chain may be cannot take a tag', async (t) => {
  const bytes = new Uint8Array(24 + VIRTQ_MAX_CHAIN);
  const cuts = [24 + 1, ...Array.from({ length: VIRTQ_MAX_CHAIN - 1 }, () => 1)];
  t.equal(cuts.length, VIRTQ_MAX_CHAIN);
  t.notOk(retag(chainOf(bytes, cuts), new ResolvedChain(), new Uint8Array(32), 5), 'refused (the forwarder counts chain-too-long)');
});
