/**
 * The TAP uplink, in network namespaces this test creates (and removes):
 *  1. the kernel in a namespace pings a guest-driver VM through the switch;
 *  2. two switches in two namespaces, each with a TAP uplink on a kernel
 *     bridge with a VXLAN device, joined by a veth pair: a VM on one switch
 *     sends to a VM on the other.
 * Each case also runs with data-path worker threads (forwarding.workers: 2):
 * the uplink is then served by its bridge's worker; and with workers, a
 * bridge of only an uplink has a worker that a port added at run time joins.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { promisify } from 'node:util';
import path from 'node:path';
import t, { type Test } from 'tap';
import { parsePcap } from '../../src/capture/pcap';
import { GuestDriver } from '../../src/guest/driver';
import { controlRequest } from '../../src/switch/control';
import { NetResponder } from '../helpers/net';
import { fdsLinkingTo } from '../helpers/fds';
import { netnsProblem, requireExternal, requireProgram } from '../helpers/external';
import { QEMU_BIN, QemuGuest, findQemu, guestImage } from '../helpers/qemu';
import { type SwitchProc, counters, run, startSwitch, vm, waitFor } from '../helpers/procs';

const sh = (cmd: string): string => execFileSync('sh', ['-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
/** Asynchronous: the event loop must keep running the in-process VM meanwhile. */
const shAsync = async (cmd: string): Promise<string> => (await promisify(execFile)('sh', ['-c', cmd], { encoding: 'utf8' })).stdout;
/** `zcswitch start` inside a namespace (a bridge unless the config says otherwise); stopped and its dir removed when t ends. */
const switchIn = (t: Test, ns: string, config: Record<string, unknown>, env?: NodeJS.ProcessEnv): Promise<SwitchProc> =>
  startSwitch(t, { mode: 'bridge', ...config }, { prefix: ['ip', 'netns', 'exec', ns], env });

// Namespaces need root (CAP_NET_ADMIN); the QEMU case needs QEMU too. In CI both are there (.ci/run).
const noNetns = requireExternal(t, 'network namespaces', netnsProblem());
const noQemu = noNetns || requireProgram(t, QEMU_BIN, 'apt-get install qemu-system-x86', findQemu());

const tag = `zc${process.pid % 100000}`;

/** forwarding.workers for a case: 0, the main thread serves the uplink; 2, its bridge's worker thread does. */
const withWorkers = (workers: number) => (workers ? { forwarding: { workers } } : {});
const workersName = (workers: number) => (workers ? ` (${workers} data-path workers)` : '');
/** With workers: the uplink and the VM are on one worker (one bridge), named in stats. */
function checkPlacement(t: Test, s: Awaited<ReturnType<SwitchProc['stats']>>, workers: number, vmName: string): void {
  if (!workers) return;
  t.equal(s.workers.length, workers, `${workers} workers forward`);
  const w = s.workers.find((x) => x.ports.includes('up'));
  t.ok(w !== undefined && w.ports.includes(vmName), `the uplink is on its bridge's worker, with ${vmName}: ${JSON.stringify(s.workers.map((x) => x.ports))}`);
}

for (const workers of [0, 2]) t.test(`the host stack pings a guest-driver VM through the TAP uplink, captured there${workersName(workers)}`, { skip: noNetns }, async (t) => {
  const ns = `${tag}a${workers}`;
  sh(`ip netns add ${ns}`);
  t.teardown(() => sh(`ip netns del ${ns} 2>/dev/null || true`));
  const sw = await switchIn(t, ns, { ports: [{ name: 'vm1' }, { name: 'up', type: 'tap', ifname: 'zcup0' }], ...withWorkers(workers) });
  t.match(sw.stdout(), /port up: TAP interface zcup0/, 'start lists the uplink');
  // No IPv6 chatter (router solicitations, DAD): the capture below sees the ping's frames only.
  sh(`ip netns exec ${ns} sh -c 'sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 || true
    ip link set lo up; ip addr add 10.77.0.1/24 dev zcup0; ip link set zcup0 up'`);
  const drv = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm1.sock') });
  t.teardown(() => drv.close());
  const host = new NetResponder(drv, '02:00:00:00:77:02', '10.77.0.2');
  host.start();
  t.teardown(() => host.stop());
  // Capture the uplink itself, both ways: the kernel's ARP request and echo requests in, the VM's answers out.
  const file = path.join(sw.dir, 'up.pcap');
  const cap = run(['capture', '--control', sw.control, '--port', 'up', '-c', '6', '-w', file]);
  await waitFor('the capture to be armed', () => cap.stderr().includes('capturing on port up') || cap.child.exitCode !== null);
  const out = await shAsync(`ip netns exec ${ns} ping -c 3 -i 0.2 -W 2 10.77.0.2`);
  t.match(out, /3 packets transmitted, 3 received/, 'kernel ping through the switch: 3 of 3 answered');
  t.ok(host.arpAnswered >= 1 && host.echoAnswered >= 3, `the VM answered ARP (${host.arpAnswered}) and ICMP (${host.echoAnswered})`);
  t.equal((await cap.exited).code, 0, `capture done: ${cap.stderr()}`);
  t.match(cap.stdout(), /^6 frames captured on port up, 0 dropped/m, `summary: ${cap.stdout().trim()}`);
  // ICMP type (byte 34: Ethernet 14 + IPv4 20) of the captured IPv4 ICMP frames: both echo requests (8) and replies (0).
  const icmp = parsePcap(fs.readFileSync(file)).records
    .filter((r) => r.data.length >= 42 && r.data.readUInt16BE(12) === 0x0800 && r.data[23] === 1).map((r) => r.data[34]);
  t.ok(icmp.includes(8) && icmp.includes(0), `the capture holds the kernel's echo requests and the VM's replies (ICMP types ${icmp.join(',')})`);
  const s = await sw.stats();
  const up = s.ports.find((p) => p.name === 'up')!;
  t.equal(up.socket, 'tap:zcup0');
  t.ok(counters(up).rxPackets >= 4 && counters(up).txPackets >= 4, `frames crossed the uplink both ways (${counters(up).rxPackets} in, ${counters(up).txPackets} out)`);
  t.ok(up.queues.length === 1 && up.queues[0].rxPackets === counters(up).rxPackets, `its queue counters came along (${JSON.stringify(up.queues)})`);
  t.ok(up.macs.length >= 1, `the kernel's MAC was learned on the uplink (${up.macs.join(', ')})`);
  checkPlacement(t, s, workers, 'vm1');
  t.ok(s.ledger.ok, 'ledger balanced');
});

for (const workers of [0, 2]) t.test(`the host stack pings a QEMU guest through the TAP uplink${workersName(workers)}`, { skip: noQemu }, async (t) => {
  guestImage();
  const ns = `${tag}q${workers}`;
  sh(`ip netns add ${ns}`);
  t.teardown(() => sh(`ip netns del ${ns} 2>/dev/null || true`));
  const sw = await switchIn(t, ns, { ports: [{ name: 'vm1' }, { name: 'up', type: 'tap', ifname: 'zcup0' }], ...withWorkers(workers) });
  sh(`ip netns exec ${ns} sh -c 'ip link set lo up; ip addr add 10.79.0.1/24 dev zcup0; ip link set zcup0 up'`);
  const g = QemuGuest.start({ socket: path.join(sw.dir, 'vm1.sock'), ip: '10.79.0.2/24', roles: ['wait'], timeoutS: 60 });
  t.teardown(() => g.kill());
  await g.ready();
  const out = await shAsync(`ip netns exec ${ns} ping -c 3 -i 0.3 -W 3 10.79.0.2`);
  t.match(out, /3 packets transmitted, 3 received/, 'kernel ping to the QEMU guest through the bridge: 3 of 3 answered');
  const s = await sw.stats();
  t.ok(counters(s.ports.find((p) => p.name === 'vm1')!).copied >= 3, 'the guest is a classic port: its frames were copied');
  checkPlacement(t, s, workers, 'vm1');
  t.ok(s.ledger.ok, 'ledger balanced');
});

t.test('workers: a bridge of only an uplink has a worker; a port added at run time joins it; port del of the uplink closes the worker\'s fd', { skip: noNetns }, async (t) => {
  const ns = `${tag}r`;
  sh(`ip netns add ${ns}`);
  t.teardown(() => sh(`ip netns del ${ns} 2>/dev/null || true`));
  const sw = await switchIn(t, ns, { ports: [{ name: 'up', type: 'tap', ifname: 'zcup0' }], forwarding: { workers: 2 } });
  t.same((await sw.stats()).workers.map((w) => w.ports), [['up'], []], 'the uplink alone has worker 0');
  t.match(await controlRequest(sw.control, { cmd: 'port-add', name: 'vm1' }), { ok: true });
  t.same((await sw.stats()).workers.map((w) => w.ports.slice().sort()), [['up', 'vm1'], []], 'vm1 goes to the uplink\'s worker (the bridge\'s)');
  sh(`ip netns exec ${ns} sh -c 'ip link set lo up; ip addr add 10.76.0.1/24 dev zcup0; ip link set zcup0 up'`);
  const drv = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm1.sock') });
  t.teardown(() => drv.close());
  const host = new NetResponder(drv, '02:00:00:00:76:02', '10.76.0.2');
  host.start();
  t.teardown(() => host.stop());
  const out = await shAsync(`ip netns exec ${ns} ping -c 3 -i 0.2 -W 2 10.76.0.2`);
  t.match(out, /3 packets transmitted, 3 received/, 'kernel ping to the run-time port through the uplink on the worker: 3 of 3 answered');
  t.match(await controlRequest(sw.control, { cmd: 'port-del', name: 'up' }), { ok: true });
  // A TAP interface goes when its last fd closes: the main thread's and the worker's dup both.
  await waitFor('zcup0 to go', () => { try { sh(`ip netns exec ${ns} ip link show zcup0`); return false; } catch { return true; } });
  const s = await sw.stats();
  t.same(s.workers.map((w) => w.ports), [['vm1'], []], 'the uplink left its worker');
  t.notOk(s.ports.some((p) => p.name === 'up'), 'and the switch');
  t.ok(s.ledger.ok, 'ledger balanced');
});

t.test('workers: a worker that dies leaves no dup of the uplink\'s fd open; the interface and the switch stay', { skip: noNetns }, async (t) => {
  const ns = `${tag}k`;
  sh(`ip netns add ${ns}`);
  t.teardown(() => sh(`ip netns del ${ns} 2>/dev/null || true`));
  const sw = await switchIn(t, ns, { ports: [{ name: 'vm1' }, { name: 'up', type: 'tap', ifname: 'zcup0' }], forwarding: { workers: 2 } }, { ZCSWITCH_TEST_HOOKS: '1' });
  const pid = sw.child.pid!;
  const tunFds = () => fdsLinkingTo(pid, '/dev/net/tun');
  t.equal(tunFds().length, 2, 'the interface\'s fd and the dup lent to its worker');
  const w = (await sw.stats()).workers.findIndex((x) => x.ports.includes('up'));
  t.match(await controlRequest(sw.control, { cmd: 'test-crash-worker', worker: w }), { ok: true });
  await waitFor('the dead worker\'s dup to be closed', () => tunFds().length === 1, 10000).catch(() => {});
  t.equal(tunFds().length, 1, 'only the control plane\'s fd is left: the dup lent to the dead worker is closed');
  t.match(sh(`ip netns exec ${ns} ip link show zcup0`), /zcup0/, 'the interface stays (unserved until a restart)');
  t.equal(sw.child.exitCode, null, 'the switch runs on');
  t.ok((await sw.stats()).ports.some((p) => p.name === 'up'), 'and answers');
  t.match(await controlRequest(sw.control, { cmd: 'port-del', name: 'up' }), { ok: true }, 'the unserved uplink can still be removed');
  await waitFor('zcup0 to go', () => { try { sh(`ip netns exec ${ns} ip link show zcup0`); return false; } catch { return true; } });
  t.equal(tunFds().length, 0, 'no fd of it left');
});

/** Python in a namespace: the host side of a TCP stream (md5 and byte count printed as JSON). */
const PY_RECV = `import socket,hashlib,json
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',5001)); s.listen(1); s.settimeout(120)
c,_=s.accept(); c.settimeout(120); h=hashlib.md5(); n=0
while True:
  d=c.recv(1<<16)
  if not d: break
  h.update(d); n+=len(d)
print(json.dumps({'bytes':n,'md5':h.hexdigest()}))`;
const PY_SEND = (kib: number): string => `import socket,hashlib,json,os,time
d=os.urandom(${kib}*1024); end=time.time()+60
while True:
  try:
    c=socket.create_connection(('10.79.0.2',5001),timeout=5); break
  except OSError:
    if time.time()>end: raise
    time.sleep(0.2)
c.sendall(d); c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
print(json.dumps({'bytes':len(d),'md5':hashlib.md5(d).hexdigest()}))`;

for (const workers of [0, 2]) t.test(`the host stack and a QEMU guest exchange a TCP stream both ways through the TAP uplink, with offloads${workersName(workers)}`, { skip: noQemu }, async (t) => {
  guestImage();
  const ns = `${tag}s${workers}`;
  sh(`ip netns add ${ns}`);
  t.teardown(() => sh(`ip netns del ${ns} 2>/dev/null || true`));
  const sw = await switchIn(t, ns, { ports: [{ name: 'vm1' }, { name: 'up', type: 'tap', ifname: 'zcup0' }], ...withWorkers(workers) });
  sh(`ip netns exec ${ns} sh -c 'ip link set lo up; ip addr add 10.79.0.1/24 dev zcup0; ip link set zcup0 up'`);
  const kib = 4096;
  // The guest receives first (host -> guest), then sends (guest -> host).
  const g = QemuGuest.start({ socket: path.join(sw.dir, 'vm1.sock'), ip: '10.79.0.2/24', peer: '10.79.0.1', roles: ['tcp-recv', 'tcp-send'],
    tcpPort: 5001, kib, timeoutS: 150 });
  t.teardown(() => g.kill());
  await g.ready();
  const hostRecv = shAsync(`ip netns exec ${ns} python3 -c "${PY_RECV}"`);
  await g.waitFor(/ZC LISTENING/, 'the guest to listen');
  const sent = JSON.parse(await shAsync(`ip netns exec ${ns} python3 -c "${PY_SEND(kib)}"`)) as { bytes: number; md5: string };
  const gotGuest = await g.result('tcp-recv', 120_000);
  t.equal(gotGuest.fields.bytes, String(kib * 1024), 'host -> guest: every byte arrived');
  t.equal(gotGuest.fields.md5, sent.md5, 'host -> guest: md5 matches');
  const guestSent = await g.result('tcp-send', 120_000);
  const gotHost = JSON.parse(await hostRecv) as { bytes: number; md5: string };
  t.ok(guestSent.ok, `guest -> host: ${guestSent.line}`);
  t.equal(gotHost.bytes, kib * 1024, 'guest -> host: every byte arrived');
  t.equal(gotHost.md5, guestSent.fields.md5, 'guest -> host: md5 matches');
  const s = await sw.stats();
  const up = counters(s.ports.find((p) => p.name === 'up')!);
  const v = counters(s.ports.find((p) => p.name === 'vm1')!);
  t.ok(up.gsoFrames > 0, `the kernel handed in GSO frames (${up.gsoFrames})`);
  t.ok(v.gsoFrames > 0, `the guest sent GSO frames out through the uplink (${v.gsoFrames})`);
  t.notOk(Object.keys(up.drops).some((k) => k.startsWith('bad-')) || Object.keys(v.drops).some((k) => k.startsWith('bad-')),
    `no bad headers (${JSON.stringify(up.drops)} ${JSON.stringify(v.drops)})`);
  checkPlacement(t, s, workers, 'vm1');
  t.ok(s.ledger.ok, 'ledger balanced');
});

for (const workers of [0, 2]) t.test(`two switches joined by a kernel VXLAN link carry VM-to-VM traffic${workersName(workers)}`, { skip: noNetns }, async (t) => {
  const [n1, n2] = [`${tag}b${workers}`, `${tag}c${workers}`];
  const cleanup = () => sh(`ip netns del ${n1} 2>/dev/null; ip netns del ${n2} 2>/dev/null; true`);
  sh(`ip netns add ${n1} && ip netns add ${n2}`);
  t.teardown(cleanup);
  // Underlay: a veth pair between the namespaces.
  sh(`ip link add ${tag}${workers}v1 netns ${n1} type veth peer name ${tag}${workers}v2 netns ${n2}`);
  const sw1 = await switchIn(t, n1, { ports: [{ name: 'vm1' }, { name: 'up', type: 'tap', ifname: 'zcup0' }], ...withWorkers(workers) });
  const sw2 = await switchIn(t, n2, { ports: [{ name: 'vm2' }, { name: 'up', type: 'tap', ifname: 'zcup0' }], ...withWorkers(workers) });
  for (const [ns, me, peer, veth] of [[n1, '192.168.250.1', '192.168.250.2', `${tag}${workers}v1`], [n2, '192.168.250.2', '192.168.250.1', `${tag}${workers}v2`]]) {
    sh(`ip netns exec ${ns} sh -c '
      sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 || true
      ip link set lo up
      ip addr add ${me}/30 dev ${veth} && ip link set ${veth} up
      ip link add vx0 type vxlan id 42 local ${me} remote ${peer} dstport 4789 dev ${veth}
      ip link add br0 type bridge && ip link set br0 up
      ip link set vx0 master br0 && ip link set vx0 up
      ip link set zcup0 master br0 && ip link set zcup0 up'`);
  }
  // Resolve the underlay's ARP first: until it is, the kernel queues VXLAN
  // packets for the peer in a small per-neighbour queue and drops the rest.
  // Two full-suite runs here hung in this test: switch 1 had sent all 2001
  // frames out of its uplink and the sink still waited; this is the likely
  // place they went (not reproduced alone, nor under a CPU hog).
  // A few tries: once in a full-suite run the first 5 s ping got no answer on a loaded machine.
  sh(`ip netns exec ${n1} sh -c 'for i in 1 2 3 4 5; do ping -c 1 -W 3 192.168.250.2 >/dev/null && exit 0; done; exit 1'`);
  // Bounded: a frame lost on the way (a kernel queue under load) must fail
  // the count below with numbers, not hang the suite until tap's timeout.
  const sink = vm(sw2, 'vm2', ['--mode', 'sink', '--count', '2000', '--duration', '30', '--mac', '02:00:00:00:00:22', '--announce']);
  await waitFor('vm2 to attach', async () => (await sw2.stats()).ports.find((p) => p.name === 'vm2')?.ready);
  const gen = vm(sw1, 'vm1', ['--mode', 'gen', '--count', '2000', '--rate', '20000', '--size', '200', '--mac', '02:00:00:00:00:11', '--dst-mac', '02:00:00:00:00:22', '--announce']);
  const [g, k] = await Promise.all([gen.result, sink.result]);
  t.equal(g.summary.sent, 2000, 'vm1 sent 2000 frames on switch 1');
  t.equal(k.summary.verified, 2000, 'vm2 on switch 2 received and verified all of them (across the VXLAN link)');
  t.equal(k.summary.lost, 0, 'none lost');
  const s1 = await sw1.stats();
  const s2 = await sw2.stats();
  if (k.summary.verified !== 2000) {
    t.comment(`sink: ${JSON.stringify(k.summary)}`);
    for (const [name, st] of [['switch 1', s1], ['switch 2', s2]] as const) {
      for (const p of st.ports) t.comment(`${name} ${p.name}: ${JSON.stringify(p.counters)}`);
    }
  }
  t.ok(counters(s1.ports.find((p) => p.name === 'up')!).txPackets >= 2000, 'switch 1 sent them out of its uplink');
  t.ok(counters(s2.ports.find((p) => p.name === 'up')!).rxPackets >= 2000, 'switch 2 took them in from its uplink');
  t.same(s2.ports.find((p) => p.name === 'up')!.macs.includes('02:00:00:00:00:11'), true, 'switch 2 learned vm1 behind its uplink');
  checkPlacement(t, s1, workers, 'vm1');
  checkPlacement(t, s2, workers, 'vm2');
});
