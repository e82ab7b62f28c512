/**
 * The region as an ivshmem BAR, without QEMU: raw front-ends that act like
 * QEMU with `-device ivshmem-plain` (no SHARED_BUFFERS) put the region file
 * the switch publishes into their SET_MEM_TABLE, each at a guest-physical
 * address of its own, read their partition from the region header, and move
 * frames through the switch: zero-copy, 0 payload bytes copied, each side at
 * its own addresses, gifts back under one-way traffic, the ledger balanced
 * after disconnect; the same towards a `zcswitch vm` sink (SHARED_BUFFERS,
 * the region at the configured base) of the same domain. A region mapped at
 * the wrong offset or size, or another domain's, is ordinary memory; the
 * region cannot be truncated through the published path; the header follows
 * the port table.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { mmapShared, munmap } from '../../bindings';
import { defaultMacs, writeTestFrame } from '../../src/guest/test-packet';
import { readRegionHeader } from '../../src/shm/region-header';
import { VIRTIO_NET_HDR_F_GIFT_BUFFER } from '../../src/vhost/protocol';
import { VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import { writeNetHdr } from '../../src/virtio/net-hdr';
import { BarFrontEnd } from '../helpers/bar-front-end';
import { type SwitchProc, run, startSwitch, vm, waitAttached, waitFor, waitForLogLines } from '../helpers/procs';

const BUF_COUNT = 64;
const BUF_SIZE = 2048;
const FRAME_LEN = 64;
const CONFIG = { ports: [{ name: 'a' }, { name: 'b' }], pairs: [['a', 'b']], sharedBuffers: { bufCount: BUF_COUNT, bufSize: BUF_SIZE } };
/** The hand-written BAR front-ends below keep the gift exchange's rules (docs/protocol.md, "Ownership (pair mode)"). */
const GIFT_CONFIG = { ...CONFIG, forwarding: { pairExchange: 'gift' } };


/** A frame whose bytes say who sent it and its sequence number (checked byte by byte at the receiver). */
function frameBytes(seq: number): Uint8Array {
  const f = new Uint8Array(FRAME_LEN);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
  new DataView(f.buffer).setUint32(14, seq, true);
  for (let i = 18; i < FRAME_LEN; i++) f[i] = (seq * 13 + i) & 0xff;
  return f;
}


async function regionOf(t: Test, sw: SwitchProc): Promise<string> {
  const s = await sw.stats();
  const d = s.domains.find((x) => x.ports.includes('a'))!;
  t.ok(d.regionFile, `domain ${d.name} publishes its region (${d.regionFile})`);
  return d.regionFile!;
}

t.test('two BAR front-ends at different addresses: zero-copy both ways of ownership, gifts back, ledger balanced', async (t) => {
  const sw = await startSwitch(t, GIFT_CONFIG);
  const file = await regionOf(t, sw);
  t.equal(file, path.join(sw.dir, 'pair:a+b.region'));
  t.match(fs.readlinkSync(file), new RegExp(`^/proc/${sw.child.pid}/fd/\\d+$`), 'a link to the switch\'s own memfd');
  const a = new BarFrontEnd(sw, 'a', file, 0x8000_0000);
  const b = new BarFrontEnd(sw, 'b', file, 0x2_4000_0000);
  t.teardown(() => {
    a.close();
    b.close();
  });
  t.equal(fs.statSync(file).mode & 0o777, 0o660, 'the region has the sockets\' mode');

  // The header tells each VM its partition.
  const h = readRegionHeader(a.region);
  t.match(h, { bufCount: BUF_COUNT, bufSize: BUF_SIZE, buffersOffset: 0, domain: 'pair:a+b' });
  const pa = h.ports.find((p) => p.name === 'a')!;
  const pb = h.ports.find((p) => p.name === 'b')!;
  t.same([pa.partitionStart, pa.partitionCount, pb.partitionStart, pb.partitionCount], [0, 32, 32, 32]);

  await a.start(t);
  await b.start(t);
  await waitFor('both ports ready', async () => (await sw.port('a')).ready && (await sw.port('b')).ready, 5000);
  const [sa, sb] = [await sw.port('a'), await sw.port('b')];
  t.equal(sa.sharedBar, '0x80000000', 'a: recognised at its own address');
  t.equal(sb.sharedBar, '0x240000000', 'b: recognised at its own address');
  t.ok(sa.zeroCopy && sb.zeroCopy, 'both zero-copy');
  t.equal(sa.buffersOwned, 32, 'a owns its partition');
  t.equal(sb.buffersOwned, 32, 'b owns its partition');
  t.ok(await waitForLogLines(sw, 0, (l) => l.port === 'a' && /recognised in the memory table/.test(String(l.msg))), 'logged');

  for (let i = pa.partitionStart; i < pa.partitionStart + pa.partitionCount; i++) a.owned.add(i);
  for (let i = pb.partitionStart; i < pb.partitionStart + pb.partitionCount; i++) b.owned.add(i);
  // Each posts every buffer it does not own: whatever the other sends lands there, by index.
  for (let i = 0; i < BUF_COUNT; i++) {
    if (!a.owned.has(i)) a.postRx(i);
    if (!b.owned.has(i)) b.postRx(i);
  }
  a.publish();
  b.publish();

  // One-way traffic a -> b; b gifts every buffer straight back (its count stays at its partition).
  const TOTAL = 3000;
  let sent = 0;
  let received = 0;
  let giftsBack = 0;
  const deadline = Date.now() + 60_000;
  while (received < TOTAL) {
    if (Date.now() > deadline) throw new Error(`stalled: sent ${sent}, received ${received}, gifts back ${giftsBack}`);
    for (const bi of [...a.owned]) {
      if (sent === TOTAL) break;
      const off = bi * BUF_SIZE;
      writeNetHdr(a.region, off, 0, 0);
      a.region.set(frameBytes(sent), off + VIRTIO_NET_HDR_SIZE);
      a.sendTx(bi, VIRTIO_NET_HDR_SIZE + FRAME_LEN);
      a.owned.delete(bi);
      a.postRx(bi);
      sent++;
    }
    a.publish();
    await new Promise((r) => setTimeout(r, 1));
    for (const { b: bi, len } of b.reapRx()) {
      if (len !== VIRTIO_NET_HDR_SIZE + FRAME_LEN) throw new Error(`b: buffer ${bi} came with length ${len}`);
      const got = b.region.subarray(bi * BUF_SIZE + VIRTIO_NET_HDR_SIZE, bi * BUF_SIZE + VIRTIO_NET_HDR_SIZE + FRAME_LEN);
      const seq = new DataView(got.buffer, got.byteOffset).getUint32(14, true);
      if (Buffer.compare(Buffer.from(got), Buffer.from(frameBytes(seq))) !== 0) throw new Error(`b: frame in buffer ${bi} corrupt`);
      received++;
      writeNetHdr(b.region, bi * BUF_SIZE, VIRTIO_NET_HDR_F_GIFT_BUFFER, 0);
      b.sendTx(bi, VIRTIO_NET_HDR_SIZE);
      b.postRx(bi);
    }
    b.publish();
    for (const { b: bi, len } of a.reapRx()) {
      if (len !== VIRTIO_NET_HDR_SIZE) throw new Error(`a: expected a gift (12 bytes) for buffer ${bi}, got ${len}`);
      if (!(a.region[bi * BUF_SIZE] & VIRTIO_NET_HDR_F_GIFT_BUFFER)) throw new Error(`a: buffer ${bi} came back without the gift flag`);
      a.owned.add(bi);
      giftsBack++;
    }
  }
  t.equal(received, TOTAL, `${TOTAL} frames received by b, every one verified`);
  await waitFor('the last gifts back at a', async () => {
    for (const { b: bi } of a.reapRx()) {
      a.owned.add(bi);
      giftsBack++;
    }
    return a.owned.size === 32;
  }, 5000);
  const [ca, cb] = [(await sw.port('a')).counters, (await sw.port('b')).counters];
  t.equal(ca.zeroCopy, TOTAL, 'every frame zero-copy');
  t.equal(ca.copiedBytes, 0, 'a: 0 payload bytes copied');
  t.equal(cb.copiedBytes, 0, 'b: 0 payload bytes copied');
  t.equal(cb.giftsIn, TOTAL, 'every buffer gifted back by b');
  t.equal(ca.giftsOut, TOTAL, '...and handed to a');
  t.same(ca.drops ?? {}, {}, 'a: no drops');
  t.same(cb.drops ?? {}, {}, 'b: no drops');
  let s = await sw.stats();
  t.equal(s.ledger.ok, true, 'ledger balances under traffic');
  t.same(s.ledger.owned, { 0: 32, 1: 32 }, 'each port holds its partition count again');

  a.c.close();
  b.c.close();
  await waitFor('both detached', async () => !(await sw.port('a')).attached && !(await sw.port('b')).attached, 5000);
  s = await sw.stats();
  t.equal(s.ledger.ok, true, 'ledger balances after disconnect');
  t.equal(s.sharedBuffers.pool, BUF_COUNT, 'every buffer back in the pool');
  t.equal((await sw.port('a')).sharedBar, null, 'no BAR once detached');
});

t.test('a BAR front-end sends to a SHARED_BUFFERS guest driver (zcswitch vm) of its domain: zero-copy, verified, gifts back', async (t) => {
  const sw = await startSwitch(t, GIFT_CONFIG);
  const file = await regionOf(t, sw);
  const TOTAL = 20 * BUF_COUNT;
  const sink = vm(sw, 'b', ['--mode', 'sink', '--count', String(TOTAL), '--duration', '90']);
  await waitAttached(sw, 'b');
  const a = new BarFrontEnd(sw, 'a', file, 0x1_0000_0000);
  t.teardown(() => a.close());
  const me = readRegionHeader(a.region).ports.find((p) => p.name === 'a')!;
  await a.start(t);
  await waitFor('a ready', async () => (await sw.port('a')).ready, 5000);
  t.equal((await sw.port('a')).sharedBar, '0x100000000');
  for (let i = me.partitionStart; i < me.partitionStart + me.partitionCount; i++) a.owned.add(i);
  let seq = 0;
  let gifts = 0;
  const deadline = Date.now() + 60_000;
  while (seq < TOTAL && Date.now() < deadline) {
    for (const bi of [...a.owned]) {
      if (seq === TOTAL) break;
      writeNetHdr(a.region, bi * BUF_SIZE, 0, 0);
      writeTestFrame(a.region, bi * BUF_SIZE + VIRTIO_NET_HDR_SIZE, 128, 1, seq++, true, defaultMacs(1), 7);
      a.sendTx(bi, VIRTIO_NET_HDR_SIZE + 128);
      a.owned.delete(bi);
      a.postRx(bi);
    }
    a.publish();
    await new Promise((r) => setTimeout(r, 1));
    for (const { b: bi, len } of a.reapRx()) {
      if (len !== VIRTIO_NET_HDR_SIZE) throw new Error(`a: expected gifts only, got ${len} bytes in buffer ${bi}`);
      a.owned.add(bi);
      gifts++;
    }
  }
  t.equal(seq, TOTAL, `a sent ${TOTAL} frames (${TOTAL / BUF_COUNT} times the region: it needed the gifts)`);
  const k = await sink.result;
  t.equal(k.code, 0, `sink exited cleanly: ${k.stderr}`);
  t.equal(k.summary.received, TOTAL, 'the sink received every frame');
  t.equal(k.summary.verified, TOTAL, 'every frame verified');
  t.equal(k.summary.lost, 0, 'none lost');
  t.ok(gifts > 0, `a was gifted buffers back (${gifts})`);
  const c = (await sw.port('a')).counters;
  t.equal(c.zeroCopy, TOTAL, 'every frame zero-copy');
  t.equal(c.copiedBytes, 0, '0 payload bytes copied');
  a.c.close();
  await waitFor('a detached', async () => !(await sw.port('a')).attached, 5000);
  const s = await sw.stats();
  t.ok(s.ledger.ok, `ledger balanced: ${s.ledger.problems.join('; ')}`);
  t.equal(s.sharedBuffers.pool, BUF_COUNT, 'every buffer back in the pool');
});

t.test('a region mapped at the wrong offset or size is ordinary memory; the region cannot be truncated', async (t) => {
  const sw = await startSwitch(t, CONFIG);
  const file = await regionOf(t, sw);
  const a = new BarFrontEnd(sw, 'a', file, 0x8000_0000);
  const b = new BarFrontEnd(sw, 'b', file, 0x8000_0000);
  t.teardown(() => {
    a.close();
    b.close();
  });
  await a.start(t, { offset: 4096, size: BUF_COUNT * BUF_SIZE });
  await b.start(t, { offset: 0, size: BUF_COUNT * BUF_SIZE - 4096 });
  await waitFor('both ports ready', async () => (await sw.port('a')).ready && (await sw.port('b')).ready, 5000);
  for (const p of ['a', 'b']) {
    const st = await sw.port(p);
    t.equal(st.sharedBar, null, `${p}: not taken as the BAR`);
    t.equal(st.zeroCopy, false, `${p}: copy path`);
    t.equal(st.buffersOwned, 0, `${p}: no partition handed out`);
    const logged = await waitForLogLines(sw, 0, (l) => l.port === p && /treated as ordinary guest memory/.test(String(l.msg)));
    t.equal(logged.length, 1, `${p}: logged once`);
  }
  // QEMU's user could try to shrink the region through the published path: the seals refuse it.
  const fd = fs.openSync(file, 'r+');
  t.teardown(() => fs.closeSync(fd));
  t.throws(() => fs.ftruncateSync(fd, 4096), { code: 'EPERM' }, 'truncate refused (sealed)');
  t.throws(() => fs.ftruncateSync(fd, 64 * 1024 * 1024), { code: 'EPERM' }, 'grow refused (sealed)');
  t.equal((await sw.stats()).ledger.ok, true, 'the switch still answers, ledger balanced');
});

t.test('a memory table without the BAR keeps the port\'s window; the BAR back at another address moves it', async (t) => {
  const sw = await startSwitch(t, CONFIG);
  const file = await regionOf(t, sw);
  const a = new BarFrontEnd(sw, 'a', file, 0x8000_0000);
  t.teardown(() => a.close());
  await a.start(t);
  await waitFor('a ready', async () => (await sw.port('a')).ready, 5000);
  t.equal((await sw.port('a')).sharedBar, '0x80000000');
  await a.remap(t, null);
  let st = await sw.port('a');
  t.equal(st.sharedBar, '0x80000000', 'BAR off: the window stays');
  t.equal(st.zeroCopy, true);
  t.equal(st.buffersOwned, 32, 'the partition stays');
  await a.remap(t, 0x9000_0000);
  st = await sw.port('a');
  t.equal(st.sharedBar, '0x90000000', 'the BAR at a new address: the window follows');
  t.equal(st.buffersOwned, 32, 'no second partition');
  t.ok((await sw.stats()).ledger.ok);
});

t.test('another domain\'s region in a memory table is ordinary memory: no window, no partition', async (t) => {
  const sw = await startSwitch(t, { ...CONFIG, ports: [...CONFIG.ports, { name: 'c' }] });
  const s = await sw.stats();
  const other = s.domains.find((d) => d.ports.includes('a'))!.regionFile!;
  const own = s.domains.find((d) => d.ports.includes('c'))!.regionFile!;
  t.not(own, other, 'each domain has its own region file');
  const c = new BarFrontEnd(sw, 'c', other, 0x8000_0000);
  t.teardown(() => c.close());
  await c.start(t);
  await waitFor('c ready', async () => (await sw.port('c')).ready, 5000);
  const st = await sw.port('c');
  t.equal(st.sharedBar, null, 'the other domain\'s region is not c\'s BAR');
  t.equal(st.zeroCopy, false, 'c: copy path');
  t.equal(st.buffersOwned, 0, 'c: nothing from any ledger');
  t.same((await sw.stats()).ledger.owned, {}, 'no port owns a buffer');
});

t.test('the header follows the domain\'s port table: a port added or removed at run time, a new generation each time', async (t) => {
  const sw = await startSwitch(t, CONFIG);
  const file = await regionOf(t, sw);
  const fd = fs.openSync(file, 'r+');
  const buf = mmapShared(fd, fs.fstatSync(fd).size);
  t.teardown(() => {
    munmap(buf);
    fs.closeSync(fd);
  });
  const mem = new Uint8Array(buf);
  const h0 = readRegionHeader(mem);
  t.same(h0.ports.map((p) => p.name), ['a', 'b']);
  const cli = async (args: string[]) => (await run([...args, '--control', sw.control]).exited).code;
  t.equal(await cli(['port', 'add', 'z', '--domain', 'pair:a+b']), 0, 'port add');
  const h1 = readRegionHeader(mem);
  t.same(h1.ports.map((p) => [p.name, p.partitionStart, p.partitionCount]), [['a', 0, 32], ['b', 32, 32], ['z', 0, 0]],
    'z listed; a port added at run time has no static partition');
  t.not(h1.generation, h0.generation, 'new generation');
  t.ok(h1.ports[2].giftHigh > 0, 'its watermarks come from its quota');
  t.equal(await cli(['port', 'del', 'a']), 0, 'port del');
  const h2 = readRegionHeader(mem);
  t.same(h2.ports.map((p) => p.name), ['b', 'z']);
  t.not(h2.generation, h1.generation, 'new generation');
});

t.test('the region link goes with the switch', async (t) => {
  const sw = await startSwitch(t, CONFIG);
  const file = await regionOf(t, sw);
  t.ok(fs.lstatSync(file).isSymbolicLink());
  await sw.stop();
  t.notOk(fs.existsSync(file) || fs.lstatSync(file, { throwIfNoEntry: false }), 'removed on stop');
});
