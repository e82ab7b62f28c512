/**
 * Unit tests for the bridge's tenant settings (src/datapath/port-policy.ts,
 * tenancy.ts, vlan.ts, rate-limit.ts) through BridgeForwarder over simulated
 * VMs' real rings: frames stay inside their bridge and VLAN, tags are added
 * and removed on the way to and from trunks, spoofed sources and isolated
 * ports are refused, token buckets hold their rate.
 */
import t, { type Test } from 'tap';
import { resolvePolicy } from '../../src/config';
import { BridgeForwarder } from '../../src/datapath/bridge-forwarder';
import { DROP_NAMES, Drop } from '../../src/datapath/counters';
import { TokenBucket } from '../../src/datapath/rate-limit';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { BROADCAST, Rig, frame, mac, type Vm } from '../helpers/datapath-rig';

const HDR = VIRTIO_NET_HDR_SIZE;
const PER = 16;

type Policy = Parameters<typeof resolvePolicy>[0];

/** One VM per policy, 16 buffers each with 8 posted on rx; policies given to the forwarder by id. */
function tenants(t: Test, policies: Policy[]): { rig: Rig; vms: Vm[]; fw: BridgeForwarder; own: Map<number, number>[] } {
  const rig = new Rig({ bufCount: 128, swap: true });
  t.teardown(() => rig.close());
  const vms: Vm[] = [];
  const own: Map<number, number>[] = [];
  policies.forEach((_, i) => {
    const vm = rig.addVm({ partition: [i * PER, PER] });
    const m = new Map<number, number>();
    for (let k = 0; k < PER / 2; k++) m.set(vm.postShared(i * PER + k), i * PER + k);
    vm.port.ingestRx();
    vms.push(vm);
    own.push(m);
  });
  const fw = new BridgeForwarder(32, vms.map((v) => v.port), 64, 300_000);
  policies.forEach((p, i) => fw.tenancy.configure(vms[i].id, resolvePolicy(p), 0));
  return { rig, vms, fw, own };
}

/** The Ethernet frames each VM received since the last call. */
function received(vms: Vm[], own: Map<number, number>[]): Uint8Array[][] {
  return vms.map((vm, i) => vm.flushAndReap().rx.map((u) => {
    const b = own[i].get(u.id) ?? -1;
    // A swapped frame lies in the sender's buffer, now at the descriptor's address.
    const buf = b >= 0 && vm.rx.ring.descAddr(u.id) === vm.shared.addrOf(b) ? b : (vm.rx.ring.descAddr(u.id) - vm.shared.addrOf(0)) / vm.shared.bufSize;
    return vm.bufBytes(buf, HDR, u.len - HDR);
  }));
}

/** f with an 802.1Q tag for vlan after the MACs. */
function tagged(f: Uint8Array, vlan: number): Uint8Array {
  const out = new Uint8Array(f.length + 4);
  out.set(f.subarray(0, 12), 0);
  out.set([0x81, 0x00, vlan >>> 8, vlan & 0xff], 12);
  out.set(f.subarray(12), 16);
  return out;
}

t.test('two bridges, two VLANs, a trunk: floods stay inside, tags added and removed', async (t) => {
  // a, b: vale0 VLAN 10; c: vale0 VLAN 20; d: vale1 VLAN 10; e: vale0 trunk 10, 20.
  const { vms, fw, own } = tenants(t, [
    { vlan: 10 }, { vlan: 10 }, { vlan: 20 }, { bridge: 'vale1', vlan: 10 }, { trunk: [20, 10] },
  ]);
  const [a, b, c, d, e] = vms;
  let buf = 100;
  const send = (vm: Vm, f: Uint8Array, i: number): void => {
    vm.sendShared(i * PER + 8 + (buf++ % 8), f);
    fw.forward(vm.port, 0, 1);
  };

  const bcast = frame(BROADCAST, mac(1), 100, 3);
  send(a, bcast, 0);
  let got = received(vms, own);
  t.same(got[1], [bcast], 'b (same bridge and VLAN) gets the broadcast as sent');
  t.same(got[4], [tagged(bcast, 10)], 'e (trunk) gets it tagged with VLAN 10');
  t.same([got[0].length, got[2].length, got[3].length], [0, 0, 0], 'not a, not c (VLAN 20), not d (bridge vale1)');

  const unknown = frame(mac(99), mac(1), 80, 4);
  send(a, unknown, 0);
  got = received(vms, own);
  t.same([got[1], got[4]], [[unknown], [tagged(unknown, 10)]], 'unknown unicast: flooded to b and (tagged) e only');
  t.same([got[2].length, got[3].length], [0, 0]);

  // d on the other bridge: nobody else is there.
  send(d, frame(BROADCAST, mac(4), 90, 5), 3);
  got = received(vms, own);
  t.same(got.map((g) => g.length), [0, 0, 0, 0, 0], 'a broadcast on vale1 reaches no port of vale0');
  t.equal(d.port.counters.drops[Drop.PeerDown], 1, 'counted as having no destination');

  // From the trunk: VLAN 20 reaches c untagged, VLAN 10 reaches a and b untagged.
  const v20 = frame(BROADCAST, mac(5), 70, 6);
  send(e, tagged(v20, 20), 4);
  got = received(vms, own);
  t.same(got[2], [v20], 'c gets the VLAN 20 frame with its tag removed');
  t.same([got[0].length, got[1].length, got[3].length], [0, 0, 0], 'VLAN 10 ports and vale1 do not');
  const v10 = frame(mac(2), mac(5), 70, 7);
  send(e, tagged(v10, 10), 4);
  got = received(vms, own);
  t.same([got[0], got[1], got[2], got[3]], [[v10], [v10], [], []], 'to b (not learned yet): flooded on VLAN 10, untagged');

  // Learned per VLAN: e's MAC on VLAN 10 and 20, a's on 10.
  t.equal(fw.tenancy.tables[0].lookup((10 << 16) | 0x0200, 5, 1), e.id, 'e learned on VLAN 10');
  t.equal(fw.tenancy.tables[0].lookup((20 << 16) | 0x0200, 5, 1), e.id, 'and on VLAN 20');
  t.equal(fw.tenancy.tables[0].lookup((20 << 16) | 0x0200, 1, 1), -1, 'a not learned on VLAN 20');
  t.equal(fw.tenancy.tables[1].lookup((10 << 16) | 0x0200, 1, 1), -1, 'a not in vale1\'s table');
  t.equal(fw.tenancy.tables[1].lookup((10 << 16) | 0x0200, 4, 1), d.id, 'd in vale1\'s table');

  // Unicast a -> e (learned): copied, tagged. a -> b after b is known: swapped.
  const toE = frame(mac(5), mac(1), 64, 8);
  send(a, toE, 0);
  t.same(received(vms, own)[4], [tagged(toE, 10)], 'unicast to the trunk: tagged copy');
  send(b, frame(BROADCAST, mac(2), 64, 9), 1);
  received(vms, own);
  const zc = a.port.counters.zeroCopy;
  const toB = frame(mac(2), mac(1), 64, 10);
  send(a, toB, 0);
  got = received(vms, own);
  t.same(got[1], [toB], 'a -> b delivered');
  t.equal(a.port.counters.zeroCopy, zc + 1, 'access to access on one VLAN: still swapped');

  // A frame to c's MAC from VLAN 10 never reaches c (c learned on VLAN 20 only: flooded on 10).
  send(c, frame(BROADCAST, mac(3), 64, 11), 2);
  received(vms, own);
  send(a, frame(mac(3), mac(1), 64, 12), 0);
  got = received(vms, own);
  t.equal(got[2].length, 0, 'c (VLAN 20) does not get a VLAN 10 frame to its MAC');

  // Tag rules.
  const drops = (vm: Vm, r: Drop): number => vm.port.counters.drops[r];
  send(a, tagged(frame(BROADCAST, mac(1)), 10), 0);
  t.equal(drops(a, Drop.VlanTagged), 1, 'a tagged frame on an access port: vlan-tagged');
  send(e, tagged(frame(BROADCAST, mac(5)), 30), 4);
  t.equal(drops(e, Drop.VlanNotAllowed), 1, 'VLAN 30 on a trunk of 10, 20: vlan-not-allowed');
  send(e, frame(BROADCAST, mac(5)), 4);
  t.equal(drops(e, Drop.VlanNotAllowed), 2, 'an untagged frame on the trunk: vlan-not-allowed');
  t.same(received(vms, own).map((g) => g.length), [0, 0, 0, 0, 0], 'none of them delivered');
  t.equal(DROP_NAMES[Drop.VlanNotAllowed], 'vlan-not-allowed');
});

t.test('allowed MACs: a spoofed source is dropped, counted, never learned', async (t) => {
  const { vms, fw, own } = tenants(t, [{ macs: ['02:00:00:00:00:01'] }, {}, {}]);
  const [a, b] = vms;
  b.sendShared(PER + 8, frame(BROADCAST, mac(2)));
  fw.forward(b.port, 0, 1);
  received(vms, own);
  const table = fw.tenancy.tables[0];
  t.equal(table.lookup((1 << 16) | 0x0200, 2, 2), b.id, 'b learned');
  a.sendShared(8, frame(BROADCAST, mac(2)));
  fw.forward(a.port, 0, 2);
  t.equal(a.port.counters.drops[Drop.SpoofedMac], 1, 'a sending as b: spoofed-mac');
  t.same(received(vms, own).map((g) => g.length), [0, 0, 0], 'nobody got it');
  t.equal(table.lookup((1 << 16) | 0x0200, 2, 3), b.id, 'b\'s MAC did not move');
  a.sendShared(9, frame(BROADCAST, mac(1)));
  fw.forward(a.port, 0, 4);
  t.same(received(vms, own).map((g) => g.length), [0, 1, 1], 'a\'s own MAC passes');
});

t.test('isolated ports reach non-isolated ones only', async (t) => {
  const { vms, fw, own } = tenants(t, [{ isolated: true }, { isolated: true }, {}]);
  const [a, b, c] = vms;
  a.sendShared(8, frame(BROADCAST, mac(1)));
  fw.forward(a.port, 0, 1);
  t.same(received(vms, own).map((g) => g.length), [0, 0, 1], 'an isolated port\'s broadcast reaches only the non-isolated c');
  b.sendShared(PER + 8, frame(mac(1), mac(2)));
  fw.forward(b.port, 0, 2);
  t.equal(b.port.counters.drops[Drop.Isolated], 1, 'unicast between isolated ports: isolated');
  t.same(received(vms, own).map((g) => g.length), [0, 0, 0]);
  c.sendShared(2 * PER + 8, frame(mac(1), mac(3)));
  fw.forward(c.port, 0, 3);
  t.same(received(vms, own).map((g) => g.length), [1, 0, 0], 'c reaches the isolated a');
});

t.test('rate limits in the forwarder: rx counted on the sender, tx on the receiver', async (t) => {
  // 1000 frames/s, a 2 ms bucket: 2 frames at once, then one per millisecond.
  const { vms, fw, own } = tenants(t, [{ limit: { rx: { pps: 1000, burstMs: 2 } } }, { limit: { tx: { pps: 1000, burstMs: 2 } } }, {}]);
  const [a, b, c] = vms;
  for (let k = 0; k < 5; k++) a.sendShared(8 + k, frame(mac(9), mac(1)));
  fw.forward(a.port, 0, 0);
  t.equal(a.port.counters.drops[Drop.RxLimit], 3, 'a\'s rx bucket passed 2 of 5');
  t.same(received(vms, own).map((g) => g.length), [0, 2, 2]);
  for (let k = 0; k < 4; k++) c.sendShared(2 * PER + 8 + k, frame(mac(9), mac(3)));
  fw.forward(c.port, 0, 0);
  t.equal(b.port.counters.drops[Drop.TxLimit], 4, 'b\'s tx bucket was empty: counted on b');
  t.same(received(vms, own).map((g) => g.length), [4, 0, 0], 'a got all four');
  c.sendShared(2 * PER + 12, frame(mac(9), mac(3)));
  fw.forward(c.port, 0, 1.5);
  t.same(received(vms, own).map((g) => g.length), [1, 1, 0], '1.5 ms later b has a token again');
});

t.test('token bucket: never more than rate x time + bucket', async (t) => {
  const tb = new TokenBucket();
  t.ok(tb.take(1500, 0), 'off: everything passes');
  tb.set({ pps: 10_000, bps: 0, burstMs: 50 }, 0);
  let passed = 0;
  // Offered 30,000 frames/s for 5 s in 1 ms rounds.
  for (let ms = 0; ms < 5000; ms++) for (let k = 0; k < 30; k++) if (tb.take(64, ms)) passed++;
  t.ok(passed >= 49_990 && passed <= 50_000 + 500, `10,000 frames/s for 5 s: ${passed} passed (50,000 + a 500-frame bucket at most)`);
  const bits = new TokenBucket();
  bits.set({ pps: 0, bps: 1_000_000, burstMs: 10 }, 0);
  let bytes = 0;
  for (let ms = 0; ms < 1000; ms++) for (let k = 0; k < 10; k++) if (bits.take(1000, ms)) bytes += 1000;
  t.ok(bytes * 8 <= 1_000_000 + 10_000 + 8000 && bytes * 8 >= 990_000, `1 Mbit/s for 1 s: ${bytes * 8} bits`);
  // A changed rate applies at once and keeps the tokens it can.
  tb.set({ pps: 100, bps: 0, burstMs: 50 }, 5000);
  let later = 0;
  for (let ms = 5000; ms < 6000; ms++) for (let k = 0; k < 30; k++) if (tb.take(64, ms)) later++;
  t.ok(later <= 100 + 5 && later >= 95, `after set() to 100 frames/s: ${later} in 1 s`);
});
