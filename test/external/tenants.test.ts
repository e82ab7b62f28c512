/**
 * Tenants with real outside parts (skipped without them; failures under
 * CI=true: test/README.md):
 *  1. a TAP uplink on VLAN 10 in a network namespace this test makes: the
 *     kernel pings VMs on VLAN 10 and not on VLAN 20, tshark reads the tags
 *     off a capture of a trunk port, and an isolated port reaches the
 *     uplink but not another isolated port (also with data-path workers:
 *     the uplink then runs on its bridge's worker);
 *  2. QEMU guests: on one VLAN they ping each other, across VLANs they
 *     cannot.
 */
import { execFile, execFileSync } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { netnsProblem, requireExternal, requireProgram } from '../helpers/external';
import { NetResponder } from '../helpers/net';
import { type SwitchProc, counters, run, sleep, startSwitch, waitAttached, waitFor } from '../helpers/procs';
import { QEMU_BIN, QemuGuest, type GuestOptions, findQemu, guestImage } from '../helpers/qemu';

const sh = (cmd: string): string => execFileSync('sh', ['-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
/** Asynchronous: the in-process VMs must keep running meanwhile. */
const shAsync = async (cmd: string): Promise<string> => (await promisify(execFile)('sh', ['-c', cmd], { encoding: 'utf8' })).stdout;

const noNetns = requireExternal(t, 'network namespaces', netnsProblem()) || requireProgram(t, 'tshark', 'apt-get install tshark');
const noQemu = requireProgram(t, QEMU_BIN, 'apt-get install qemu-system-x86', findQemu());
const tag = `zt${process.pid % 100000}`;

/** A NetResponder VM on `port`; stopped before its driver closes. */
async function responder(t: Test, sw: SwitchProc, port: string, mac: string, ip: string): Promise<NetResponder> {
  let host: NetResponder | null = null;
  const drv = await GuestDriver.attach({ socketPath: path.join(sw.dir, `${port}.sock`), onClose: () => host?.stop() });
  host = new NetResponder(drv, mac, ip);
  host.start();
  const h = host;
  t.teardown(() => {
    h.stop();
    drv.close();
  });
  return h;
}

for (const workers of [0, 2]) t.test(`a TAP uplink on VLAN 10, a trunk captured with tshark; isolated ports reach the uplink only${workers ? ` (${workers} data-path workers)` : ''}`, { skip: noNetns }, async (t) => {
  // The uplink is an access port: this kernel may lack 802.1Q (8021q, bridge VLAN filtering), so the tags
  // are read where the switch adds them, on a vhost trunk port, by tshark from the switch's capture.
  const ns = `${tag}a${workers}`;
  sh(`ip netns add ${ns}`);
  t.teardown(() => sh(`ip netns del ${ns} 2>/dev/null || true`));
  const sw = await startSwitch(t, {
    mode: 'bridge',
    ports: [
      { name: 'vm1', vlan: 10, isolated: true },
      { name: 'vm2', vlan: 20 },
      { name: 'vm3', vlan: 10, isolated: true },
      { name: 'tr', trunk: [10, 20] },
      { name: 'up', type: 'tap', ifname: 'zcup0', vlan: 10 },
    ],
    ...(workers ? { forwarding: { workers } } : {}),
  }, { prefix: ['ip', 'netns', 'exec', ns] });
  if (workers) {
    const placed = (await sw.stats()).workers.map((w) => w.ports);
    t.ok(placed.some((ports) => ports.includes('up') && ports.includes('vm1') && ports.includes('tr')), `one bridge, one worker: ${JSON.stringify(placed)}`);
  }
  sh(`ip netns exec ${ns} sh -c 'ip link set lo up; ip addr add 10.78.0.1/24 dev zcup0; ip link set zcup0 up'`);
  const vm1 = await responder(t, sw, 'vm1', '02:00:00:00:78:01', '10.78.0.2');
  const vm2 = await responder(t, sw, 'vm2', '02:00:00:00:78:02', '10.78.0.4');
  const vm3 = await responder(t, sw, 'vm3', '02:00:00:00:78:03', '10.78.0.3');
  await responder(t, sw, 'tr', '02:00:00:00:78:0f', '10.78.0.15');
  await waitAttached(sw, 'vm1', 'vm2', 'vm3', 'tr');

  for (const ip of ['10.78.0.2', '10.78.0.3']) {
    const out = await shAsync(`ip netns exec ${ns} ping -c 3 -i 0.2 -W 2 ${ip}`);
    t.match(out, /3 packets transmitted, 3 received/, `the kernel (uplink, VLAN 10) pings ${ip} on an isolated port`);
  }
  const out = await shAsync(`ip netns exec ${ns} ping -c 2 -i 0.2 -W 1 10.78.0.4 || true`);
  t.match(out, /2 packets transmitted, 0 received/, 'but not vm2 on VLAN 20');
  t.equal(vm2.arpAnswered, 0, 'vm2 never saw the kernel\'s ARP requests');
  const upMac = (await sw.stats()).ports.find((p) => p.name === 'up')!.macs[0];
  t.ok(upMac, `the kernel's MAC learned on the uplink: ${upMac}`);

  // One broadcast each from vm2 (VLAN 20), vm1 (VLAN 10) and the kernel (VLAN 10, an ARP request) out of the trunk.
  const file = path.join(sw.dir, 'trunk.pcap');
  const cap = run(['capture', '--control', sw.control, '--port', 'tr', '--direction', 'to-vm', '-c', '3', '-w', file]);
  await waitFor('the capture to be armed', () => cap.stderr().includes('capturing on port tr') || cap.child.exitCode !== null);
  vm2.ping('ff:ff:ff:ff:ff:ff', '10.78.0.99', 0x53, 0, 56);
  await sleep(200);
  vm1.ping('ff:ff:ff:ff:ff:ff', '10.78.0.99', 0x54, 0, 56);
  await sleep(200);
  await shAsync(`ip netns exec ${ns} ping -c 1 -W 1 10.78.0.50 || true`);
  t.equal((await cap.exited).code, 0, `capture done: ${cap.stderr()}`);
  // What went out of the trunk port, as tshark decodes it: [vlan.id, eth.src].
  const rows = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'vlan.id', '-e', 'eth.src'], { encoding: 'utf8' })
    .split('\n').filter((l) => l.trim() !== '').map((l) => l.split('\t'));
  t.same(rows.sort(), [['10', '02:00:00:00:78:01'], ['10', upMac], ['20', '02:00:00:00:78:02']].sort(),
    'tshark: vm1 and the kernel tagged VLAN 10, vm2 tagged VLAN 20');

  // vm1 (isolated) -> vm3 (isolated): dropped; vm1 -> the uplink (the kernel): answered.
  const before = vm3.echoAnswered;
  for (let seq = 0; seq < 3; seq++) vm1.ping('02:00:00:00:78:03', '10.78.0.3', 0x51, seq, 56);
  await waitFor('the isolated drops', async () => counters(await sw.port('vm1')).drops.isolated === 3);
  t.equal(vm3.echoAnswered, before, 'vm3 never got vm1\'s echo requests');
  for (let seq = 0; seq < 3; seq++) vm1.ping(upMac, '10.78.0.1', 0x52, seq, 56);
  const reply = await vm1.waitFor('echo replies from the kernel', (f) => f.icmpType === 0 && f.srcIp === '10.78.0.1' && f.id === 0x52);
  t.equal(reply.srcMac, upMac, 'vm1 (isolated) got the kernel\'s echo reply over the uplink');
  t.ok((await sw.stats()).ledger.ok, 'ledger balanced');
});

t.test('QEMU guests: ping on one VLAN, none across VLANs', { skip: noQemu }, async (t) => {
  guestImage();
  const sw = await startSwitch(t, { mode: 'bridge', ports: [{ name: 'a', vlan: 10 }, { name: 'b', vlan: 10 }, { name: 'c', vlan: 20 }] });
  const boot = (o: GuestOptions): QemuGuest => {
    const g = QemuGuest.start(o);
    t.teardown(() => g.kill());
    return g;
  };
  const sock = (n: string): string => path.join(sw.dir, `${n}.sock`);
  const a = boot({ name: 'a', socket: sock('a'), ip: '10.0.0.1/24', peer: '10.0.0.2', roles: ['ping'], count: 3 });
  const b = boot({ name: 'b', socket: sock('b'), ip: '10.0.0.2/24', peer: '10.0.0.1', roles: ['ping'], count: 3 });
  const c = boot({ name: 'c', socket: sock('c'), ip: '10.0.0.3/24', peer: '10.0.0.1', roles: ['ping'], count: 3 });
  const [pa, pb, pc] = await Promise.all([a.result('ping', 180_000), b.result('ping', 180_000), c.result('ping', 180_000)]);
  t.ok(pa.ok, `a -> b (both VLAN 10): ${pa.line}`);
  t.ok(pb.ok, `b -> a (both VLAN 10): ${pb.line}`);
  t.notOk(pc.ok, `c (VLAN 20) -> a (VLAN 10) fails: ${pc.line}`);
  const s = await sw.stats();
  t.equal(counters(s.ports.find((p) => p.name === 'a')!).txPackets + counters(s.ports.find((p) => p.name === 'b')!).txPackets > 0, true, 'a and b exchanged frames');
  t.ok(s.ledger.ok, 'ledger balanced');
});
