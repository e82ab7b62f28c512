/** diffConfig (src/config/diff.ts): what a reload adds, removes, applies live, and reports as needing a restart. */
import t from 'tap';
import { diffConfig, parseConfig } from '../../src/config';

const base = { ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }], pairs: [['a', 'b']] };

t.test('the same file: no differences', async (t) => {
  const d = diffConfig(parseConfig(base), parseConfig(base));
  t.same(d, { addPorts: [], removePorts: [], addPairs: [], removePairs: [], live: [], restart: [] });
});

t.test('ports and pairs added and removed by name; pairs in either order are the same pair', async (t) => {
  const next = parseConfig({ ports: [{ name: 'a' }, { name: 'b' }, { name: 'd' }, { name: 'e' }], pairs: [['b', 'a'], ['d', 'e']] });
  const d = diffConfig(parseConfig(base), next);
  t.same(d.addPorts.map((p) => [p.name, p.domain]), [['d', 'pair:d+e'], ['e', 'pair:d+e']]);
  t.same(d.removePorts, ['c']);
  t.same(d.addPairs, [['d', 'e']]);
  t.same(d.removePairs, []);
});

t.test('live settings and restart settings are told apart', async (t) => {
  const next = parseConfig({
    ...base, forwarding: { burst: 16, queuePairs: 2 }, log: { level: 'debug' }, gift: { highWater: 2 },
    sharedBuffers: { bufSize: 4096 }, mode: 'pair', socketDir: '/tmp/zcs-other',
  });
  const d = diffConfig(parseConfig(base), next);
  t.same(d.live.map((c) => c.path).sort(), ['forwarding.burst', 'gift.highWater', 'log.level']);
  t.same(d.live.find((c) => c.path === 'forwarding.burst'), { path: 'forwarding.burst', from: 64, to: 16 });
  t.same(d.restart.map((c) => c.path).sort(), ['controlSocket', 'forwarding.queuePairs', 'sharedBuffers.bufSize', 'socketDir']);
});

t.test('the pair exchange needs a restart (VMs must re-attach to be told it)', async (t) => {
  const next = parseConfig({ ...base, forwarding: { pairExchange: 'swap' } });
  const d = diffConfig(parseConfig(base), next);
  t.same(d.restart, [{ path: 'forwarding.pairExchange', from: 'gift', to: 'swap' }]);
  t.same(d.live, []);
});

t.test('a running port whose domain changes needs a restart', async (t) => {
  const next = parseConfig({ ...base, ports: [{ name: 'a' }, { name: 'b' }, { name: 'c', domain: 'x' }] });
  const d = diffConfig(parseConfig(base), next);
  t.same(d.restart, [{ path: 'ports[c].domain', from: 'port:c', to: 'x' }]);
  t.same([d.addPorts, d.removePorts], [[], []]);
});
