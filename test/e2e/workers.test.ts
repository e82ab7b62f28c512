/**
 * Data-path worker threads (forwarding.workers, docs/design.md "Threads"),
 * all real processes: a switch whose pairs are forwarded by two worker
 * threads, guest-driver VMs, shared memory, eventfds and Unix sockets;
 * ports and pairs changed while it runs (placement and moves:
 * runtime-ports.test.ts has more).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { closeFd, eventfdCreate, eventfdDrain, memfdCreate, mmapShared } from '../../bindings';
import { memTable, u64, vringState } from '../../src/vhost/codec';
import { FLAG_NEED_REPLY, FLAG_VERSION, PROTOCOL_F_REPLY_ACK, Req, VHOST_USER_F_PROTOCOL_FEATURES } from '../../src/vhost/protocol';
import { VIRTIO_F_VERSION_1, VIRTQ_DESC_F_WRITE, bit } from '../../src/virtio/defs';
import { SplitRing } from '../../src/virtio/ring';
import { RawClient, sendVringStart } from '../helpers/unit-vhost-client';
import { fileId, fileIds } from '../helpers/fds';
import { controlRequest } from '../../src/switch/control';
import { type SwitchProc, counters, sleep, startSwitch, vm, waitAttached, waitFor } from '../helpers/procs';

const TWO_PAIRS = {
  ports: [{ name: 'a1' }, { name: 'a2' }, { name: 'b1' }, { name: 'b2' }],
  pairs: [['a1', 'a2'], ['b1', 'b2']],
  forwarding: { workers: 2 },
};

for (const exchange of ['gift', 'swap'] as const) t.test(`${exchange}: two pairs on two workers: traffic on both at once, every frame verified, ledger balanced`, async (t) => {
  // Swaps wait for the receiver's empty buffer and copy or drop after rxWaitMs: long here, so a receiver
  // descheduled on a loaded machine cannot turn a verified run into drops.
  const sw = await startSwitch(t, { ...TWO_PAIRS, forwarding: { ...TWO_PAIRS.forwarding, pairExchange: exchange, rxWaitMs: 5000 } });
  let s = await sw.stats();
  t.equal(s.workers.length, 2, 'two workers');
  t.same(s.workers.map((w) => w.ports.sort()), [['a1', 'a2'], ['b1', 'b2']], 'each pair on its own worker');
  const n = 200_000;
  const echoA = vm(sw, 'a2', ['--mode', 'echo', '--count', String(n)]);
  const echoB = vm(sw, 'b2', ['--mode', 'echo', '--count', String(n)]);
  await waitAttached(sw, 'a2');
  await waitAttached(sw, 'b2');
  const genA = vm(sw, 'a1', ['--mode', 'gen', '--count', String(n), '--size', '64', '--expect', String(n), '--linger', '20000']);
  const genB = vm(sw, 'b1', ['--mode', 'gen', '--count', String(n), '--size', '1500', '--expect', String(n), '--linger', '20000']);
  // The ledgers balance whenever we look, not only at the end.
  let checks = 0;
  const sampler = (async () => {
    while (genA.child.exitCode === null || genB.child.exitCode === null) {
      const x = await sw.stats().catch(() => null);
      if (x) {
        checks++;
        if (!x.ledger.ok) t.fail(`ledger unbalanced mid-traffic: ${x.ledger.problems.join('; ')}`);
      }
      await sleep(50);
    }
  })();
  const [ga, gb, ea, eb] = await Promise.all([genA.result, genB.result, echoA.result, echoB.result]);
  await sampler;
  for (const [name, g, e] of [['a', ga, ea], ['b', gb, eb]] as const) {
    t.equal(g.code, 0, `gen ${name} exited cleanly: ${g.stderr}`);
    t.equal(e.code, 0, `echo ${name} exited cleanly: ${e.stderr}`);
    t.equal(e.summary.verified, n, `pair ${name}: every payload checked out at the echo`);
    t.equal(g.summary.verified, n, `pair ${name}: every echoed payload checked out at the gen`);
    t.equal(g.summary.lost + g.summary.dup, 0, `pair ${name}: nothing lost or duplicated`);
  }
  t.ok(checks > 0, `ledger sampled ${checks} times during traffic`);
  s = await sw.stats();
  for (const p of s.ports) {
    const c = counters(p);
    t.equal(c.zeroCopy, n, `${p.name}: stats (from its worker) count ${n} zero-copy packets`);
    t.same(c.drops, {}, `${p.name}: no drops`);
  }
  t.ok(s.workers.every((w) => w.busyRounds > 0), 'both workers did work');
  t.equal(s.dataPath.busyRounds, s.workers[0].busyRounds + s.workers[1].busyRounds, 'dataPath is the sum over workers');
  t.ok(s.ledger.ok, `ledger balanced: ${s.ledger.problems.join('; ')}`);
  t.equal(s.sharedBuffers.pool, s.sharedBuffers.bufCount * s.sharedBuffers.domains, 'every buffer back in its pool');
});

t.test('a VM killed mid-traffic on one worker: its port is reclaimed, the other worker keeps flowing', async (t) => {
  const sw = await startSwitch(t, TWO_PAIRS);
  const sinkA = vm(sw, 'a2', ['--mode', 'sink']);
  const sinkB = vm(sw, 'b2', ['--mode', 'sink']);
  await waitAttached(sw, 'a2');
  await waitAttached(sw, 'b2');
  const genA = vm(sw, 'a1', ['--mode', 'gen', '--stream', '1']);
  const genB = vm(sw, 'b1', ['--mode', 'gen', '--stream', '2']);
  await waitFor('traffic on both pairs', async () => {
    const s = await sw.stats();
    return ['a2', 'b2'].every((n) => counters(s.ports.find((p) => p.name === n)!).txPackets > 20000);
  }, 30000);
  genA.child.kill('SIGKILL');
  await genA.exited;
  await waitFor('the switch to notice a1 is gone', async () => !(await sw.port('a1')).attached);
  let s = await sw.stats();
  t.ok(s.ledger.ok, `ledger balanced after the kill: ${s.ledger.problems.join('; ')}`);
  t.equal(s.ports.find((p) => p.name === 'a1')!.buffersOwned, 0, 'the dead VM owns nothing');
  const before = counters(s.ports.find((p) => p.name === 'b2')!).txPackets;
  await waitFor('pair b to keep flowing', async () => counters(await sw.port('b2')).txPackets > before + 20000, 30000);
  // The port takes a new VM, on the same worker.
  const aBefore = counters(s.ports.find((p) => p.name === 'a2')!).txPackets;
  const genA2 = vm(sw, 'a1', ['--mode', 'gen', '--stream', '3', '--count', '5000']);
  const g2 = await genA2.result;
  t.equal(g2.code, 0, `second VM on a1 ran: ${g2.stderr}`);
  await waitFor('a2 to receive its 5000 packets', async () => counters(await sw.port('a2')).txPackets >= aBefore + 5000);
  genB.child.kill('SIGTERM');
  await genB.result;
  sinkA.child.kill('SIGTERM');
  sinkB.child.kill('SIGTERM');
  const [ka, kb] = await Promise.all([sinkA.result, sinkB.result]);
  t.equal(ka.summary.badChecksum + ka.summary.badLength + kb.summary.badChecksum + kb.summary.badLength, 0, 'nothing corrupted');
  s = await sw.stats();
  t.ok(s.ledger.ok, `ledger balanced at the end: ${s.ledger.problems.join('; ')}`);
  t.equal(s.sharedBuffers.pool, s.sharedBuffers.bufCount * s.sharedBuffers.domains, 'everything reclaimed once the VMs left');
  t.ok(sw.child.exitCode === null, 'switch still running');
});

t.test('workers: stats and reset-counters reach the workers', async (t) => {
  const sw = await startSwitch(t, { ...TWO_PAIRS, forwarding: { workers: 1 } });
  const echo = vm(sw, 'a2', ['--mode', 'echo', '--count', '1000']);
  await waitAttached(sw, 'a2');
  const gen = vm(sw, 'a1', ['--mode', 'gen', '--count', '1000', '--expect', '1000', '--linger', '20000']);
  const [g] = await Promise.all([gen.result, echo.result]);
  t.equal(g.summary.verified, 1000, 'one worker forwards every frame');
  let s = await sw.stats();
  t.equal(s.workers.length, 1);
  t.same(s.workers[0].ports.sort(), ['a1', 'a2', 'b1', 'b2'], 'both pairs on the one worker');
  t.equal(counters(s.ports.find((p) => p.name === 'a1')!).rxPackets, 1000, 'a1 counted by the worker');
  t.match(await controlRequest(sw.control, { cmd: 'reset-counters' }), { ok: true });
  s = await sw.stats();
  t.equal(counters(s.ports.find((p) => p.name === 'a1')!).rxPackets, 0, 'reset reached the worker');
});

t.test('workers: kicks for a worker\'s ports are counted while it sleeps between frames', async (t) => {
  const sw = await startSwitch(t, { ...TWO_PAIRS, forwarding: { workers: 1 } });
  const echo = vm(sw, 'a2', ['--mode', 'echo', '--count', '100']);
  await waitAttached(sw, 'a2');
  // 100 frames at 200 per second: the worker sleeps between them (spinUs 50), so each one comes with a kick.
  const gen = vm(sw, 'a1', ['--mode', 'gen', '--count', '100', '--rate', '200', '--expect', '100', '--linger', '20000']);
  const [g] = await Promise.all([gen.result, echo.result]);
  t.equal(g.summary.verified, 100, 'every frame came back');
  const s = await sw.stats();
  const kicks = counters(s.ports.find((p) => p.name === 'a1')!).kicks;
  // The main thread watches the kick fds and wakes the port's worker; without that only the switch's 100 ms safety
  // net would wake it, and nothing would count them. (The VM batches what its rate allows per turn, and kicks only
  // when the worker asked: fewer kicks than frames.)
  t.ok(kicks >= 10, `a1's tx kicks were counted (${kicks} for 100 frames sent 5 ms apart)`);
});

t.test('forwarding.cpus: each worker pins its own thread, the switch process keeps its mask', async (t) => {
  const cpus = os.availableParallelism() > 1 ? [1, 0] : [0, 0];
  const sw = await startSwitch(t, { ...TWO_PAIRS, forwarding: { workers: 2, cpus } });
  await waitFor('both workers to report their CPUs', async () => (await sw.stats()).workers.every((w) => w.cpus.length > 0));
  const s = await sw.stats();
  t.same(s.workers.map((w) => w.cpu), cpus, 'each worker got its CPU in turn');
  t.same(s.workers.map((w) => w.cpus), cpus.map((c) => [c]), 'and runs on that one CPU only');
  // The process (its main thread) is not pinned: its allowed list is still what it started with.
  const status = fs.readFileSync(`/proc/${sw.child.pid}/status`, 'utf8');
  const allowed = /Cpus_allowed_list:\s*(\S+)/.exec(status)?.[1];
  if (os.availableParallelism() > 1) t.not(allowed, String(cpus[0]), `main thread not pinned (Cpus_allowed_list ${allowed})`);
  // Traffic flows on the pinned workers.
  const echo = vm(sw, 'b2', ['--mode', 'echo', '--count', '2000']);
  await waitAttached(sw, 'b2');
  const gen = vm(sw, 'b1', ['--mode', 'gen', '--count', '2000', '--expect', '2000', '--linger', '20000']);
  const [g] = await Promise.all([gen.result, echo.result]);
  t.equal(g.summary.verified, 2000, 'every frame forwarded by a pinned worker');
});

t.test('workers: a reload changes the live settings in every worker, and pairs; a pair no worker can hold is refused', async (t) => {
  const sw = await startSwitch(t, TWO_PAIRS);
  const cfg = JSON.parse(fs.readFileSync(sw.configPath, 'utf8')) as Record<string, unknown> & { forwarding: Record<string, unknown> };
  fs.writeFileSync(sw.configPath, JSON.stringify({ ...cfg, forwarding: { ...cfg.forwarding, burst: 8, rxWaitMs: 0 } }));
  const ok = await controlRequest(sw.control, { cmd: 'reload' }) as { ok?: boolean; live?: { path: string }[] };
  t.equal(ok.ok, true, `reload applied: ${JSON.stringify(ok)}`);
  t.same(ok.live?.map((c) => c.path).sort(), ['forwarding.burst', 'forwarding.rxWaitMs']);
  // Traffic still flows on both workers with the new settings.
  const echo = vm(sw, 'a2', ['--mode', 'echo', '--count', '3000']);
  await waitAttached(sw, 'a2');
  const gen = vm(sw, 'a1', ['--mode', 'gen', '--count', '3000', '--expect', '3000', '--linger', '20000']);
  const [g] = await Promise.all([gen.result, echo.result]);
  t.equal(g.summary.verified, 3000, 'every frame after the reload');
  fs.writeFileSync(sw.configPath, JSON.stringify({ ...cfg, pairs: [['a1', 'a2']] }));
  const unpaired = await controlRequest(sw.control, { cmd: 'reload' }) as { ok?: boolean; pairsRemoved?: string[][] };
  t.same(unpaired.pairsRemoved, [['b1', 'b2']], `a reload removes a pair: ${JSON.stringify(unpaired)}`);
  t.equal((await sw.port('b1')).peer, null, 'b1 unpaired');
  fs.writeFileSync(sw.configPath, JSON.stringify({ ...cfg, pairs: [] }));
  t.match(await controlRequest(sw.control, { cmd: 'reload' }), { ok: true, pairsRemoved: [['a1', 'a2']] });
  // a1 and b1 are on different workers, each sharing its domain (the config's pair:...) with its old peer: neither can move.
  fs.writeFileSync(sw.configPath, JSON.stringify({ ...cfg, pairs: [['a1', 'b1']] }));
  const refused = await controlRequest(sw.control, { cmd: 'reload' }) as { error?: string };
  t.match(refused.error, /pairs: \[a1, b1\]: forwarded by different data-path workers \(0 and 1\) and neither can move.*"a1" shares domain "pair:a1\+a2" with "a2".*"b1" shares domain "pair:b1\+b2" with "b2"/,
    `a pair across workers that no move can join is refused with the reason: ${refused.error}`);
  t.equal((await sw.port('a1')).peer, null, 'and changed nothing');
  fs.writeFileSync(sw.configPath, JSON.stringify({ ...cfg }));
  t.match(await controlRequest(sw.control, { cmd: 'reload' }), { ok: true, pairsAdded: [['a1', 'a2'], ['b1', 'b2']] }, 'the pairs come back');
  const echo2 = vm(sw, 'b2', ['--mode', 'echo', '--count', '3000']);
  await waitAttached(sw, 'b2');
  const gen2 = vm(sw, 'b1', ['--mode', 'gen', '--count', '3000', '--expect', '3000', '--linger', '20000']);
  const [g2] = await Promise.all([gen2.result, echo2.result]);
  t.equal(g2.summary.verified, 3000, 'every frame over the pair the reload made again');
});

/** A classic front-end on `port` (raw vhost-user, its own memory): NUM rx buffers posted, both rings started. */
async function classicFrontEnd(t: Test, sw: SwitchProc, port: string) {
  const MEM = 0x10000;
  const NUM = 16;
  const RING_UA = 0x7f00_0000_0000n;
  const BUF_GPA = 0x10_0000;
  const at = [{ desc: 0x0, avail: 0x100, used: 0x200 }, { desc: 0x1000, avail: 0x1100, used: 0x1200 }];
  const c = RawClient.connect(path.join(sw.dir, `${port}.sock`));
  const ringFd = memfdCreate('wk-rings', MEM);
  const bufFd = memfdCreate('wk-bufs', MEM);
  const kick = [eventfdCreate(), eventfdCreate()];
  const call = [eventfdCreate(), eventfdCreate()];
  t.teardown(() => {
    c.close();
    for (const fd of [ringFd, bufFd, ...kick, ...call]) closeFd(fd);
  });
  c.send(Req.SET_PROTOCOL_FEATURES, FLAG_VERSION, u64(bit(PROTOCOL_F_REPLY_ACK)));
  c.send(Req.SET_OWNER, FLAG_VERSION);
  c.send(Req.SET_FEATURES, FLAG_VERSION, u64(bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES)));
  const mem = mmapShared(ringFd, MEM);
  const rx = new SplitRing(NUM, {
    desc: { buffer: mem, byteOffset: at[0].desc }, avail: { buffer: mem, byteOffset: at[0].avail }, used: { buffer: mem, byteOffset: at[0].used },
  });
  for (let i = 0; i < NUM; i++) {
    rx.setDesc(i, BUF_GPA + i * 2048, 2048, VIRTQ_DESC_F_WRITE, 0);
    rx.avail[2 + i] = i;
  }
  rx.avail[1] = NUM;
  c.send(Req.SET_MEM_TABLE, FLAG_VERSION | FLAG_NEED_REPLY, memTable([
    { guestPhysAddr: 0n, memorySize: BigInt(MEM), userspaceAddr: RING_UA, mmapOffset: 0n },
    { guestPhysAddr: BigInt(BUF_GPA), memorySize: BigInt(MEM), userspaceAddr: RING_UA + 0x10_0000n, mmapOffset: 0n },
  ]), [ringFd, bufFd]);
  t.equal((await c.recv())?.request, Req.SET_MEM_TABLE, 'memory table acked');
  for (let q = 0; q < 2; q++) {
    sendVringStart(c, q, NUM, RING_UA, at[q], kick[q], call[q]);
    t.equal((await c.recv())?.request, Req.SET_VRING_ENABLE, `vring ${q} enabled`);
  }
  return { c, rx, call };
}

t.test('GET_VRING_BASE on a worker\'s port: the worker\'s index is reported, used.idx never goes back', async (t) => {
  const sw = await startSwitch(t, TWO_PAIRS);
  const { c, rx } = await classicFrontEnd(t, sw, 'a2');
  await waitFor('a2 ready', async () => (await sw.port('a2')).ready);
  const gen = vm(sw, 'a1', ['--mode', 'gen', '--count', '10', '--size', '128']);
  t.equal((await gen.result).code, 0, 'gen sent its 10 frames');
  await waitFor('the worker to deliver 10 frames into our rx ring', () => Atomics.load(rx.used16, 1) === 10);
  c.send(Req.GET_VRING_BASE, FLAG_VERSION, vringState(0, 0));
  const r = await c.recv();
  t.equal(r?.request, Req.GET_VRING_BASE, 'answered');
  t.equal(r?.payload.readUInt32LE(4), 10, 'the base is the worker\'s used index (10 delivered), not the control plane\'s stale copy');
  t.equal(Atomics.load(rx.used16, 1), 10, 'used.idx did not go back');
  t.equal((await sw.port('a2')).ready, false, 'the rx ring is stopped');
  t.equal(sw.child.exitCode, null, 'the switch is alive');
});

t.test('a new call fd on a worker\'s running rx ring (QEMU sends one once its guest sets up interrupts) is the one the worker signals', async (t) => {
  const sw = await startSwitch(t, TWO_PAIRS);
  const { c, rx, call } = await classicFrontEnd(t, sw, 'a2');
  await waitFor('a2 ready', async () => (await sw.port('a2')).ready);
  const oldCall = fileId('self', call[0])!;
  t.ok(fileIds(sw.child.pid!).includes(oldCall), 'the switch holds the first call fd');
  const newCall = eventfdCreate();
  t.teardown(() => closeFd(newCall));
  c.send(Req.SET_VRING_CALL, FLAG_VERSION | FLAG_NEED_REPLY, u64(0n), [newCall]);
  t.equal((await c.recv())?.request, Req.SET_VRING_CALL, 'SET_VRING_CALL acked');
  eventfdDrain(call[0]);
  const gen = vm(sw, 'a1', ['--mode', 'gen', '--count', '10', '--size', '128']);
  t.equal((await gen.result).code, 0, 'gen sent its 10 frames');
  await waitFor('the worker to deliver 10 frames into our rx ring', () => Atomics.load(rx.used16, 1) === 10);
  await waitFor('the new call fd to be signalled', () => eventfdDrain(newCall) > 0);
  t.equal(eventfdDrain(call[0]), 0, 'the old call fd was not');
  t.notOk(fileIds(sw.child.pid!).includes(oldCall), 'and the switch let go of it: the session\'s copy and the dup lent to the worker are closed');
});

t.test('workers: a bridge port added at run time forwards on its bridge\'s worker, and leaves it when deleted', async (t) => {
  const sw = await startSwitch(t, { mode: 'bridge', ports: [{ name: 'a' }, { name: 'b' }], forwarding: { workers: 2 } });
  t.match(await controlRequest(sw.control, { cmd: 'port-add', name: 'c' }), { ok: true, port: { domain: 'bridge' } });
  t.same((await sw.stats()).workers.map((w) => w.ports.slice().sort()), [['a', 'b', 'c'], []], 'c joins its bridge\'s worker');
  const count = 3000;
  const sink = vm(sw, 'c', ['--mode', 'sink', '--mac', '02:00:00:00:00:0c', '--announce', '--count', String(count), '--duration', '30']);
  await waitAttached(sw, 'c');
  await waitFor('the bridge to learn c', async () => (await sw.port('c')).macs.includes('02:00:00:00:00:0c'));
  const gen = await vm(sw, 'a', ['--mode', 'gen', '--count', String(count), '--size', '256', '--mac', '02:00:00:00:00:0a', '--dst-mac', '02:00:00:00:00:0c']).result;
  t.equal(gen.code, 0, `gen on a: ${gen.stderr}`);
  const s = await sink.result;
  t.same([s.summary.verified, s.summary.lost], [count, 0], 'every frame from a reached c, verified');
  t.match(await controlRequest(sw.control, { cmd: 'port-del', name: 'c' }), { ok: true });
  const st = await sw.stats();
  t.same(st.workers.map((w) => w.ports.slice().sort()), [['a', 'b'], []], 'c left its worker');
  t.ok(st.ledger.ok, `ledger balanced: ${st.ledger.problems.join('; ')}`);
});
