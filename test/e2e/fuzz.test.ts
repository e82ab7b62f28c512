/**
 * Fuzzing the switch with what a hostile or broken front-end can send,
 * from a fixed seed (reproducible): random descriptor chains and rx
 * postings on live rings, then random vhost-user messages. Afterwards the
 * switch must still run, the ledger must balance, and a well-behaved pair
 * of VMs must still get every packet through. ZC_FUZZ_SEED picks another seed.
 */
import path from 'node:path';
import t from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { Req } from '../../src/vhost/protocol';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/virtio/defs';
import { prng } from '../helpers/prng';
import { counters, sleep, startSwitch, vm, waitAttached, waitFor } from '../helpers/procs';
import { RawClient } from '../helpers/unit-vhost-client';

const PAIR = { ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] };

t.test('random descriptor chains and rx postings', async (t) => {
  const sw = await startSwitch(t, PAIR);
  const sink = vm(sw, 'vm2', ['--mode', 'sink']);
  await waitAttached(sw, 'vm2');
  const drv = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm1.sock') });
  t.teardown(() => drv.close());
  await waitAttached(sw, 'vm1');
  const sh = drv.shared!;
  const rnd = prng(Number(process.env.ZC_FUZZ_SEED ?? 0x5eed));
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)];
  // Addresses worth trying: shared buffers (ours and not), their insides and ends,
  // our private memory, just outside everything, and garbage.
  const addr = (): number =>
    pick([
      () => sh.base + Math.floor(rnd() * sh.bufCount) * sh.bufSize,
      () => sh.base + Math.floor(rnd() * sh.bufCount * sh.bufSize),
      () => sh.base + sh.bufCount * sh.bufSize - Math.floor(rnd() * 64),
      () => drv.privateSlotAddr(Math.floor(rnd() * 300)),
      () => drv.privateSlotAddr(0) + drv.guestMemorySize - Math.floor(rnd() * 128),
      () => Math.floor(rnd() * 2 ** 48),
      () => 0,
    ])();
  const len = (): number => pick([0, 1, 12, 25, 26, 60, 2048, 2049, 65547, 0xffffffff, Math.floor(rnd() * 70000)]);
  const flags = (): number => pick([0, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0xffff]);
  let txInjected = 0;
  let rxInjected = 0;
  for (let round = 0; round < 60; round++) {
    for (let k = 0; k < 8; k++) {
      const n = 1 + Math.floor(rnd() * 4);
      const descs = Array.from({ length: n }, (_, i) => ({
        addr: addr(), len: len(), flags: flags(),
        next: rnd() < 0.8 ? Math.min(n - 1, i + 1) : Math.floor(rnd() * n),
      }));
      try {
        if (rnd() < 0.1) drv.injectRawTx([], Math.floor(rnd() * 70000));
        else drv.injectRawTx(descs);
        txInjected++;
      } catch {
        break; // ring full for now: the switch will complete some
      }
      if (rnd() < 0.5) {
        try {
          drv.injectRawRx(addr(), len(), flags());
          rxInjected++;
        } catch {
          /* rx ring full */
        }
      }
    }
    drv.receive(256);
    await sleep(2);
  }
  t.ok(txInjected > 300 && rxInjected > 100, `injected ${txInjected} random tx chains and ${rxInjected} random rx postings`);
  const s = await sw.stats();
  const c = counters(s.ports.find((p) => p.name === 'vm1')!);
  const reasons = Object.keys(c.drops);
  t.ok(reasons.length >= 5, `the switch counted them under several reasons: ${reasons.join(', ')}`);
  t.ok(s.ledger.ok, `ledger balanced after the fuzzing: ${s.ledger.problems.join('; ')}`);
  t.equal(sw.child.exitCode, null, 'switch still running');
  drv.close();
  await waitFor('vm1 to detach', async () => !(await sw.port('vm1')).attached);

  // A well-behaved VM on the same port gets everything through to the sink.
  const before = counters(await sw.port('vm2')).txPackets;
  const g = await vm(sw, 'vm1', ['--mode', 'gen', '--count', '5000', '--stream', '9']).result;
  t.equal(g.summary.sent, 5000, 'a fresh VM on the fuzzed port sent 5000 packets');
  await waitFor('the sink to get them', async () => counters(await sw.port('vm2')).txPackets >= before + 5000);
  sink.child.kill('SIGTERM');
  const k = await sink.result;
  t.equal(k.summary.badChecksum + k.summary.badLength, 0, 'no corrupted test frame reached the sink');
  t.ok((await sw.stats()).ledger.ok, 'ledger balanced at the end');
});

t.test('random vhost-user messages', async (t) => {
  const sw = await startSwitch(t, PAIR);
  const rnd = prng(Number(process.env.ZC_FUZZ_SEED ?? 0xbad5eed));
  const reqs = [...Array.from({ length: 45 }, (_, i) => i), Req.GET_SHARED_BUFFERS, 0xffffffff, 1000];
  let sent = 0;
  for (let conn = 0; conn < 60; conn++) {
    let c: RawClient;
    try {
      c = RawClient.connect(path.join(sw.dir, 'vm1.sock'));
    } catch {
      await sleep(20);
      continue;
    }
    for (let m = 0; m < 10; m++) {
      const size = Math.floor(rnd() * 64);
      const payload = Buffer.from(Array.from({ length: size }, () => Math.floor(rnd() * 256)));
      try {
        if (rnd() < 0.15) c.sendRaw(payload); // not even a header
        else c.send(reqs[Math.floor(rnd() * reqs.length)], rnd() < 0.8 ? 1 | (rnd() < 0.5 ? 8 : 0) : Math.floor(rnd() * 2 ** 32), payload);
        sent++;
      } catch {
        break; // the switch hung up on us: fine
      }
    }
    c.close();
  }
  t.ok(sent > 200, `sent ${sent} random messages over 60 connections`);
  t.equal(sw.child.exitCode, null, 'switch still running');
  // Both ports still work.
  const sink = vm(sw, 'vm2', ['--mode', 'sink', '--count', '2000', '--duration', '60']);
  await waitAttached(sw, 'vm2');
  const g = await vm(sw, 'vm1', ['--mode', 'gen', '--count', '2000']).result;
  const k = await sink.result;
  t.equal(g.summary.sent, 2000);
  t.equal(k.summary.verified, 2000, 'a normal pair still moves every packet');
  t.ok((await sw.stats()).ledger.ok, 'ledger balanced');
});
