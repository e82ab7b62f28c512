/**
 * Unit tests for PollLoop (src/datapath/poll-loop.ts) driving a small real
 * PollTarget that counts rounds and records kick changes.
 */
import t from 'tap';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { PollLoop, type PollTarget } from '../../src/datapath/poll-loop';

class CountingTarget implements PollTarget {
  rounds = 0;
  /** Rounds that report work, then idle ones. */
  workLeft = 0;
  /** What setKicks(true) reports pending (then resets to 0). */
  pendingOnEnable = 0;
  kicksOn: boolean[] = [];
  firstRoundAt = -1;
  lastWorkAt = -1;
  sleptAt = -1;
  round(): number {
    const now = performance.now();
    if (this.firstRoundAt < 0) this.firstRoundAt = now;
    this.rounds++;
    if (this.workLeft > 0) {
      this.workLeft--;
      this.lastWorkAt = now;
      return 1;
    }
    return 0;
  }
  setKicks(on: boolean): number {
    this.kicksOn.push(on);
    if (!on) return 0;
    this.sleptAt = performance.now();
    const p = this.pendingOnEnable;
    this.pendingOnEnable = 0;
    return p;
  }
}

const settle = async (loop: PollLoop, target: CountingTarget, maxMs = 2000): Promise<boolean> => {
  // Sleeping: the round count stops moving.
  const end = performance.now() + maxMs;
  let last = -1;
  while (performance.now() < end) {
    await sleep(20);
    if (target.rounds === last) return true;
    last = target.rounds;
  }
  return false;
};

t.test('spin-then-sleep: sleeps after spinUs without work, wakes on wake()', async (t) => {
  const target = new CountingTarget();
  const loop = new PollLoop(target, 'spin-then-sleep', 5000);
  t.teardown(() => loop.stop());
  await sleep(10);
  t.equal(target.rounds, 0, 'nothing runs before the first wake');
  loop.wake();
  t.ok(await settle(loop, target), 'went to sleep');
  t.same(target.kicksOn, [false, true], 'kicks off while running, on to sleep');
  t.ok(target.sleptAt - target.firstRoundAt >= 5, `spun at least spinUs (${(target.sleptAt - target.firstRoundAt).toFixed(2)} ms)`);
  t.ok(target.rounds > 1, `spun several rounds (${target.rounds})`);
  const before = target.rounds;
  await sleep(30);
  t.equal(target.rounds, before, 'no rounds while asleep');
  target.workLeft = 100;
  loop.wake();
  t.ok(await settle(loop, target), 'slept again');
  t.equal(target.workLeft, 0, 'all the work was done');
  t.ok(target.rounds >= before + 100, 'rounds ran after the wake');
  t.same(target.kicksOn, [false, true, false, true]);
  t.ok(target.sleptAt - target.lastWorkAt >= 5, 'spun spinUs after the last work');
});

t.test('work pending when kicks go back on: keeps running', async (t) => {
  const target = new CountingTarget();
  const loop = new PollLoop(target, 'eventfd', 0);
  t.teardown(() => loop.stop());
  target.pendingOnEnable = 1;
  loop.wake();
  t.ok(await settle(loop, target), 'slept in the end');
  t.same(target.kicksOn, [false, true, false, true], 'race closed: kicks off again, another round, then sleep');
});

t.test('eventfd: sleeps as soon as a round finds nothing', async (t) => {
  const target = new CountingTarget();
  const loop = new PollLoop(target, 'eventfd', 1_000_000);
  t.teardown(() => loop.stop());
  loop.wake();
  t.ok(await settle(loop, target));
  t.equal(target.rounds, 1, 'one idle round, spinUs ignored');
});

t.test('busy-poll keeps running; stop() stops it', async (t) => {
  const target = new CountingTarget();
  const loop = new PollLoop(target, 'busy-poll', 0);
  loop.wake();
  await sleep(30);
  const a = target.rounds;
  await sleep(30);
  const b = target.rounds;
  t.ok(a > 0 && b > a, `rounds keep running without work (${a} -> ${b})`);
  t.notOk(target.kicksOn.includes(true), 'never re-enables kicks');
  loop.stop();
  await sleep(10);
  const c = target.rounds;
  await sleep(30);
  t.equal(target.rounds, c, 'stopped');
  loop.wake();
  await sleep(20);
  t.equal(target.rounds, c, 'wake() after stop() does nothing');
});

t.test('wake() while running does not schedule twice', async (t) => {
  const target = new CountingTarget();
  const loop = new PollLoop(target, 'eventfd', 0);
  t.teardown(() => loop.stop());
  loop.wake();
  loop.wake();
  loop.wake();
  t.ok(await settle(loop, target));
  t.equal(target.rounds, 1, 'one run');
  t.same(target.kicksOn, [false, true]);
});

t.test('busy time: counts the rounds with work and their time, not the idle spin or the sleep', async (t) => {
  // Work that takes a known while: each working round spins 50 µs.
  class SlowTarget extends CountingTarget {
    override round(): number {
      const work = super.round();
      if (work > 0) for (const end = performance.now() + 0.05; performance.now() < end;);
      return work;
    }
  }
  const target = new SlowTarget();
  const loop = new PollLoop(target, 'spin-then-sleep', 200_000);
  t.teardown(() => loop.stop());
  target.workLeft = 400;
  const t0 = performance.now();
  loop.wake();
  t.ok(await settle(loop, target, 5000), 'went to sleep after the work and a 200 ms spin');
  const wall = performance.now() - t0;
  t.equal(loop.busyRounds, 400, 'every round with work counted, no idle one');
  t.ok(target.rounds > 400, `idle rounds ran too (${target.rounds - 400})`);
  // At least the 400 × 50 µs of work; at most the time up to the last working round plus one idle
  // round (50 ms of slack for a preemption on a shared machine; the spin after it is 200 ms).
  t.ok(loop.busyMs >= 400 * 0.05, `busy ${loop.busyMs.toFixed(2)} ms >= the 20 ms of work`);
  t.ok(loop.busyMs <= target.lastWorkAt - target.firstRoundAt + 50, `busy ${loop.busyMs.toFixed(2)} ms ends with the last working round, not the spin`);
  t.ok(loop.busyMs < wall, `busy < wall time (${wall.toFixed(1)} ms)`);
  const before = loop.busyMs;
  await sleep(50);
  t.equal(loop.busyMs, before, 'asleep: no busy time accrues');
});

t.test('busy time: an idle round after a working one does not count, however long it takes', async (t) => {
  // Working rounds of 50 µs, each followed by an idle round of 500 µs (a slow poll of many queues):
  // only the working rounds are busy, not the idle round that ends each busy stretch.
  class AlternatingTarget extends CountingTarget {
    pairs = 0;
    private idleNext = false;
    override round(): number {
      this.rounds++;
      const idle = this.idleNext || this.pairs === 0;
      this.idleNext = !this.idleNext;
      const end = performance.now() + (idle ? 0.5 : 0.05);
      while (performance.now() < end);
      if (idle) return 0;
      this.pairs--;
      return 1;
    }
  }
  const target = new AlternatingTarget();
  const loop = new PollLoop(target, 'busy-poll', 0);
  t.teardown(() => loop.stop());
  target.pairs = 100;
  loop.wake();
  const until = performance.now() + 5000;
  while (target.pairs > 0 && performance.now() < until) await sleep(5);
  loop.stop();
  t.equal(loop.busyRounds, 100, '100 working rounds');
  // 100 × 50 µs = 5 ms of work; counting each following idle round would make it 55 ms (20 ms of slack for preemption).
  t.ok(loop.busyMs >= 5, `busy ${loop.busyMs.toFixed(2)} ms >= the 5 ms of work`);
  t.ok(loop.busyMs < 25, `busy ${loop.busyMs.toFixed(2)} ms leaves out the 50 ms of idle rounds`);
});

t.test('asleep with a back-pressure deadline: runs again at the deadline without a kick', async (t) => {
  /** One deadline, reported until a round runs at or after it. */
  class WaitingTarget extends CountingTarget {
    deadline = Infinity;
    lastRoundAt = -1;
    override round(): number {
      this.lastRoundAt = performance.now();
      if (this.lastRoundAt >= this.deadline) this.deadline = Infinity;
      return super.round();
    }
    wakeAt(): number {
      return this.deadline;
    }
  }
  const target = new WaitingTarget();
  const loop = new PollLoop(target, 'eventfd', 0);
  t.teardown(() => loop.stop());
  const deadline = performance.now() + 100;
  target.deadline = deadline;
  loop.wake();
  await sleep(400);
  t.ok(target.lastRoundAt >= deadline, 'a round ran at the deadline');
  t.equal(target.deadline, Infinity, 'so the deadline was seen');
  t.same(target.kicksOn, [false, true, false, true], 'slept, woke once by the deadline alone, slept again');
  const after = target.rounds;
  await sleep(150);
  t.equal(target.rounds, after, 'no deadline: no more rounds');
});
