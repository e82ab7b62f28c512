/**
 * A front-end that lies about or pulls its memory must cost only its own
 * port: a memory table bigger than its memfd is refused; memory shrunk
 * after set-up (ftruncate) faults in the switch, which survives (SIGBUS
 * guard), logs guest-memory-fault, counts it and drops that port; the
 * Shared Buffers memfd is sealed, so no VM can shrink it. A bystander pair
 * exchanges verified traffic through all of it.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { closeFd, eventfdCreate, eventfdSignal, fdSeals, fdSize, memfdCreate, memfdCreateSealed, mmapShared } from '../../bindings';
import { memTable, u64 } from '../../src/vhost/codec';
import { FLAG_NEED_REPLY, FLAG_VERSION, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_SHARED_BUFFERS, Req, VHOST_USER_F_PROTOCOL_FEATURES } from '../../src/vhost/protocol';
import { VIRTIO_F_VERSION_1, VIRTQ_DESC_F_WRITE, bit } from '../../src/virtio/defs';
import { SplitRing } from '../../src/virtio/ring';
import { regionSealProblem } from '../../src/guest/shared-region';
import { bystanderConfig, startBystander } from '../helpers/bystander';
import { memfdHeld } from '../helpers/fds';
import { type SwitchProc, logLines, startSwitch, stopProc, vm, waitFor, waitForLogLines } from '../helpers/procs';
import { RawClient, sendVringStart } from '../helpers/unit-vhost-client';

const MEM = 0x10000;
const RING_GPA = 0n;
const RING_UA = 0x7f00_0000_0000n;
const BUF_GPA = 0x10_0000n;
const BUF_UA = 0x7f00_0010_0000n;
const NUM = 16;
/** vring 0 (rx, the switch writes) and vring 1 (tx) inside the ring memfd. */
const RING_AT = [{ desc: 0x0, avail: 0x100, used: 0x200 }, { desc: 0x1000, avail: 0x1100, used: 0x1200 }];


/** What the switch process holds of memfds named `name`: open fds and mappings. */
function heldBySwitch(sw: SwitchProc, name: string): { fds: number; maps: number } {
  return memfdHeld(sw.child.pid!, name);
}

async function ack(t: Test, c: RawClient, req: number, what: string): Promise<void> {
  const r = await c.recv();
  t.equal(r?.request, req, `${what}: acked`);
  t.equal(r?.payload.readBigUInt64LE(0), 0n, `${what}: ack says success`);
}

/** Negotiate like a classic front-end (VERSION_1, PROTOCOL_FEATURES, REPLY_ACK, optionally SHARED_BUFFERS). */
async function negotiate(c: RawClient, sharedBuffers = false): Promise<void> {
  c.send(Req.GET_FEATURES, FLAG_VERSION);
  await c.recv();
  c.send(Req.GET_PROTOCOL_FEATURES, FLAG_VERSION);
  await c.recv();
  c.send(Req.SET_PROTOCOL_FEATURES, FLAG_VERSION,
    u64(bit(PROTOCOL_F_REPLY_ACK) | (sharedBuffers ? bit(PROTOCOL_F_SHARED_BUFFERS) : 0n)));
  c.send(Req.SET_OWNER, FLAG_VERSION);
  c.send(Req.SET_FEATURES, FLAG_VERSION, u64(bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES)));
}

/**
 * A hostile front-end with valid rings: its rings in one memfd (`<name>-rings`),
 * its rx buffers (all posted) in another (`<name>-bufs`).
 */
async function hostileFrontEnd(t: Test, sw: SwitchProc, port: string, name: string) {
  const c = RawClient.connect(path.join(sw.dir, `${port}.sock`));
  const ringFd = memfdCreate(`${name}-rings`, MEM);
  const bufFd = memfdCreate(`${name}-bufs`, MEM);
  const kick = [eventfdCreate(), eventfdCreate()];
  const call = [eventfdCreate(), eventfdCreate()];
  t.teardown(() => {
    c.close();
    for (const fd of [ringFd, bufFd, ...kick, ...call]) closeFd(fd);
  });
  await negotiate(c);
  // Our own view of the rings: post every rx buffer (2 KiB each in the buffer memfd).
  const mem = mmapShared(ringFd, MEM);
  const rx = new SplitRing(NUM, {
    desc: { buffer: mem, byteOffset: RING_AT[0].desc },
    avail: { buffer: mem, byteOffset: RING_AT[0].avail },
    used: { buffer: mem, byteOffset: RING_AT[0].used },
  });
  for (let i = 0; i < NUM; i++) {
    rx.setDesc(i, Number(BUF_GPA) + i * 2048, 2048, VIRTQ_DESC_F_WRITE, 0);
    rx.avail[2 + i] = i;
  }
  rx.avail[1] = NUM;
  c.send(Req.SET_MEM_TABLE, FLAG_VERSION | FLAG_NEED_REPLY, memTable([
    { guestPhysAddr: RING_GPA, memorySize: BigInt(MEM), userspaceAddr: RING_UA, mmapOffset: 0n },
    { guestPhysAddr: BUF_GPA, memorySize: BigInt(MEM), userspaceAddr: BUF_UA, mmapOffset: 0n },
  ]), [ringFd, bufFd]);
  await ack(t, c, Req.SET_MEM_TABLE, 'a valid memory table');
  for (let q = 0; q < 2; q++) {
    sendVringStart(c, q, NUM, RING_UA, RING_AT[q], kick[q], call[q]);
    await ack(t, c, Req.SET_VRING_ENABLE, `vring ${q} enabled`);
  }
  await waitFor(`port ${port} ready`, async () => (await sw.port(port)).ready, 5000);
  return { c, ringFd, bufFd, kick };
}

/** The port was dropped for guest-memory-fault: logged with its name, counted once, detached; the switch lives. */
async function expectFault(t: Test, sw: SwitchProc, port: string, mark: number, c: RawClient): Promise<void> {
  const line = await waitFor(`the guest-memory-fault log line for ${port}`, () =>
    logLines(sw, mark).find((l) => l.port === port && l.reason === 'guest-memory-fault' && l.level === 50), 5000);
  t.match(String(line?.msg), /guest-memory-fault/, 'logged as guest-memory-fault');
  const closed = await c.waitClosed(5000);
  t.ok(closed.how === 'eof' || closed.how === 'reset', `the hostile connection was closed (${closed.how})`);
  await waitFor(`port ${port} detached`, async () => !(await sw.port(port)).attached, 5000);
  // The zero-filled ring also reads as garbage (its avail index jumps back): the fault must still be the reason given.
  const [gone] = await waitForLogLines(sw, mark, (l) => l.port === port && l.msg === 'front-end disconnected');
  t.equal(gone?.reason, 'guest-memory-fault', 'disconnected for the fault, not for the garbage it left in the ring');
  const st = await sw.port(port);
  t.equal((st.counters as { guestMemoryFaults: number }).guestMemoryFaults, 1, 'counted once in stats');
  t.equal(sw.child.exitCode, null, 'the switch is alive');
  t.equal(sw.child.signalCode, null, 'the switch was not killed by a signal');
}

// Also with data-path worker threads (forwarding.workers): the fault is then taken by a worker thread.
for (const workers of [0, 2]) t.test(`hostile guest memory cannot kill the switch${workers ? ` (${workers} data-path workers)` : ''}`, async (t) => {
  const sw = await startSwitch(t, bystanderConfig(
    [{ name: 'evil' }, { name: 'victim' }, { name: 'sb' }],
    { pairs: [['evil', 'victim']], log: { level: 'info' }, ...(workers ? { forwarding: { workers } } : {}) },
  ));
  if (workers) t.equal((await sw.stats()).workers.length, workers, `${workers} workers forward`);
  const by = await startBystander(t, sw, { seconds: 12 });

  const refused = async (t: Test, name: string, region: { size: number; offset: bigint; file: number }, expect: RegExp) => {
    const mark = sw.stderr().length;
    const c = RawClient.connect(path.join(sw.dir, 'evil.sock'));
    t.teardown(() => c.close());
    await negotiate(c);
    const fd = memfdCreate(name, region.file);
    c.send(Req.SET_MEM_TABLE, FLAG_VERSION | FLAG_NEED_REPLY, memTable([{
      guestPhysAddr: 0n, memorySize: BigInt(region.size), userspaceAddr: RING_UA, mmapOffset: region.offset,
    }]), [fd]);
    closeFd(fd);
    const closed = await c.waitClosed(5000);
    t.ok(closed.how === 'eof' || closed.how === 'reset', 'the front-end was dropped');
    const line = await waitFor('the refusal log line', () =>
      logLines(sw, mark).find((l) => l.port === 'evil' && l.req === 'SET_MEM_TABLE' && l.level === 50), 5000);
    t.match(String(line?.msg), expect, `refusal names the region and the numbers: ${String(line?.msg)}`);
    t.same(heldBySwitch(sw, name), { fds: 0, maps: 0 }, 'the switch holds no fd and no mapping of the refused memfd');
    await waitFor('port evil free again', async () => !(await sw.port('evil')).attached, 5000);
    t.equal(sw.child.exitCode, null, 'the switch is alive');
  };

  await t.test('(a) a region bigger than its memfd is refused', (t) =>
    refused(t, 'hostile-big', { size: 0x20000, offset: 0n, file: 0x10000 },
      /SET_MEM_TABLE: region 0 \(size 0x20000, mmap_offset 0x0\) ends at 0x20000, past the end of its file \(0x10000 bytes\)/));

  await t.test('(b) mmap_offset + size past the end is refused', (t) =>
    refused(t, 'hostile-offset', { size: 0x10000, offset: 0x8000n, file: 0x10000 },
      /SET_MEM_TABLE: region 0 \(size 0x10000, mmap_offset 0x8000\) ends at 0x18000, past the end of its file \(0x10000 bytes\)/));

  await t.test('(b2) mmap_offset + size overflowing 64 bits is refused', (t) =>
    refused(t, 'hostile-overflow', { size: 0x20000, offset: 0xffff_ffff_ffff_0000n, file: 0x10000 }, /region 0 .* out of range/));

  await t.test('(c) rings shrunk under the switch, then a kick: the port goes, the switch stays', async (t) => {
    const h = await hostileFrontEnd(t, sw, 'evil', 'hostile-rings');
    const mark = sw.stderr().length;
    fs.ftruncateSync(h.ringFd, 0);
    eventfdSignal(h.kick[1]);
    await expectFault(t, sw, 'evil', mark, h.c);
    t.same(heldBySwitch(sw, 'hostile-rings'), { fds: 0, maps: 0 }, 'nothing of the memfd is left in the switch');
  });

  await t.test('(c2) copy path: rx buffers shrunk while a copy-path peer sends to it', async (t) => {
    const h = await hostileFrontEnd(t, sw, 'evil', 'hostile-bufs');
    const before = (await sw.port('evil')).counters as { guestMemoryFaults: number };
    t.equal(before.guestMemoryFaults, 1, 'the earlier fault is still counted');
    const mark = sw.stderr().length;
    // Only the buffer memfd shrinks: the rings stay readable, the copy into a posted buffer faults.
    fs.ftruncateSync(h.bufFd, 0);
    const peer = vm(sw, 'victim', ['--mode', 'gen', '--no-zero-copy', '--rate', '2000', '--count', '2000']);
    t.teardown(() => stopProc(peer));
    const line = await waitFor('the guest-memory-fault log line', () =>
      logLines(sw, mark).find((l) => l.port === 'evil' && l.reason === 'guest-memory-fault'), 8000);
    t.ok(line, 'the copy into vanished memory was survived and logged');
    const closed = await h.c.waitClosed(5000);
    t.ok(closed.how === 'eof' || closed.how === 'reset', 'the hostile connection was closed');
    await waitFor('port evil detached', async () => !(await sw.port('evil')).attached, 5000);
    t.equal(((await sw.port('evil')).counters as { guestMemoryFaults: number }).guestMemoryFaults, 2, 'counted: two faults in all');
    const victim = await sw.port('victim');
    t.ok(victim.counters.copied as number > 0, 'the peer\'s frames went through the copy path');
    const r = await peer.result;
    t.equal(r.code, 0, `the copy-path peer ran to the end ${r.stderr}`);
    t.equal(sw.child.exitCode, null, 'the switch is alive');
  });

  await t.test('(c3) a new memory table that leaves the running rings out: refused, and neither table is left', async (t) => {
    const h = await hostileFrontEnd(t, sw, 'evil', 'hostile-moved');
    const mark = sw.stderr().length;
    const fd = memfdCreate('hostile-moved-new', MEM);
    // One region, away from the rings' addresses: the running rings cannot be rebuilt over it.
    h.c.send(Req.SET_MEM_TABLE, FLAG_VERSION | FLAG_NEED_REPLY, memTable([
      { guestPhysAddr: BUF_GPA, memorySize: BigInt(MEM), userspaceAddr: BUF_UA, mmapOffset: 0n },
    ]), [fd]);
    closeFd(fd);
    const line = await waitFor('the refusal log line', () =>
      logLines(sw, mark).find((l) => l.port === 'evil' && l.req === 'SET_MEM_TABLE' && l.level === 50), 5000);
    t.match(String(line?.msg), /vring 0: .*address 0x7f0000000000 \(\+\d+\) is not in the memory table/, `refusal names the ring: ${String(line?.msg)}`);
    const closed = await h.c.waitClosed(5000);
    t.ok(closed.how === 'eof' || closed.how === 'reset', 'the front-end was dropped');
    await waitFor('port evil free again', async () => !(await sw.port('evil')).attached, 5000);
    // The old table was replaced when the rings failed to fit the new one: it must go too, at once (not
    // when the collector finds its buffers), with the fds kept for the workers.
    for (const name of ['hostile-moved-rings', 'hostile-moved-bufs', 'hostile-moved-new']) {
      t.same(heldBySwitch(sw, name), { fds: 0, maps: 0 }, `the switch holds no fd and no mapping of ${name}`);
    }
    t.equal(sw.child.exitCode, null, 'the switch is alive');
  });

  await t.test('(d) the Shared Buffers memfd is sealed: ftruncate fails with EPERM', async (t) => {
    const c = RawClient.connect(path.join(sw.dir, 'sb.sock'));
    t.teardown(() => c.close());
    await negotiate(c, true);
    c.send(Req.GET_SHARED_BUFFERS, FLAG_VERSION);
    const r = await c.recv();
    t.equal(r?.request, Req.GET_SHARED_BUFFERS, 'GET_SHARED_BUFFERS answered');
    t.equal(r?.fds.length, 1, 'with the region fd');
    const fd = r!.fds[0];
    t.teardown(() => closeFd(fd));
    const size = fdSize(fd);
    t.equal(fdSeals(fd), 0x7, 'sealed: F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL');
    t.throws(() => fs.ftruncateSync(fd, 0), { code: 'EPERM' }, 'shrinking fails with EPERM');
    t.throws(() => fs.ftruncateSync(fd, size + 4096), { code: 'EPERM' }, 'growing fails with EPERM');
    t.equal(fdSize(fd), size, 'the region keeps its size');
    // The region stays usable: our own mapping reads and writes it.
    const m = new Uint8Array(mmapShared(fd, size));
    t.type(m[size - 1], 'number', 'the last byte of the region can still be read (no SIGBUS)');
    c.close();
    await waitFor('port sb free again', async () => !(await sw.port('sb')).attached, 5000);
    t.equal(sw.child.exitCode, null, 'the switch is alive');
  });

  await t.test('the bystander pair delivered every frame', (t) => by.check(t));

  const st = await sw.stats();
  t.same(st.ports.filter((p) => p.name.startsWith('by-')).map((p) => (p.counters as { guestMemoryFaults: number }).guestMemoryFaults), [0, 0],
    'no fault counted on the bystanders');
});

t.test('(e) the guest driver refuses an unsealed Shared Buffers region', async (t) => {
  const unsealed = memfdCreate('unsealed-region', 0x10000);
  const sealed = memfdCreateSealed('sealed-region', 0x10000);
  t.teardown(() => {
    closeFd(unsealed);
    closeFd(sealed);
  });
  t.match(regionSealProblem(unsealed), /not sealed \(seals 0x1, missing F_SEAL_SHRINK \| F_SEAL_GROW\)/, 'an unsealed memfd is refused, naming the missing seals');
  t.equal(regionSealProblem(sealed), null, 'the switch\'s sealed region is accepted');
});
