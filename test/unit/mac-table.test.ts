/**
 * Unit tests for MacTable (src/datapath/mac-table.ts): learning, lookup,
 * ageing, forgetting a port, and what a full table does.
 */
import t from 'tap';
import { MacTable } from '../../src/datapath/mac-table';

const AGE = 1000;

t.test('learn and lookup', async (t) => {
  const m = new MacTable(64, AGE);
  t.equal(m.lookup(0x0200, 1, 0), -1, 'unknown');
  m.learn(0x0200, 1, 3, 0);
  m.learn(0x0200, 2, 4, 0);
  m.learn(0x0201, 1, 5, 0);
  t.equal(m.lookup(0x0200, 1, 10), 3);
  t.equal(m.lookup(0x0200, 2, 10), 4, 'low word distinguishes');
  t.equal(m.lookup(0x0201, 1, 10), 5, 'high word distinguishes');
  m.learn(0x0200, 1, 6, 20);
  t.equal(m.lookup(0x0200, 1, 30), 6, 'a MAC that moved is relearned on its new port');
  t.same(m.entries(30).map((e) => e.mac).sort(), ['02:00:00:00:00:01', '02:00:00:00:00:02', '02:01:00:00:00:01']);
});

t.test('many MACs with colliding probes', async (t) => {
  const m = new MacTable(1000, AGE);
  for (let i = 0; i < 1000; i++) m.learn(i & 0xff, i * 0x10000, i % 200, 0);
  let ok = 0;
  for (let i = 0; i < 1000; i++) if (m.lookup(i & 0xff, i * 0x10000, 1) === i % 200) ok++;
  t.equal(ok, 1000, 'every MAC found');
});

t.test('ageing', async (t) => {
  const m = new MacTable(16, AGE);
  m.learn(0x0200, 7, 1, 1000);
  t.equal(m.lookup(0x0200, 7, 1000 + AGE), 1, 'still there at exactly the ageing time');
  t.equal(m.lookup(0x0200, 7, 1000 + AGE + 1), -1, 'gone after it');
  m.learn(0x0200, 7, 2, 3000);
  t.equal(m.lookup(0x0200, 7, 3001), 2, 'relearned');
  t.equal(m.entries(3001).length, 1, 'one entry, not two');
  t.equal(m.sweep(3000 + AGE + 1), 1, 'sweep drops the aged entry');
  t.equal(m.lookup(0x0200, 7, 3002), -1, 'and it stays gone');
});

t.test('forgetPort', async (t) => {
  const m = new MacTable(16, AGE);
  m.learn(0x0200, 1, 1, 0);
  m.learn(0x0200, 2, 2, 0);
  m.learn(0x0200, 3, 1, 0);
  m.forgetPort(1);
  t.equal(m.lookup(0x0200, 1, 1), -1);
  t.equal(m.lookup(0x0200, 3, 1), -1);
  t.equal(m.lookup(0x0200, 2, 1), 2, 'other ports kept');
  m.learn(0x0200, 1, 3, 2);
  t.equal(m.lookup(0x0200, 1, 2), 3, 'a forgotten MAC can be learned again');
});

t.test('a full table refuses new MACs while its entries live', async (t) => {
  const SIZE = 16;
  const m = new MacTable(SIZE, AGE);
  for (let i = 0; i < SIZE; i++) m.learn(0x0200, i, 1, 0);
  m.learn(0x0200, 100, 2, 10);
  t.equal(m.lookup(0x0200, 100, 10), -1, 'not learned: the bridge floods instead');
  for (let i = 0; i < SIZE; i++) t.equal(m.lookup(0x0200, i, 10), 1, `entry ${i} kept`);
  m.learn(0x0200, 3, 4, 10);
  t.equal(m.lookup(0x0200, 3, 10), 4, 'a known MAC may still move');
});

t.test('a full table learns again once its entries aged out', async (t) => {
  const SIZE = 16;
  const m = new MacTable(SIZE, AGE);
  for (let i = 0; i < SIZE; i++) m.learn(0x0200, i, 1, 0);
  // Every entry aged; none is swept by anyone but the table itself.
  const later = 2 * AGE + 10;
  let learned = 0;
  for (let i = 0; i < SIZE; i++) {
    m.learn(0x0300, i, 2, later);
    if (m.lookup(0x0300, i, later) === 2) learned++;
  }
  t.equal(learned, SIZE, 'every new MAC learned');
  t.equal(m.lookup(0x0200, 0, later), -1, 'old ones gone');
});

t.test('a full table learns again after forgetPort', async (t) => {
  const SIZE = 16;
  const m = new MacTable(SIZE, AGE);
  for (let i = 0; i < SIZE; i++) m.learn(0x0200, i, 1, 0);
  m.forgetPort(1);
  let learned = 0;
  for (let i = 0; i < SIZE; i++) {
    m.learn(0x0300, i, 2, 5);
    if (m.lookup(0x0300, i, 5) === 2) learned++;
  }
  t.equal(learned, SIZE, 'the departed port\'s entries make room');
});
