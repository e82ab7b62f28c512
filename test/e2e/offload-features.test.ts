/**
 * What a port offers, per its config (`ports[].offloads`, `ports[].mtu`),
 * over a real vhost-user socket of a running switch: the checksum / TSO
 * feature bits and VIRTIO_NET_F_MTU + the NET_MTU protocol feature; and
 * NET_SET_MTU accepted up to the port's mtu, refused (a failure ack, the
 * session goes on) above it or below IPv4's minimum.
 */
import path from 'node:path';
import t from 'tap';
import { u64 } from '../../src/vhost/codec';
import { FLAG_NEED_REPLY, FLAG_VERSION, PROTOCOL_F_NET_MTU, PROTOCOL_F_REPLY_ACK, Req } from '../../src/vhost/protocol';
import {
  VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_MTU, hasBit,
} from '../../src/virtio/defs';
import { startSwitch, waitForLog } from '../helpers/procs';
import { RawClient } from '../helpers/unit-vhost-client';

const OFFLOADS = [VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_GUEST_ECN];

async function ask(c: RawClient, req: number): Promise<bigint> {
  c.send(req, FLAG_VERSION);
  const r = await c.recv();
  if (!r || r.request !== req || r.payload.length !== 8) throw new Error(`no answer to request ${req}`);
  return r.payload.readBigUInt64LE(0);
}

t.test('offloads and MTU as each port is configured', async (t) => {
  const sw = await startSwitch(t, {
    ports: [{ name: 'a', mtu: 9000 }, { name: 'b', offloads: false }],
    pairs: [['a', 'b']],
  });
  const clients: RawClient[] = [];
  t.teardown(() => clients.forEach((c) => c.close()));
  const connect = (p: string): RawClient => {
    const c = RawClient.connect(path.join(sw.dir, `${p}.sock`));
    clients.push(c);
    return c;
  };

  const a = connect('a');
  const fa = await ask(a, Req.GET_FEATURES);
  for (const b of OFFLOADS) t.ok(hasBit(fa, b), `port a offers feature bit ${b}`);
  t.notOk(hasBit(fa, VIRTIO_NET_F_HOST_UFO), 'no UFO');
  t.ok(hasBit(fa, VIRTIO_NET_F_MTU), 'VIRTIO_NET_F_MTU offered');
  const pa = await ask(a, Req.GET_PROTOCOL_FEATURES);
  t.ok(hasBit(pa, PROTOCOL_F_NET_MTU), 'NET_MTU protocol feature offered');
  a.send(Req.SET_PROTOCOL_FEATURES, FLAG_VERSION, u64((1n << PROTOCOL_F_REPLY_ACK) | (1n << PROTOCOL_F_NET_MTU)));
  const setMtu = async (mtu: bigint): Promise<bigint> => {
    a.send(Req.NET_SET_MTU, FLAG_VERSION | FLAG_NEED_REPLY, u64(mtu));
    const r = await a.recv();
    if (!r || r.request !== Req.NET_SET_MTU) throw new Error('NET_SET_MTU not acked');
    return r.payload.readBigUInt64LE(0);
  };
  t.equal(await setMtu(9000n), 0n, 'NET_SET_MTU 9000 (the port\'s mtu) accepted');
  await waitForLog(sw, /"mtu":9000.*MTU set by the front-end/);
  t.not(await setMtu(9001n), 0n, 'NET_SET_MTU above the port\'s mtu refused');
  t.not(await setMtu(20n), 0n, 'NET_SET_MTU below 68 refused');
  t.ok(await waitForLog(sw, /NET_SET_MTU: mtu 9001 is outside 68\.\.9000/), 'the refusal names the field and the limit');
  t.ok(a.idleAndOpen(), 'the session goes on');

  const b = connect('b');
  const fb = await ask(b, Req.GET_FEATURES);
  for (const bitNo of OFFLOADS) t.notOk(hasBit(fb, bitNo), `port b (offloads false) does not offer bit ${bitNo}`);
  t.ok(hasBit(fb, VIRTIO_NET_F_MTU), 'port b still offers VIRTIO_NET_F_MTU');
});
