/**
 * Unit tests for the switch's touch-ahead (src/datapath/touch-ahead.ts):
 * the peek over a tx ring the guest wrote (heads out of range, addresses
 * outside the window or mid-buffer) loads exactly the byte each in-window
 * address names and nothing else, changes no state
 * (ring indices, ring memory, ledger, counters, region), and the forwarder
 * then handles the same ring as always.
 */
import t, { type Test } from 'tap';
import { Drop } from '../../src/datapath/counters';
import { PairForwarder } from '../../src/datapath/pair-forwarder';
import { HeaderTouch } from '../../src/datapath/touch-ahead';
import { TOUCH_AHEAD_MIN_STRIDE } from '../../src/shm/geometry';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { RIG_BASE, Rig, frame, mac, type Vm } from '../helpers/datapath-rig';

const HDR = VIRTIO_NET_HDR_SIZE;
const BUFS = 16;

/** Two VMs, a with buffers 0..7 and b with 8..15, each posting the other's; every buffer's first byte is 1 + its index, byte 100 is 50 + it. */
function pair(t: Test, bufSize: number): { rig: Rig; a: Vm; b: Vm } {
  const rig = new Rig({ bufCount: BUFS, bufSize });
  t.teardown(() => rig.close());
  const { a, b } = rig.crossPosted(8, { txNum: 16 });
  for (let i = 0; i < BUFS; i++) {
    a.region[rig.shared.offsetOf(i)] = 1 + i;
    a.region[rig.shared.offsetOf(i) + 100] = 50 + i;
  }
  return { rig, a, b };
}

/** Everything the peek must leave as it is: indices, ring memory, ledger, counters, region. */
function snapshot(rig: Rig, a: Vm): string {
  const q = a.devTx;
  const r = q.ring;
  return JSON.stringify({
    lastAvail: q.lastAvail, usedIdx: q.usedIdx, avail: [...r.avail], desc: [...r.desc32], used: [...r.used32],
    owner: [...rig.ledger.owner], drops: a.port.counters.totalDrops(), zc: a.port.counters.zeroCopy,
    region: Buffer.from(a.region).toString('base64'),
  });
}

t.test('the peek loads the byte each in-window address names, skips garbage, changes nothing', async (t) => {
  const { rig, a } = pair(t, TOUCH_AHEAD_MIN_STRIDE);
  const bs = rig.shared.bufSize;
  const f = frame(mac(2), mac(1), 100, 7);
  // The first byte of buffer 3 is its header's flags: keep the marker (4) after sendShared wrote the header.
  a.sendShared(3, f);
  a.region[rig.shared.offsetOf(3)] = 4;
  a.sendChain([{ addr: RIG_BASE - 1, len: 100 }]); // just below the window
  a.sendChain([{ addr: RIG_BASE + BUFS * bs, len: 100 }]); // just past it
  a.sendChain([{ addr: 2 ** 52, len: 100 }]); // far out
  a.sendChain([{ addr: RIG_BASE + 5 * bs + 100, len: 100 }]); // mid-buffer 5: in the window, refused later
  a.sendChain([{ addr: RIG_BASE + 12 * bs, len: HDR + 100 }]); // the peer's buffer 12: in the window, not a's
  a.tx.addAvail(60000); // a head past the ring (its avail entry written raw)
  a.tx.publishAvail();
  const n = a.devTx.availPending();
  t.equal(n, 7, 'seven entries pending');
  const before = snapshot(rig, a);
  const touch = new HeaderTouch();
  touch.txHeaders(a.devTx, a.port.win, n);
  t.equal(touch.sum, 4 + 55 + 13, 'loaded buffer 3\'s first byte, byte 100 of buffer 5, buffer 12\'s first byte; nothing else (no NaN: nothing out of bounds)');
  t.equal(snapshot(rig, a), before, 'ring indices, ring memory, ledger, counters and region unchanged');
  touch.txHeaders(a.devTx, a.port.win, 2);
  t.equal(touch.sum, 4, 'n bounds the peek: the first two entries only');
  touch.txHeaders(a.devTx, a.port.win, 0);
  t.equal(touch.sum, 0, 'n = 0: nothing');
});

t.test('the forwarder after its peek: garbage dropped with its reasons, the packet delivered zero-copy', async (t) => {
  const { rig, a, b } = pair(t, TOUCH_AHEAD_MIN_STRIDE);
  const bs = rig.shared.bufSize;
  const fw = new PairForwarder(32);
  a.sendChain([{ addr: RIG_BASE + 5 * bs + 100, len: 100 }]);
  a.sendChain([{ addr: RIG_BASE + 12 * bs, len: HDR + 100 }]);
  a.tx.addAvail(60000);
  a.tx.publishAvail();
  a.postShared(3);
  a.port.ingestRx();
  const bHead = b.port.postings.sharedPosting(3) & 0xffff;
  a.sendShared(3, frame(mac(2), mac(1), 100, 7));
  t.equal(fw.forward(a.port, 0, b.port), 4, 'all four entries consumed');
  t.equal(rig.ledgerProblems(), '', 'ledger conserved');
  const c = a.port.counters;
  t.equal(c.drops[Drop.BadZcDesc], 1, 'mid-buffer address: bad-zc-desc');
  t.equal(c.drops[Drop.NotOwner], 1, 'the peer\'s buffer: not-owner');
  t.equal(c.drops[Drop.BadHead], 1, 'head past the ring: bad-head');
  t.equal(c.zeroCopy, 1, 'the packet went zero-copy');
  t.same(b.flushAndReap().rx, [{ id: bHead, len: HDR + 100 }], 'the peer got buffer 3');
  t.equal(rig.ledger.owner[3], b.id);
});

t.test('buffers closer than a page: no peek (the hardware prefetchers do it)', async (t) => {
  const { a } = pair(t, 2048);
  a.sendShared(3, frame(mac(2), mac(1), 100, 7));
  const touch = new HeaderTouch();
  touch.txHeaders(a.devTx, a.port.win, a.devTx.availPending());
  t.equal(touch.sum, 0, 'nothing loaded');
  t.notOk(a.port.win.touchAhead);
});
