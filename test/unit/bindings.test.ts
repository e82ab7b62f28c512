/**
 * Tests for the native addon (bindings/). Uses a real forked child process
 * connected by a Unix socket so fd passing (SCM_RIGHTS), shared memfd
 * mappings and cross-process eventfd signalling are exercised for real.
 */
import t from 'tap';
import { fork, spawnSync, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as v8 from 'v8';
import * as vm from 'vm';
import { Worker } from 'worker_threads';
import { tempDir } from '../helpers/tmp';
import { sleep } from '../helpers/wait';
import {
  adviseHugePages,
  closeFd,
  HUGE_PAGE_SIZE,
  dupFd,
  eventfdCreate,
  eventfdDrain,
  eventfdSignal,
  fdSeals,
  fdSize,
  FdWatcher,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  guardMapping,
  memfdCreate,
  memfdCreateSealed,
  mmapShared,
  munmap,
  NativeError,
  pollReadable,
  setNonBlocking,
  socketPair,
  tapSetMtu,
  tapSetOffload,
  unixAccept,
  unixConnect,
  unixListen,
  unixRecvMsg,
  unixSendMsg,
} from '../../bindings';

const CHILD = path.join(__dirname, 'fixtures', 'bindings-child.js');
const BINDINGS = path.join(__dirname, '..', '..', 'bindings', 'index.js');

const parentPattern = (i: number): number => (i * 7 + 3) & 0xff;
const childPattern = (i: number): number => (i * 13 + 5) & 0xff;

/** Resolve on the first readable event for fd (via FdWatcher), then close the watcher. */
function waitReadable(fd: number, timeoutMs = 2000): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = new FdWatcher(fd, () => {
      clearTimeout(timer);
      w.close();
      resolve();
    });
    const timer = setTimeout(() => {
      w.close();
      reject(new Error(`fd ${fd} not readable within ${timeoutMs} ms`));
    }, timeoutMs);
    w.start();
  });
}

function catchErr(fn: () => unknown): NativeError {
  try {
    fn();
  } catch (e) {
    return e as NativeError;
  }
  throw new Error('expected a throw');
}

interface Reply {
  id?: number;
  ready?: boolean;
  ok?: boolean;
  result?: Record<string, unknown>;
  error?: string;
}

// ---- shared parent/child fixture --------------------------------------------

const tmp = tempDir(t, 'zcs-bindings-');
const sockPath = path.join(tmp, 'ctl.sock');
let listenFd = -1;
let conn = -1;
let child: ChildProcess | undefined;
let childExit: Promise<number | null> = Promise.resolve(null);
let nextId = 1;
const pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();

function request(msg: Record<string, unknown>): Promise<Record<string, unknown>> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, {
      resolve: (r) => (r.ok ? resolve(r.result ?? {}) : reject(new Error(`child: ${r.error}`))),
      reject,
    });
    child!.send({ ...msg, id });
  });
}

t.before(async () => {
  listenFd = unixListen(sockPath, 4);
  const c = fork(CHILD, [sockPath], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  child = c;
  childExit = new Promise((resolve) => c.on('exit', (code) => resolve(code)));
  c.on('exit', (code, sig) => {
    for (const p of pending.values()) p.reject(new Error(`child exited (${code ?? sig})`));
    pending.clear();
  });
  const ready = new Promise<void>((resolve, reject) => {
    c.on('message', (m: Reply) => {
      if (m.ready) return resolve();
      const p = m.id !== undefined ? pending.get(m.id) : undefined;
      if (p) {
        pending.delete(m.id!);
        p.resolve(m);
      }
    });
    c.once('exit', () => reject(new Error('child exited before ready')));
  });
  // The child connects on its own; accept when the listener becomes readable.
  await waitReadable(listenFd);
  conn = unixAccept(listenFd);
  await ready;
  if (conn < 0) throw new Error('accept returned -1 after readable');
});

t.teardown(async () => {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await childExit;
  for (const fd of [conn, listenFd]) if (fd >= 0) closeFd(fd);
});

// ---- tests ------------------------------------------------------------------

t.test('memfd shared with the child over SCM_RIGHTS, both directions', async (t) => {
  const size = 64 * 1024;
  const half = size / 2;
  const mfd = memfdCreate('zcsw-test-share', size);
  t.equal(fdSize(mfd), size, 'ftruncate sized the memfd');
  const ab = mmapShared(mfd, size);
  t.equal(ab.byteLength, size);
  const u8 = new Uint8Array(ab);
  for (let i = 0; i < half; i++) u8[i] = parentPattern(i);

  t.equal(unixSendMsg(conn, Uint8Array.of(0x4d), [mfd]), 1, 'one data byte carries the fd');
  const r = await request({ cmd: 'mapShared', half });
  t.same(r, { data: [0x4d], nfds: 1, size, matches: half }, 'child saw our bytes through its own mapping');
  let childBytesOk = 0;
  for (let i = half; i < size; i++) if (u8[i] === childPattern(i)) childBytesOk++;
  t.equal(childBytesOk, half, "child's writes are visible in our mapping");
  munmap(ab);
  closeFd(mfd);

  // Child -> parent.
  const r2 = await request({ cmd: 'sendMem', size: 8192 });
  t.same(r2, { sent: 1 });
  await waitReadable(conn);
  const buf = new Uint8Array(16);
  const fds: number[] = [];
  t.equal(unixRecvMsg(conn, buf, fds), 1);
  t.equal(buf[0], 0x43);
  t.equal(fds.length, 1, 'received exactly one fd');
  t.equal(fdSize(fds[0]), 8192);
  const theirs = new Uint8Array(mmapShared(fds[0], 8192));
  let ok = 0;
  for (let i = 0; i < 8192; i++) if (theirs[i] === childPattern(i)) ok++;
  t.equal(ok, 8192, "child's memfd content readable here");
  munmap(theirs.buffer as ArrayBuffer);
  t.equal(theirs.length, 0, 'views over a munmapped buffer are emptied');
  closeFd(fds[0]);
});

t.test('eventfd signalled by the child wakes an FdWatcher here', async (t) => {
  const efd = eventfdCreate();
  let fired = 0;
  let onFire!: () => void;
  const firedOnce = new Promise<void>((r) => (onFire = r));
  const w = new FdWatcher(efd, () => {
    fired++;
    w.stop(); // no drain here: count the signals after the child is done
    onFire();
  });
  w.start();
  t.equal(unixSendMsg(conn, Uint8Array.of(0x45), [efd]), 1);
  const r = await request({ cmd: 'signalEventfd', n: 3 });
  t.same(r, { nfds: 1 });
  await firedOnce;
  t.equal(fired, 1);
  t.equal(eventfdDrain(efd), 3, 'counter holds all three signals');
  t.equal(eventfdDrain(efd), 0, 'drained counter reads 0 (EAGAIN)');

  eventfdSignal(efd);
  await sleep(30);
  t.equal(fired, 1, 'a stopped watcher does not fire');

  const again = new Promise<void>((r) => (onFire = r));
  w.start();
  await again;
  t.equal(fired, 2, 'restarted watcher fires for the pending signal');
  w.close();
  w.close();
  t.doesNotThrow(() => w.stop(), 'stop after close is a no-op');
  t.throws(() => w.start(), /closed/, 'start after close throws');
  t.equal(eventfdDrain(efd), 1);
  closeFd(efd);
});

t.test('pollReadable', async (t) => {
  const efd = eventfdCreate();
  const fds = Int32Array.of(-1, efd);
  const ready = new Uint8Array(2).fill(9);
  let t0 = Date.now();
  t.equal(pollReadable(fds, 50, ready), 0, 'times out with nothing readable');
  t.ok(Date.now() - t0 >= 45, 'actually waited for the timeout');
  t.same(Array.from(ready), [0, 0]);

  eventfdSignal(efd);
  t0 = Date.now();
  t.equal(pollReadable(fds, 2000, ready), 1);
  t.ok(Date.now() - t0 < 1000, 'returned promptly');
  t.same(Array.from(ready), [0, 1], 'negative fd ignored, eventfd ready');
  t.equal(pollReadable(Int32Array.of(efd), 0), 1, 'readyOut is optional');
  t.equal(eventfdDrain(efd), 1);

  t.throws(() => pollReadable([efd] as unknown as Int32Array, 0), TypeError);
  t.throws(() => pollReadable(fds, 0, new Uint8Array(1)), RangeError);
  t.throws(() => pollReadable(fds, 1.5), RangeError);
  closeFd(efd);
});

t.test('munmap detaches; GC finalizer unmaps; no double unmap', async (t) => {
  const mfd = memfdCreate('zcsw-test-unmap', 3 * 4096);
  const ab = mmapShared(mfd, 4096, 4096);
  const view = new Uint8Array(ab);
  view[0] = 1;
  munmap(ab);
  t.equal(ab.byteLength, 0, 'detached');
  t.equal(view.length, 0, 'views see nothing');
  const e = catchErr(() => munmap(ab));
  t.type(e, Error);
  t.equal(e.code, 'EINVAL', 'second munmap throws');
  t.throws(() => munmap(new ArrayBuffer(8)), { code: 'EINVAL' }, 'plain ArrayBuffer is not a mapping');
  t.throws(() => munmap(new Uint8Array(4) as unknown as ArrayBuffer), TypeError);
  t.throws(() => mmapShared(mfd, 0), RangeError, 'size 0');
  t.throws(() => mmapShared(mfd, 4096, 100), RangeError, 'unaligned offset');
  t.throws(() => mmapShared(mfd, -1), RangeError);
  closeFd(mfd);

  const r = await request({ cmd: 'gcFinalizer', count: 32 });
  t.equal(r.before, 32, 'child had 32 live mappings');
  t.equal(r.after, 0, 'GC finalizers unmapped all of them');
  t.equal(r.oldAddrMapsBefore, 1);
  t.equal(r.freshMaps, 1, "munmapped buffer's finalizer left the newer mapping alone");
  t.equal(r.freshValue, 42);
});

/** This process's mapping of memfd `name`: its start address and smaps fields (kB). */
function smapsOf(name: string): { start: bigint; size: number; fields: Record<string, number> }[] {
  const out: { start: bigint; size: number; fields: Record<string, number> }[] = [];
  let cur: (typeof out)[number] | null = null;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) {
      cur = m[3].includes(`memfd:${name}`) ? { start: BigInt('0x' + m[1]), size: Number(BigInt('0x' + m[2]) - BigInt('0x' + m[1])), fields: {} } : null;
      if (cur) out.push(cur);
      continue;
    }
    const f = /^(\w+):\s+(\d+) kB/.exec(line);
    if (cur && f) cur.fields[f[1]] = Number(f[2]);
  }
  return out;
}

t.test('aligned mappings and huge pages (the Shared Buffers region)', async (t) => {
  const size = 4 * HUGE_PAGE_SIZE + 4096;
  const mfd = memfdCreate('zcsw-test-huge', size);
  t.teardown(() => closeFd(mfd));
  const a = mmapShared(mfd, size, 0, HUGE_PAGE_SIZE);
  const [m] = smapsOf('zcsw-test-huge');
  t.equal(m.start % BigInt(HUGE_PAGE_SIZE), 0n, 'mapped at a 2 MiB boundary');
  t.equal(m.size, size, 'exactly the size asked for (the alignment slack was released)');
  t.throws(() => mmapShared(mfd, 4096, 0, 3000), RangeError, 'align must be a power of two');
  t.throws(() => adviseHugePages(new ArrayBuffer(8)), RangeError, 'only live mappings');
  t.throws(() => adviseHugePages(a, 0), RangeError, 'a length of 0 is refused');
  t.throws(() => adviseHugePages(a, -1), RangeError, 'a negative length is refused');
  const err = adviseHugePages(a, size + 1);
  t.ok(err === null || /^E[A-Z]+$/.test(err), `null or an errno name (${err})`);
  if (err === null) {
    const pmd = (x: { fields: Record<string, number> }) => (x.fields.ShmemPmdMapped ?? 0) + (x.fields.FilePmdMapped ?? 0);
    t.ok(pmd(smapsOf('zcsw-test-huge')[0]) >= 4 * 2048, 'the four whole 2 MiB extents are huge pages');
    // A second process-like mapping of the same memfd (what a VM does) uses them too.
    const b = mmapShared(mfd, size, 0, HUGE_PAGE_SIZE);
    const v = new Uint8Array(b);
    let sum = 0;
    for (let i = 0; i < size; i += 4096) sum += v[i];
    t.equal(sum, 0);
    const maps = smapsOf('zcsw-test-huge');
    t.equal(maps.length, 2);
    t.ok(maps.every((x) => pmd(x) >= 4 * 2048), 'a second aligned mapping maps them as huge pages as well');
    munmap(b);
  } else {
    t.comment(`kernel refused MADV_COLLAPSE (${err}): the region stays on 4 KiB pages, which the switch logs`);
  }
  munmap(a);
});

t.test('errors: codes, errno, argument validation', async (t) => {
  const missing = path.join(tmp, 'nope.sock');
  const e = catchErr(() => unixConnect(missing));
  t.type(e, Error);
  t.equal(e.code, 'ENOENT');
  t.equal(e.errno, 2);
  t.equal(e.syscall, 'connect');
  t.match(e.message, /^unixConnect: No such file or directory/);

  t.match(catchErr(() => closeFd(-1)), { code: 'EBADF', errno: 9, message: /^closeFd: / });
  t.match(catchErr(() => unixListen(sockPath)), { code: 'EADDRINUSE' }, 'existing path is not unlinked');
  t.match(catchErr(() => fdSize(-1)), { code: 'EBADF' });
  t.match(catchErr(() => dupFd(-1)), { code: 'EBADF' });

  const anyFn = <T>(f: T) => f as unknown as (...a: unknown[]) => unknown;
  t.throws(() => anyFn(memfdCreate)(1, 10), TypeError);
  t.throws(() => anyFn(memfdCreate)('x'), TypeError, 'missing argument');
  t.throws(() => anyFn(memfdCreate)('a\0b', 10), TypeError, 'embedded NUL');
  t.throws(() => anyFn(closeFd)('3'), TypeError);
  t.throws(() => closeFd(1.5), RangeError);
  t.throws(() => closeFd(2 ** 40), RangeError);
  t.throws(() => anyFn(unixSendMsg)(conn, [1, 2]), TypeError, 'data must be a Uint8Array');
  t.throws(() => unixSendMsg(conn, Uint8Array.of(1), new Array(17).fill(0)), RangeError, 'max 16 fds');
  t.throws(() => unixSendMsg(conn, new Uint8Array(0), [0]), RangeError, 'fds need a data byte');
  t.throws(() => anyFn(unixRecvMsg)(conn, new Uint8Array(4)), TypeError, 'fdsOut required');
  t.throws(() => unixRecvMsg(conn, new Uint8Array(4), [], 5), RangeError, 'maxBytes > buf');
  t.throws(() => anyFn(setNonBlocking)(0, 1), TypeError);
  t.throws(() => anyFn(FdWatcher)(0, () => undefined), TypeError, 'needs new');
  t.throws(() => new FdWatcher(0, undefined as unknown as () => void), TypeError);
  t.throws(() => new FdWatcher(-1, () => undefined), RangeError);
  const long = unixListenLong();
  t.equal(long.name, 'RangeError');
  t.match(long.message, /107/, 'names the sun_path limit');
});

function unixListenLong(): NativeError {
  return catchErr(() => unixListen(path.join(tmp, 'x'.repeat(120))));
}

t.test('socketPair: fd passing, short reads, EAGAIN, EPIPE', async (t) => {
  const [a, b] = socketPair();
  const buf = new Uint8Array(8);
  const fds: number[] = [];
  t.equal(unixRecvMsg(b, buf, fds), -1, 'EAGAIN -> -1');
  const efd = eventfdCreate();
  t.equal(unixSendMsg(a, Uint8Array.of(1, 2, 3, 4, 5), [efd, efd]), 5);
  t.equal(unixRecvMsg(b, buf, fds, 2), 2, 'maxBytes limits the read');
  t.same(Array.from(buf.subarray(0, 2)), [1, 2]);
  t.equal(fds.length, 2, 'both fds arrived with the first bytes');
  t.not(fds[0], efd, 'received fds are new descriptors');
  eventfdSignal(fds[1]);
  t.equal(eventfdDrain(efd), 1, 'received fd refers to the same eventfd');
  const more: number[] = [];
  t.equal(unixRecvMsg(b, buf, more), 3);
  t.same(more, [], 'fds are delivered only once');
  for (const fd of fds) closeFd(fd);

  const d = dupFd(efd);
  t.not(d, efd);
  eventfdSignal(d);
  t.equal(eventfdDrain(efd), 1, 'dup shares the counter');
  closeFd(d);
  closeFd(efd);

  setNonBlocking(a, false);
  setNonBlocking(a, true);
  closeFd(b);
  t.match(catchErr(() => unixSendMsg(a, Uint8Array.of(1))), { code: 'EPIPE', message: /^unixSendMsg: Broken pipe/ });
  t.equal(unixRecvMsg(a, buf, []), 0, 'closed peer reads as EOF');
  closeFd(a);
});

t.test('unixRecvMsg: MSG_CTRUNC -> ECTRUNC, fds that arrived are kept', async (t) => {
  // In a process whose fd table is full but for one slot, receiving three
  // fds installs one and the kernel reports MSG_CTRUNC for the rest.
  const code = `
    const b = require(process.argv[1]);
    const [a, c] = b.socketPair();
    const e = b.eventfdCreate();
    b.unixSendMsg(a, Uint8Array.of(7, 8), [e, e, e]);
    const fillers = [];
    try { for (;;) fillers.push(b.eventfdCreate()); } catch (err) { if (err.code !== 'EMFILE') throw err; }
    b.closeFd(fillers.pop());
    const fds = [];
    let out;
    try { out = { n: b.unixRecvMsg(c, new Uint8Array(8), fds) }; }
    catch (err) { out = { code: err.code, bytesRead: err.bytesRead }; }
    for (const f of fillers) b.closeFd(f);
    out.fds = fds.length;
    process.stdout.write(JSON.stringify(out));
  `;
  const r = spawnSync('/bin/sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, '-e', code, BINDINGS], {
    encoding: 'utf8',
    timeout: 10000,
  });
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout), { code: 'ECTRUNC', bytesRead: 2, fds: 1 });
});

t.test('FdWatcher.close() releases its callback: the owner it closes over can be collected', async (t) => {
  // The switch makes a watcher per connection whose callback closes over
  // the connection that holds the watcher; a closed watcher that kept its
  // callback kept every closed connection alive (an RSS leak per front-end).
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const refs: WeakRef<object>[] = [];
  for (let i = 0; i < 40; i++) {
    const efd = eventfdCreate();
    const owner: { watcher?: FdWatcher; big: Buffer } = { big: Buffer.alloc(64 * 1024) };
    owner.watcher = new FdWatcher(efd, () => void owner.big.length);
    owner.watcher.start();
    if (i % 2) owner.watcher.stop(); // stopped, then closed
    owner.watcher.close();
    closeFd(efd);
    refs.push(new WeakRef(owner));
  }
  for (let k = 0; k < 5; k++) {
    await sleep(10);
    gc();
  }
  const alive = refs.filter((r) => r.deref() !== undefined).length;
  t.equal(alive, 0, `closed watchers' owners collected (${alive} of ${refs.length} still alive)`);
});

t.test('FdWatcher inside worker_threads', async (t) => {
  // The worker watches an eventfd we signal from here. Modes: 'ok' closes
  // the watcher so the worker exits by itself; 'throw' throws from the
  // callback, which must surface as the worker's 'error'; 'terminate' keeps
  // the watcher armed and gets terminate()d (teardown must not abort).
  const code = `
    const { parentPort, workerData } = require('worker_threads');
    const b = require(workerData.bindings);
    const efd = b.eventfdCreate();
    const w = new b.FdWatcher(efd, () => {
      const n = b.eventfdDrain(efd);
      if (workerData.mode !== 'terminate') w.close();
      if (workerData.mode === 'throw') throw new Error('boom from watcher');
      parentPort.postMessage({ drained: n });
      // Leave a stopped and an unref'd watcher open: teardown must cope.
      const x = new b.FdWatcher(b.eventfdCreate(), () => {});
      const y = new b.FdWatcher(b.eventfdCreate(), () => {}); y.start(); y.unref();
    });
    w.start();
    parentPort.postMessage({ efd });
  `;
  const run = (mode: 'ok' | 'throw' | 'terminate') =>
    new Promise<{ msgs: unknown[]; error?: Error; exitCode: number }>((resolve) => {
      const msgs: unknown[] = [];
      let error: Error | undefined;
      const w = new Worker(code, { eval: true, workerData: { bindings: BINDINGS, mode } });
      w.on('message', (m: { efd?: number; drained?: number }) => {
        msgs.push(m);
        if (m.efd !== undefined) eventfdSignal(m.efd);
        if (m.drained !== undefined && mode === 'terminate') void w.terminate();
      });
      w.on('error', (e) => (error = e));
      w.on('exit', (exitCode) => resolve({ msgs, error, exitCode }));
    });

  const ok = await run('ok');
  t.equal(ok.exitCode, 0, 'worker exits on its own once its only ref\'d watcher is closed');
  t.equal(ok.error, undefined);
  t.same(ok.msgs[1], { drained: 1 }, 'worker watcher fired and drained our signal');

  const bad = await run('throw');
  t.equal(bad.exitCode, 1);
  t.match(bad.error, { message: 'boom from watcher' }, 'callback exception is an uncaught exception');

  const term = await run('terminate');
  t.same(term.msgs[1], { drained: 1 });
  t.equal(term.error, undefined, 'terminate() with an armed watcher is clean');
  t.equal(term.exitCode, 1, 'terminated worker reports exit code 1');
});

const FAULT_CHILD = path.join(__dirname, 'fixtures', 'fault-child.js');

t.test('SIGBUS guard: a fault in a guarded mapping is survived and reported', async (t) => {
  const r = spawnSync(process.execPath, [FAULT_CHILD, 'guarded'], { encoding: 'utf8', timeout: 20000 });
  t.equal(r.signal, null, `the child was not killed (${r.stderr})`);
  t.equal(r.status, 0, 'the child exited 0');
  const out = JSON.parse(r.stdout.trim()) as Record<string, unknown>;
  t.same(out, { before: 0, after: 1, read: [0, 0], written: 9, ids: [77], again: [] },
    'one fault counted; the mapping reads zeros and takes writes; its id reported once');
});

t.test('SIGBUS guard: an unguarded mapping still dies of SIGBUS', async (t) => {
  const r = spawnSync(process.execPath, [FAULT_CHILD, 'unguarded'], { encoding: 'utf8', timeout: 20000 });
  t.equal(r.stdout, 'touching\n', 'nothing after the touch ran');
  t.equal(r.signal, 'SIGBUS', 'killed by SIGBUS, as without the guard');
});

const CALL_CHILD = path.join(__dirname, 'fixtures', 'call-child.js');

t.test('eventfdCall: a saturated eventfd its owner made blocking returns -1 quickly, never blocks', async (t) => {
  // In a child: without the watchdog the write sleeps forever (the timeout kills it).
  const r = spawnSync(process.execPath, [CALL_CHILD], { encoding: 'utf8', timeout: 5000, killSignal: 'SIGKILL' });
  t.equal(r.signal, null, `the child did not hang in write(2) (killed: ${r.signal ?? 'no'} ${r.stderr})`);
  t.equal(r.status, 0, 'the child exited 0');
  type Blocked = { result: number; ms: number; counter: number };
  const out = JSON.parse(r.stdout.trim()) as {
    signal: number; healthy: { result: number; counter: number }; healthyBlocking: { result: number; counter: number };
    saturatedNonBlocking: { result: number }; saturatedBlocking: Blocked[]; worker: Blocked;
    cost: { plainNs: number; boundedNs: number; counter: number }; waitedMs: number;
  };
  t.ok(out.signal >= 34 + 6, `a real-time signal above glibc's and SIGRTMIN+6: ${out.signal}`);
  t.same(out.healthy, { result: 0, counter: 1 }, 'a healthy non-blocking eventfd: written');
  t.same(out.healthyBlocking, { result: 0, counter: 1 }, 'a healthy blocking eventfd: written');
  t.same(out.saturatedNonBlocking, { result: -1 }, 'saturated, non-blocking: -1 (EAGAIN)');
  for (const [i, b] of [...out.saturatedBlocking, out.worker].entries()) {
    const where = i < out.saturatedBlocking.length ? `main thread, try ${i + 1}` : 'worker thread';
    t.equal(b.result, -1, `saturated and blocking (${where}): -1`);
    t.ok(b.ms < 100, `within 100 ms (${where}): ${b.ms.toFixed(2)} ms`);
    t.equal(b.counter, 0xffff_ffff_ffff_fffe, `nothing was added to the counter (${where})`);
  }
  t.equal(out.cost.counter, 200000, 'every bounded call on a healthy fd was written');
  t.comment(`per call: plain write ${out.cost.plainNs.toFixed(0)} ns, with the watchdog ${out.cost.boundedNs.toFixed(0)} ns`);
  t.ok(out.waitedMs >= 95, `no stray watchdog tick afterwards: a 100 ms wait lasted ${out.waitedMs} ms`);
});

t.test('guardMapping argument checks', async (t) => {
  const fd = memfdCreate('guard-args', 4096);
  t.teardown(() => closeFd(fd));
  const buf = mmapShared(fd, 4096);
  t.throws(() => guardMapping(new ArrayBuffer(8), 1), RangeError, 'not a mapping');
  guardMapping(buf, 5);
  t.throws(() => guardMapping(buf, 6), RangeError, 'already guarded');
  munmap(buf);
  t.throws(() => guardMapping(buf, 7), RangeError, 'unmapped (the registration ended with it)');
});

t.test('sealed memfd: fdSeals, ftruncate refused', async (t) => {
  const sealed = memfdCreateSealed('sealed', 8192);
  const plain = memfdCreate('plain', 8192);
  t.teardown(() => {
    closeFd(sealed);
    closeFd(plain);
  });
  t.equal(fdSize(sealed), 8192);
  t.equal(fdSeals(sealed), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, 'SHRINK | GROW | SEAL');
  t.equal(fdSeals(plain), F_SEAL_SEAL, 'a memfd without MFD_ALLOW_SEALING reports only F_SEAL_SEAL');
  t.throws(() => fs.ftruncateSync(sealed, 0), { code: 'EPERM' });
  t.throws(() => fs.ftruncateSync(sealed, 16384), { code: 'EPERM' });
  t.equal(new Uint8Array(mmapShared(sealed, 8192))[8191], 0, 'still maps');
  const [a, b] = socketPair();
  t.teardown(() => {
    closeFd(a);
    closeFd(b);
  });
  t.throws(() => fdSeals(a), { code: 'EINVAL' }, 'a socket has no seals: EINVAL');
});

t.test('EOF after the child closes its end; child exits cleanly', async (t) => {
  t.same(await request({ cmd: 'closeSocket' }), {});
  await waitReadable(conn);
  const fds: number[] = [];
  t.equal(unixRecvMsg(conn, new Uint8Array(16), fds), 0, 'recvmsg returns 0 at EOF');
  t.same(fds, []);
  t.same(await request({ cmd: 'exitWithOpenWatchers' }), {});
  t.equal(await childExit, 0, 'child with open (unref\'d / stopped) watchers exits with code 0');
});

t.test('tapSetOffload / tapSetMtu: arguments checked, kernel errors named', async (t) => {
  t.throws(() => tapSetMtu('zcs0', 10), RangeError, 'an MTU below 68');
  t.throws(() => tapSetMtu('zcs0', 70000), RangeError, 'an MTU above 65535');
  t.throws(() => tapSetMtu('a-name-longer-than-ifnamsiz', 1500), RangeError, 'a name too long for an interface');
  // No such interface (as root: ENODEV; without CAP_NET_ADMIN the kernel says EPERM first). Nothing is changed either way.
  const e = t.throws(() => tapSetMtu('zcsnoif0', 1500)) as NativeError;
  t.ok(e.code === 'ENODEV' || e.code === 'EPERM', `ioctl(SIOCSIFMTU) error: ${e.code}`);
  const efd = eventfdCreate();
  t.teardown(() => closeFd(efd));
  const e2 = t.throws(() => tapSetOffload(efd, 1)) as NativeError;
  t.equal(e2.code, 'ENOTTY', 'not a TAP fd: ENOTTY');
  t.match(e2.message, /tapSetOffload/, 'the call named');
  t.throws(() => tapSetOffload(efd, 0x10000), RangeError, 'flags wider than 16 bits');
});

t.test('pinThisThread / thisThreadCpus: a worker thread pins itself only; bad CPUs throw', async (t) => {
  const { pinThisThread, thisThreadCpus } = require(BINDINGS) as typeof import('../../bindings');
  const mine = thisThreadCpus();
  t.ok(mine.length > 0 && mine.every((c) => Number.isInteger(c)), `this thread may run on ${mine.join(',')}`);
  t.throws(() => pinThisThread(-1), RangeError);
  t.throws(() => pinThisThread(1.5), RangeError);
  t.throws(() => pinThisThread(1_000_000), RangeError);
  const target = mine[mine.length - 1];
  const code = `
    const { parentPort, workerData } = require('worker_threads');
    const b = require(workerData.bindings);
    b.pinThisThread(workerData.cpu);
    parentPort.postMessage(b.thisThreadCpus());
  `;
  const got = await new Promise<number[]>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { bindings: BINDINGS, cpu: target } });
    w.once('message', (m: number[]) => resolve(m));
    w.once('error', reject);
  });
  t.same(got, [target], 'the worker runs on its one CPU');
  t.same(thisThreadCpus(), mine, 'the main thread kept its mask');
});
