import t, { type Test } from 'tap';
import * as path from 'node:path';
import * as fs from 'node:fs';
import {
  ConfigError,
  type ConfigIssue,
  type SwitchConfig,
  configToJSON,
  findJsonSyntaxError,
  formatPath,
  loadConfig,
  parseConfig,
} from '../../src/config';
import { DEFAULTS } from '../../src/config/schema';

// dist/test/config.test.js -> repo root
const ROOT = path.resolve(__dirname, '..', '..', '..');
const CONFIG_DIR = path.join(ROOT, 'config');

/** A port's tenant settings when the file gives none. */
const DEFAULT_POLICY = {
  bridge: 'vale0', vlan: 1, trunk: [], macs: [], isolated: false,
  limit: { rx: { pps: 0, bps: 0, burstMs: 50 }, tx: { pps: 0, bps: 0, burstMs: 50 } },
};
const twoPorts = () => [{ name: 'vm1' }, { name: 'vm2' }];

/** Parse `raw`, expect a ConfigError, return it. */
function fails(t: Test, raw: unknown): ConfigError {
  try {
    parseConfig(raw);
  } catch (e) {
    t.ok(e instanceof ConfigError, 'throws a ConfigError');
    return e as ConfigError;
  }
  t.fail('expected parseConfig to throw');
  return new ConfigError('<none>', []);
}

/** Expect exactly these issues (path + message), in any order. */
function expectIssues(t: Test, raw: unknown, expected: ConfigIssue[]): ConfigError {
  const err = fails(t, raw);
  const sortKey = (i: ConfigIssue) => `${i.path}\0${i.message}`;
  t.strictSame([...err.issues].sort((a, b) => sortKey(a).localeCompare(sortKey(b))),
    [...expected].sort((a, b) => sortKey(a).localeCompare(sortKey(b))));
  for (const i of expected) t.ok(err.message.includes(`\n  ${i.path}: ${i.message}`), `message lists ${i.path}`);
  return err;
}

t.test('defaults are filled from a minimal config', async (t) => {
  const cfg = parseConfig({ ports: twoPorts() });
  const expected: SwitchConfig = {
    socketDir: DEFAULTS.socketDir,
    controlSocket: `${DEFAULTS.socketDir}/zcswitch.ctl`,
    sockets: { mode: 0o660, group: null, controlMode: 0o600 },
    mode: 'pair',
    bridge: { ageingSec: 300, macTableSize: 4096 },
    sharedBuffers: { bufCount: 4096, bufSize: 2048, base: 0x4000000000n, hugePages: true },
    ports: [
      // Unpaired ports in pair mode: each its own sharing domain, with the whole of its region.
      { name: 'vm1', type: 'vhost', ifname: 'vm1', partition: { start: 0, count: 4096 }, domain: 'port:vm1', socket: { mode: 0o660, group: null }, offloads: true, mtu: 1500, policy: DEFAULT_POLICY },
      { name: 'vm2', type: 'vhost', ifname: 'vm2', partition: { start: 0, count: 4096 }, domain: 'port:vm2', socket: { mode: 0o660, group: null }, offloads: true, mtu: 1500, policy: DEFAULT_POLICY },
    ],
    pairs: [],
    forwarding: { burst: 64, pollMode: 'spin-then-sleep', spinUs: 50, queuePairs: 8, rxWaitMs: 50, pairExchange: 'gift', workers: 0 },
    gift: { highWater: 1.25, lowWater: 1.0 },
    log: { level: 'info' },
    stats: { intervalMs: 0 },
    limits: { handshakeSec: 10 },
  };
  t.strictSame(cfg, expected);
  t.equal(typeof cfg.sharedBuffers.base, 'bigint');
});

t.test('default partitions: equal floor shares of the domain in config order', async (t) => {
  const cfg = parseConfig({
    mode: 'bridge',
    sharedBuffers: { bufCount: 1000 },
    ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }],
  });
  t.strictSame(
    cfg.ports.map((p) => p.partition),
    [
      { start: 0, count: 333 },
      { start: 333, count: 333 },
      { start: 666, count: 333 },
    ],
  );
});

t.test('controlSocket follows socketDir; trailing slash is dropped', async (t) => {
  const cfg = parseConfig({ socketDir: '/run/zc/', ports: twoPorts() });
  t.equal(cfg.socketDir, '/run/zc');
  t.equal(cfg.controlSocket, '/run/zc/zcswitch.ctl');
  const cfg2 = parseConfig({ socketDir: '/run/zc', controlSocket: '/run/ctl.sock', ports: twoPorts() });
  t.equal(cfg2.controlSocket, '/run/ctl.sock');
});

t.test('config/default.json loads', async (t) => {
  const cfg = loadConfig(path.join(CONFIG_DIR, 'default.json'));
  t.equal(cfg.socketDir, DEFAULTS.socketDir);
  t.equal(cfg.controlSocket, `${DEFAULTS.socketDir}/zcswitch.ctl`);
  // The default the code fills in is the one the config reference documents.
  const readme = fs.readFileSync(path.join(ROOT, 'src', 'config', 'README.md'), 'utf8');
  t.ok(readme.includes(`| \`socketDir\` | string | \`"${DEFAULTS.socketDir}"\` |`), 'src/config/README.md documents the default socketDir');
  t.strictSame(cfg.ports.map((p) => p.name), ['vm1', 'vm2']);
  t.strictSame(cfg.pairs, [['vm1', 'vm2']]);
  t.equal(cfg.mode, 'pair');
  t.strictSame(cfg.sharedBuffers, { bufCount: 4096, bufSize: 2048, base: 0x4000000000n, hugePages: true });
  t.strictSame(cfg.forwarding, { burst: 64, pollMode: 'spin-then-sleep', spinUs: 50, queuePairs: 8, rxWaitMs: 50, pairExchange: 'gift', workers: 0 });
});

t.test('config/examples load', async (t) => {
  const jumbo = loadConfig(path.join(CONFIG_DIR, 'examples', 'jumbo.json'));
  t.equal(jumbo.sharedBuffers.bufSize, 65600);
  t.equal(jumbo.sharedBuffers.bufCount, 512);
  t.strictSame(jumbo.ports.map((p) => p.partition), [
    { start: 0, count: 256 },
    { start: 256, count: 256 },
  ]);
  const busy = loadConfig(path.join(CONFIG_DIR, 'examples', 'busy-poll.json'));
  t.equal(busy.forwarding.pollMode, 'busy-poll');
  t.equal(busy.ports.length, 4);
  t.equal(busy.pairs.length, 2);
  t.strictSame(busy.ports[3]!.partition, { start: 3072, count: 1024 });
});

t.test('sharedBuffers.base', async (t) => {
  t.test('hex string parses to bigint', async (t) => {
    const cfg = parseConfig({ sharedBuffers: { base: '0x8000000000' }, ports: twoPorts() });
    t.equal(cfg.sharedBuffers.base, 0x8000000000n);
    t.equal(typeof cfg.sharedBuffers.base, 'bigint');
    t.equal(parseConfig({ sharedBuffers: { base: '0X1000' }, ports: twoPorts() }).sharedBuffers.base, 0x1000n);
  });
  t.test('integer parses to bigint', async (t) => {
    t.equal(parseConfig({ sharedBuffers: { base: 1048576 }, ports: twoPorts() }).sharedBuffers.base, 0x100000n);
    t.equal(parseConfig({ sharedBuffers: { base: 0 }, ports: twoPorts() }).sharedBuffers.base, 0n);
  });
  t.test('bad values', async (t) => {
    expectIssues(t, { sharedBuffers: { base: 'banana' }, ports: twoPorts() }, [
      { path: 'sharedBuffers.base', message: 'must be a hex string like "0x4000000000" or a non-negative integer, got "banana"' },
    ]);
    expectIssues(t, { sharedBuffers: { base: '4096' }, ports: twoPorts() }, [
      { path: 'sharedBuffers.base', message: 'must be a hex string like "0x4000000000" or a non-negative integer, got "4096"' },
    ]);
    expectIssues(t, { sharedBuffers: { base: -4096 }, ports: twoPorts() }, [
      { path: 'sharedBuffers.base', message: 'must be a non-negative integer or a hex string "0x...", got -4096' },
    ]);
    expectIssues(t, { sharedBuffers: { base: '0x4000000010' }, ports: twoPorts() }, [
      { path: 'sharedBuffers.base', message: 'must be a multiple of 4096 (page size), got 0x4000000010' },
    ]);
    expectIssues(t, { sharedBuffers: { base: '0x1000000000000' }, ports: twoPorts() }, [
      { path: 'sharedBuffers.base', message: 'must be below 2^48 (0x1000000000000), got 0x1000000000000' },
    ]);
  });
  t.test('region must end below 2^48', async (t) => {
    expectIssues(t, { sharedBuffers: { base: '0xfffffff00000', bufCount: 1024, bufSize: 2048 }, ports: twoPorts() }, [
      {
        path: 'sharedBuffers.base',
        message:
          'the region ends at 0x1000000100000 (base + bufCount*bufSize), which must be below 2^48 (0x1000000000000); lower the base',
      },
    ]);
    // exactly fits: ends at 2^48 - 4096 ... fine
    const cfg = parseConfig({ sharedBuffers: { base: '0xffffffdff000', bufCount: 1024, bufSize: 2048 }, ports: twoPorts() });
    t.equal(cfg.sharedBuffers.base, 0xffffffdff000n);
  });
});

t.test('unknown fields', async (t) => {
  t.test('at top level', async (t) => {
    const err = expectIssues(t, { ports: twoPorts(), sockDir: '/x' }, [
      { path: '(root)', message: 'unknown field "sockDir" (did you mean "socketDir"?)' },
    ]);
    t.equal(err.message, 'invalid config <inline>:\n  (root): unknown field "sockDir" (did you mean "socketDir"?)');
    expectIssues(t, { ports: twoPorts(), zzz: 1, yyy: 2 }, [
      { path: '(root)', message: 'unknown field "zzz"' },
      { path: '(root)', message: 'unknown field "yyy"' },
    ]);
  });
  t.test('inside a port', async (t) => {
    expectIssues(t, { ports: [{ name: 'vm1', nmae: 'x' }, { name: 'vm2' }] }, [
      { path: 'ports[0]', message: 'unknown field "nmae" (did you mean "name"?)' },
    ]);
    // the typo'd name is also missing
    expectIssues(t, { ports: [{ nmae: 'vm1' }] }, [
      { path: 'ports[0]', message: 'unknown field "nmae" (did you mean "name"?)' },
      { path: 'ports[0].name', message: 'is required' },
    ]);
  });
  t.test('inside nested objects', async (t) => {
    expectIssues(t, { ports: twoPorts(), sharedBuffers: { bufsize: 4096 } }, [
      { path: 'sharedBuffers', message: 'unknown field "bufsize" (did you mean "bufSize"?)' },
    ]);
    expectIssues(t, { ports: [{ name: 'vm1', partition: { start: 0, count: 1, end: 2 } }] }, [
      { path: 'ports[0].partition', message: 'unknown field "end"' },
    ]);
  });
});

t.test('sharedBuffers sizes', async (t) => {
  expectIssues(t, { ports: twoPorts(), sharedBuffers: { bufSize: 1000 } }, [
    { path: 'sharedBuffers.bufSize', message: 'must be a multiple of 64 (cache line), got 1000' },
  ]);
  expectIssues(t, { ports: twoPorts(), sharedBuffers: { bufSize: 64 } }, [
    { path: 'sharedBuffers.bufSize', message: 'must be at least 128, got 64' },
  ]);
  expectIssues(t, { ports: twoPorts(), sharedBuffers: { bufSize: 262208 } }, [
    { path: 'sharedBuffers.bufSize', message: 'must be at most 262144, got 262208' },
  ]);
  expectIssues(t, { ports: twoPorts(), sharedBuffers: { bufCount: 0 } }, [
    { path: 'sharedBuffers.bufCount', message: 'must be at least 1, got 0' },
  ]);
  expectIssues(t, { ports: twoPorts(), sharedBuffers: { bufCount: 32769 } }, [
    { path: 'sharedBuffers.bufCount', message: 'must be at most 32768, got 32769' },
  ]);
  expectIssues(t, { ports: twoPorts(), sharedBuffers: { bufCount: 10.5 } }, [
    { path: 'sharedBuffers.bufCount', message: 'must be a whole number, got 10.5' },
  ]);
  expectIssues(t, { ports: twoPorts(), sharedBuffers: { bufCount: '1024' } }, [
    { path: 'sharedBuffers.bufCount', message: 'must be an integer, got "1024"' },
  ]);
  expectIssues(t, { mode: 'bridge', ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }], sharedBuffers: { bufCount: 2 } }, [
    {
      path: 'sharedBuffers.bufCount',
      message:
        '2 buffer(s) cannot be shared among 3 ports (each port would get 0); raise bufCount or give explicit partitions',
    },
  ]);
  // the biggest region allowed by the field limits is fine
  const big = parseConfig({ ports: twoPorts(), sharedBuffers: { bufCount: 32768, bufSize: 262144 } });
  t.equal(big.sharedBuffers.bufCount * big.sharedBuffers.bufSize, 8 * 1024 ** 3);
});

t.test('ports', async (t) => {
  t.test('duplicate port names', async (t) => {
    expectIssues(t, { ports: [{ name: 'vm1' }, { name: 'vm2' }, { name: 'vm1' }] }, [
      { path: 'ports[2].name', message: 'duplicate port name "vm1" (also ports[0])' },
    ]);
  });
  t.test('bad names', async (t) => {
    expectIssues(t, { ports: [{ name: 'vm 1' }, { name: '.hidden' }, { name: '' }, { name: 'x'.repeat(64) }, { name: 7 }] }, [
      {
        path: 'ports[0].name',
        message: 'may contain only letters, digits, "_", "." and "-" (it becomes a socket file name), got "vm 1"',
      },
      { path: 'ports[1].name', message: 'must start with a letter or digit (it becomes a socket file name), got ".hidden"' },
      { path: 'ports[2].name', message: 'must not be empty' },
      { path: 'ports[3].name', message: 'must be at most 63 characters (it becomes a socket file name), got 64' },
      { path: 'ports[4].name', message: 'must be a string, got 7' },
    ]);
  });
  t.test('count and type', async (t) => {
    expectIssues(t, { ports: [] }, [{ path: 'ports', message: 'must have at least 1 entry, got 0' }]);
    expectIssues(t, { ports: Array.from({ length: 65 }, (_, i) => ({ name: `p${i}` })) }, [
      { path: 'ports', message: 'must have at most 64 entries, got 65' },
    ]);
    expectIssues(t, {}, [{ path: 'ports', message: 'is required' }]);
    expectIssues(t, { ports: 'vm1' }, [{ path: 'ports', message: 'must be an array, got "vm1"' }]);
    expectIssues(t, { ports: ['vm1'] }, [{ path: 'ports[0]', message: 'must be an object, got "vm1"' }]);
  });
  t.test('socket path too long', async (t) => {
    const dir = '/' + 'd'.repeat(90);
    expectIssues(t, { socketDir: dir, ports: [{ name: 'a' }, { name: 'abcdefghijklmnop' }] }, [
      {
        path: 'ports[1].name',
        message: `socket path "${dir}/abcdefghijklmnop.sock" is 113 bytes; unix socket paths are limited to 107 (shorten socketDir or the name)`,
      },
    ]);
  });
});

t.test('partitions', async (t) => {
  t.test('explicit partitions are kept', async (t) => {
    const cfg = parseConfig({
      ports: [
        { name: 'vm1', partition: { start: 512, count: 512 } },
        { name: 'vm2', partition: { start: 0, count: 256 } },
        { name: 'vm3', partition: { start: 256, count: 0 } },
      ],
    });
    t.strictSame(cfg.ports.map((p) => p.partition), [
      { start: 512, count: 512 },
      { start: 0, count: 256 },
      { start: 256, count: 0 },
    ]);
  });
  t.test('overlapping partitions name both ports', async (t) => {
    expectIssues(
      t,
      {
        mode: 'bridge',
        ports: [
          { name: 'vm1', partition: { start: 0, count: 512 } },
          { name: 'vm2', partition: { start: 256, count: 512 } },
        ],
      },
      [{ path: 'ports[1].partition', message: 'port "vm2" overlaps ports[0] ("vm1"): buffers 256..511 are in both partitions' }],
    );
  });
  t.test('partial partitions: error on the first port missing one', async (t) => {
    expectIssues(
      t,
      {
        ports: [
          { name: 'vm1', partition: { start: 0, count: 512 } },
          { name: 'vm2' },
          { name: 'vm3' },
        ],
      },
      [
        {
          path: 'ports[1].partition',
          message:
            'port "vm2" has no partition, but ports[0] ("vm1") has one; either every port gives a partition or none does',
        },
      ],
    );
  });
  t.test('start+count must fit in bufCount', async (t) => {
    expectIssues(
      t,
      {
        ports: [
          { name: 'vm1', partition: { start: 0, count: 512 } },
          { name: 'vm2', partition: { start: 512, count: 1024 } },
        ],
        sharedBuffers: { bufCount: 1024 },
      },
      [{ path: 'ports[1].partition', message: 'start+count (1536) exceeds sharedBuffers.bufCount (1024)' }],
    );
  });
  t.test('field checks', async (t) => {
    expectIssues(t, { ports: [{ name: 'vm1', partition: { start: -1, count: 1.5 } }] }, [
      { path: 'ports[0].partition.start', message: 'must be at least 0, got -1' },
      { path: 'ports[0].partition.count', message: 'must be a whole number, got 1.5' },
    ]);
    expectIssues(t, { ports: [{ name: 'vm1', partition: { start: 0 } }] }, [
      { path: 'ports[0].partition.count', message: 'is required' },
    ]);
  });
  t.test('cross-field checks are skipped when their inputs failed', async (t) => {
    // bufCount is broken: no "exceeds bufCount" noise, just the bufCount error
    expectIssues(
      t,
      {
        sharedBuffers: { bufCount: 'many' },
        ports: [{ name: 'vm1', partition: { start: 0, count: 4096 } }],
      },
      [{ path: 'sharedBuffers.bufCount', message: 'must be an integer, got "many"' }],
    );
  });
});

t.test('pairs', async (t) => {
  t.test('pair naming a missing port', async (t) => {
    expectIssues(t, { ports: twoPorts(), pairs: [['vm1', 'vm3']] }, [
      { path: 'pairs[0][1]', message: 'no port named "vm3" (ports are "vm1", "vm2")' },
    ]);
  });
  t.test('a port in two pairs', async (t) => {
    expectIssues(t, { ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }], pairs: [['a', 'b'], ['c', 'a']] }, [
      { path: 'pairs[1][1]', message: 'port "a" is already in pairs[0]; a port can be in at most one pair' },
    ]);
  });
  t.test('self-pair', async (t) => {
    expectIssues(t, { ports: twoPorts(), pairs: [['vm1', 'vm1']] }, [
      { path: 'pairs[0]', message: 'pairs port "vm1" with itself; a pair needs two different ports' },
    ]);
  });
  t.test('shape', async (t) => {
    expectIssues(t, { ports: twoPorts(), pairs: [['vm1']] }, [
      { path: 'pairs[0]', message: 'must name exactly 2 ports, got 1' },
    ]);
    expectIssues(t, { ports: twoPorts(), pairs: [['vm1', 2]] }, [{ path: 'pairs[0][1]', message: 'must be a string, got 2' }]);
    expectIssues(t, { ports: twoPorts(), pairs: 'vm1,vm2' }, [{ path: 'pairs', message: 'must be an array, got "vm1,vm2"' }]);
  });
  t.test('valid pairs resolve to tuples', async (t) => {
    const cfg = parseConfig({ ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }], pairs: [['a', 'b'], ['d', 'c']] });
    t.strictSame(cfg.pairs, [['a', 'b'], ['d', 'c']]);
  });
});

t.test('other sections', async (t) => {
  expectIssues(t, { ports: twoPorts(), mode: 'hub' }, [{ path: 'mode', message: 'must be one of "pair", "bridge", got "hub"' }]);
  expectIssues(t, { ports: twoPorts(), mode: 'bridge', pairs: [['vm1', 'vm2']] }, [
    { path: 'pairs', message: 'not used in bridge mode (every port is on the one bridge); remove it or use "mode": "pair"' },
  ]);
  expectIssues(t, { ports: twoPorts(), mode: 'bridge', bridge: { ageingSec: 0 } }, [
    { path: 'bridge.ageingSec', message: 'must be at least 1, got 0' },
  ]);
  t.strictSame(parseConfig({ ports: twoPorts(), mode: 'bridge' }).bridge, { ageingSec: 300, macTableSize: 4096 });
  // TAP uplink ports
  const up = parseConfig({ mode: 'bridge', ports: [{ name: 'vm1' }, { name: 'up', type: 'tap', ifname: 'zctap0' }, { name: 'vm2' }] });
  t.strictSame(up.ports.map((p) => [p.type, p.ifname, p.partition.count]), [['vhost', 'vm1', 2048], ['tap', 'zctap0', 0], ['vhost', 'vm2', 2048]], 'tap ports take no share of the buffers');
  expectIssues(t, { ports: [{ name: 'vm1' }, { name: 'up', type: 'tap' }] }, [
    { path: 'ports[1].type', message: 'tap ports need "mode": "bridge" (the uplink is a port of the learning bridge)' },
  ]);
  expectIssues(t, { mode: 'bridge', ports: [{ name: 'vm1' }, { name: 'up', type: 'tap', ifname: 'a very long name' }] }, [
    { path: 'ports[1].ifname', message: 'must be 1..15 characters of letters, digits, "_", "." or "-" (a Linux interface name)' },
  ]);
  expectIssues(t, { ports: twoPorts(), forwarding: { pollMode: 'spin' } }, [
    { path: 'forwarding.pollMode', message: 'must be one of "busy-poll", "spin-then-sleep", "eventfd", got "spin"' },
  ]);
  expectIssues(t, { ports: twoPorts(), forwarding: { burst: 0, spinUs: 1000001 } }, [
    { path: 'forwarding.burst', message: 'must be at least 1, got 0' },
    { path: 'forwarding.spinUs', message: 'must be at most 1000000, got 1000001' },
  ]);
  expectIssues(t, { ports: twoPorts(), gift: { lowWater: 2 } }, [
    { path: 'gift.lowWater', message: 'must not exceed gift.highWater (1.25), got 2' },
  ]);
  expectIssues(t, { ports: twoPorts(), gift: { lowWater: 0, highWater: 65 } }, [
    { path: 'gift.lowWater', message: 'must be greater than 0, got 0' },
    { path: 'gift.highWater', message: 'must be at most 64, got 65' },
  ]);
  expectIssues(t, { ports: twoPorts(), log: { level: 'verbose' } }, [
    { path: 'log.level', message: 'must be one of "trace", "debug", "info", "warn", "error", "fatal", "silent", got "verbose"' },
  ]);
  expectIssues(t, { ports: twoPorts(), stats: { intervalMs: -1 } }, [
    { path: 'stats.intervalMs', message: 'must be at least 0, got -1' },
  ]);
  expectIssues(t, { ports: twoPorts(), stats: 5000 }, [{ path: 'stats', message: 'must be an object, got 5000' }]);
  expectIssues(t, { ports: twoPorts(), socketDir: '' }, [{ path: 'socketDir', message: 'must not be empty' }]);
  expectIssues(t, { ports: twoPorts(), socketDir: '/run/zc-test', controlSocket: '/run/zc-test/vm2.sock' }, [
    { path: 'controlSocket', message: 'is the same path as the socket of ports[1] ("vm2")' },
  ]);
  expectIssues(t, [], [{ path: '(root)', message: 'must be an object, got an empty array' }]);
});

t.test('all issues are collected', async (t) => {
  const err = expectIssues(
    t,
    {
      sockDir: '/x',
      sharedBuffers: { bufSize: 1000, bufCount: 0 },
      ports: [{ name: 'vm1' }, { name: 'vm1' }],
      pairs: [['vm1', 'vm3']],
      forwarding: { pollMode: 'spin' },
    },
    [
      { path: '(root)', message: 'unknown field "sockDir" (did you mean "socketDir"?)' },
      { path: 'sharedBuffers.bufSize', message: 'must be a multiple of 64 (cache line), got 1000' },
      { path: 'sharedBuffers.bufCount', message: 'must be at least 1, got 0' },
      { path: 'ports[1].name', message: 'duplicate port name "vm1" (also ports[0])' },
      { path: 'pairs[0][1]', message: 'no port named "vm3" (ports are "vm1")' },
      { path: 'forwarding.pollMode', message: 'must be one of "busy-poll", "spin-then-sleep", "eventfd", got "spin"' },
    ],
  );
  const lines = err.message.split('\n');
  t.equal(lines[0], 'invalid config <inline>:');
  t.equal(lines.length, 7);
  t.equal(err.file, undefined);
  t.equal(err.name, 'ConfigError');
});

t.test('files', async (t) => {
  t.test('JSON syntax error names the file and the line', async (t) => {
    const dir = t.testdir({
      'broken.json': '{\n  "ports": [\n    { "name": "vm1" }\n    { "name": "vm2" }\n  ]\n}\n',
      'trailing.json': '{\n  "ports": [{ "name": "vm1" },],\n}\n',
      'empty.json': '',
    });
    const file = path.join(dir, 'broken.json');
    const err = t.throws(() => loadConfig(file)) as ConfigError;
    t.ok(err instanceof ConfigError);
    t.equal(err.file, file);
    t.strictSame(err.issues, [
      {
        path: '(root)',
        message: `invalid JSON at line 4, column 5 (${file}:4:5): unexpected '{', expected ',' or ']' after an array element`,
      },
    ]);
    t.equal(err.message.split('\n')[0], `invalid config ${file}:`);
    t.match(err.message, 'line 4, column 5');

    const trailing = path.join(dir, 'trailing.json');
    const err2 = t.throws(() => loadConfig(trailing)) as ConfigError;
    t.equal(err2.issues[0]!.message, `invalid JSON at line 2, column 31 (${trailing}:2:31): trailing comma before ']' is not allowed in JSON`);

    const empty = path.join(dir, 'empty.json');
    const err3 = t.throws(() => loadConfig(empty)) as ConfigError;
    t.equal(err3.issues[0]!.message, `invalid JSON at line 1, column 1 (${empty}:1:1): file is empty (expected a JSON object)`);
  });
  t.test('missing file', async (t) => {
    const file = path.join(t.testdir({}), 'nope.json');
    const err = t.throws(() => loadConfig(file)) as ConfigError;
    t.ok(err instanceof ConfigError);
    t.equal(err.file, file);
    t.strictSame(err.issues, [{ path: '(root)', message: 'cannot read file: no such file (ENOENT)' }]);
    t.equal(err.message, `invalid config ${file}:\n  (root): cannot read file: no such file (ENOENT)`);
  });
  t.test('a directory', async (t) => {
    const dir = t.testdir({});
    const err = t.throws(() => loadConfig(dir)) as ConfigError;
    t.strictSame(err.issues, [{ path: '(root)', message: 'cannot read file: it is a directory (EISDIR)' }]);
  });
  t.test('validation errors name the file', async (t) => {
    const dir = t.testdir({ 'bad.json': JSON.stringify({ ports: [{ name: 'vm1', nmae: 'x' }] }), 'bom.json': '\ufeff{"ports":[{"name":"a"}]}' });
    const file = path.join(dir, 'bad.json');
    const err = t.throws(() => loadConfig(file)) as ConfigError;
    t.equal(err.file, file);
    t.equal(err.message, `invalid config ${file}:\n  ports[0]: unknown field "nmae" (did you mean "name"?)`);
    t.equal(loadConfig(path.join(dir, 'bom.json')).ports[0]!.name, 'a');
  });
});

t.test('configToJSON round-trips', async (t) => {
  const cfg = loadConfig(path.join(CONFIG_DIR, 'examples', 'busy-poll.json'));
  const json = JSON.parse(JSON.stringify(configToJSON(cfg)));
  t.equal(json.sharedBuffers.base, '0x4000000000');
  t.strictSame(parseConfig(json), cfg);
});

t.test('helpers', async (t) => {
  t.equal(formatPath([]), '(root)');
  t.equal(formatPath(['ports', 1, 'name']), 'ports[1].name');
  t.equal(formatPath(['pairs', 0, 1]), 'pairs[0][1]');
  t.equal(formatPath(['a-b']), '["a-b"]');
  t.equal(findJsonSyntaxError('{"a": [1, 2, {"b": null}], "c": "\\u00e9"}'), undefined);
  t.match(findJsonSyntaxError('{"a": tru}'), { line: 1, column: 7 });
  t.match(findJsonSyntaxError('{\n  // comment\n}'), { line: 2, column: 3, message: 'comments are not allowed in JSON' });
});

t.test('socket permissions: sockets.mode/group/controlMode and ports[].socket', async (t) => {
  t.test('defaults: ports 0660, group unchanged, control 0600', async (t) => {
    const cfg = parseConfig({ ports: twoPorts() });
    t.strictSame(cfg.sockets, { mode: 0o660, group: null, controlMode: 0o600 });
    t.strictSame(cfg.ports.map((p) => p.socket), [{ mode: 0o660, group: null }, { mode: 0o660, group: null }]);
  });
  t.test('octal strings and numbers; a port inherits, overrides either field', async (t) => {
    const cfg = parseConfig({
      sockets: { mode: '0640', group: 'kvm', controlMode: '660' },
      ports: [{ name: 'a' }, { name: 'b', socket: { mode: 0o600 } }, { name: 'c', socket: { group: 1000 } }, { name: 'd', socket: { group: '27' } }],
    });
    t.strictSame(cfg.sockets, { mode: 0o640, group: 'kvm', controlMode: 0o660 });
    t.strictSame(cfg.ports.map((p) => p.socket), [
      { mode: 0o640, group: 'kvm' },
      { mode: 0o600, group: 'kvm' },
      { mode: 0o640, group: 1000 },
      { mode: 0o640, group: 27 },
    ]);
  });
  t.test('bad modes name the field', async (t) => {
    expectIssues(t, { sockets: { mode: 'rw-rw----' }, ports: twoPorts() }, [
      { path: 'sockets.mode', message: 'must be an octal string like "0660" or an integer 0..511 (0o777), got "rw-rw----"' },
    ]);
    expectIssues(t, { sockets: { mode: '0860' }, ports: twoPorts() }, [
      { path: 'sockets.mode', message: 'must be an octal string like "0660" or an integer 0..511 (0o777), got "0860"' },
    ]);
    expectIssues(t, { sockets: { controlMode: '04600' }, ports: twoPorts() }, [
      { path: 'sockets.controlMode', message: 'must be an octal string like "0660" or an integer 0..511 (0o777), got "04600"' },
    ]);
    expectIssues(t, { sockets: { mode: 660 }, ports: twoPorts() }, [
      { path: 'sockets.mode', message: 'must be at most 511 (0o777), got 660; a JSON number is decimal: write the octal mode as a string, "0660"' },
    ]);
    expectIssues(t, { ports: [{ name: 'a', socket: { mode: -1 } }] }, [
      { path: 'ports[0].socket.mode', message: 'must be an octal string like "0660" or an integer 0..511 (0o777), got -1' },
    ]);
  });
  t.test('bad groups and fields name the field', async (t) => {
    expectIssues(t, { sockets: { group: 'no such:group' }, ports: twoPorts() }, [
      { path: 'sockets.group', message: 'must be a group name like "kvm" or a numeric gid, got "no such:group"' },
    ]);
    expectIssues(t, { ports: [{ name: 'a', socket: { group: 2 ** 32 } }] }, [
      { path: 'ports[0].socket.group', message: 'must be a group name like "kvm" or a numeric gid (0..4294967294), got 4294967296' },
    ]);
    expectIssues(t, { ports: [{ name: 'a', socket: { owner: 'root' } }] }, [
      { path: 'ports[0].socket', message: 'unknown field "owner"' },
    ]);
    expectIssues(t, { mode: 'bridge', ports: [{ name: 'a' }, { name: 'up', type: 'tap', socket: { mode: '0600' } }] }, [
      { path: 'ports[1].socket', message: 'a tap port has no socket; remove it' },
    ]);
  });
  t.test('socketDir leaves room for the staging directory', async (t) => {
    const dir = '/' + 'd'.repeat(93);
    t.equal(parseConfig({ socketDir: dir, ports: [{ name: 'a' }] }).socketDir, dir);
    expectIssues(t, { socketDir: dir + 'd', controlSocket: '/run/zc.ctl', ports: [{ name: 'a' }] }, [
      {
        path: 'socketDir',
        message: 'is 95 bytes; sockets are bound as "<socketDir>/.zcsXXXXXX/s" first, which must fit in 107 bytes, so socketDir may be at most 94 bytes',
      },
    ]);
  });
  t.test('configToJSON writes modes as octal strings and round-trips', async (t) => {
    const cfg = parseConfig({ sockets: { group: 'kvm' }, ports: [{ name: 'a', socket: { mode: '0600', group: 5 } }, { name: 'b' }] });
    const json = JSON.parse(JSON.stringify(configToJSON(cfg)));
    t.strictSame(json.sockets, { mode: '0660', group: 'kvm', controlMode: '0600' });
    t.strictSame(json.ports[0].socket, { mode: '0600', group: 5 });
    t.strictSame(parseConfig(json), cfg);
    const plain = parseConfig({ ports: twoPorts() });
    t.strictSame(parseConfig(JSON.parse(JSON.stringify(configToJSON(plain)))), plain);
  });
});

t.test('sharing domains (ports[].domain)', async (t) => {
  const domains = (cfg: SwitchConfig) => cfg.ports.map((p) => p.domain);
  const parts = (cfg: SwitchConfig) => cfg.ports.map((p) => p.partition);

  t.test('pair mode: each pair its own domain, an unpaired port its own; partitions per domain', async (t) => {
    const cfg = parseConfig({
      sharedBuffers: { bufCount: 1000 },
      ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }, { name: 'e' }],
      pairs: [['a', 'b'], ['d', 'c']],
    });
    t.strictSame(domains(cfg), ['pair:a+b', 'pair:a+b', 'pair:d+c', 'pair:d+c', 'port:e']);
    t.strictSame(parts(cfg), [
      { start: 0, count: 500 }, { start: 500, count: 500 },
      { start: 0, count: 500 }, { start: 500, count: 500 },
      { start: 0, count: 1000 },
    ], 'each domain\'s region is shared among its own ports only');
  });

  t.test('bridge mode: one domain unless ports name theirs', async (t) => {
    const cfg = parseConfig({
      mode: 'bridge',
      sharedBuffers: { bufCount: 900 },
      ports: [{ name: 'a' }, { name: 'b', domain: 'blue' }, { name: 'c' }, { name: 'd', domain: 'blue' }, { name: 'up', type: 'tap' }],
    });
    t.strictSame(domains(cfg), ['bridge', 'blue', 'bridge', 'blue', null]);
    t.strictSame(parts(cfg), [
      { start: 0, count: 450 }, { start: 0, count: 450 }, { start: 450, count: 450 }, { start: 450, count: 450 }, { start: 0, count: 0 },
    ]);
  });

  t.test('pair mode: a port that names a domain takes its peer along; pairs may share a named domain', async (t) => {
    const cfg = parseConfig({
      ports: [{ name: 'a', domain: 'chain' }, { name: 'b' }, { name: 'c' }, { name: 'd', domain: 'chain' }],
      pairs: [['a', 'b'], ['c', 'd']],
    });
    t.strictSame(domains(cfg), ['chain', 'chain', 'chain', 'chain']);
    t.strictSame(parts(cfg).map((p) => p.start), [0, 1024, 2048, 3072]);
  });

  t.test('a pair whose ports name different domains is allowed (every frame is then copied)', async (t) => {
    const cfg = parseConfig({ ports: [{ name: 'a', domain: 'x' }, { name: 'b', domain: 'y' }], pairs: [['a', 'b']] });
    t.strictSame(domains(cfg), ['x', 'y']);
    t.strictSame(parts(cfg), [{ start: 0, count: 4096 }, { start: 0, count: 4096 }]);
  });

  t.test('explicit partitions may overlap across domains, not within one', async (t) => {
    const cfg = parseConfig({
      ports: [
        { name: 'a', partition: { start: 0, count: 512 } }, { name: 'b', partition: { start: 512, count: 512 } },
        { name: 'c', partition: { start: 0, count: 512 } }, { name: 'd', partition: { start: 512, count: 512 } },
      ],
      pairs: [['a', 'b'], ['c', 'd']],
    });
    t.strictSame(parts(cfg).map((p) => p.start), [0, 512, 0, 512]);
    expectIssues(t, {
      ports: [{ name: 'a', partition: { start: 0, count: 512 } }, { name: 'b', partition: { start: 256, count: 512 } }],
      pairs: [['a', 'b']],
    }, [{ path: 'ports[1].partition', message: 'port "b" overlaps ports[0] ("a"): buffers 256..511 are in both partitions' }]);
  });

  t.test('errors name the field', async (t) => {
    expectIssues(t, { ports: [{ name: 'a', domain: '' }] }, [{ path: 'ports[0].domain', message: 'must not be empty' }]);
    expectIssues(t, { ports: [{ name: 'a', domain: 'has space' }] }, [{
      path: 'ports[0].domain',
      message: 'must start with a letter or digit and contain only letters, digits, "_", ".", ":", "+" and "-", got "has space"',
    }]);
    expectIssues(t, { ports: [{ name: 'a', domain: 7 }] }, [{ path: 'ports[0].domain', message: 'must be a string, got 7' }]);
    expectIssues(t, { mode: 'bridge', ports: [{ name: 'a' }, { name: 'up', type: 'tap', domain: 'x' }] }, [
      { path: 'ports[1].domain', message: 'a tap port maps no shared buffers (every frame to or from it is copied); remove the domain' },
    ]);
    expectIssues(t, { mode: 'bridge', sharedBuffers: { bufCount: 2 }, ports: [{ name: 'a' }, { name: 'b', domain: 'x' }, { name: 'c', domain: 'x' }, { name: 'd', domain: 'x' }] }, [{
      path: 'sharedBuffers.bufCount',
      message: '2 buffer(s) cannot be shared among 3 ports of domain "x" (each port would get 0); raise bufCount or give explicit partitions',
    }]);
    // 3 domains of 8 GiB each.
    expectIssues(t, { sharedBuffers: { bufCount: 32768, bufSize: 262144 }, ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }] }, [{
      path: 'sharedBuffers.bufCount',
      message: '3 sharing domains of bufCount*bufSize (32768*262144) bytes each take 25769803776 bytes, more than the 16 GiB limit on shared memory; ' +
        'lower bufCount or put ports in fewer domains (ports[].domain)',
    }]);
  });

  t.test('configToJSON keeps the resolved domains', async (t) => {
    const cfg = parseConfig({ ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }], pairs: [['a', 'b']] });
    t.strictSame(parseConfig(JSON.parse(JSON.stringify(configToJSON(cfg)))), cfg);
  });
});

t.test('ports[].connect: client-mode ports', async (t) => {
  const cfg = parseConfig({ socketDir: '/s', ports: [{ name: 'vm1', connect: '/run/qemu/vm1.sock' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] });
  t.equal(cfg.ports[0].connect, '/run/qemu/vm1.sock', 'resolved as written');
  t.notOk('connect' in cfg.ports[1], 'absent on a listening port');
  t.strictSame(parseConfig(JSON.parse(JSON.stringify(configToJSON(cfg)))), cfg, 'configToJSON keeps it (and writes no socket for it)');
  const long = `/${'x'.repeat(107)}`;
  expectIssues(t, { ports: [{ name: 'a', connect: 'vm.sock' }, { name: 'b', connect: long }, { name: 'c', connect: 7 }] }, [
    { path: 'ports[0].connect', message: 'must be an absolute path (the front-end\'s listening socket), got "vm.sock"' },
    { path: 'ports[1].connect', message: 'is 108 bytes; unix socket paths are limited to 107' },
    { path: 'ports[2].connect', message: 'must be a string, got 7' },
  ]);
  expectIssues(t, { mode: 'bridge', ports: [{ name: 'vm1' }, { name: 'up', type: 'tap', connect: '/x.sock' }] }, [
    { path: 'ports[1].connect', message: 'a tap port has no vhost-user front-end to connect to; remove connect' },
  ]);
  expectIssues(t, { ports: [{ name: 'a', connect: '/x.sock', socket: { mode: '0600' } }, { name: 'b', connect: '/x.sock' }] }, [
    { path: 'ports[0].socket', message: 'a client-mode port (connect) has no socket of its own; remove socket' },
    { path: 'ports[1].connect', message: '"/x.sock" is also the connect path of ports[0] ("a")' },
  ]);
  expectIssues(t, { socketDir: '/s', ports: [{ name: 'a', connect: '/s/b.sock' }, { name: 'b' }, { name: 'c', connect: '/s/zcswitch.ctl' }] }, [
    { path: 'ports[0].connect', message: 'is the socket of ports[1] ("b") on this switch, not a front-end' },
    { path: 'ports[2].connect', message: 'is the control socket of this switch, not a front-end' },
  ]);
});

t.test('forwarding.workers and forwarding.cpus', async (t) => {
  t.equal(parseConfig({ ports: twoPorts() }).forwarding.workers, 0, 'default: the main thread forwards');
  t.equal(parseConfig({ ports: twoPorts(), forwarding: { workers: 4 } }).forwarding.workers, 4);
  t.equal(parseConfig({ ports: twoPorts(), forwarding: { workers: 'auto' } }).forwarding.workers, 'auto');
  t.same(parseConfig({ ports: twoPorts(), forwarding: { workers: 2, cpus: [2, 3] } }).forwarding.cpus, [2, 3]);
  t.match(fails(t, { ports: twoPorts(), forwarding: { workers: 'many' } }).message, /forwarding\.workers: .*"auto"/);
  t.match(fails(t, { ports: twoPorts(), forwarding: { workers: 65 } }).message, /forwarding\.workers: must be at most 64/);
  t.match(fails(t, { ports: twoPorts(), forwarding: { workers: 1.5 } }).message, /forwarding\.workers: must be a whole number/);
  t.match(fails(t, { ports: twoPorts(), forwarding: { cpus: [] } }).message, /forwarding\.cpus/);
  t.match(fails(t, { ports: twoPorts(), forwarding: { cpus: [-1] } }).message, /forwarding\.cpus\.0|forwarding\.cpus\[0\]/);
  t.equal(parseConfig({ mode: 'bridge', ports: twoPorts(), forwarding: { workers: 2 } }).forwarding.workers, 2, 'a bridge takes workers');
  const withTap = parseConfig({ mode: 'bridge', ports: [...twoPorts(), { name: 'up', type: 'tap', ifname: 'zc0' }], forwarding: { workers: 2 } });
  t.equal(withTap.forwarding.workers, 2, 'a bridge with a TAP uplink takes workers (the uplink goes to its bridge\'s worker)');
  t.equal(withTap.ports[2].type, 'tap');
  t.equal(parseConfig({ mode: 'bridge', ports: [{ name: 'up', type: 'tap', ifname: 'zc0' }], forwarding: { workers: 'auto' } }).forwarding.workers, 'auto',
    'so does a switch whose only port is an uplink');
});
