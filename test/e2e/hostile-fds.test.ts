/**
 * Hostile notifier fds and connections against a real switch process. Each
 * attack runs on port `evil` beside a bystander pair that must forward
 * every frame verified, during and after the attack, with the ledger
 * balanced. The switch must refuse the message (a ProtocolError naming the
 * vring and what the fd is), drop that connection, keep its own fd count,
 * stay alive, and take the next front-end on the same port.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { closeFd, eventfdCreate } from '../../bindings';
import { u64 } from '../../src/vhost/codec';
import { FLAG_VERSION, Req, VRING_NOFD_MASK } from '../../src/vhost/protocol';
import { bystanderConfig, startBystander } from '../helpers/bystander';
import { type SwitchProc, sleep, startSwitch, stopProc, tempDir, vm, waitAttached, waitFor } from '../helpers/procs';
import { RawClient } from '../helpers/unit-vhost-client';

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

/**
 * The fd count once it settles: control-socket connections from stats
 * requests come and go, so wait (bounded) for the count to reach `want`.
 */
async function baselineFds(sw: SwitchProc): Promise<number> {
  await sleep(500);
  return fdCount(sw);
}

async function settledFds(sw: SwitchProc, want: number): Promise<number> {
  const deadline = Date.now() + 5000;
  let n = fdCount(sw);
  while (n !== want && Date.now() < deadline) {
    await sleep(50);
    n = fdCount(sw);
  }
  return n;
}
const alive = (sw: SwitchProc): boolean => sw.child.exitCode === null && sw.child.signalCode === null;

/** Log lines (JSON on stderr) from offset `from` on. */
function logLines(sw: SwitchProc, from = 0): Record<string, unknown>[] {
  return sw.stderr().slice(from).split('\n').filter((l) => l.startsWith('{')).map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      return { unparsed: l };
    }
  });
}

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
    for (let i = 0; i < repeat; i++) {
      const f = open(dir);
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
    t.equal(after, before, `the switch's fd count is where it was after ${repeat} attempt(s) (${before})`, { fds: fdList(sw) });
    const refusals = logLines(sw, logFrom).filter((l) => typeof l.msg === 'string' && (l.msg as string).includes(`malformed request`));
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
  t.equal(after, before, `switch fds: ${before} before, ${after} after ${n} failed attaches (${ms} ms)`, { fds: fdList(sw) });
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
  const line = logLines(sw, logFrom).find((l) => l.msg === 'front-end disconnected' && String(l.reason).includes('handshake not completed'));
  t.ok(line, 'the disconnect is logged with the reason', { log: line ? undefined : sw.stderr().slice(logFrom).slice(-3000) });
  t.equal(line?.port, EVIL, 'and the port');
}, { extra: { limits: { handshakeSec: 1 } } });

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
  t.equal(after, before, `switch fds unchanged after 200 half handshakes (${before})`, { fds: fdList(sw) });
}, { seconds: 5 });
