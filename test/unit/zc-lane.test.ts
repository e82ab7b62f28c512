/**
 * Unit tests for the zero-copy fast lane (src/datapath/zc-lane.ts) over two
 * simulated VMs' real rings: bursts that mix the lane's common case with
 * everything it must leave to the general path (gifts, offload headers a
 * peer cannot take, a missing posting, a buffer the sender does not own, a
 * frame over the peer's MTU, bad and duplicate rx postings, copy targets),
 * checked entry by entry: the order of every used entry, lengths, counters,
 * returns and the ledger are what the general path alone gives.
 */
import t from 'tap';
import { Drop } from '../../src/datapath/counters';
import { PairForwarder } from '../../src/datapath/pair-forwarder';
import { RegionGeometry } from '../../src/shm/geometry';
import { SplitRing } from '../../src/virtio/ring';
import { VIRTIO_NET_HDR_F_RETURNED } from '../../src/vhost/protocol';
import {
  VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_SIZE,
} from '../../src/virtio/defs';
import { Rig, frame, mac } from '../helpers/datapath-rig';

const HDR = VIRTIO_NET_HDR_SIZE;
/** A sender that may ask for an open checksum (CSUM), and a receiver that takes one (GUEST_CSUM). */
const ASKS_CSUM = 1n << VIRTIO_NET_F_CSUM;
const TAKES_CSUM = 1n << VIRTIO_NET_F_GUEST_CSUM;

t.test('the header of a zero-copy frame: unread where the receiver takes all the sender may ask, read where it does not', async (t) => {
  // Lane and general path (a window across a 4 GiB boundary closes the lane), gift and swap exchange.
  for (const swap of [false, true]) {
    for (const lane of [true, false]) {
      const name = `${swap ? 'swap' : 'gift'}, ${lane ? 'lane' : 'general path'}`;
      for (const [asks, takes, unread] of [[ASKS_CSUM, TAKES_CSUM, true], [0n, 0n, true], [ASKS_CSUM, 0n, false]] as const) {
        const rig = new Rig({ bufCount: 64, bufSize: 2048, swap });
        const base = lane ? {} : { windowBase: 0x2_0000_0000 - 8 * 2048 };
        const a = rig.addVm({ partition: [0, 32], features: asks, ...base });
        const b = rig.addVm({ partition: [32, 32], features: takes, ...base });
        t.equal(a.port.win.oneBlock, lane, `${name}: the lane can run: ${lane}`);
        // b's postings: of a's buffers (gifts), or of its own empty ones (swaps).
        for (let x = 0; x < 3; x++) b.postShared(swap ? 40 + x : x);
        b.port.ingestRx();
        b.port.mtu = 1500;
        // An open checksum at csum_start 0 (a lie the switch drops when it reads it), a TSO type, and a plain frame.
        const f = frame(mac(2), mac(1), 100, 1);
        a.sendShared(0, f, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        a.sendShared(1, f, 0, VIRTIO_NET_HDR_GSO_TCPV4);
        a.sendShared(2, f);
        const fw = new PairForwarder(64, undefined, swap);
        t.equal(fw.forward(a.port, 0, b.port), 3, `${name}: all three taken`);
        const c = a.port.counters;
        const what = `${name}, asks ${asks}, takes ${takes}`;
        if (unread) {
          t.equal(c.zeroCopy, 3, `${what}: unread, all three go zero-copy`);
          t.same(b.flushAndReap().rx.map((u) => u.len), [HDR + 100, HDR + 100, HDR + 100], `${what}: delivered whole`);
          t.equal(b.hdrFlags(0), VIRTIO_NET_HDR_F_NEEDS_CSUM, `${what}: the header as the sender wrote it`);
          t.equal(c.gsoFrames, 0, `${what}: an unread header is not counted as GSO`);
          t.equal(c.drops[Drop.BadCsumOffset] + c.drops[Drop.BadGsoSize], 0, `${what}: nothing dropped`);
          if (!swap) {
            // No posting left at b: the frame would be copied, so its header is read, and the lie dropped.
            a.sendShared(3, f, VIRTIO_NET_HDR_F_NEEDS_CSUM);
            t.equal(fw.forward(a.port, 0, b.port), 1, `${what}: a frame with nowhere to go zero-copy`);
            t.equal(c.drops[Drop.BadCsumOffset], 1, `${what}: read on its way to a copy, the lie dropped`);
          }
        } else {
          t.equal(c.zeroCopy, 1, `${what}: read, only the plain frame goes zero-copy`);
          t.equal(c.drops[Drop.BadCsumOffset], 1, `${what}: the lie is dropped (bad-csum-offset)`);
          t.equal(c.drops[Drop.BadGsoSize], 1, `${what}: the TSO header with no gso_size too (bad-gso-size)`);
        }
        t.equal(rig.ledgerProblems(), '', `${what}: ledger balanced`);
        rig.close();
      }
    }
  }
});

t.test('a mixed tx burst: the lane takes the common frames, the general path the rest, in ring order', async (t) => {
  const rig = new Rig({ bufCount: 64, bufSize: 2048 });
  t.teardown(() => rig.close());
  // a may ask for open checksums, which b does not take: a's headers are read (headerUnread).
  const { a, b } = rig.crossPosted(32, { features: ASKS_CSUM });
  const fw = new PairForwarder(64);
  // a's own postings of the two buffers whose frames are refused: they come back RETURNED through them.
  const ret4 = a.postShared(4);
  const ret5 = a.postShared(5);
  a.port.ingestRx();
  // b used its posting of 5 some other way, and has no copy target: 5 cannot be delivered.
  b.port.postings.takeShared(5);
  const post = (x: number): number => b.port.postings.sharedPosting(x) & 0xffff;
  const expectRx = [post(0), post(1), post(2), post(3), post(6), post(7), post(8)];
  const f = frame(mac(2), mac(1), 100, 1);
  b.port.mtu = 1500;
  const tx = [
    a.sendShared(0, f),
    a.sendShared(1, f),
    a.sendGift([2, 3]),
    a.sendShared(4, f, VIRTIO_NET_HDR_F_NEEDS_CSUM), // csum_start 0: bad-csum-offset
    a.sendShared(5, f), // no posting at b, no copy target
    a.sendShared(6, f),
    a.sendShared(40, f), // b's buffer: not-owner
    a.sendShared(31, frame(mac(2), mac(1), 1600, 2)), // over b's MTU, nowhere to copy it
    a.sendShared(7, f),
    a.sendShared(8, f),
  ];
  t.equal(fw.forward(a.port, 0, b.port), tx.length, 'every entry consumed in one burst');
  t.equal(rig.ledgerProblems(), '', 'ledger conserved');
  const ar = a.flushAndReap();
  const br = b.flushAndReap();
  t.same(ar.tx, tx.map((id) => ({ id, len: 0 })), 'a\'s tx entries complete in ring order');
  t.same(br.rx, expectRx.map((id, i) => ({ id, len: i === 2 || i === 3 ? HDR : HDR + 100 })), 'b\'s postings complete in order: frames, the gift\'s two links, frames');
  t.same(ar.rx.map((u) => u.id).sort(), [ret4, ret5].sort(), 'the refused buffers come back through a\'s own postings');
  t.ok(a.hdrFlags(4) & VIRTIO_NET_HDR_F_RETURNED, 'buffer 4 flagged RETURNED');
  t.ok(a.hdrFlags(5) & VIRTIO_NET_HDR_F_RETURNED, 'buffer 5 flagged RETURNED');
  const c = a.port.counters;
  t.equal(c.zeroCopy, 5, 'five frames zero-copy');
  t.equal(c.rxPackets, 5);
  t.equal(c.rxBytes, 500);
  t.equal(b.port.counters.txPackets, 5);
  t.equal(b.port.counters.txBytes, 500);
  t.same([a.port.queueCounters[0], a.port.queueCounters[1]], [5, 500], 'a\'s queue counters');
  t.same([b.port.queueCounters[2], b.port.queueCounters[3]], [5, 500], 'b\'s queue counters');
  t.equal(c.giftsIn, 2);
  t.equal(b.port.counters.giftsOut, 2);
  t.equal(c.returned, 2);
  t.equal(c.drops[Drop.BadCsumOffset], 1, 'bad-csum-offset');
  t.equal(c.drops[Drop.NotOwner], 1, 'not-owner');
  t.equal(c.drops[Drop.OverMtu] + c.drops[Drop.NoRxBuffer], 2, 'the undeliverable frames counted');
  for (const x of [0, 1, 2, 3, 6, 7, 8]) t.equal(rig.ledger.owner[x], b.id, `buffer ${x} is b's`);
  for (const x of [4, 5, 31]) t.equal(rig.ledger.owner[x], a.id, `buffer ${x} stays a's`);
  t.equal(rig.ledger.owned[a.id], 25);
  t.equal(rig.ledger.owned[b.id], 39);
  t.same(b.bufBytes(8, HDR, 100), f, 'the last frame reads in place');
});

t.test('a tx burst that starts and ends outside the lane, and a burst the lane takes whole', async (t) => {
  const rig = new Rig({ bufCount: 64, bufSize: 2048 });
  t.teardown(() => rig.close());
  const { a, b } = rig.crossPosted(32);
  const fw = new PairForwarder(64);
  const f = frame(mac(2), mac(1), 60, 3);
  const first = [a.sendGift([0]), a.sendShared(1, f), a.sendGift([2])];
  t.equal(fw.forward(a.port, 0, b.port), 3);
  t.same(b.flushAndReap().rx.map((u) => u.len), [HDR, HDR + 60, HDR]);
  t.same(a.flushAndReap().tx.map((u) => u.id), first);
  const whole = Array.from({ length: 20 }, (_, i) => a.sendShared(10 + i, f));
  t.equal(fw.forward(a.port, 0, b.port), 20);
  t.same(a.flushAndReap().tx.map((u) => u.id), whole, 'twenty in ring order');
  t.equal(b.flushAndReap().rx.length, 20);
  t.equal(a.port.counters.zeroCopy, 21);
  t.equal(rig.ledgerProblems(), '');
  // A burst limit inside a run: the lane stops there and leaves the rest.
  const fw5 = new PairForwarder(5);
  for (let i = 0; i < 8; i++) a.postShared(10 + i); // a's postings of what it sent, for the way back
  for (let i = 0; i < 8; i++) b.sendShared(10 + i, f);
  t.equal(fw5.forward(b.port, 0, a.port), 5, 'the burst limit holds in the lane');
  t.equal(fw5.forward(b.port, 0, a.port), 3);
  t.equal(b.port.counters.zeroCopy, 8);
  t.equal(rig.ledgerProblems(), '');
});

t.test('mixed rx postings: the lane takes whole shared buffers, the general path the rest, in ring order', async (t) => {
  const rig = new Rig({ bufCount: 64, bufSize: 2048 });
  t.teardown(() => rig.close());
  const a = rig.addVm({ partition: [0, 32] });
  const b = rig.addVm({ partition: [32, 32] });
  const p0 = a.postShared(40);
  const p1 = a.postShared(41);
  const dup = a.postShared(40); // posted twice: dup-rx-post
  const short = a.postShared(42, 1024); // not the whole buffer: bad-rx-desc
  const ct = a.postCopyTarget(0);
  const p2 = a.postShared(43);
  const odd = a.postRxChain([{ addr: a.win.addrOf(44) + 64, len: 2048, write: true }]); // not at a buffer's start
  const p3 = a.postShared(45);
  t.equal(a.port.ingestRx(), 8, 'every entry taken');
  const ps = a.port.postings;
  t.same([ps.sharedPosting(40), ps.sharedPosting(41), ps.sharedPosting(43), ps.sharedPosting(45)], [p0, p1, p2, p3], 'postings by buffer, queue 0');
  t.notOk(ps.hasShared(42), 'the short posting is not held');
  t.notOk(ps.hasShared(44));
  t.equal(ps.copyTargetCount(0), 1, 'the copy target held');
  t.equal(ps.peekCopyTarget(0), ct);
  const c = a.port.counters;
  t.equal(c.drops[Drop.DupRxPost], 1);
  t.equal(c.drops[Drop.BadRxDesc], 2);
  t.same(a.flushAndReap().rx.sort((x, y) => x.id - y.id), [dup, short, odd].sort((x, y) => x - y).map((id) => ({ id, len: 0 })), 'refused postings completed empty');
  t.equal(b.port.ingestRx(), 0);
  t.equal(rig.ledgerProblems(), '');
});

t.test('window words: a window across a 4 GiB boundary is not oneBlock; buffer shifts', async (t) => {
  const g = new RegionGeometry(0x40_0000_0000, 2048, 64);
  t.same([g.baseLo, g.baseHi, g.oneBlock, g.bufShift], [0, 0x40, true, 11]);
  const across = new RegionGeometry(0x1_0000_0000 - 4096, 2048, 64);
  t.equal(across.oneBlock, false, 'crosses 4 GiB');
  t.equal(new RegionGeometry(0x8000_0000, 1536, 64).bufShift, -1, 'not a power of two: divided');
  const g2 = new RegionGeometry(0x7_ffff_0000, 128, 512);
  t.same([g2.baseLo, g2.baseHi, g2.oneBlock], [0xffff_0000 | 0, 7, true], 'ends right at the boundary; the low word held as an int32');
  // The low word as an int32 decodes and writes the same addresses as the unsigned one.
  const ring = new SplitRing(8, { desc: new Uint8Array(128), avail: new Uint8Array(32), used: new Uint8Array(128) });
  for (const i of [0, 1, 511]) {
    g2.setBufDesc(ring, 3, i, 12, 0, 0);
    t.equal(ring.descAddr(3), g2.addrOf(i), `buffer ${i} written at its address`);
    t.equal(g2.bufAtDesc(ring, 3), i, `and decoded back`);
  }
  t.equal(g2.bufAtWords(0xffff_0000 - 128, 7), -1, 'an address below the window');
  t.equal(g2.bufAtWords(0xffff_0000 + 64, 7), -1, 'inside a buffer, not at its start');
  // Both decodes (a mask and a shift for a power of two, a division otherwise) agree with indexAt at every offset.
  for (const size of [128, 1536]) {
    const g3 = new RegionGeometry(0x2000_0000, size, 8);
    const differ: number[] = [];
    for (let off = -size; off <= 9 * size; off += 4) {
      const addr = 0x2000_0000 + off;
      if (g3.bufAtWords(addr % 0x1_0000_0000, Math.floor(addr / 0x1_0000_0000)) !== g3.indexAt(addr)) differ.push(off);
    }
    t.same(differ, [], `buffer size ${size}: no offset decodes differently`);
  }
});

t.test('a non-power-of-two buffer size, a window whose low word is above 2^31, and one across a 4 GiB boundary (general path), forward the same', async (t) => {
  for (const where of ['default', 'high low word', 'crossing'] as const) {
    const crossing = where === 'crossing';
    const rig = new Rig({ bufCount: 64, bufSize: 1536 });
    t.teardown(() => rig.close());
    // Crossing: a sees the region where buffer 16 starts at 4 GiB (an ivshmem BAR placed there). High low word:
    // a sees it at 3 GiB, one block whose low address word is above 2^31 (the lane decodes it as a negative int32).
    const windowBase = crossing ? 0x1_0000_0000 - 16 * 1536 : where === 'high low word' ? 0xc000_0000 : undefined;
    const { a, b } = rig.crossPosted(32, windowBase === undefined ? {} : { windowBase });
    t.equal(a.port.win.oneBlock, !crossing);
    if (where === 'high low word') t.ok(a.port.win.baseLo < 0, 'the window\'s low word is negative as an int32');
    const fw = new PairForwarder(64);
    const f = frame(mac(2), mac(1), 200, 5);
    const bufs = [0, 15, 16, 31];
    for (const x of bufs) a.sendShared(x, f);
    t.equal(fw.forward(a.port, 0, b.port), 4);
    t.equal(a.port.counters.zeroCopy, 4, `${where}: four frames zero-copy`);
    t.same(b.flushAndReap().rx.map((u) => u.len), [HDR + 200, HDR + 200, HDR + 200, HDR + 200]);
    for (const x of bufs) t.same(b.bufBytes(x, HDR, 200), f);
    b.sendGift([40, 41]);
    t.equal(fw.forward(b.port, 0, a.port), 1);
    t.same(a.flushAndReap().rx.map((u) => u.len), [HDR, HDR], 'a gift back');
    t.equal(rig.ledgerProblems(), '');
  }
});

t.test('swap exchange: a mixed burst; the lane swaps the common frames, the general path the rest, in ring order', async (t) => {
  const PER = 32;
  const rig = new Rig({ bufCount: 2 * PER, bufSize: 2048, swap: true });
  t.teardown(() => rig.close());
  const a = rig.addVm({ partition: [0, PER], features: ASKS_CSUM });
  const b = rig.addVm({ partition: [PER, PER] });
  // b posts five of its own empty buffers (the lane's rx postings for own buffers), oldest first: 63, 62, 61, 60, 59.
  const own = [63, 62, 61, 60, 59];
  const heads = own.map((x) => b.postShared(x));
  t.equal(b.port.ingestRx(), 5);
  t.equal(b.port.postings.ownCount(0), 5, 'held as own empty buffers');
  // 61 goes out on b's tx after it was posted: its posting is stale (b no longer owns it when its turn comes).
  const fw = new PairForwarder(64, undefined, true);
  a.postShared(20); // a's own empty buffer, for b's frame
  a.port.ingestRx();
  b.sendShared(61, frame(mac(1), mac(2), 80, 9));
  t.equal(fw.forward(b.port, 0, a.port), 1);
  t.equal(rig.ledger.owner[61], a.id, '61 went to a (swapped with a\'s empty 20)');
  const f = frame(mac(2), mac(1), 100, 1);
  const tx = [
    a.sendShared(0, f), // lane: with 63
    a.sendShared(1, f, VIRTIO_NET_HDR_F_NEEDS_CSUM), // bad-csum-offset: a keeps 1
    a.sendShared(2, f), // lane: with 62
    a.sendShared(3, f), // general path: 61 is stale (completed empty, bad-rx-desc at b), then swapped with 60
    a.sendShared(4, f), // lane: with 59
    a.sendShared(5, f), // no own buffer left: copy or drop, a keeps 5
  ];
  t.equal(fw.forward(a.port, 0, b.port), tx.length, 'every entry consumed');
  const ar = a.flushAndReap();
  const br = b.flushAndReap();
  t.same(ar.tx.map((u) => u.id), tx, 'a\'s tx entries complete in ring order');
  t.same(tx.map((id) => a.win.indexAt(a.tx.ring.descAddr(id))), [63, 1, 62, 60, 59, 5], 'each tx descriptor names what a holds now');
  t.same(br.rx.map((u) => [u.id, u.len]), [[heads[0], HDR + 100], [heads[1], HDR + 100], [heads[2], 0], [heads[3], HDR + 100], [heads[4], HDR + 100]],
    'b\'s postings complete in order, the stale one empty');
  t.same([heads[0], heads[1], heads[3], heads[4]].map((h) => b.win.indexAt(b.rx.ring.descAddr(h))), [0, 2, 3, 4], 'b\'s descriptors name the frames\' buffers');
  t.same([0, 2, 3, 4].map((x) => rig.ledger.owner[x]), [b.id, b.id, b.id, b.id], 'the frames\' buffers are b\'s');
  t.same([63, 62, 60, 59, 1, 5].map((x) => rig.ledger.owner[x]), [a.id, a.id, a.id, a.id, a.id, a.id], 'the empty buffers and the refused frames\' are a\'s');
  t.equal(rig.ledgerProblems(), '');
  t.equal(rig.ledger.owned[a.id], PER, 'swaps keep each VM\'s count');
  t.equal(rig.ledger.owned[b.id], PER);
  t.equal(rig.ledger.owner[20], b.id, 'a\'s empty buffer went to b for 61');
  t.equal(a.port.counters.zeroCopy, 4);
  t.equal(a.port.counters.rxPackets, 4);
  t.equal(b.port.counters.txPackets, 4);
  t.equal(b.port.counters.drops[Drop.BadRxDesc], 1, 'the stale posting counted at b');
  t.equal(a.port.counters.drops[Drop.BadCsumOffset], 1);
  t.same(b.bufBytes(4, HDR, 100), f);
});

t.test('gift chains at the chain limit: 65 links are refused as the walk refuses them, 64 go through the chain lane whole', async (t) => {
  const rig = new Rig({ bufCount: 256, bufSize: 2048 });
  t.teardown(() => rig.close());
  const { a, b } = rig.crossPosted(128, { txNum: 256 });
  const fw = new PairForwarder(64);
  const links = (n: number) => Array.from({ length: n }, (_, i) => i);
  const tx65 = a.sendGift(links(65));
  t.equal(fw.forward(a.port, 0, b.port), 1, 'one tx entry');
  let ar = a.flushAndReap();
  t.same(ar.tx, [{ id: tx65, len: 0 }], 'the 65-link chain completes');
  t.same(b.flushAndReap().rx, [], 'nothing reaches b');
  t.equal(a.port.counters.drops[Drop.ChainTooLong], 1, 'counted chain-too-long');
  t.equal(rig.ledger.owned[a.id], 128, 'no buffer moved');
  const tx64 = a.sendGift(links(64));
  t.equal(fw.forward(a.port, 0, b.port), 1, 'one tx entry');
  ar = a.flushAndReap();
  const br = b.flushAndReap();
  t.same(ar.tx, [{ id: tx64, len: 0 }]);
  t.equal(br.rx.length, 64, 'b\'s 64 postings completed');
  t.ok(br.rx.every((u) => u.len === HDR), 'each with the bare header');
  t.equal(a.port.counters.giftsIn, 64);
  t.equal(b.port.counters.giftsOut, 64);
  t.equal(rig.ledger.owned[a.id], 64, 'a handed 64 over');
  t.equal(rig.ledgerProblems(), '');
});

t.test('a gift chain whose links the peer posted on two rx queues: the general path completes each on its own queue', async (t) => {
  const rig = new Rig({ bufCount: 64, bufSize: 2048, queuePairs: 2 });
  t.teardown(() => rig.close());
  const a = rig.addVm({ partition: [0, 32] });
  const b = rig.addVm({ partition: [32, 32], rx1: true });
  const on0 = [1, 2].map((x) => b.postShared(x));
  const on1 = [3, 4].map((x) => b.postSharedOn1(x));
  b.port.ingestRx();
  t.equal(b.port.postings.sharedPosting(3) >>> 16, 1, 'b\'s postings of 3 and 4 are on its rx queue 1');
  const fw = new PairForwarder(64);
  const tx = a.sendGift([1, 2, 3, 4]);
  t.equal(fw.forward(a.port, 0, b.port), 1);
  t.same(a.flushAndReap().tx, [{ id: tx, len: 0 }]);
  const r0 = b.flushAndReap().rx;
  t.same(r0, on0.map((id) => ({ id, len: HDR })), 'links 1 and 2 on rx queue 0');
  t.same(b.reapRx1(), on1.map((id) => ({ id, len: HDR })), 'links 3 and 4 on rx queue 1');
  t.equal(b.port.counters.giftsOut, 4);
  t.equal(rig.ledgerProblems(), '');
});
