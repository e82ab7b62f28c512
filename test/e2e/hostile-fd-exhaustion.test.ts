/**
 * Front-ends that run the switch out of file descriptors. The switch runs
 * under a low RLIMIT_NOFILE (prlimit); hostile connections hand it eventfds
 * for every vring (kick, call, err: each kept, kicks also dup'ed for their
 * watcher) until the limit is reached. Then: a new connection's accept fails
 * (EMFILE), the switch pauses accepts on that port and retries with a
 * back-off, says so once, keeps forwarding the bystander pair, and once the
 * hostile connections are gone it accepts again and a real VM attaches.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { closeFd, eventfdCreate } from '../../bindings';
import { u64 } from '../../src/vhost/codec';
import { FLAG_VERSION, Req } from '../../src/vhost/protocol';
import { bystanderConfig, startBystander } from '../helpers/bystander';
import { type SwitchProc, sleep, startSwitch, stopProc, vm, waitAttached, waitFor } from '../helpers/procs';
import { RawClient } from '../helpers/unit-vhost-client';

const HOSTILE = ['ev0', 'ev1', 'ev2', 'ev3', 'ev4', 'ev5'];
const LATE = 'late';
/** Queue pairs per port: 16 vrings, each with a kick, call and err fd. */
const QUEUE_PAIRS = 8;
const NOFILE = 160;

const fdCount = (sw: SwitchProc): number => fs.readdirSync(`/proc/${sw.child.pid}/fd`).length;
const alive = (sw: SwitchProc): boolean => sw.child.exitCode === null && sw.child.signalCode === null;
const logged = (sw: SwitchProc, re: RegExp): boolean => sw.stderr().split('\n').some((l) => re.test(l));

/**
 * A hostile front-end on `port` that hands the switch one eventfd per
 * message (a call or err fd for each vring: each kept by the switch) until
 * the switch holds `target` fds, and stays connected. One fd at a time, so
 * the switch can be brought to exactly its limit: a message whose fd would
 * go past the limit arrives without it, and the switch drops that sender.
 */
async function hoard(sw: SwitchProc, port: string, target: number): Promise<RawClient> {
  const c = RawClient.connect(path.join(sw.dir, `${port}.sock`));
  c.send(Req.GET_FEATURES, FLAG_VERSION);
  await c.recv();
  for (let v = 0; v < 2 * QUEUE_PAIRS; v++) {
    for (const req of [Req.SET_VRING_CALL, Req.SET_VRING_ERR]) {
      if (fdCount(sw) >= target) return c;
      const fd = eventfdCreate();
      try {
        c.send(req, FLAG_VERSION, u64(BigInt(v)), [fd]);
      } finally {
        closeFd(fd);
      }
      await sleep(5); // the switch reads the message and keeps the fd
    }
  }
  return c;
}

t.test('fd exhaustion: accept backs off, other ports keep forwarding, accepts resume when the hoarders leave', async (t) => {
  const ports = [...HOSTILE, LATE].map((name) => ({ name }));
  const sw = await startSwitch(
    t,
    bystanderConfig(ports, { forwarding: { queuePairs: QUEUE_PAIRS }, limits: { handshakeSec: 60 } }),
    { prefix: ['prlimit', `--nofile=${NOFILE}:${NOFILE}`, '--'] },
  );
  const by = await startBystander(t, sw, { rate: 20000, seconds: 8 });
  const before = fdCount(sw);
  t.ok(before < NOFILE - 50, `room for the attack under the limit (${before} of ${NOFILE} fds in use)`);

  const hoarders: RawClient[] = [];
  t.teardown(() => hoarders.forEach((c) => c.close()));
  for (const p of HOSTILE) {
    hoarders.push(await hoard(sw, p, NOFILE));
    if (fdCount(sw) >= NOFILE) break;
  }
  t.equal(fdCount(sw), NOFILE, `the hoarders took the switch to its limit of ${NOFILE} fds`);

  // A newcomer on another port: accepting it (or the next one: a transient
  // fd of the switch may have closed meanwhile) fails with EMFILE; the
  // switch pauses accepts on that port and retries.
  const late = RawClient.connect(path.join(sw.dir, `${LATE}.sock`));
  t.teardown(() => late.close());
  await waitFor('the accept failure to be logged', async () => logged(sw, /accept failed.*pausing accepts/), 5000);
  t.ok(alive(sw), 'the switch is alive at its fd limit');

  // The hoarders leave: the switch closes what they held and accepts again.
  // The hoarders leave: their fds are closed, and the next retry finds room.
  hoarders.forEach((c) => c.close());
  hoarders.length = 0;
  await waitFor('accepts to resume', async () => logged(sw, /accepting connections again/), 10000);
  late.close();
  await waitFor('the hoarded fds to be closed', async () => fdCount(sw) <= before + 2, 10000);
  await waitFor('the late port to be free', async () => !(await sw.port(LATE)).attached, 5000);

  const v = vm(sw, LATE, ['--mode', 'sink', '--duration', '2']);
  t.teardown(() => stopProc(v));
  await waitAttached(sw, LATE);
  t.equal((await v.result).code, 0, 'a real VM attaches to the late port afterwards and exits cleanly');
  await by.check(t);
  t.ok(alive(sw), 'the switch is still running at the end');
});
