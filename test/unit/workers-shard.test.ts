import t from 'tap';
import { assignShards } from '../../src/workers/shard';

const port = (id: number, name: string, domain: string | null) => ({ id, name, domain });

t.test('assignShards: pairs and sharing domains stay whole; domains spread least-loaded', async (t) => {
  const ports = [port(0, 'a1', 'A'), port(1, 'a2', 'A'), port(2, 'b1', 'B'), port(3, 'b2', 'B')];
  const s = assignShards(ports, [['a1', 'a2'], ['b1', 'b2']], 2);
  t.same(s.workers, [{ ports: ['a1', 'a2'], domains: ['A'] }, { ports: ['b1', 'b2'], domains: ['B'] }]);
  t.equal(s.workerOf.get(0), s.workerOf.get(1));
  t.not(s.workerOf.get(0), s.workerOf.get(2));
});

t.test('assignShards: a pair across two sharing domains joins them (one worker owns both ledgers)', async (t) => {
  const ports = [port(0, 'x', 'X'), port(1, 'y', 'Y'), port(2, 'z', 'Z')];
  const s = assignShards(ports, [['x', 'y']], 2);
  t.equal(s.workerOf.get(0), s.workerOf.get(1));
  t.same(s.workers[0].domains, ['X', 'Y']);
  t.same(s.workers[1], { ports: ['z'], domains: ['Z'] });
});

t.test('assignShards: a bridge (one domain) is one shard; more workers than domains leaves some empty', async (t) => {
  const ports = [port(0, 'v1', 'br'), port(1, 'v2', 'br'), port(2, 'v3', 'br')];
  const s = assignShards(ports, [], 3);
  t.same(s.workers.map((w) => w.ports.length), [3, 0, 0]);
  t.throws(() => assignShards(ports, [], 0), RangeError);
});

t.test('assignShards: largest domains first, then least-loaded', async (t) => {
  const ports = [port(0, 's1', 'S'), port(1, 'b1', 'B'), port(2, 'b2', 'B'), port(3, 'b3', 'B'), port(4, 't1', 'T')];
  const s = assignShards(ports, [], 2);
  t.same(s.workers[0].domains, ['B']);
  t.same(s.workers[1].domains, ['S', 'T']);
});

t.test('assignShards: a TAP uplink (no domain) goes with the ports it is joined to, and an uplink alone still gets a worker', async (t) => {
  // Bridge "a": the uplink is listed first (the joins name it), then two VMs in domain A; bridge "b": an uplink alone.
  const ports = [port(0, 'upA', null), port(1, 'a1', 'A'), port(2, 'a2', 'A'), port(3, 'upB', null)];
  const s = assignShards(ports, [['upA', 'a1'], ['upA', 'a2']], 2);
  t.equal(s.workerOf.get(0), s.workerOf.get(1), 'the uplink is on its bridge\'s worker');
  t.equal(s.workerOf.get(0), s.workerOf.get(2));
  t.same(s.workers[0], { ports: ['upA', 'a1', 'a2'], domains: ['A'] }, 'no domain is named for the uplink');
  t.same(s.workers[1], { ports: ['upB'], domains: [] }, 'a bridge of only an uplink has a worker of its own');
  t.not(s.workerOf.get(3), undefined);
});
