/**
 * A real switch process against malformed vhost-user input. Every case
 * runs on its own connection to port a: the switch must drop that
 * connection, log the offending request by name, stay alive, and accept
 * the next front-end on the same port. Also: an unknown request under
 * REPLY_ACK is refused with an ack and the session goes on, a second
 * simultaneous front-end is turned away, `zcswitch stats` still answers,
 * and SIGTERM shuts down cleanly, removing every socket.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { closeFd, memfdCreate } from '../../bindings';
import { memTable, u64, vringState } from '../../src/vhost/codec';
import { FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, PROTOCOL_F_REPLY_ACK, PROTOCOL_F_RX_BY_BUFFER, Req, VHOST_USER_F_PROTOCOL_FEATURES } from '../../src/vhost/protocol';
import { VIRTIO_F_VERSION_1, hasBit } from '../../src/virtio/defs';
import { controlRequest } from '../../src/switch/control';
import { run, startSwitch, waitFor, within } from '../helpers/procs';
import { RawClient } from '../helpers/unit-vhost-client';

const WINDOW_BASE = 0x40_0000_0000n;

interface PortStat { name: string; attached: boolean; peer: string | null }

t.test('switch back-end survives malformed vhost-user input', async (t) => {
  const sw = await startSwitch(t, {
    ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }],
    pairs: [['a', 'b'], ['c', 'd']],
    log: { level: 'debug' },
  });
  const { child, exited, dir } = sw;
  const clients: RawClient[] = [];
  // Runs before startSwitch's own teardown (last in, first out): clients close, then the switch stops.
  t.teardown(() => {
    for (const c of clients) c.close();
  });

  const control = /control: (\S+)/.exec(sw.stdout())![1];
  t.equal(control, path.join(dir, 'zcswitch.ctl'), 'control socket in the socket dir');
  const sock = (p: string) => path.join(dir, `${p}.sock`);
  for (const p of ['a', 'b', 'c', 'd']) t.ok(fs.lstatSync(sock(p)).isSocket(), `${p}.sock exists`);

  const connect = (p = 'a'): RawClient => {
    const c = RawClient.connect(sock(p));
    clients.push(c);
    return c;
  };
  const alive = () => child.exitCode === null && child.signalCode === null;
  const portStat = async (name: string) =>
    ((await controlRequest(control, { cmd: 'stats' })) as { ports: PortStat[] }).ports.find((p) => p.name === name)!;
  const logLines = (from: number) =>
    sw.stderr().slice(from).split('\n').filter((l) => l.startsWith('{')).map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return { unparsed: l } as Record<string, unknown>;
      }
    });

  /** GET_FEATURES on a connection: a proper reply with FLAG_REPLY and an 8-byte payload. */
  const getFeatures = async (t: Test, c: RawClient, what: string): Promise<bigint> => {
    c.send(Req.GET_FEATURES, FLAG_VERSION);
    const r = await c.recv();
    t.ok(r, `${what}: GET_FEATURES answered`);
    if (!r) return 0n;
    t.equal(r.request, Req.GET_FEATURES, `${what}: reply to GET_FEATURES`);
    t.equal(r.flags & 0x3, FLAG_VERSION, `${what}: reply has version 1`);
    t.ok(r.flags & FLAG_REPLY, `${what}: reply has FLAG_REPLY`);
    t.equal(r.payload.length, 8, `${what}: 8-byte payload`);
    const f = r.payload.length === 8 ? r.payload.readBigUInt64LE(0) : 0n;
    t.ok(hasBit(f, VIRTIO_F_VERSION_1) && hasBit(f, VHOST_USER_F_PROTOCOL_FEATURES), `${what}: offers VERSION_1 and PROTOCOL_FEATURES`);
    return f;
  };

  /** Close our side and wait until the switch has let go of the port. */
  const release = async (c: RawClient, name = 'a') => {
    c.close();
    await waitFor(`port ${name} to be free again`, async () => !(await portStat(name)).attached);
  };

  type Case = { name: string; req: string; expect: string; send: (c: RawClient, t: Test) => void };
  const memfds: number[] = [];
  t.teardown(() => memfds.forEach((fd) => closeFd(fd)));
  const cases: Case[] = [
    {
      name: 'a header claiming a 1 MiB payload',
      req: 'SET_VRING_ADDR',
      expect: 'SET_VRING_ADDR: payload size 1048576 exceeds',
      send: (c, t) => {
        const h = Buffer.alloc(12);
        h.writeUInt32LE(Req.SET_VRING_ADDR, 0);
        h.writeUInt32LE(FLAG_VERSION, 4);
        h.writeUInt32LE(1 << 20, 8);
        t.equal(c.sendRaw(h), 12);
      },
    },
    {
      name: 'a bad version in flags',
      req: 'SET_OWNER',
      expect: 'SET_OWNER: bad protocol version in flags 0x2',
      send: (c) => c.send(Req.SET_OWNER, 0x2),
    },
    {
      name: 'SET_VRING_NUM with a 3-byte payload',
      req: 'SET_VRING_NUM',
      expect: 'SET_VRING_NUM: payload is 3 bytes, expected 8',
      send: (c) => c.send(Req.SET_VRING_NUM, FLAG_VERSION, Buffer.from([0, 1, 0])),
    },
    {
      // 8 queue pairs by default: vrings 0..15 exist.
      name: 'SET_VRING_NUM for vring index 16',
      req: 'SET_VRING_NUM',
      expect: 'SET_VRING_NUM: vring index 16 out of range (this port has 16 vrings)',
      send: (c) => c.send(Req.SET_VRING_NUM, FLAG_VERSION, vringState(16, 256)),
    },
    {
      name: 'a non-power-of-two queue size',
      req: 'SET_VRING_NUM',
      expect: 'SET_VRING_NUM: vring 0 size 100 is not a power of two',
      send: (c) => c.send(Req.SET_VRING_NUM, FLAG_VERSION, vringState(0, 100)),
    },
    {
      name: 'SET_MEM_TABLE with 0 regions',
      req: 'SET_MEM_TABLE',
      expect: 'SET_MEM_TABLE: 0 regions',
      send: (c) => c.send(Req.SET_MEM_TABLE, FLAG_VERSION, memTable([])),
    },
    {
      name: 'SET_MEM_TABLE overlapping the Shared Buffers window',
      req: 'SET_MEM_TABLE',
      expect: 'SET_MEM_TABLE: guest memory overlaps the Shared Buffers window at 0x4000000000',
      send: (c) => {
        const fd = memfdCreate('robustness-guest', 0x2000);
        memfds.push(fd);
        c.send(Req.SET_MEM_TABLE, FLAG_VERSION, memTable([{
          guestPhysAddr: WINDOW_BASE - 0x1000n, memorySize: 0x2000n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n,
        }]), [fd]);
      },
    },
    {
      name: 'SET_VRING_KICK without an fd and without the no-fd bit',
      req: 'SET_VRING_KICK',
      expect: 'SET_VRING_KICK: vring 0 expects one fd, got 0',
      send: (c) => c.send(Req.SET_VRING_KICK, FLAG_VERSION, u64(0n)),
    },
    {
      name: 'GET_SHARED_BUFFERS without negotiating the protocol feature',
      req: 'GET_SHARED_BUFFERS',
      expect: 'GET_SHARED_BUFFERS: the SHARED_BUFFERS protocol feature was not negotiated',
      send: (c) => c.send(Req.GET_SHARED_BUFFERS, FLAG_VERSION),
    },
    {
      name: 'SET_FEATURES acking a bit that was not offered',
      req: 'SET_FEATURES',
      expect: 'SET_FEATURES: acks features that were not offered: 0x4000',
      send: (c) => c.send(Req.SET_FEATURES, FLAG_VERSION, u64(1n << 14n /* VIRTIO_NET_F_HOST_UFO, never offered */)),
    },
  ];

  for (const k of cases) {
    await t.test(k.name, async (t) => {
      const mark = sw.stderr().length;
      const c = connect();
      // Handshake first so the case runs inside a live session.
      await getFeatures(t, c, 'before');
      k.send(c, t);
      const closed = await c.waitClosed();
      t.ok(closed.how === 'eof' || closed.how === 'reset', `the switch closed the connection (${closed.how})`);
      t.equal(closed.extra, 0, 'no reply was sent to the malformed request');
      c.close();
      const line = await waitFor(`a log line with "${k.expect}"`, () => logLines(mark).find((l) => JSON.stringify(l).includes(k.expect)));
      t.match(JSON.stringify(line), k.req, `the log names ${k.req}`);
      t.ok(alive(), 'the switch is still running');
      t.equal((await portStat('a')).attached, false, 'port a is free');
      const again = connect();
      await getFeatures(t, again, 'new connection');
      await release(again);
    });
  }

  await t.test('unknown request under REPLY_ACK: a failure ack, the session goes on', async (t) => {
    const mark = sw.stderr().length;
    const c = connect();
    const f = await getFeatures(t, c, 'session');
    c.send(Req.SET_FEATURES, FLAG_VERSION, u64(f));
    c.send(Req.GET_PROTOCOL_FEATURES, FLAG_VERSION);
    const pf = await c.recv();
    t.ok(pf && pf.request === Req.GET_PROTOCOL_FEATURES && pf.payload.length === 8, 'GET_PROTOCOL_FEATURES answered');
    const proto = pf!.payload.readBigUInt64LE(0);
    t.ok(hasBit(proto, PROTOCOL_F_REPLY_ACK), 'REPLY_ACK is offered');
    t.ok(hasBit(proto, PROTOCOL_F_RX_BY_BUFFER), 'RX_BY_BUFFER is offered');
    c.send(Req.SET_PROTOCOL_FEATURES, FLAG_VERSION, u64(1n << PROTOCOL_F_REPLY_ACK));

    // a request that succeeds acks 0 (so the non-zero below means something)
    c.send(Req.SET_OWNER, FLAG_VERSION | FLAG_NEED_REPLY);
    const ok = await c.recv();
    t.ok(ok, 'SET_OWNER acked');
    t.equal(ok!.request, Req.SET_OWNER);
    t.ok(ok!.flags & FLAG_REPLY, 'ack has FLAG_REPLY');
    t.equal(ok!.payload.length, 8);
    t.equal(ok!.payload.readBigUInt64LE(0), 0n, 'success acks 0');

    // a valid memory table outside the window is accepted and acked 0
    const fd = memfdCreate('robustness-guest-ok', 0x2000);
    c.send(Req.SET_MEM_TABLE, FLAG_VERSION | FLAG_NEED_REPLY, memTable([{
      guestPhysAddr: 0n, memorySize: 0x2000n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n,
    }]), [fd]);
    closeFd(fd);
    const mt = await c.recv();
    t.equal(mt?.request, Req.SET_MEM_TABLE);
    t.equal(mt?.payload.readBigUInt64LE(0), 0n, 'a good SET_MEM_TABLE acks 0');

    // an unknown request without NEED_REPLY: no answer at all
    c.send(98, FLAG_VERSION);
    // with NEED_REPLY: an ack saying it failed
    c.send(99, FLAG_VERSION | FLAG_NEED_REPLY);
    const nack = await c.recv();
    t.ok(nack, 'the unknown request was answered, not dropped');
    t.equal(nack!.request, 99, 'the ack is for request 99 (request 98 got no reply)');
    t.ok(nack!.flags & FLAG_REPLY, 'ack has FLAG_REPLY');
    t.equal(nack!.payload.length, 8, 'u64 ack');
    t.not(nack!.payload.readBigUInt64LE(0), 0n, 'the ack reports failure (non-zero)');
    t.ok(c.idleAndOpen(), 'the connection is still open and nothing else arrived');
    await getFeatures(t, c, 'after the unknown request');
    const warn = await waitFor('the unsupported-request log line', () =>
      logLines(mark).find((l) => l.req === 'UNKNOWN_99' && l.level === 40));
    t.match(String(warn?.msg), /unsupported/);
    t.ok(logLines(mark).some((l) => l.req === 'UNKNOWN_98'), 'request 98 was logged too');
    t.equal((await portStat('a')).attached, true, 'port a still attached');
    await release(c);
  });

  await t.test('a second simultaneous connection is refused', async (t) => {
    const mark = sw.stderr().length;
    const first = connect();
    await getFeatures(t, first, 'first');
    const second = connect();
    try {
      second.send(Req.GET_FEATURES, FLAG_VERSION);
    } catch (e) {
      // the switch may have closed it before we got to write
      t.equal((e as { code?: string }).code, 'EPIPE', 'sending to a refused connection fails only with EPIPE');
    }
    const closed = await second.waitClosed();
    t.ok(closed.how === 'eof' || closed.how === 'reset', `second connection closed (${closed.how})`);
    t.equal(closed.extra, 0, 'the second front-end got no reply');
    second.close();
    await waitFor('the port-busy log line', () => logLines(mark).some((l) => /port busy/.test(String(l.msg)) && l.port === 'a'));
    t.equal(logLines(mark).filter((l) => /port busy/.test(String(l.msg)) && l.port === 'a').length, 1, 'logged as port busy, once');
    await getFeatures(t, first, 'first, after the refusal');
    t.ok(first.idleAndOpen(), 'first connection still open');
    // the other ports are untouched by all of this
    const b = connect('b');
    await getFeatures(t, b, 'port b');

    // `zcswitch stats --json` still answers, while a and b are attached
    const stats = run(['stats', '--json', '--control', control]);
    const { code } = await stats.exited;
    t.equal(code, 0, `stats exits 0 (${stats.stderr()})`);
    const s = JSON.parse(stats.stdout()) as { ports: PortStat[]; ledger: { ok: boolean; bufCount: number; pool: number } };
    t.same(s.ports.map((p) => p.name), ['a', 'b', 'c', 'd']);
    t.same(s.ports.map((p) => p.attached), [true, true, false, false], 'a and b attached, c and d free');
    t.same(s.ports.map((p) => p.peer), ['b', 'a', 'd', 'c'], 'pairs as configured');
    t.equal(s.ledger.ok, true, 'ledger balanced');
    t.equal(s.ledger.pool, s.ledger.bufCount, 'no partition handed out (nobody fetched shared buffers)');
    t.ok(alive());
  });

  await t.test('SIGTERM: clean exit, sockets removed', async (t) => {
    child.kill('SIGTERM');
    const r = await within(exited, 5000);
    t.ok(r, 'the switch exited within 5 s');
    t.equal(r?.code, 0, 'exit status 0');
    t.equal(r?.signal, null);
    for (const p of ['a', 'b', 'c', 'd']) t.notOk(fs.existsSync(sock(p)), `${p}.sock removed`);
    t.notOk(fs.existsSync(control), 'control socket removed');
    t.notOk(/"level":(50|60)/.test(sw.stderr().slice(sw.stderr().indexOf('shutting down'))), 'no errors logged during shutdown');
  });
});
