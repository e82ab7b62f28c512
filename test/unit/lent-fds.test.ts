/**
 * LentFds (src/workers/lent-fds.ts): the dups the main thread lends a
 * data-path worker are open until taken back or until closeAll (the
 * worker's thread exited), and never closed twice.
 */
import fs from 'node:fs';
import t from 'tap';
import { closeFd, eventfdCreate } from '../../bindings';
import { LentFds } from '../../src/workers/lent-fds';
import { fileId } from '../helpers/fds';

const isOpen = (fd: number): boolean => {
  try {
    fs.fstatSync(fd);
    return true;
  } catch {
    return false;
  }
};

t.test('lend dups, takeBack closes one, closeAll the rest, and nothing is lent after', async (t) => {
  const src = eventfdCreate();
  t.teardown(() => closeFd(src));
  const fds = new LentFds();
  const a = fds.lend(src);
  const b = fds.lend(src);
  t.not(a, src, 'a dup, not the fd itself');
  t.equal(fileId('self', a), fileId('self', src), 'of the same eventfd');
  t.equal(fds.count, 2);
  fds.takeBack(a);
  t.notOk(isOpen(a), 'taken back: closed');
  t.ok(isOpen(b), 'the other stays open');
  // A number never lent (or already taken back) is not closed: it may be someone else's by now.
  const other = eventfdCreate();
  t.teardown(() => closeFd(other));
  fds.takeBack(other);
  t.ok(isOpen(other), 'an fd that was not lent is left alone');
  fds.closeAll();
  t.notOk(isOpen(b), 'closeAll closed what was still lent');
  t.equal(fds.count, 0);
  t.ok(isOpen(src), 'the original is the lender\'s, untouched');
  t.throws(() => fds.lend(src), /exited/, 'nothing is lent to a worker whose thread exited');
});
