/**
 * Unit tests for RxPostings (src/datapath/rx-postings.ts): the three kinds
 * of rx posting the switch holds, by queue, and what clearQueue forgets.
 */
import t from 'tap';
import { RxPostings, postingHead, postingQueue } from '../../src/datapath/rx-postings';

t.test('shared postings: post, find, take', async (t) => {
  const p = new RxPostings(32, 4);
  t.equal(p.sharedPosting(5), -1);
  t.notOk(p.hasShared(5));
  p.postShared(5, 3, 1234);
  t.ok(p.hasShared(5));
  const x = p.sharedPosting(5);
  t.equal(postingQueue(x), 3, 'queue packed');
  t.equal(postingHead(x), 1234, 'head packed');
  p.postShared(6, 0, 0);
  t.equal(p.sharedPosting(6), 0, 'queue 0 head 0 is a valid posting');
  t.ok(p.hasShared(6));
  t.equal(p.takeShared(5), x, 'take returns the posting');
  t.notOk(p.hasShared(5), 'and forgets it');
  t.equal(p.takeShared(5), -1, 'taking again: none');
  p.postShared(7, 255, 32767);
  t.equal(postingQueue(p.sharedPosting(7)), 255);
  t.equal(postingHead(p.sharedPosting(7)), 32767, 'largest queue and head survive packing');
});

t.test('copy targets: FIFO per queue, peek ahead, remove', async (t) => {
  const p = new RxPostings(8, 2);
  for (const h of [10, 11, 12, 13]) p.postCopyTarget(0, h);
  p.postCopyTarget(1, 99);
  t.equal(p.copyTargetCount(0), 4);
  t.equal(p.copyTargetCount(1), 1);
  t.equal(p.peekCopyTarget(0), 10);
  t.equal(p.peekCopyTarget(0, 2), 12);
  t.equal(p.peekCopyTarget(0, 4), -1, 'past the end');
  p.removeCopyTarget(0, 1); // 11 was broken
  t.equal(p.copyTargetCount(0), 3);
  t.same([p.takeCopyTarget(0), p.takeCopyTarget(0), p.takeCopyTarget(0)], [10, 12, 13], 'FIFO order, 11 gone');
  t.equal(p.copyTargetCount(0), 0);
  t.equal(p.peekCopyTarget(0), -1);
  t.equal(p.takeCopyTarget(1), 99, 'other queue untouched');
  // remove the oldest and the newest
  for (const h of [1, 2, 3]) p.postCopyTarget(0, h);
  p.removeCopyTarget(0, 0);
  p.removeCopyTarget(0, 1);
  t.equal(p.copyTargetCount(0), 1);
  t.equal(p.takeCopyTarget(0), 2);
});

t.test('own buffers (bridge): FIFO with their buffer index', async (t) => {
  const p = new RxPostings(16, 2);
  t.equal(p.ownCount(0), 0);
  t.equal(p.nextOwnBuf(0), -1, 'none posted');
  p.postOwn(0, 40, 7);
  p.postOwn(0, 41, 3);
  p.postOwn(1, 50, 9);
  t.equal(p.ownCount(0), 2);
  t.equal(p.nextOwnBuf(0), 7);
  t.equal(p.takeOwn(0), 40, 'head of the buffer nextOwnBuf named');
  t.equal(p.nextOwnBuf(0), 3);
  t.equal(p.takeOwn(0), 41);
  t.equal(p.ownCount(0), 0);
  t.equal(p.nextOwnBuf(1), 9);
  t.notOk(p.hasShared(7), 'own postings are not shared postings');
});

t.test('clearQueue forgets that queue only', async (t) => {
  const p = new RxPostings(16, 3);
  p.postShared(1, 0, 100);
  p.postShared(2, 1, 101);
  p.postShared(3, 2, 102);
  p.postShared(4, 1, 103);
  p.postCopyTarget(0, 5);
  p.postCopyTarget(1, 6);
  p.postOwn(0, 7, 8);
  p.postOwn(1, 9, 10);
  p.clearQueue(1);
  t.ok(p.hasShared(1), 'queue 0 shared kept');
  t.notOk(p.hasShared(2), 'queue 1 shared cleared');
  t.notOk(p.hasShared(4), 'queue 1 shared cleared');
  t.ok(p.hasShared(3), 'queue 2 shared kept');
  t.equal(p.copyTargetCount(0), 1);
  t.equal(p.copyTargetCount(1), 0);
  t.equal(p.ownCount(0), 1);
  t.equal(p.ownCount(1), 0);
  p.clearQueue(0);
  t.notOk(p.hasShared(1));
  t.ok(p.hasShared(3));
  t.equal(p.copyTargetCount(0), 0);
  t.equal(p.ownCount(0), 0);
});

t.test('snapshot and restore: another data path holds the same postings, in order; a queue that does not run there gets none', async (t) => {
  const a = new RxPostings(16, 3);
  a.postShared(3, 0, 40);
  a.postShared(9, 2, 41);
  a.postShared(12, 1, 42);
  for (const h of [7, 8, 9]) a.postCopyTarget(0, h);
  a.takeCopyTarget(0);
  a.postCopyTarget(0, 10);
  a.postCopyTarget(2, 50);
  a.postOwn(1, 20, 4);
  a.postOwn(1, 21, 5);
  const s = a.snapshot();
  const b = new RxPostings(16, 3);
  b.restore(structuredClone(s), (q) => q !== 2);
  t.same([b.sharedPosting(3), b.sharedPosting(12)], [a.sharedPosting(3), a.sharedPosting(12)], 'shared postings by buffer');
  t.notOk(b.hasShared(9), 'not one of a queue that does not run');
  t.same([b.takeCopyTarget(0), b.takeCopyTarget(0), b.takeCopyTarget(0)], [8, 9, 10], 'copy targets, oldest first');
  t.equal(b.copyTargetCount(0), 0);
  t.equal(b.copyTargetCount(2), 0, 'none of a queue that does not run');
  t.same([b.nextOwnBuf(1), b.takeOwn(1), b.nextOwnBuf(1), b.takeOwn(1)], [4, 20, 5, 21], 'own buffers with their buffer, in order');
  t.equal(a.copyTargetCount(0), 3, 'the snapshot took nothing from the original');
  t.throws(() => new RxPostings(8, 3).restore(s, () => true), /rx postings of 16 buffers and 3 queues, here 8 and 3/, 'a snapshot of another geometry is refused');
});
