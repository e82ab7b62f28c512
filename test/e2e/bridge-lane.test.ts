/**
 * The bridge's fast lane (BridgeForwarder.laneRun over zc-lane.ts's
 * forwardSwapped) takes runs of frames with one pair of addresses and
 * leaves everything else to the general path. One burst here mixes both:
 * runs to two destinations, a broadcast, a frame to an unknown address, a
 * tagged frame, a frame to the sender's own address and one from a group
 * address, so each kind ends a run and the next run starts mid-burst. Every
 * receiver must get exactly its frames, in order; the drops, copies,
 * swaps and buffer counts must be what the general path alone gives.
 */
import path from 'node:path';
import t from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { FrameChecker, Verdict, writeTestFrame } from '../../src/guest/test-packet';
import { counters, startSwitch, waitAttached, waitFor } from '../helpers/procs';
import { pollUntilTeardown } from '../helpers/wait';

const NAMES = ['a', 'b', 'c', 'd'];
const mac = (i: number) => Uint8Array.of(2, 0, 0, 0, 0, i + 1);
const BCAST = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
const UNKNOWN = Uint8Array.of(2, 0, 0, 0, 0, 0x77);
const SIZE = 96;

/** One frame of a burst: to dst, from src (default the sender's own address), tagged or not. */
interface Frame {
  dst: Uint8Array;
  src?: Uint8Array;
  tagged?: boolean;
}

class Vm {
  /** Sequence numbers of the verified frames received, in order. */
  readonly seqs: number[] = [];
  received = 0;
  private readonly check = new FrameChecker();
  constructor(readonly i: number, readonly drv: GuestDriver) {}

  /** Queue every frame (sequence number = its index) and flush once: one burst. */
  sendBurst(frames: Frame[]): void {
    const d = this.drv;
    frames.forEach((f, seq) => {
      const macs = new Uint8Array(12);
      macs.set(f.dst, 0);
      macs.set(f.src ?? mac(this.i), 6);
      const b = d.alloc();
      if (b < 0) throw new Error('no buffer to send');
      const off = d.frameOffset(b);
      writeTestFrame(d.shared!.mem, off, SIZE, this.i + 1, seq, true, macs);
      if (f.tagged) {
        d.shared!.mem[off + 12] = 0x81;
        d.shared!.mem[off + 13] = 0x00;
      }
      if (!d.send(b, SIZE)) throw new Error('tx ring full');
    });
    d.flush();
  }

  poll(): void {
    const d = this.drv;
    const n = d.receive(256);
    for (let k = 0; k < n; k++) {
      const tok = d.rxToken[k];
      if (this.check.verify(d.packetMem(tok), d.packetOffset(tok), d.rxLen[k]) === Verdict.Ok) this.seqs.push(this.check.lastSeq);
      this.received++;
      d.release(tok);
    }
    d.flush();
  }
}

t.test('one burst of runs and exceptions: each frame where the general path sends it', async (t) => {
  const sw = await startSwitch(t, { mode: 'bridge', ports: NAMES.map((name) => ({ name })) });
  const vms: Vm[] = [];
  for (let i = 0; i < NAMES.length; i++) {
    const drv = await GuestDriver.attach({ socketPath: path.join(sw.dir, `${NAMES[i]}.sock`) });
    t.teardown(() => drv.close());
    vms.push(new Vm(i, drv));
  }
  await waitAttached(sw, ...NAMES);
  pollUntilTeardown(t, () => {
    for (const v of vms) v.poll();
  });
  // Every VM announces itself: the bridge learns all four addresses.
  for (const v of vms) v.sendBurst([{ dst: BCAST }]);
  await waitFor('the announcements', () => vms.every((v) => v.received === 3));
  for (const v of vms) v.seqs.length = 0;
  const before = (await sw.stats()).ports.map((p) => counters(p));

  const [a, b, c, d] = vms;
  const frames: Frame[] = [];
  const expect = new Map<Vm, number[]>(vms.map((v) => [v, []]));
  const add = (f: Frame, ...to: Vm[]) => {
    for (const v of to) expect.get(v)!.push(frames.length);
    frames.push(f);
  };
  // Three runs, each ended by a frame the lane leaves to the general path, then runs that alternate.
  for (let i = 0; i < 5; i++) add({ dst: mac(1) }, b);
  add({ dst: BCAST }, b, c, d);
  for (let i = 0; i < 4; i++) add({ dst: mac(2) }, c);
  add({ dst: UNKNOWN }, b, c, d);
  add({ dst: mac(1), tagged: true });
  add({ dst: mac(0) });
  add({ dst: mac(3), src: Uint8Array.of(3, 0, 0, 0, 0, 1) }, d);
  for (let i = 0; i < 6; i++) add({ dst: mac(1 + (i % 3)) }, [b, c, d][i % 3]);
  for (let i = 0; i < 40; i++) add({ dst: mac(3) }, d);
  a.sendBurst(frames);

  const want = [b, c, d].map((v) => expect.get(v)!.length);
  await waitFor('every delivery', () => [b, c, d].every((v, k) => v.seqs.length === want[k]));
  await waitFor('the drops counted', async () => {
    const dr = counters((await sw.stats()).ports[0]).drops;
    const was = before[0].drops;
    return dr.hairpin === (was.hairpin ?? 0) + 1 && dr['vlan-tagged'] === (was['vlan-tagged'] ?? 0) + 1;
  });
  for (const v of [b, c, d]) t.same(v.seqs, expect.get(v), `${NAMES[v.i]} got exactly its frames, in order`);
  t.same(a.seqs, [], 'the sender got nothing back');

  const s = await sw.stats();
  const after = s.ports.map((p) => counters(p));
  // Swapped: every unicast frame to a known address (5 + 4 + 1 + 6 + 40) and the last copy of each flooded frame (2).
  t.equal(after[0].zeroCopy - before[0].zeroCopy, 58, '58 frames swapped');
  t.equal(after[0].copied - before[0].copied, 4, 'the broadcast and the unknown unicast copied to two ports each');
  t.equal(after[0].rxPackets - before[0].rxPackets, frames.length - 2, 'every frame but the two dropped counted in');
  t.same(after.slice(1).map((x, k) => x.txPackets - before[k + 1].txPackets), want, 'each receiver counted its frames out');
  t.ok(s.ledger.ok, `ledger balanced: ${s.ledger.problems.join('; ')}`);
  t.same(s.ports.map((p) => p.buffersOwned), [1024, 1024, 1024, 1024], 'every VM keeps its buffer count');
  // The frame from a group source address is delivered but teaches the bridge nothing.
  t.notOk(s.ports.some((p) => p.macs.includes('03:00:00:00:00:01')), 'a group source address is not learnt');
});
