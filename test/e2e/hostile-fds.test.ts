/**
 * Hostile notifier fds and connections against a real switch process. Each
 * attack runs on port `evil` beside a bystander pair that must forward
 * every frame verified, during and after the attack, with the ledger
 * balanced. The switch must refuse the message (a ProtocolError naming the
 * vring and what the fd is), drop that connection, keep its own fd count,
 * stay alive, and take the next front-end on the same port. A call eventfd
 * made blocking and saturated after it was accepted must not block the
 * switch: the port is dropped as call-blocked.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { closeFd, eventfdCreate, eventfdDrain, eventfdSignal, memfdCreate, mmapShared, setNonBlocking } from '../../bindings';
import { u64 } from '../../src/vhost/codec';
import { FLAG_VERSION, Req, VRING_NOFD_MASK } from '../../src/vhost/protocol';
import { SplitRing } from '../../src/virtio/ring';
import { bystanderConfig, startBystander } from '../helpers/bystander';
import { fileId, fileIds } from '../helpers/fds';
import { type SwitchProc, counters, logLines, sleep, startSwitch, stopProc, tempDir, vm, waitAttached, waitFor, waitForLogLines, within } from '../helpers/procs';
import { RawClient, negotiateClassic, sendVringStart } from '../helpers/unit-vhost-client';

const EVIL = 'evil';

/** The switch's open fds, from /proc. */
const fdCount = (sw: SwitchProc): number => fs.readdirSync(`/proc/${sw.child.pid}/fd`).length;
const fdList = (sw: SwitchProc): string[] => fs.readdirSync(`/proc/${sw.child.pid}/fd`).map((f) => {
  try {
    return `${f}:${fs.readlinkSync(`/proc/${sw.child.pid}/fd/${f}`)}`;
  } catch {
    return `${f}:?`;
  }
});

/** The switch's fd count once its start-up has settled. */
async function baselineFds(sw: SwitchProc): Promise<number> {
  await sleep(500);
  return fdCount(sw);
}

/**
 * The fd count once it settles: control-socket connections from stats
 * requests come and go, so wait (bounded) for the count to come down to
 * `want` or below (below: the bystander finished and closed its own).
 */
async function settledFds(sw: SwitchProc, want: number): Promise<number> {
  const deadline = Date.now() + 5000;
  let n = fdCount(sw);
  while (n > want && Date.now() < deadline) {
    await sleep(50);
    n = fdCount(sw);
  }
  return n;
}
const alive = (sw: SwitchProc): boolean => sw.child.exitCode === null && sw.child.signalCode === null;


/** Send one vring fd request carrying `fd` on a fresh connection to `evil`; resolve when the switch has closed it. */
async function attachWithFd(sw: SwitchProc, req: number, vring: number, fd: number): Promise<'eof' | 'reset'> {
  const c = RawClient.connect(path.join(sw.dir, `${EVIL}.sock`));
  try {
    c.send(Req.GET_FEATURES, FLAG_VERSION);
    const r = await c.recv();
    if (!r) throw new Error('no GET_FEATURES reply');
    c.send(req, FLAG_VERSION, u64(BigInt(vring)), [fd]);
    return (await c.waitClosed(5000)).how;
  } finally {
    c.close();
  }
}

/** The port is free again and a real VM can attach to it. */
async function realVmAttaches(t: Test, sw: SwitchProc): Promise<void> {
  await waitFor('port evil to be free', async () => !(await sw.port(EVIL)).attached, 5000);
  const v = vm(sw, EVIL, ['--mode', 'sink', '--duration', '2']);
  t.teardown(() => stopProc(v));
  await waitAttached(sw, EVIL);
  t.ok((await sw.port(EVIL)).ready, 'a real VM attaches to the port afterwards');
  t.equal((await v.result).code, 0, 'and exits cleanly');
}

/** One attack: a switch, the bystander, the attack, then every check. */
function attack(
  name: string,
  fn: (t: Test, sw: SwitchProc) => Promise<void>,
  opts: { seconds?: number; extra?: Record<string, unknown> } = {},
): void {
  t.test(name, async (t) => {
    const sw = await startSwitch(t, bystanderConfig([{ name: EVIL }], opts.extra ?? {}));
    const by = await startBystander(t, sw, { rate: 20000, seconds: opts.seconds ?? 3 });
    await fn(t, sw);
    t.ok(alive(sw), 'the switch is still running');
    await realVmAttaches(t, sw);
    await by.check(t);
    t.ok(alive(sw), 'the switch is still running at the end');
  });
}

/** An fd attack on one vring fd request: refused with the expected words, connection dropped, no fd left behind. */
function fdAttack(name: string, req: number, what: string, open: (dir: string) => { fd: number; done?: () => void }, expect: RegExp, repeat = 1): void {
  attack(name, async (t, sw) => {
    const dir = tempDir(t);
    const logFrom = sw.stderr().length;
    const before = await baselineFds(sw);
    // What the attacking fds refer to (files and eventfds; null for a socket or pipe), to look for in the switch after.
    const sent = new Set<string>();
    for (let i = 0; i < repeat; i++) {
      const f = open(dir);
      const id = fileId('self', f.fd);
      if (id !== null) sent.add(id);
      try {
        const how = await attachWithFd(sw, req, 0, f.fd);
        if (i === 0) t.equal(how, 'eof', 'the switch closes the connection');
      } finally {
        closeFd(f.fd);
        f.done?.();
      }
    }
    await waitFor('port evil to be free', async () => !(await sw.port(EVIL)).attached, 5000);
    const after = await settledFds(sw, before);
    // Not above the count before: the bystander may have finished meanwhile and closed its own fds, so fewer is no leak.
    t.ok(after <= before, `the switch's fd count is no higher than before after ${repeat} attempt(s) (${after}, before ${before})`, { fds: fdList(sw) });
    t.same(fileIds(sw.child.pid!).filter((id) => sent.has(id)), [], 'and it holds none of the attacking fds');
    const refusals = await waitForLogLines(sw, logFrom, (l) => typeof l.msg === 'string' && l.msg.includes('malformed request'), repeat);
    t.equal(refusals.length, repeat, `each attempt is refused and logged (${refusals.length})`);
    const msg = String(refusals[0]?.msg);
    t.match(msg, new RegExp(`${what}: vring 0 (kick|call|err) fd is not an eventfd`), 'the refusal names the request and the vring');
    t.match(msg, expect, 'and says what the fd is');
    t.equal(refusals[0]?.port, EVIL, 'and the port');
  });
}

fdAttack('call fd = a read-only regular file', Req.SET_VRING_CALL, 'SET_VRING_CALL', (dir) => {
  const file = path.join(dir, 'ro');
  fs.writeFileSync(file, 'x');
  return { fd: fs.openSync(file, 'r') };
}, /it is a regular file \(.*\/ro\)/);

fdAttack('call fd = /dev/zero', Req.SET_VRING_CALL, 'SET_VRING_CALL', () => ({ fd: fs.openSync('/dev/zero', 'r') }), /it is a character device \(\/dev\/zero\)/);

/**
 * The write end of a pipe whose reader never reads: a FIFO (a named pipe:
 * the same kernel object as pipe(2); Node has no pipe(2), and a child's
 * stdio "pipe" is a socketpair). `fill` writes until the pipe is full.
 */
function unreadPipe(dir: string, fill: boolean): { fd: number; done: () => void } {
  const fifo = path.join(dir, `fifo-${Math.random().toString(36).slice(2)}`);
  const r = spawnSync('mkfifo', [fifo]);
  if (r.status !== 0) throw new Error(`mkfifo failed: ${r.stderr}`);
  const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;
  const reader = fs.openSync(fifo, O_RDONLY | O_NONBLOCK); // held open, never read
  const fd = fs.openSync(fifo, O_WRONLY | O_NONBLOCK);
  if (fill) {
    const chunk = Buffer.alloc(65536, 1);
    for (let i = 0; i < 64; i++) {
      try {
        fs.writeSync(fd, chunk);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
        throw e;
      }
    }
  }
  return { fd, done: () => fs.closeSync(reader) };
}

fdAttack('call fd = the write end of a pipe nobody reads', Req.SET_VRING_CALL, 'SET_VRING_CALL', (dir) => unreadPipe(dir, false), /it is a FIFO/);
fdAttack('call fd = a pipe nobody reads, its buffer full', Req.SET_VRING_CALL, 'SET_VRING_CALL', (dir) => unreadPipe(dir, true), /it is a FIFO/);

fdAttack('kick fd = a regular file (not pollable), 200 times: fd count stable', Req.SET_VRING_KICK, 'SET_VRING_KICK', (dir) => {
  const file = path.join(dir, 'kick');
  fs.writeFileSync(file, 'x');
  return { fd: fs.openSync(file, 'r') };
}, /it is a regular file/, 200);

fdAttack('err fd = a directory', Req.SET_VRING_ERR, 'SET_VRING_ERR', (dir) => ({ fd: fs.openSync(dir, 'r') }), /it is a directory/);

attack('2,000 failed attaches leave the switch fd count where it was', async (t, sw) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, 'x');
  const before = await baselineFds(sw);
  const kinds = [Req.SET_VRING_KICK, Req.SET_VRING_CALL, Req.SET_VRING_ERR];
  const n = Number(process.env.HOSTILE_ATTACHES ?? 2000);
  const t0 = Date.now();
  for (let i = 0; i < n; i++) {
    const fd = fs.openSync(file, 'r');
    try {
      await attachWithFd(sw, kinds[i % 3], i % 2, fd);
    } finally {
      closeFd(fd);
    }
  }
  await waitFor('port evil to be free', async () => !(await sw.port(EVIL)).attached, 5000);
  const ms = Date.now() - t0;
  const after = await settledFds(sw, before);
  // No higher (the bystander may have finished and closed its own fds meanwhile).
  t.ok(after <= before, `switch fds: ${before} before, ${after} after ${n} failed attaches (${ms} ms)`, { fds: fdList(sw) });
}, { seconds: 15 });

attack('a silent connection is closed after the handshake deadline; the real VM then attaches', async (t, sw) => {
  const logFrom = sw.stderr().length;
  const c = RawClient.connect(path.join(sw.dir, `${EVIL}.sock`));
  t.teardown(() => c.close());
  await waitFor('the silent connection to hold the port', async () => (await sw.port(EVIL)).attached, 5000);
  const t0 = Date.now();
  const closed = await c.waitClosed(5000);
  const held = Date.now() - t0;
  t.equal(closed.how, 'eof', 'the switch closes the silent connection');
  t.ok(held < 3000, `within the deadline (1 s) and some slack: ${held} ms`);
  // The log line follows the close: the client can see EOF before the switch's logger has written it.
  const find = () => logLines(sw, logFrom).find((l) => l.msg === 'front-end disconnected' && String(l.reason).includes('handshake not completed'));
  await waitFor('the disconnect in the log', () => find() !== undefined, 3000).catch(() => undefined);
  const line = find();
  t.ok(line, 'the disconnect is logged with the reason', { log: line ? undefined : sw.stderr().slice(logFrom).slice(-3000) });
  t.equal(line?.port, EVIL, 'and the port');
}, { extra: { limits: { handshakeSec: 1 } } });

t.test('a front-end that claimed the device (SET_OWNER) is not dropped while its guest boots', async (t) => {
  // QEMU sends SET_OWNER at connect and starts the rings only when its guest's
  // driver comes up, which may be long after limits.handshakeSec.
  const sw = await startSwitch(t, bystanderConfig([{ name: EVIL }], { limits: { handshakeSec: 1 } }));
  const c = RawClient.connect(path.join(sw.dir, `${EVIL}.sock`));
  t.teardown(() => c.close());
  c.send(Req.GET_FEATURES, FLAG_VERSION);
  t.ok(await c.recv(), 'GET_FEATURES answered');
  c.send(Req.SET_OWNER, FLAG_VERSION);
  await sleep(2500);
  t.ok(c.idleAndOpen(), 'still connected 2.5 s later (deadline 1 s)');
  t.ok((await sw.port(EVIL)).attached, 'and the port is still held by it');
});

attack('a front-end that disconnects mid-handshake, 200 times', async (t, sw) => {
  const before = await baselineFds(sw);
  for (let i = 0; i < 200; i++) {
    const c = RawClient.connect(path.join(sw.dir, `${EVIL}.sock`));
    const kick = eventfdCreate();
    const call = eventfdCreate();
    try {
      c.send(Req.GET_FEATURES, FLAG_VERSION);
      if (!(await c.recv())) throw new Error('no GET_FEATURES reply');
      c.send(Req.SET_VRING_CALL, FLAG_VERSION, u64(0n), [call]);
      if (i % 2 === 0) c.send(Req.SET_VRING_KICK, FLAG_VERSION, u64(1n), [kick]);
      else c.send(Req.SET_VRING_ERR, FLAG_VERSION, u64(BigInt(VRING_NOFD_MASK)));
      if (i % 4 === 0) await sleep(1);
    } finally {
      c.close();
      closeFd(kick);
      closeFd(call);
    }
  }
  await waitFor('port evil to be free', async () => !(await sw.port(EVIL)).attached, 5000);
  const after = await settledFds(sw, before);
  t.ok(after <= before, `switch fds no higher after 200 half handshakes (${after}, before ${before})`, { fds: fdList(sw) });
}, { seconds: 5 });

/**
 * A front-end that sets its port up properly (rings in a memfd, eventfds
 * for kick and call), then turns its rx call eventfd into a trap: it clears
 * O_NONBLOCK on its own copy (the flag belongs to the open file description
 * the switch shares) and writes the counter's maximum, so one more write of
 * 1 would sleep until someone reads. Then it makes the switch call: one rx
 * posting the switch must refuse (a readable descriptor: bad-rx-desc,
 * completed empty, and the VM asked for interrupts).
 */
attack('a call eventfd made blocking and saturated: the switch stays responsive, the port is dropped as call-blocked', async (t, sw) => {
  const NUM = 16;
  const MEM = 0x10000;
  const UA = 0x7f00_0000_0000n;
  const RING_AT = [{ desc: 0x0, avail: 0x100, used: 0x200 }, { desc: 0x1000, avail: 0x1100, used: 0x1200 }];
  const c = RawClient.connect(path.join(sw.dir, `${EVIL}.sock`));
  const memFd = memfdCreate('call-trap', MEM);
  const kick = [eventfdCreate(), eventfdCreate()];
  const call = [eventfdCreate(), eventfdCreate()];
  t.teardown(() => {
    // Should the switch be stuck in the write (no fix), reading the counter frees it.
    setNonBlocking(call[0], true);
    eventfdDrain(call[0]);
    c.close();
    for (const fd of [memFd, ...kick, ...call]) closeFd(fd);
  });
  const acked = async (what: string) => {
    const r = await c.recv();
    t.equal(r?.payload.readBigUInt64LE(0), 0n, `${what}: acked`);
  };
  const table = await negotiateClassic(c, [{ guestPhysAddr: 0n, memorySize: BigInt(MEM), userspaceAddr: UA, mmapOffset: 0n }], [memFd]);
  t.equal(table?.payload.readBigUInt64LE(0), 0n, 'SET_MEM_TABLE: acked');
  for (let q = 0; q < 2; q++) {
    sendVringStart(c, q, NUM, UA, RING_AT[q], kick[q], call[q]);
    await acked(`vring ${q} enabled`);
  }
  await waitFor('port evil ready', async () => (await sw.port(EVIL)).ready, 5000);

  // The trap: blocking, and the counter at its maximum (0xfffffffffffffffe).
  const logFrom = sw.stderr().length;
  setNonBlocking(call[0], false);
  const max = Buffer.alloc(8);
  max.writeBigUInt64LE(0xffff_ffff_ffff_fffen);
  fs.writeSync(call[0], max);
  // One rx posting the switch completes empty (readable: bad-rx-desc), then a kick: the switch calls.
  const mem = mmapShared(memFd, MEM);
  const rx = new SplitRing(NUM, {
    desc: { buffer: mem, byteOffset: RING_AT[0].desc },
    avail: { buffer: mem, byteOffset: RING_AT[0].avail },
    used: { buffer: mem, byteOffset: RING_AT[0].used },
  });
  rx.setDesc(0, 0x8000, 2048, 0, 0);
  rx.avail[2] = 0;
  rx.avail[1] = 1;
  eventfdSignal(kick[0]);

  // The switch answers stats within 1 s, every time, while it handles the trap.
  let slowest = 0;
  const end = Date.now() + 1500;
  while (Date.now() < end) {
    const t0 = Date.now();
    const st = await within(sw.stats(), 1000);
    if (st === null) {
      t.fail('the switch did not answer stats within 1 s: it is stuck (in the call write?)');
      return;
    }
    slowest = Math.max(slowest, Date.now() - t0);
    await sleep(50);
  }
  t.ok(slowest < 1000, `stats answered within 1 s every time (slowest ${slowest} ms)`);

  const closed = await c.waitClosed(5000);
  t.ok(closed.how === 'eof' || closed.how === 'reset', `the hostile connection was closed (${closed.how})`);
  await waitFor('port evil detached', async () => !(await sw.port(EVIL)).attached, 5000);
  const drops = counters(await sw.port(EVIL)).drops;
  t.equal(drops['call-blocked'], 1, 'counted once as call-blocked');
  t.equal(drops['bad-rx-desc'], 1, 'the refused posting was counted (the call was for it)');
  const [line] = await waitForLogLines(sw, logFrom, (l) => l.msg === 'front-end disconnected' && String(l.reason).includes('call-blocked')).catch(() => [undefined]);
  t.ok(line, 'the disconnect is logged with reason call-blocked', { log: line ? undefined : sw.stderr().slice(logFrom).slice(-3000) });
  t.equal(line?.port, EVIL, 'and the port');
  // The counter is untouched: the switch's write never went in.
  setNonBlocking(call[0], true);
  t.equal(eventfdDrain(call[0]), 0xffff_ffff_ffff_fffe, 'the saturated counter was not written');
}, { seconds: 4 });
