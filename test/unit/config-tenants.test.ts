/**
 * The tenant keys of a bridge port (src/config/README.md, `ports[].bridge`
 * to `ports[].limit`): defaults, the domains bridges get, and a
 * clear error naming the field for each mistake.
 */
import path from 'node:path';
import t from 'tap';
import { ConfigError, diffConfig, loadConfig, parseConfig } from '../../src/config';

function issues(raw: unknown): string[] {
  try {
    parseConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => `${i.path}: ${i.message}`);
    throw e;
  }
  return [];
}

t.test('defaults and resolved tenant settings', async (t) => {
  const cfg = parseConfig({
    mode: 'bridge',
    ports: [
      { name: 'a' },
      { name: 'b', bridge: 'vale1', vlan: 20, macs: ['02-00-00-00-00-0B'], isolated: true, limit: { rx: { pps: 10000 }, tx: { bps: 1e9, burstMs: 5 } } },
      { name: 'up', type: 'tap', ifname: 'zc0', trunk: [30, 10] },
    ],
  });
  const [a, b, up] = cfg.ports;
  t.strictSame(a.policy, {
    bridge: 'vale0', vlan: 1, trunk: [], macs: [], isolated: false,
    limit: { rx: { pps: 0, bps: 0, burstMs: 50 }, tx: { pps: 0, bps: 0, burstMs: 50 } },
  }, 'a port that says nothing: bridge vale0, access VLAN 1, no limits');
  t.strictSame(b.policy, {
    bridge: 'vale1', vlan: 20, trunk: [], macs: ['02:00:00:00:00:0b'], isolated: true,
    limit: { rx: { pps: 10000, bps: 0, burstMs: 50 }, tx: { pps: 0, bps: 1e9, burstMs: 5 } },
  }, 'MACs normalised; unset measures 0');
  t.strictSame([up.policy.vlan, up.policy.trunk], [0, [10, 30]], 'a trunk: no access VLAN, VLANs sorted');
  t.same([a.domain, b.domain, up.domain], ['bridge', 'bridge:vale1', null], 'the second bridge gets its own sharing domain');
  t.same([a.partition.count, b.partition.count], [4096, 4096], 'each the whole of its domain\'s region');
});

t.test('mistakes name the field', async (t) => {
  t.same(issues({ ports: [{ name: 'a', vlan: 10 }, { name: 'b' }] }), ['ports[0].vlan: "vlan" is a bridge setting; remove it or use "mode": "bridge"']);
  t.same(issues({ mode: 'bridge', ports: [{ name: 'a', vlan: 4095 }] }), ['ports[0].vlan: must be at most 4094, got 4095']);
  t.same(issues({ mode: 'bridge', ports: [{ name: 'a', vlan: 10, trunk: [10] }] }),
    ['ports[0].trunk: a port is either an access port of one VLAN ("vlan") or a trunk ("trunk"), not both; remove one']);
  t.same(issues({ mode: 'bridge', ports: [{ name: 'a', trunk: [10, 10] }] }), ['ports[0].trunk[1]: VLAN 10 is listed twice']);
  t.same(issues({ mode: 'bridge', ports: [{ name: 'a', macs: ['01:00:5e:00:00:01'] }] }),
    ['ports[0].macs[0]: must be a unicast MAC (a multicast or broadcast address never sends), got "01:00:5e:00:00:01"']);
  t.same(issues({ mode: 'bridge', ports: [{ name: 'a', macs: ['nope'] }] }), ['ports[0].macs[0]: must be a MAC address like "02:00:00:00:00:01", got "nope"']);
  t.same(issues({ mode: 'bridge', ports: [{ name: 'a', limit: { rx: {} } }] }), ['ports[0].limit.rx: limits nothing: give "pps" (frames/s), "bps" (bits/s) or both']);
  t.same(issues({ mode: 'bridge', ports: [{ name: 'a', limit: { rx: { pps: 0 } } }] }), ['ports[0].limit.rx.pps: must be at least 1, got 0']);
  t.same(issues({ mode: 'bridge', ports: [{ name: 'a', limit: { in: { pps: 5 } } }] }).length, 1, 'an unknown direction is an error');
  t.same(issues({ mode: 'bridge', ports: [{ name: 'a', bridge: 'no space' }] }).length, 1, 'a bridge name is checked like a port name');
});

t.test('reload: tenant settings are live, the bridge is not', async (t) => {
  const before = parseConfig({ mode: 'bridge', ports: [{ name: 'a' }, { name: 'b' }] });
  const after = parseConfig({ mode: 'bridge', ports: [{ name: 'a', limit: { rx: { pps: 100 } }, vlan: 5 }, { name: 'b', bridge: 'vale1' }] });
  const d = diffConfig(before, after);
  t.same(d.live.map((c) => c.path).sort(), ['ports[a].limit', 'ports[a].vlan']);
  t.ok(d.restart.some((c) => c.path === 'ports[b].bridge'), 'a changed bridge needs a restart');
});

t.test('config/examples/tenants.json loads', async (t) => {
  const cfg = loadConfig(path.join(__dirname, '..', '..', '..', 'config', 'examples', 'tenants.json'));
  t.same(cfg.ports.map((p) => [p.name, p.policy.bridge, p.domain]), [
    ['red1', 'vale0', 'bridge'], ['red2', 'vale0', 'bridge'], ['red3', 'vale0', 'bridge'], ['blue1', 'vale0', 'bridge'],
    ['up', 'vale0', null], ['lab1', 'vale1', 'bridge:vale1'], ['lab2', 'vale1', 'bridge:vale1'],
  ]);
  t.same(cfg.ports.find((p) => p.name === 'up')?.policy.trunk, [10, 20]);
});
