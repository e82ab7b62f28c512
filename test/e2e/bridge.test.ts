/**
 * Bridge mode with four guest-driver VMs. The test process attaches all
 * four (GuestDriver in-process) to a real switch process, so it can see
 * exactly which VM received what.
 */
import path from 'node:path';
import t from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { FrameChecker, Verdict, writeTestFrame } from '../../src/guest/test-packet';
import { counters, sleep, startSwitch, waitAttached, waitFor } from '../helpers/procs';
import { pollUntilTeardown } from '../helpers/wait';

const NAMES = ['a', 'b', 'c', 'd'];
const mac = (i: number) => Uint8Array.of(2, 0, 0, 0, 0, i + 1);
const BCAST = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff);

class Vm {
  readonly got: number[] = [0, 0, 0, 0, 0];
  received = 0;
  private readonly check = new FrameChecker();
  constructor(readonly i: number, readonly drv: GuestDriver) {}

  /** Send n test frames to dst (stream = our index + 1). */
  send(dst: Uint8Array, n: number, size = 128): number {
    const macs = new Uint8Array(12);
    macs.set(dst, 0);
    macs.set(mac(this.i), 6);
    let sent = 0;
    for (; sent < n; sent++) {
      const b = this.drv.alloc();
      if (b < 0) break;
      writeTestFrame(this.drv.shared!.mem, this.drv.frameOffset(b), size, this.i + 1, sent, true, macs);
      if (!this.drv.send(b, size)) {
        this.drv.release(b);
        break;
      }
    }
    this.drv.flush();
    return sent;
  }

  poll(): void {
    const d = this.drv;
    const n = d.receive(256);
    for (let k = 0; k < n; k++) {
      const tok = d.rxToken[k];
      if (this.check.verify(d.packetMem(tok), d.packetOffset(tok), d.rxLen[k]) === Verdict.Ok) this.got[this.check.lastStream]++;
      this.received++;
      d.release(tok);
    }
    d.flush();
  }
}

// Also in a data-path worker thread (forwarding.workers): the whole bridge, its ledger and MAC table, in one worker.
for (const workers of [0, 1]) t.test(`four VMs on one bridge${workers ? ' (forwarded by a worker thread)' : ''}`, async (t) => {
  const sw = await startSwitch(t, {
    mode: 'bridge', bridge: { ageingSec: 2 }, ports: NAMES.map((name) => ({ name })), ...(workers ? { forwarding: { workers } } : {}),
  });
  if (workers) t.same((await sw.stats()).workers.map((w) => w.ports.length), [4], 'the bridge is on the one worker');
  const vms: Vm[] = [];
  for (let i = 0; i < 4; i++) {
    const drv = await GuestDriver.attach({ socketPath: path.join(sw.dir, `${NAMES[i]}.sock`) });
    t.teardown(() => drv.close());
    t.ok(drv.shared?.swap, `${NAMES[i]}: region mapped with bridge (swap) semantics`);
    vms.push(new Vm(i, drv));
  }
  await waitAttached(sw, ...NAMES);
  pollUntilTeardown(t, () => {
    for (const v of vms) v.poll();
  });
  const bufCount = (await sw.stats()).sharedBuffers.bufCount;
  const owned = async () => (await sw.stats()).ports.map((p) => p.buffersOwned);
  t.same(await owned(), [1024, 1024, 1024, 1024], 'each VM starts with its partition');

  // Every VM announces itself with one broadcast: the three others see it.
  for (const v of vms) v.send(BCAST, 1);
  await waitFor('the announcements', () => vms.every((v) => v.received === 3));
  const learned = (await sw.stats()).ports.map((p) => p.macs);
  t.same(learned, vms.map((v) => [`02:00:00:00:00:0${v.i + 1}`]), 'each MAC learned on its own port');
  const copiedAfterFlood = (await sw.stats()).ports.reduce((s, p) => s + counters(p).copiedBytes, 0);
  t.equal(copiedAfterFlood, 4 * 2 * 128, 'a broadcast is copied to all destinations but one (2 copies of 128 B each)');
  for (const v of vms) v.got.fill(0);

  // Unicast between every ordered pair: only the destination receives it, no byte copied.
  const N = 200;
  for (const from of vms) {
    for (const to of vms) {
      if (from === to) continue;
      const before = vms.map((v) => v.received);
      t.equal(from.send(mac(to.i), N), N, `${NAMES[from.i]} -> ${NAMES[to.i]}: sent ${N}`);
      await waitFor(`${NAMES[to.i]} to receive from ${NAMES[from.i]}`, () => to.received - before[to.i] === N);
      await sleep(20);
      for (const other of vms) {
        if (other !== to) t.equal(other.received, before[other.i], `${NAMES[other.i]} saw none of ${NAMES[from.i]} -> ${NAMES[to.i]}`);
      }
    }
  }
  for (const v of vms) t.equal(v.got.reduce((a, b) => a + b, 0), 3 * N, `${NAMES[v.i]} received ${3 * N} verified frames`);
  let s = await sw.stats();
  t.equal(s.ports.reduce((a, p) => a + counters(p).copiedBytes, 0), copiedAfterFlood, 'unicast copied 0 payload bytes');
  t.equal(s.ports.reduce((a, p) => a + counters(p).zeroCopy, 0), 4 + 12 * N, 'every unicast frame (and one copy of each broadcast) swapped');
  t.ok(s.ledger.ok, `ledger balanced: ${s.ledger.problems.join('; ')}`);
  t.same(await owned(), [1024, 1024, 1024, 1024], 'no VM buffer count changed');
  t.equal(s.sharedBuffers.pool, 0, 'pool empty: all buffers with their VMs');

  // A frame to our own MAC is not sent back out of our port.
  const before = vms.map((v) => v.received);
  vms[0].send(mac(0), 1);
  await waitFor('hairpin drop', async () => counters((await sw.stats()).ports[0]).drops.hairpin === 1);
  t.same(vms.map((v) => v.received), before, 'nobody received the hairpin frame');

  // Learned MACs age out; traffic to an aged MAC floods.
  await waitFor('MACs to age out', async () => (await sw.stats()).ports.every((p) => p.macs.length === 0), 6000, 200);
  t.same((await sw.stats()).ports.map((p) => p.macs), [[], [], [], []], 'all learned MACs aged out after 2 s');
  const b2 = vms.map((v) => v.received);
  vms[3].send(mac(1), 1);
  await waitFor('the flood', () => vms[0].received === b2[0] + 1 && vms[1].received === b2[1] + 1 && vms[2].received === b2[2] + 1);
  t.same(vms.slice(0, 3).map((v, i) => v.received - b2[i]), [1, 1, 1], 'unicast to an aged-out MAC is flooded to the three others');
  s = await sw.stats();
  t.ok(s.ledger.ok, 'ledger still balanced');
  t.same(s.ports.map((p) => p.buffersOwned), [1024, 1024, 1024, 1024], 'buffer counts unchanged');
  t.equal(bufCount, 4096);
});
