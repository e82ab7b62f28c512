/**
 * 64 KiB TCP segments between guest-driver VMs (GuestDriver with gso: it
 * acks CSUM / HOST_TSO / GUEST_TSO): with 64 KiB buffers each segment
 * moves by one descriptor completion, zero-copy, its virtio_net_hdr intact;
 * to a VM that did not negotiate TSO the switch cuts it into MSS frames
 * (copied into the VM's private copy targets). A lying header in between
 * is dropped and counted while the stream goes on.
 */
import path from 'node:path';
import t, { type Test } from 'tap';
import { GuestDriver } from '../../src/guest/driver';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_SIZE } from '../../src/virtio/defs';
import type { NetHdrOffload } from '../../src/virtio/net-hdr';
import { counters, startSwitch, vm, waitAttached, waitFor } from '../helpers/procs';

const HDR = VIRTIO_NET_HDR_SIZE;
const PAYLOAD = 65000;
const FRAME = 14 + 20 + 20 + PAYLOAD;
const MSS = 1448;
const TSO: NetHdrOffload = { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 54, gsoSize: MSS, csumStart: 34, csumOffset: 16 };

/** Ethernet + IPv4 + TCP headers and a payload numbered by seq, at m[off]. */
function writeTcpFrame(m: Uint8Array, off: number, seq: number): void {
  const dv = new DataView(m.buffer, m.byteOffset + off);
  m.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00], off);
  m[off + 14] = 0x45;
  dv.setUint16(16, 40 + PAYLOAD);
  dv.setUint16(18, seq);
  m[off + 22] = 64;
  m[off + 23] = 6;
  m.set([10, 0, 0, 1, 10, 0, 0, 2], off + 26);
  dv.setUint16(34, 40000);
  dv.setUint16(36, 5201);
  dv.setUint32(38, seq * PAYLOAD);
  m[off + 46] = 5 << 4;
  m[off + 47] = 0x18;
  for (let i = 0; i < PAYLOAD; i++) m[off + 54 + i] = (seq + i) & 0xff;
}

async function attach(t: Test, sock: string, gso: boolean): Promise<GuestDriver> {
  const d = await GuestDriver.attach({ socketPath: sock, gso });
  t.teardown(() => d.close());
  return d;
}

/** Send n TSO segments from a (after one with a lying header when lie is set). */
async function sendSegments(t: Test, a: GuestDriver, n: number, lie = false): Promise<void> {
  const sh = a.shared!;
  if (lie) {
    const b = a.alloc();
    writeTcpFrame(sh.mem, a.frameOffset(b), 999);
    t.ok(a.send(b, FRAME, 0, 0, { ...TSO, gsoSize: 0 }), 'the lie is queued');
  }
  for (let seq = 0; seq < n;) {
    const b = a.alloc();
    if (b < 0) {
      a.flush();
      a.receive(64);
      await new Promise((r) => setImmediate(r));
      continue;
    }
    writeTcpFrame(sh.mem, a.frameOffset(b), seq);
    if (!a.send(b, FRAME, 0, 0, TSO)) {
      a.release(b);
      a.flush();
      await new Promise((r) => setImmediate(r));
      continue;
    }
    seq++;
  }
  a.flush();
}

/** Receive on b until n packets arrived (check sees each one's header and frame); the count. */
async function receiveAll(b: GuestDriver, n: number, check: (hdr: Uint8Array, frame: Uint8Array) => void): Promise<number> {
  let got = 0;
  await waitFor(`${n} packets`, async () => {
    const k = b.receive(64);
    for (let i = 0; i < k; i++) {
      const tok = b.rxToken[i];
      const mem = b.packetMem(tok);
      const off = b.packetOffset(tok);
      check(mem.subarray(off - HDR, off), mem.subarray(off, off + b.rxLen[i]));
      b.release(tok);
      got++;
    }
    b.flush();
    if (k === 0) await new Promise((r) => setTimeout(r, 2));
    return got >= n;
  }, 20_000);
  return got;
}

t.test('64 KiB TSO segments between two gso VMs: zero-copy, header intact; a lying header dropped', async (t) => {
  const sw = await startSwitch(t, {
    ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']],
    sharedBuffers: { bufSize: 65600, bufCount: 256, hugePages: false },
  });
  const a = await attach(t, path.join(sw.dir, 'vm1.sock'), true);
  const b = await attach(t, path.join(sw.dir, 'vm2.sock'), true);
  await waitAttached(sw, 'vm1', 'vm2');
  t.ok(a.shared && b.shared, 'both mapped the region');
  const N = 200;
  let bad = 0;
  const recv = receiveAll(b, N, (hdr, frame) => {
    const dv = new DataView(hdr.buffer, hdr.byteOffset);
    const seq = (frame[18] << 8) | frame[19];
    if (hdr[0] !== TSO.flags || hdr[1] !== TSO.gsoType || dv.getUint16(2, true) !== 54 || dv.getUint16(4, true) !== MSS ||
      dv.getUint16(6, true) !== 34 || dv.getUint16(8, true) !== 16 || frame.length !== FRAME || frame[54 + 1000] !== ((seq + 1000) & 0xff)) bad++;
  });
  await sendSegments(t, a, N, true);
  t.equal(await recv, N, `${N} segments of ${FRAME} bytes received`);
  t.equal(bad, 0, 'every header field (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) and the frame arrived unchanged');
  const c1 = counters(await sw.port('vm1'));
  t.equal(c1.zeroCopy, N, 'every segment moved zero-copy');
  t.equal(c1.copiedBytes, 0, '0 bytes copied');
  t.equal(c1.gsoFrames, N, 'counted as GSO frames');
  t.equal(c1.drops['bad-gso-size'], 1, 'the lie (gso_size 0) dropped and counted');
  t.ok((await sw.stats()).ledger.ok, 'ledger balanced');
});

t.test('to a VM without TSO the switch cuts each 64 KiB segment into MSS frames', async (t) => {
  const sw = await startSwitch(t, {
    ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']],
    sharedBuffers: { bufSize: 65600, bufCount: 256, hugePages: false },
  });
  const a = await attach(t, path.join(sw.dir, 'vm1.sock'), true);
  // Copy path (no region) and no TSO: MSS frames into its private copy targets.
  const d = await GuestDriver.attach({ socketPath: path.join(sw.dir, 'vm2.sock'), gso: false, zeroCopy: false });
  t.teardown(() => d.close());
  await waitAttached(sw, 'vm1', 'vm2');
  const N = 4;
  const per = Math.ceil(PAYLOAD / MSS);
  const bytes: number[] = [];
  const recv = receiveAll(d, N * per, (hdr, frame) => {
    bytes.push(frame.length);
    if (hdr[0] !== 0 || hdr[1] !== 0) bytes.push(-1);
  });
  await sendSegments(t, a, N);
  t.equal(await recv, N * per, `${N} segments arrive as ${N} x ${per} frames`);
  t.notOk(bytes.includes(-1), 'each a plain frame (no offload flags)');
  t.equal(bytes.filter((n) => n === 54 + MSS).length, N * (per - 1), 'all but the last of each at 54 + MSS bytes');
  const c2 = counters(await sw.port('vm2'));
  t.equal(c2.segmented, N * per, 'segmented count matches');
});

for (const verify of [true, false]) t.test(`zcswitch vm --gso${verify ? '' : ' --no-verify'}: 64 KiB TSO test frames, gen -> sink, zero-copy, verified${verify ? '' : ' by their TCP/IP headers'}, headers intact`, async (t) => {
  const sw = await startSwitch(t, {
    ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']],
    sharedBuffers: { bufSize: 65600, bufCount: 256, hugePages: false },
  });
  const N = 500;
  const noVerify = verify ? [] : ['--no-verify'];
  const sink = vm(sw, 'vm2', ['--mode', 'sink', '--gso', '--count', String(N), '--duration', '60', ...noVerify]);
  await waitFor('vm2 to attach', async () => (await sw.stats()).ports.find((p) => p.name === 'vm2')?.ready);
  const gen = await vm(sw, 'vm1', ['--mode', 'gen', '--gso', '--size', '65000', '--count', String(N), '--rate', '20000', ...noVerify]).result;
  const k = await sink.result;
  t.equal(gen.summary.sent, N, `gen sent ${N} TSO frames of 65000 bytes`);
  t.equal(k.summary.verified, N, `the sink verified every one (${verify ? 'test frame behind the TCP header' : 'stream, run and sequence from the IPv4 and TCP headers'})`);
  t.equal(k.summary.notTest + k.summary.badLength + k.summary.dup, 0, 'nothing it could not place');
  t.equal(k.summary.lost, 0, 'none lost');
  t.equal(k.summary.gsoIntact, N, 'every TSO header arrived unchanged');
  t.equal(k.summary.gsoChanged, 0);
  const c1 = counters(await sw.port('vm1'));
  t.equal(c1.zeroCopy, N, 'all zero-copy');
  t.equal(c1.copiedBytes, 0, '0 bytes copied');
  t.equal(c1.gsoFrames, N);
});
