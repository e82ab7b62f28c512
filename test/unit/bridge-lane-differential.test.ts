/**
 * The bridge's fast lane adds no rule (BridgeForwarder.laneRun, then
 * zc-lane.ts's forwardSwapped and ingestShared): the same random ring
 * traffic, much of it hostile, goes through two bridges that differ only in
 * where the VMs see the region. In the first every window is one 4 GiB
 * block, so the lane runs; in the second every window crosses a 4 GiB
 * boundary, so the lane never opens and switchFrame takes every frame.
 * After every step the used entries (with the buffer each descriptor names
 * now), counters, own postings, the ledger, the MAC table and the bytes
 * delivered must be the same in both.
 *
 * What the VMs do, per step, by chance: runs of frames to one address (the
 * lane's case), to another VM on the bridge, to itself (hairpin), to an
 * unknown, broadcast or multicast address, from another VM's address (a
 * MAC that moves) or a group address, tagged, runts, over-MTU, with an
 * offload header; frames in buffers they do not own, at an offset, outside
 * the window, chains, device-writable descriptors, gifts; rx postings of
 * their own buffers (mostly), of others', of pool buffers, short,
 * read-only, and copy targets. The ports differ too: plain access ports,
 * one with a source-MAC list (not plainIn), one isolated (not plainOut),
 * one on another VLAN. Back-pressure both ways: frames dropped at once,
 * and frames that wait in the ring for as long as it takes.
 * A failure prints its seed and step.
 */
import t from 'tap';
import { resolvePolicy } from '../../src/config';
import { BridgeForwarder } from '../../src/datapath/bridge-forwarder';
import { FlowControl } from '../../src/datapath/flow-control';
import * as zcLane from '../../src/datapath/zc-lane';
import { POOL } from '../../src/shm/ledger';
import { VIRTIO_NET_HDR_F_GIFT_BUFFER } from '../../src/vhost/protocol';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { BROADCAST, Rig, type Used, type Vm, frame, mac } from '../helpers/datapath-rig';
import { prngU32 } from '../helpers/prng';
import { type TxSpec, sendSpecs } from '../helpers/tx-specs';

const VMS = 5;
const PART = 20;
const BUFS = VMS * PART + 20;
const BUF_SIZE = 2048;
const HDR = VIRTIO_NET_HDR_SIZE;
const UNKNOWN = [0x02, 0, 0, 0, 0, 0x77];
const MULTICAST = [0x01, 0x00, 0x5e, 0, 0, 1];
const GROUP_SRC = [0x03, 0, 0, 0, 0, 9];
const fmt = (m: number[]) => m.map((x) => x.toString(16).padStart(2, '0')).join(':');
/** Port policies by VM: a, b plain; c only its own source MAC; d isolated; e on VLAN 2. */
const POLICIES = [{}, {}, { macs: [fmt(mac(3))] }, { isolated: true }, { vlan: 2 }];


class World {
  readonly rig: Rig;
  readonly vms: Vm[] = [];
  readonly fw: BridgeForwarder;

  constructor(crossing: boolean, waitMs: number, inUsed: boolean) {
    this.rig = new Rig({ bufCount: BUFS, bufSize: BUF_SIZE, swap: true });
    for (let i = 0; i < VMS; i++) {
      // Crossing: each VM sees its buffer 8 + 9i at 8 GiB, so no window is one block.
      const base = crossing ? { windowBase: 0x2_0000_0000 - (8 + 9 * i) * BUF_SIZE } : {};
      this.vms.push(this.rig.addVm({ partition: [i * PART, PART], quota: PART + 8, swapInUsed: inUsed, ...base }));
    }
    this.fw = new BridgeForwarder(8, this.vms.map((v) => v.port), 64, 300_000, new FlowControl(waitMs));
    POLICIES.forEach((p, i) => this.fw.tenancy.configure(this.vms[i].id, resolvePolicy(p), 0));
  }


  /** One pass of the switch, in DataPath.pass's order (flushed by outcome()). */
  pass(now: number): void {
    this.fw.flow.startRound();
    for (const vm of this.vms) vm.port.ingestRx();
    for (const vm of this.vms) this.fw.forward(vm.port, 0, now);
  }

  /** What a step left: used entries, the buffers descriptors name, counters, postings, ledger, MAC table, bytes delivered. */
  outcome(now: number): unknown {
    const got: Record<string, unknown> = {};
    this.vms.forEach((vm, i) => {
      const { rx, tx } = vm.flushAndReap();
      // A swap rewrites the descriptor's address: compare buffers by index, each world at its own addresses.
      const named = (q: typeof vm.rx, u: Used) => vm.win.indexOf(q.ring.descAddr(u.id));
      const rxOut = rx.map((u) => {
        const b = named(vm.rx, u);
        return { id: u.id, len: u.len, b, bytes: b >= 0 && u.len > HDR ? Array.from(vm.bufBytes(b, 0, Math.min(u.len, 40))) : [] };
      });
      const txOut = tx.map((u) => ({ id: u.id, len: u.len, b: named(vm.tx, u) }));
      got[`vm${i}`] = {
        rx: rxOut, tx: txOut, counters: vm.port.counters.snapshot(), queues: Array.from(vm.port.queueCounters),
        own: vm.port.postings.ownCount(0), copyTargets: vm.port.postings.copyTargetCount(0),
      };
    });
    got.owner = Array.from(this.rig.ledger.owner);
    got.owned = this.vms.map((vm) => this.rig.ledger.owned[vm.id]);
    got.ledger = this.rig.ledgerProblems();
    got.macs = this.fw.tenancy.tables.map((m) => m.entries(now));
    return got;
  }

  close(): void {
    this.rig.close();
  }
}

/** One random step: what each VM posts and sends, decided from world 0's state and done in both. */
function step(rnd: () => number, worlds: World[], runDst: number[][]): void {
  const w0 = worlds[0];
  const pick = (n: number) => rnd() % n;
  const owner = w0.rig.ledger.owner;
  const all = Array.from({ length: BUFS }, (_, b) => b);
  for (let v = 0; v < VMS; v++) {
    const vm0 = w0.vms[v];
    const me = vm0.port.id;
    const mine = all.filter((b) => owner[b] === me);
    const others = all.filter((b) => owner[b] !== me && owner[b] !== POOL);
    const pool = all.filter((b) => owner[b] === POOL);
    const anyOf = (xs: number[]) => (xs.length > 0 ? xs[pick(xs.length)] : pick(BUFS));
    // Rx postings: mostly its own buffers (its empty ones for swaps), some of everything else.
    const posts = pick(10);
    for (let i = 0; i < posts && vm0.rx.freeDescs > 2; i++) {
      const r = pick(24);
      if (r < 1) {
        const k = pick(8);
        for (const w of worlds) {
          const vm = w.vms[v];
          vm.postRxChain([{ addr: vm.mem.gpa(vm.mem.slotOffset(k)), len: vm.slotSize, write: true }]);
        }
        continue;
      }
      const b = r < 16 ? anyOf(mine) : r < 19 ? anyOf(others) : r < 21 ? anyOf(pool) : pick(BUFS);
      const len = r === 21 ? BUF_SIZE - 64 : BUF_SIZE;
      const write = r !== 22;
      for (const w of worlds) {
        const vm = w.vms[v];
        vm.postRxChain([{ addr: vm.win.addrOf(b), len, write }]);
      }
    }
    const sends = pick(10);
    for (let i = 0; i < sends && vm0.tx.freeDescs > 4; i++) {
      // Now and then the run's destination changes, within a burst too: another VM, itself, unknown, broadcast,
      // multicast (01:00:5e:00:00:01 ends like 02:00:00:00:00:01: only its first four bytes differ).
      if (pick(6) === 0) {
        const r = pick(12);
        runDst[v] = r < 7 ? mac(1 + pick(VMS)) : r < 9 ? UNKNOWN : r < 11 ? BROADCAST : MULTICAST;
      }
      const r = pick(60);
      // Mostly its own address; sometimes another VM's (the MAC moves) or a group address.
      const q = pick(16);
      const src = q < 13 ? mac(1 + v) : q < 15 ? mac(1 + pick(VMS)) : GROUP_SRC;
      let payload = frame(runDst[v], src, 60 + pick(1000), rnd());
      if (pick(16) === 0) {
        // 802.1Q tagged (VLAN 1 or 2).
        const tagged = new Uint8Array(payload.length + 4);
        tagged.set(payload.subarray(0, 12), 0);
        tagged.set([0x81, 0x00, 0, 1 + pick(2)], 12);
        tagged.set(payload.subarray(12), 16);
        payload = tagged;
      }
      let specs: TxSpec[];
      let flags = 0;
      let gso = 0;
      const own = anyOf(mine);
      if (r < 42) {
        // A frame in a buffer it owns: mostly good, sometimes a runt, too long, or an offload header.
        const len = r < 36 ? HDR + payload.length : r < 38 ? HDR + pick(60) : r < 40 ? HDR + 1518 + 1 + pick(500) : HDR + payload.length;
        if (r === 40) flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        if (r === 41) gso = 1 + pick(4);
        specs = [{ t: { b: own, off: 0 }, len: Math.min(len, BUF_SIZE) }];
      } else if (r < 46) {
        specs = [{ t: { b: anyOf(others), off: 0 }, len: HDR + 64 }];
      } else if (r < 48) {
        specs = [{ t: { b: own, off: pick(2) ? 64 : 0 }, len: pick(2) ? BUF_SIZE + 8 : HDR + 64 }];
      } else if (r < 49) {
        specs = [{ t: { b: -1, off: 0 }, len: HDR + 64 }];
      } else if (r < 51) {
        specs = [{ t: { b: own, off: 0 }, len: HDR + 64, write: r === 49, indirect: r === 50 }];
      } else if (r < 54) {
        // A frame in a chain of two descriptors.
        specs = [{ t: { b: own, off: 0 }, len: HDR + 32 }, { t: { b: own, off: 64 }, len: 64 }];
      } else {
        // Gifts (meaningless on a bridge: the buffers come back), some with links not its own.
        const n = 1 + pick(3);
        specs = Array.from({ length: n }, () => ({ t: { b: pick(5) ? anyOf(mine) : anyOf(others), off: 0 }, len: HDR }));
        flags = VIRTIO_NET_HDR_F_GIFT_BUFFER;
      }
      for (const w of worlds) sendSpecs(w.vms[v], specs, flags, gso, payload);
    }
  }
}

let laneTook = 0;
{
  // Count what forwardSwapped took (the forwarder calls the module's export at call time).
  const fns = zcLane as unknown as Record<string, (...args: unknown[]) => number>;
  const real = fns.forwardSwapped;
  fns.forwardSwapped = (...args) => {
    const k = real(...args);
    laneTook += k;
    return k;
  };
}

for (const waitMs of [0, 1e9]) for (const inUsed of [false, true]) {
  const how = `${waitMs ? 'frames wait for room' : 'no waiting'}${inUsed ? ', exchanged buffers in the used element' : ''}`;
  t.test(`bridge, ${how}: the lane and switchFrame agree on random, often hostile, ring traffic`, async (t) => {
    for (const seed of [11, 12, 13, 14, 15]) {
      const worlds = [new World(false, waitMs, inUsed), new World(true, waitMs, inUsed)];
      try {
        t.ok(worlds[0].vms.every((v) => v.port.win.oneBlock) && worlds[1].vms.every((v) => !v.port.win.oneBlock), 'the lane can run in world 0 only');
        // Each VM posts half its buffers as own empty buffers.
        for (const w of worlds) w.vms.forEach((vm, i) => {
          for (let k = 0; k < PART / 2; k++) vm.postShared(i * PART + k);
        });
        const rnd = prngU32(seed);
        const runDst = Array.from({ length: VMS }, (_, v) => mac(1 + ((v + 1) % VMS)));
        let first: string | null = null;
        const took = [0, 0];
        for (let s = 0; s < 120 && first === null; s++) {
          step(rnd, worlds, runDst);
          const now = 1000 + s;
          worlds.forEach((w, i) => {
            const before = laneTook;
            w.pass(now);
            took[i] += laneTook - before;
          });
          const [o0, o1] = worlds.map((w) => JSON.stringify(w.outcome(now)));
          if (o0 !== o1) first = `seed ${seed}, step ${s}:\n lane    ${o0}\n general ${o1}`;
        }
        t.equal(first, null, `seed ${seed}: the same used entries, counters, postings, ledger and MAC table at every step`);
        t.ok(took[0] > 0, `seed ${seed}: world 0's lane took frames (${took[0]})`);
        t.equal(took[1], 0, `seed ${seed}: world 1's lane took nothing`);
        t.equal(worlds[0].rig.ledgerProblems(), '', `seed ${seed}: ledger balanced`);
      } finally {
        worlds.forEach((w) => w.close());
      }
    }
  });
}
