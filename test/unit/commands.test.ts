/**
 * The control socket's request table (src/switch/commands.ts) over a
 * recording target: unknown commands (names from Object's prototype
 * included) answered with the known ones, arguments checked by name before
 * the switch is asked, refusals as error replies, other errors passed on.
 * The switch behind it is tested end to end in test/e2e (runtime-ports,
 * tenants, capture, cli).
 */
import t from 'tap';
import { type CommandTarget, Refused, handleCommand } from '../../src/switch/commands';

function target(bridgeMode = false): CommandTarget & { calls: unknown[][] } {
  const calls: unknown[][] = [];
  const rec = (name: string) => (...args: unknown[]) => {
    calls.push([name, ...args]);
    return undefined;
  };
  return {
    calls, bridgeMode, dataPorts: [], log: undefined as never, setMirror: () => false,
    stats: () => ({ ports: [] }),
    resetCounters: rec('resetCounters') as () => void,
    macTable: () => {
      throw new Refused('MAC tables are for bridge mode; this switch is in pair mode');
    },
    addPort: (name, o) => {
      calls.push(['addPort', name, o]);
      return { name, id: 1, type: 'vhost', socket: '/s', domain: null, peer: null, attached: false, runtime: true, quota: 0 };
    },
    removePort: rec('removePort') as (n: string) => void,
    listPorts: () => [],
    addPair: rec('addPair') as (a: string, b: string) => void,
    removePair: () => {
      throw new Error('a bug');
    },
    reload: () => ({ ok: true, reloaded: true }),
    crashWorker: rec('crashWorker'),
  };
}

t.test('unknown commands, whatever their name, are answered with the known ones', async (t) => {
  const sw = target();
  for (const cmd of ['frobnicate', 'toString', '__proto__', 'constructor', 42, undefined, null]) {
    const r = handleCommand(sw, { cmd }) as { error: string };
    t.match(r.error, /^unknown command .*; known: stats, reset-counters, macs, capture, port-add, port-del, port-list, pair-add, pair-del, reload$/, `${String(cmd)}`);
  }
  t.same(sw.calls, [], 'nothing reached the switch');
  t.match(handleCommand(sw, { cmd: 'test-crash-worker', worker: 0 }), { error: /unknown command/ }, 'the test hook is off without ZCSWITCH_TEST_HOOKS');
});

t.test('arguments are checked by name before the switch is asked', async (t) => {
  const sw = target();
  t.same(handleCommand(sw, { cmd: 'port-add' }), { error: '"name" must be a non-empty string' });
  t.same(handleCommand(sw, { cmd: 'port-add', name: 'x', pair: 5 }), { error: '"pair" must be a non-empty string' });
  t.same(handleCommand(sw, { cmd: 'pair-add', a: 'x' }), { error: '"b" must be a non-empty string' });
  t.same(handleCommand(sw, { cmd: 'macs', bridge: 3 }), { error: '"bridge" must be a string' });
  t.same(sw.calls, [], 'nothing reached the switch');
  t.match(handleCommand(sw, { cmd: 'port-add', name: 'x', pair: null, vlan: 5 }), { error: /vlan: bridge settings; this switch is in pair mode/ },
    'tenant settings refused in pair mode');
  t.match(handleCommand(target(true), { cmd: 'port-add', name: 'x', vlan: 5, trunk: [6] }), { error: /either an access port of one VLAN or a trunk/ });
  t.match(handleCommand(sw, { cmd: 'port-add', name: 'x', domain: 'd' }), { ok: true, port: { name: 'x' } });
  t.same(sw.calls, [['addPort', 'x', { pair: undefined, domain: 'd', connect: undefined, policy: undefined }]]);
});

t.test('a refusal is an error reply; any other error is passed on', async (t) => {
  const sw = target();
  t.same(handleCommand(sw, { cmd: 'macs' }), { error: 'MAC tables are for bridge mode; this switch is in pair mode' });
  t.throws(() => handleCommand(sw, { cmd: 'pair-del', a: 'a', b: 'b' }), /a bug/);
  t.same(handleCommand(sw, { cmd: 'reset-counters' }), { ok: true });
  t.same(handleCommand(sw, { cmd: 'reload' }), { ok: true, reloaded: true });
  t.same(sw.calls, [['resetCounters']]);
});
