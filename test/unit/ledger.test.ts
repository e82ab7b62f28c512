/**
 * Unit tests for src/shm: the OwnershipLedger (transfers, partitions,
 * reclaim, and the conservation check, which must also catch corruption)
 * and the SharedBuffers region over a real memfd mapping.
 */
import t from 'tap';
import { prng } from '../helpers/prng';
import fs from 'node:fs';
import { mmapShared, munmap } from '../../bindings';
import { MAX_PORTS, OwnershipLedger, POOL } from '../../src/shm/ledger';
import { SharedBuffers } from '../../src/shm/shared-buffers';


t.test('a fresh ledger: everything in the pool', async (t) => {
  const l = new OwnershipLedger(64);
  t.equal(l.bufCount, 64);
  t.equal(l.pool, 64);
  t.ok(l.owner.every((o) => o === POOL), 'every buffer is owned by POOL');
  const c = l.check();
  t.equal(c.ok, true);
  t.equal(c.pool, 64);
  t.same(c.owned, {});
  t.same(c.problems, []);
});

t.test('transfer', async (t) => {
  const l = new OwnershipLedger(16);
  l.transfer(3, 1);
  t.equal(l.ownerOf(3), 1);
  t.equal(l.owned[1], 1);
  t.equal(l.pool, 15);
  l.transfer(3, 2);
  t.equal(l.ownerOf(3), 2);
  t.equal(l.owned[1], 0);
  t.equal(l.owned[2], 1);
  t.equal(l.pool, 15, 'port to port leaves the pool alone');
  l.transfer(3, 2);
  t.equal(l.owned[2], 1, 'transfer to the current owner is a no-op');
  l.transfer(3, POOL);
  t.equal(l.ownerOf(3), POOL);
  t.equal(l.owned[2], 0);
  t.equal(l.pool, 16);
  l.transfer(0, MAX_PORTS - 1);
  t.equal(l.owned[MAX_PORTS - 1], 1, 'the highest port id works');
  t.same(l.check().owned, { [MAX_PORTS - 1]: 1 });
  t.equal(l.check().ok, true);
});

t.test('assignRange and reclaim', async (t) => {
  const l = new OwnershipLedger(32);
  t.equal(l.assignRange(0, 8, 0), true, 'port 0 gets [0, 8)');
  t.equal(l.assignRange(8, 8, 1), true, 'port 1 gets [8, 16)');
  t.equal(l.owned[0], 8);
  t.equal(l.owned[1], 8);
  t.equal(l.pool, 16);
  t.same(Array.from(l.owner.subarray(6, 10)), [0, 0, 1, 1]);

  t.equal(l.assignRange(12, 8, 2), false, 'refused: [12, 16) belongs to port 1');
  t.equal(l.owned[2], 0, 'nothing of the refused range was transferred');
  t.ok(l.owner.subarray(16, 20).every((o) => o === POOL), 'the free tail of the refused range stays in the pool');
  t.equal(l.pool, 16);

  l.transfer(25, 3);
  t.equal(l.assignRange(16, 16, 2), false, 'refused: one buffer in the middle is owned');
  t.equal(l.ownerOf(16), POOL, 'refusal is all-or-nothing (first buffer untouched)');
  t.equal(l.owned[2], 0);
  t.equal(l.assignRange(16, 0, 2), true, 'an empty range is trivially granted');
  t.equal(l.check().ok, true);

  // port 1 sends two buffers to port 0 and receives one back
  l.transfer(8, 0);
  l.transfer(9, 0);
  l.transfer(0, 1);
  t.equal(l.owned[0], 9);
  t.equal(l.owned[1], 7);
  t.equal(l.reclaim(1), 7, 'reclaim returns how many buffers went back');
  t.equal(l.owned[1], 0);
  t.ok(!l.owner.includes(1), 'port 1 owns nothing');
  t.equal(l.pool, 32 - 9 - 1);
  t.equal(l.reclaim(1), 0, 'second reclaim: nothing');
  t.equal(l.reclaim(7), 0, 'a port that never owned anything');
  t.equal(l.assignRange(8, 8, 1), false, 'port 1 cannot get its old partition back while port 0 holds 8 and 9');
  t.equal(l.check().ok, true);
  t.same(l.check().owned, { 0: 9, 3: 1 });
});

t.test('conservation holds through random transfer sequences', async (t) => {
  const bufCount = 512;
  const ports = 6;
  for (const seed of [1, 42, 0xc0ffee]) {
    const rnd = prng(seed);
    const l = new OwnershipLedger(bufCount);
    const model = new Array<number>(bufCount).fill(POOL);
    for (let p = 0; p < ports; p++) {
      t.equal(l.assignRange(p * 64, 64, p), true);
      for (let i = p * 64; i < p * 64 + 64; i++) model[i] = p;
    }
    let failures = 0;
    let reclaimed = 0;
    for (let step = 0; step < 20000; step++) {
      const r = rnd();
      if (r < 0.002) {
        const p = Math.floor(rnd() * ports);
        const expect = model.filter((o) => o === p).length;
        if (l.reclaim(p) !== expect) failures++;
        for (let i = 0; i < bufCount; i++) if (model[i] === p) model[i] = POOL;
        reclaimed++;
      } else {
        const b = Math.floor(rnd() * bufCount);
        const to = rnd() < 0.1 ? POOL : Math.floor(rnd() * ports);
        l.transfer(b, to);
        model[b] = to;
      }
      if (step % 500 === 0 && !l.check().ok) failures++;
    }
    const c = l.check();
    t.equal(failures, 0, `seed ${seed}: every intermediate check passed`);
    t.equal(c.ok, true, `seed ${seed}: final check`);
    t.ok(reclaimed > 0, `seed ${seed}: reclaims were exercised`);
    let sum = c.pool;
    for (const v of Object.values(c.owned)) sum += v;
    t.equal(sum, bufCount, `seed ${seed}: owners hold exactly bufCount buffers`);
    t.same(Array.from(l.owner), model, `seed ${seed}: owner array matches an independent model`);
    for (let p = 0; p < ports; p++) t.equal(l.owned[p], model.filter((o) => o === p).length, `seed ${seed}: port ${p} count`);
    t.equal(l.pool, model.filter((o) => o === POOL).length, `seed ${seed}: pool count`);
  }
});

t.test('check() catches corruption behind its back', async (t) => {
  {
    const l = new OwnershipLedger(16);
    l.assignRange(0, 4, 1);
    l.owner[2] = 5; // buffer moved without bookkeeping
    const c = l.check();
    t.equal(c.ok, false);
    t.match(c.problems.join('\n'), /port 1 count 4 but owns 3 buffers/);
    t.match(c.problems.join('\n'), /port 5 count 0 but owns 1 buffers/);
  }
  {
    const l = new OwnershipLedger(16);
    l.owner[7] = 2; // taken from the pool silently
    const c = l.check();
    t.equal(c.ok, false);
    t.match(c.problems.join('\n'), /pool count 16 but 15 buffers are in the pool/);
  }
  {
    const l = new OwnershipLedger(16);
    l.owned[3] = 2; // a counter drifts
    const c = l.check();
    t.equal(c.ok, false);
    t.match(c.problems.join('\n'), /port 3 count 2 but owns 0 buffers/);
  }
  {
    const l = new OwnershipLedger(16);
    l.owned[MAX_PORTS] = 17; // the pool's count
    t.equal(l.check().ok, false, 'a pool counter drift is caught');
  }
  {
    // an owner id beyond MAX_PORTS (not POOL): counted by nobody
    const l = new OwnershipLedger(16);
    l.owner[0] = MAX_PORTS + 10;
    l.owned[MAX_PORTS] = 15;
    const c = l.check();
    t.equal(c.ok, false, 'a buffer owned by an impossible port id is caught');
    t.match(c.problems.join('\n'), /owners hold 15 buffers, region has 16/);
  }
});

t.test('SharedBuffers: geometry and address helpers on a real memfd', async (t) => {
  const base = 0x40_0000_0000;
  const bufSize = 2048;
  const bufCount = 16;
  const sb = new SharedBuffers(bufCount, bufSize, base);
  t.teardown(() => sb.close());
  t.equal(sb.size, bufCount * bufSize);
  t.equal(sb.regionSize, 128 * 1024, 'buffers + 64 KiB header, rounded up to a power of two');
  t.equal(sb.mem.byteLength, sb.regionSize);
  t.ok(sb.fd >= 0);
  t.match(fs.readlinkSync(`/proc/self/fd/${sb.fd}`), /^\/memfd:zcswitch-shared-buffers/, 'the fd is a memfd');
  t.equal(fs.fstatSync(sb.fd).size, sb.regionSize, 'memfd sized to the region');

  t.equal(sb.indexOf(base), 0, 'base');
  t.equal(sb.indexOf(base + bufSize - 1), 0);
  t.equal(sb.indexOf(base + bufSize), 1);
  t.equal(sb.indexOf(base + sb.size - 1), bufCount - 1, 'base+size-1');
  t.equal(sb.indexOf(base + sb.size), -1, 'base+size');
  t.equal(sb.indexOf(base - 1), -1, 'base-1');
  t.equal(sb.indexOf(0), -1);
  t.equal(sb.indexOf(base + 7 * bufSize + 100), 7, 'inside buffer 7');
  t.equal(sb.inWindow(base), true);
  t.equal(sb.inWindow(base + sb.size - 1), true);
  t.equal(sb.inWindow(base + sb.size), false);
  t.equal(sb.inWindow(base - 1), false);
  for (let i = 0; i < bufCount; i++) {
    if (sb.addrOf(i) !== base + i * bufSize || sb.offsetOf(i) !== i * bufSize || sb.indexOf(sb.addrOf(i)) !== i) {
      t.fail(`buffer ${i}: addrOf/offsetOf/indexOf disagree`);
    }
  }
  t.equal(sb.addrOf(3), 0x40_0000_1800);
  t.equal(sb.offsetOf(3), 6144);
  t.equal(sb.addrOf(0) % 64, 0, 'cache-line aligned');

  t.ok(sb.mem.every((b) => b === 0), 'the region is zero-filled');

  // the switch's view and another mapping of the same fd see the same bytes
  const other = new Uint8Array(mmapShared(sb.fd, sb.size));
  sb.mem[sb.offsetOf(5) + 12] = 0xab;
  t.equal(other[5 * bufSize + 12], 0xab, 'writes visible through a second mapping');
  other[sb.size - 1] = 0xcd;
  t.equal(sb.mem[sb.size - 1], 0xcd, 'and back');
  munmap(other.buffer as ArrayBuffer);
});

t.test('SharedBuffers: bad bufSize, close', async (t) => {
  t.throws(() => new SharedBuffers(4, 100, 0x1000_0000), RangeError, 'bufSize must be a multiple of 64');
  t.throws(() => new SharedBuffers(4, 2049, 0x1000_0000), { message: /2049 is not a multiple of 64/ });

  const sb = new SharedBuffers(4, 4096, 0x1000_0000);
  const fd = sb.fd;
  const link = fs.readlinkSync(`/proc/self/fd/${fd}`);
  t.match(link, /memfd:zcswitch-shared-buffers/);
  sb.close();
  t.equal(sb.mem.byteLength, 0, 'close() unmaps (the view is detached)');
  let after: string | null = null;
  try {
    after = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    after = null;
  }
  t.not(after, link, 'close() closed the memfd');
});

t.test('OwnershipLedger in shared memory: a second view (another thread) sees and makes the same moves', async (t) => {
  const a = new OwnershipLedger(32, 'shared');
  t.ok(a.memory instanceof SharedArrayBuffer);
  const b = new OwnershipLedger(32, a.memory as SharedArrayBuffer);
  t.equal(b.pool, 32, 'the view does not reset the ledger');
  a.assignRange(0, 8, 1);
  t.equal(b.owned[1], 8);
  t.equal(b.pool, 24);
  b.transfer(3, 2);
  t.equal(a.ownerOf(3), 2);
  t.equal(a.owned[1], 7);
  t.equal(b.reclaim(1), 7);
  t.same(a.check(), b.check());
  t.equal(a.check().ok, true);
  t.throws(() => new OwnershipLedger(33, a.memory as SharedArrayBuffer), /ledger memory/);
});
