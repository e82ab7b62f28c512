/**
 * The zero-copy fast lane adds no rule (src/datapath/zc-lane.ts): the same
 * random ring traffic, much of it hostile, goes through two worlds that
 * differ only in where the VMs see the region. In the first every window
 * is one 4 GiB block, so the lane runs; in the second every window crosses
 * a 4 GiB boundary, so the lane never opens and the general path takes
 * every entry. Each step the VMs post and send the same things (buffers
 * named by index, each world at its own addresses) and the switch's pass
 * runs as DataPath.pass does: rx postings, forwarding both ways, flush.
 * Every used entry, every counter, the ledger, and what reached the
 * receivers must be the same in both, for the gift and the swap exchange.
 *
 * What the VMs do, per step, by chance: frames in buffers they own (good
 * lengths, runts, over-MTU, an open checksum or a GSO type in the header,
 * which the receiver may take unread or not: the VMs' offloads vary by seed),
 * frames in buffers they do not own, at an offset or past their end,
 * outside the window, chains and device-writable descriptors on tx, gifts
 * (lone, chains, links of buffers they do not own); rx postings of buffers
 * they do not own, own ones, pool ones, twice, too short, read-only, and
 * copy targets. A failure prints its seed and step.
 */
import t from 'tap';
import { PairForwarder } from '../../src/datapath/pair-forwarder';
import * as zcGifts from '../../src/datapath/zc-gifts';
import * as zcLane from '../../src/datapath/zc-lane';
import { POOL } from '../../src/shm/ledger';
import { VIRTIO_NET_HDR_F_GIFT_BUFFER } from '../../src/vhost/protocol';
import {
  VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_SIZE, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
} from '../../src/virtio/defs';
import { Rig, type Used, type Vm, frame, mac } from '../helpers/datapath-rig';
import { prngU32 } from '../helpers/prng';
import { type TxSpec, sendSpecs, targetAddr } from '../helpers/tx-specs';

const BUFS = 64;
const BUF_SIZE = 2048;
const PART = 24;
const HDR = VIRTIO_NET_HDR_SIZE;


class World {
  readonly rig: Rig;
  readonly a: Vm;
  readonly b: Vm;
  readonly fw: PairForwarder;

  constructor(readonly crossing: boolean, swap: boolean, readonly byBuffer: boolean, inUsed = false, features: readonly [bigint, bigint] = [0n, 0n]) {
    this.rig = new Rig({ bufCount: BUFS, bufSize: BUF_SIZE, swap });
    // Crossing: a sees buffer 16 at 8 GiB, b buffer 40 (ivshmem BARs placed so, clear of the VMs' own memory at
    // 4 GiB); neither window is one block.
    const base = (k: number) => (crossing ? { windowBase: 0x2_0000_0000 - k * BUF_SIZE } : {});
    // 24 buffers each, 16 in the switch's pool (posting one of those makes the switch gift it).
    this.a = this.rig.addVm({ partition: [0, PART], quota: PART + 8, rxByBuffer: byBuffer, swapInUsed: inUsed, features: features[0], ...base(16) });
    this.b = this.rig.addVm({ partition: [PART, PART], quota: PART + 8, rxByBuffer: byBuffer, swapInUsed: inUsed, features: features[1], ...base(40) });
    this.fw = new PairForwarder(8, undefined, swap);
  }


  /** head: the rx descriptor to use (-1: a free one; rx by buffer: b's own, or a misplaced one). */
  postShared(vm: Vm, b: number, len: number, write: boolean, head: number): void {
    vm.postRxChain([{ addr: vm.win.addrOf(b), len, write }], head);
  }

  /** One pass of the switch, in DataPath.pass's order. */
  pass(): void {
    this.a.port.ingestRx();
    this.b.port.ingestRx();
    this.fw.forward(this.a.port, 0, this.b.port);
    this.fw.forward(this.b.port, 0, this.a.port);
  }

  /** What a step left: used entries of all four rings, counters, ledger, and each delivered frame's first bytes. */
  outcome(): unknown {
    const got: Record<string, unknown> = {};
    for (const [name, vm] of [['a', this.a], ['b', this.b]] as const) {
      const { rx, tx } = vm.flushAndReap();
      // With swaps an rx completion names the buffer the switch wrote into its descriptor: compare it by index.
      const rxOut = rx.map((u: Used) => {
        const b = vm.win.indexOf(vm.rx.ring.descAddr(u.id));
        const bytes = b >= 0 && u.len > HDR ? Array.from(vm.bufBytes(b, 0, Math.min(u.len, 40))) : [];
        return { id: u.id, len: u.len, b, bytes };
      });
      const c = vm.port.counters.snapshot();
      // The postings the switch holds (a chain the lane put back must leave them as they were).
      // A tx completion's buffer: in the used element (SWAP_IN_USED) or its descriptor, by index.
      const txOut = tx.map((u: Used) => ({ ...u, b: vm.win.indexOf(vm.tx.ring.descAddr(u.id)) }));
      got[name] = { rx: rxOut, tx: txOut, counters: c, queues: Array.from(vm.port.queueCounters), postings: Array.from(vm.port.postings.byBuf) };
    }
    const ledger = this.rig.ledger;
    got.owner = Array.from(ledger.owner);
    got.owned = [ledger.owned[this.a.id], ledger.owned[this.b.id]];
    got.ledger = this.rig.ledgerProblems();
    return got;
  }

  close(): void {
    this.rig.close();
  }
}

/** One random step: what each VM posts and sends, decided from world 0's state and done in both. */
function step(rnd: () => number, worlds: World[], passed: (world: number) => void): void {
  const w0 = worlds[0];
  const pick = (n: number) => rnd() % n;
  const owner = w0.rig.ledger.owner;
  const ownedBy = (id: number) => Array.from({ length: BUFS }, (_, b) => b).filter((b) => owner[b] === id);
  for (const side of ['a', 'b'] as const) {
    const vm0 = w0[side];
    const me = vm0.port.id;
    const mine = ownedBy(me);
    const others = Array.from({ length: BUFS }, (_, b) => b).filter((b) => owner[b] !== me && owner[b] !== POOL);
    const pool = ownedBy(POOL);
    const anyOf = (xs: number[]) => (xs.length > 0 ? xs[pick(xs.length)] : pick(BUFS));
    // Rx postings: mostly the buffers it does not own, some of everything else.
    const posts = pick(6);
    for (let i = 0; i < posts && vm0.rx.freeDescs > 2; i++) {
      const r = pick(20);
      if (r < 1) {
        // Rx by buffer: sometimes in a descriptor below bufCount, which only shared buffers may use.
        const k = pick(8);
        const low = w0.byBuffer && pick(3) === 0 ? pick(BUFS) : -1;
        for (const w of worlds) {
          const vm = w[side];
          vm.postRxChain([{ addr: vm.mem.gpa(vm.mem.slotOffset(k)), len: vm.slotSize, write: true }], low);
        }
        continue;
      }
      const b = r < 12 ? anyOf(others) : r < 15 ? anyOf(mine) : r < 17 ? anyOf(pool) : pick(BUFS);
      const len = r === 17 ? BUF_SIZE - 64 : BUF_SIZE;
      const write = r !== 18;
      // Rx by buffer: mostly descriptor b, sometimes another buffer's or one above bufCount (misplaced).
      const q = pick(10);
      const head = !w0.byBuffer ? -1 : q < 8 ? b : q === 8 ? pick(BUFS) : -1;
      for (const w of worlds) w.postShared(w[side], b, len, write, head);
    }
    // Tx entries.
    const sends = pick(6);
    for (let i = 0; i < sends && vm0.tx.freeDescs > 4; i++) {
      const r = pick(40);
      const payload = frame(mac(side === 'a' ? 2 : 1), mac(side === 'a' ? 1 : 2), 64 + pick(1500), rnd());
      let specs: TxSpec[];
      let flags = 0;
      let gso = 0;
      const own = anyOf(mine);
      if (r < 20) {
        // A frame in a buffer it owns: mostly good, sometimes a runt, too long, or an offload header.
        // Around the edges too: the receiver's MTU with a VLAN tag (1518 B of frame) and the buffer's end.
        const edges = [HDR + 59, HDR + 60, HDR + 1518, HDR + 1519, BUF_SIZE, BUF_SIZE + 1];
        const len = r < 12 ? HDR + 60 + pick(1455) : r < 14 ? edges[pick(edges.length)] : r < 16 ? HDR + pick(60) : r < 18 ? HDR + 1514 + 4 + pick(600) : HDR + 64;
        if (r === 18) flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        if (r === 19) gso = 1 + pick(4);
        specs = [{ t: { b: own, off: 0 }, len }];
      } else if (r < 24) {
        specs = [{ t: { b: anyOf(others), off: 0 }, len: HDR + 64 }];
      } else if (r < 26) {
        specs = [{ t: { b: own, off: pick(2) ? 64 : 0 }, len: pick(2) ? BUF_SIZE + 8 : HDR + 64 }];
      } else if (r < 27) {
        specs = [{ t: { b: -1, off: 0 }, len: HDR + 64 }];
      } else if (r < 29) {
        specs = [{ t: { b: own, off: 0 }, len: HDR + 64, write: r === 27, indirect: r === 28 }];
      } else if (r < 31) {
        // A frame in a chain of two descriptors.
        specs = [{ t: { b: own, off: 0 }, len: HDR + 32 }, { t: { b: own, off: 64 }, len: 64 }];
      } else {
        // Gifts: a lone one, or a chain of links, some perhaps not its own or not 12 bytes.
        const n = r < 34 ? 1 : 2 + pick(5);
        const links: TxSpec[] = [];
        const used = new Set<number>();
        for (let k = 0; k < n; k++) {
          const q = pick(10);
          let b = q < 8 ? anyOf(mine) : anyOf(others);
          if (q < 8 && used.has(b) && mine.length > used.size) b = mine.find((x) => !used.has(x)) ?? b;
          used.add(b);
          links.push({ t: { b, off: 0 }, len: q === 9 ? HDR + 4 : HDR });
        }
        specs = links;
        flags = VIRTIO_NET_HDR_F_GIFT_BUFFER;
      }
      for (const w of worlds) sendSpecs(w[side], specs, flags, gso, payload);
    }
  }
  worlds.forEach((w, i) => {
    w.pass();
    passed(i);
  });
}

/**
 * Entries each lane function took (a spy that calls through: the forwarder
 * and the port call the module's exports at call time), so the test knows
 * world 0 exercised the lane and world 1 never did.
 */
const laneTook = { forwardMoved: 0, forwardSwapped: 0, giftShared: 0, ingestShared: 0, giftChainShared: 0 };
type LaneFn = (...args: unknown[]) => number;
/** Wrap lane function name of module m; took(result, args) is how many entries one call took. */
const spy = (m: object, name: keyof typeof laneTook, took: (r: number, args: unknown[]) => number): void => {
  const fns = m as Record<string, LaneFn>;
  const real = fns[name];
  fns[name] = (...args) => {
    const r = real(...args);
    laneTook[name] += took(r, args);
    return r;
  };
};
spy(zcLane, 'forwardMoved', (k) => k);
spy(zcLane, 'forwardSwapped', (k) => k);
// giftShared returns the index of the first link it left; it started at args[4].
spy(zcGifts, 'giftShared', (i, args) => i - (args[4] as number));
spy(zcLane, 'ingestShared', (k) => k);
// giftChainShared takes a whole chain or nothing: counted in chains.
spy(zcGifts, 'giftChainShared', (took) => (took ? 1 : 0));
const tookNow = (): number[] => [
  laneTook.forwardMoved + laneTook.forwardSwapped, laneTook.giftShared + laneTook.giftChainShared, laneTook.ingestShared,
];

const bits = (...b: bigint[]): bigint => b.reduce((x, y) => x | (1n << y), 0n);
const ASKS = bits(VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6);
const TAKES = bits(VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6);
const FEATURES: readonly (readonly [bigint, bigint])[] = [
  [0n, 0n], [ASKS, ASKS], [ASKS, TAKES | bits(VIRTIO_NET_F_CSUM)],
  // b takes open checksums but not TSO: a's headers are read (it may ask TSO), b's unread.
  [ASKS | TAKES, bits(VIRTIO_NET_F_GUEST_CSUM)],
];

const modes = [
  { name: 'gift exchange', swap: false, byBuffer: false },
  { name: 'gift exchange with rx descriptors by buffer', swap: false, byBuffer: true },
  { name: 'swap exchange', swap: true, byBuffer: false },
  { name: 'swap exchange, exchanged buffer in the used element', swap: true, byBuffer: false, inUsed: true },
];
for (const { name, swap, byBuffer, inUsed } of modes) {
  t.test(`${name}: the lane and the general path agree on random, often hostile, ring traffic`, async (t) => {
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      // Offloads by seed (FEATURES): headers unread both ways (neither may ask), read both ways (each may ask, neither
      // takes), unread one way only.
      const features = FEATURES[seed % FEATURES.length];
      const worlds = [new World(false, swap, byBuffer, inUsed, features), new World(true, swap, byBuffer, inUsed, features)];
      try {
        t.ok(worlds[0].a.port.win.oneBlock && !worlds[1].a.port.win.oneBlock && !worlds[1].b.port.win.oneBlock, 'the lane can run in world 0 only');
        // Pair-mode start: each VM posts every buffer it does not own (the peer's and the pool's; rx by buffer: in descriptor b).
        for (let b = 0; b < BUFS; b++) {
          for (const w of worlds) {
            if (b >= PART) w.a.postShared(b);
            if (b < PART || b >= 2 * PART) w.b.postShared(b);
          }
        }
        const rnd = prngU32(seed);
        let first: string | null = null;
        // What the lane took in each world: the steps run world 0, then world 1.
        const took = [[0, 0, 0], [0, 0, 0]];
        for (let s = 0; s < 60 && first === null; s++) {
          const before = tookNow();
          step(rnd, worlds, (w) => {
            const after = tookNow();
            for (let k = 0; k < 3; k++) took[w][k] += after[k] - before[k];
            before.splice(0, 3, ...after);
          });
          const [o0, o1] = worlds.map((w) => JSON.stringify(w.outcome()));
          if (o0 !== o1) first = `seed ${seed}, step ${s}:\n lane    ${o0}\n general ${o1}`;
        }
        t.equal(first, null, `seed ${seed}: the same used entries, counters and ledger at every step`);
        t.ok(took[0][0] > 0 && took[0][2] > 0 && (swap || took[0][1] > 0), `seed ${seed}: world 0's lane took frames, gift links or chains, and postings (${took[0]})`);
        t.same(took[1], [0, 0, 0], `seed ${seed}: world 1's lane took nothing`);
        t.equal(worlds[0].rig.ledgerProblems(), '', `seed ${seed}: ledger balanced`);
      } finally {
        worlds.forEach((w) => w.close());
      }
    }
  });
}

/** A tx chain of vm's whose descriptors are linked as given: next[i] is the index of link i's successor (-1: last). */
function sendLinked(w: World, vm: Vm, links: TxSpec[], next: number[]): void {
  const q = vm.tx;
  const ids = links.map(() => q.allocDesc());
  links.forEach((l, i) => {
    q.ring.setDesc(ids[i], targetAddr(vm, l.t), l.len, (next[i] >= 0 ? VIRTQ_DESC_F_NEXT : 0) | (l.write ? VIRTQ_DESC_F_WRITE : 0), next[i] >= 0 ? ids[next[i]] : 0);
  });
  q.addAvail(ids[0]);
  q.publishAvail();
}

t.test('gift chains the chain lane must leave whole to the general path, and one it takes', async (t) => {
  const gift = (b: number, len = HDR): TxSpec => ({ t: { b, off: 0 }, len });
  const line = (n: number) => Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
  const cases: { name: string; links: TxSpec[]; next: number[]; lane: boolean }[] = [
    { name: 'five of its own buffers', links: [1, 2, 3, 4, 5].map((b) => gift(b)), next: line(5), lane: true },
    { name: 'a lone gift', links: [gift(6)], next: [-1], lane: true },
    { name: 'the same buffer twice', links: [gift(7), gift(7)], next: line(2), lane: false },
    { name: 'a loop', links: [gift(8), gift(9), gift(10)], next: [1, 2, 0], lane: false },
    { name: 'a device-writable link', links: [gift(11), { ...gift(12), write: true }], next: line(2), lane: false },
    { name: 'a link of 13 bytes', links: [gift(13), gift(14, HDR + 1)], next: line(2), lane: false },
    { name: 'a link of the peer\'s buffer', links: [gift(15), gift(40)], next: line(2), lane: false },
    { name: 'a link at an offset', links: [gift(16), { t: { b: 17, off: 64 }, len: HDR }], next: line(2), lane: false },
  ];
  for (const c of cases) {
    const worlds = [new World(false, false, true), new World(true, false, true)];
    try {
      for (let b = 0; b < BUFS; b++) {
        for (const w of worlds) {
          if (b >= PART) w.a.postShared(b);
          if (b < PART || b >= 2 * PART) w.b.postShared(b);
        }
      }
      worlds.forEach((w) => w.pass());
      const before = laneTook.giftChainShared;
      for (const w of worlds) sendLinked(w, w.a, c.links, c.next);
      worlds[0].pass();
      const took = laneTook.giftChainShared - before;
      worlds[1].pass();
      t.equal(took, c.lane ? 1 : 0, `${c.name}: ${c.lane ? 'taken by the chain lane' : 'left to the general path'}`);
      const [o0, o1] = worlds.map((w) => JSON.stringify(w.outcome()));
      t.equal(o0, o1, `${c.name}: the same used entries, counters and ledger either way`);
      t.equal(worlds[0].rig.ledgerProblems(), '', `${c.name}: ledger balanced`);
    } finally {
      worlds.forEach((w) => w.close());
    }
  }
});
