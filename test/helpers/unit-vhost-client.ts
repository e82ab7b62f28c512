/**
 * A raw vhost-user client for tests: connect to a port socket with the
 * native addon and exchange hand-built messages, with deadlines everywhere
 * (a test never hangs on a socket).
 */
import { closeFd, unixConnect, unixRecvMsg, unixSendMsg, type NativeError } from '../../bindings';
import { type MemRegionDesc, encodeMessage, memTable, u64, vringAddr, vringState } from '../../src/vhost/codec';
import { FLAG_NEED_REPLY, FLAG_VERSION, HEADER, PROTOCOL_F_REPLY_ACK, Req, VHOST_USER_F_PROTOCOL_FEATURES } from '../../src/vhost/protocol';
import { VIRTIO_F_VERSION_1, bit } from '../../src/virtio/defs';

import { sleep } from './wait';

export interface RawReply {
  request: number;
  flags: number;
  payload: Buffer;
  fds: number[];
}

export class RawClient {
  private open = true;

  private constructor(readonly fd: number) {}

  static connect(path: string): RawClient {
    return new RawClient(unixConnect(path));
  }

  /** Send bytes as they are; returns the count the kernel took. */
  sendRaw(bytes: Buffer, fds?: number[]): number {
    return unixSendMsg(this.fd, bytes, fds);
  }

  send(request: number, flags: number, payload: Buffer = Buffer.alloc(0), fds?: number[]): void {
    const bytes = encodeMessage(request, flags, payload);
    const n = unixSendMsg(this.fd, bytes, fds);
    if (n !== bytes.length) throw new Error(`short send: ${n} of ${bytes.length} bytes`);
  }

  /** Read exactly len bytes; null when the peer closed first. */
  private async readExactly(len: number, fds: number[], deadline: number, what: string): Promise<Buffer | null> {
    const buf = Buffer.alloc(len);
    let have = 0;
    while (have < len) {
      let n: number;
      try {
        n = unixRecvMsg(this.fd, buf.subarray(have), fds, len - have);
      } catch (e) {
        if ((e as NativeError).code === 'ECONNRESET') return null;
        throw e;
      }
      if (n === 0) return null;
      if (n > 0) {
        have += n;
        continue;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (${have} of ${len} bytes)`);
      await sleep(2);
    }
    return buf;
  }

  /** Read one whole message; null when the peer closed the connection. */
  async recv(timeoutMs = 3000): Promise<RawReply | null> {
    const deadline = Date.now() + timeoutMs;
    const fds: number[] = [];
    const raw = await this.readExactly(HEADER.size, fds, deadline, 'a reply header');
    if (!raw) return null;
    const { request, flags, size } = HEADER.read(raw, 0);
    if (size > 65536) throw new Error(`reply claims a ${size}-byte payload`);
    const payload = size > 0 ? await this.readExactly(size, fds, deadline, 'a reply payload') : Buffer.alloc(0);
    if (!payload) return null;
    return { request, flags, payload, fds };
  }

  /**
   * Wait until the peer closes: 'eof' (recv returned 0) or 'reset'
   * (ECONNRESET). Any bytes that arrive meanwhile are counted in `extra`.
   */
  async waitClosed(timeoutMs = 3000): Promise<{ how: 'eof' | 'reset'; extra: number }> {
    const deadline = Date.now() + timeoutMs;
    const buf = Buffer.alloc(4096);
    let extra = 0;
    for (;;) {
      const fds: number[] = [];
      let n: number;
      try {
        n = unixRecvMsg(this.fd, buf, fds);
      } catch (e) {
        if ((e as NativeError).code === 'ECONNRESET') return { how: 'reset', extra };
        throw e;
      } finally {
        for (const fd of fds) closeFd(fd);
      }
      if (n === 0) return { how: 'eof', extra };
      if (n > 0) {
        extra += n;
        continue;
      }
      if (Date.now() > deadline) throw new Error(`the connection was still open after ${timeoutMs} ms`);
      await sleep(2);
    }
  }

  /** True when nothing has arrived and the peer has not closed (checked without waiting). */
  idleAndOpen(): boolean {
    const fds: number[] = [];
    const n = unixRecvMsg(this.fd, Buffer.alloc(1), fds);
    for (const fd of fds) closeFd(fd);
    return n === -1;
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    closeFd(this.fd);
  }
}

/**
 * Start vring q the way QEMU does once the guest driver is up: size, base 0,
 * addresses (front-end user addresses: ua + the ring parts' offsets), kick
 * and call eventfds, then SET_VRING_ENABLE with need-reply (the caller reads
 * its ack).
 */
export function sendVringStart(
  c: RawClient, q: number, num: number, ua: bigint, at: { desc: number; avail: number; used: number }, kickFd: number, callFd: number,
): void {
  c.send(Req.SET_VRING_NUM, FLAG_VERSION, vringState(q, num));
  c.send(Req.SET_VRING_BASE, FLAG_VERSION, vringState(q, 0));
  c.send(Req.SET_VRING_ADDR, FLAG_VERSION, vringAddr({
    index: q, flags: 0, desc: ua + BigInt(at.desc), avail: ua + BigInt(at.avail), used: ua + BigInt(at.used), log: 0n,
  }));
  c.send(Req.SET_VRING_KICK, FLAG_VERSION, u64(BigInt(q)), [kickFd]);
  c.send(Req.SET_VRING_CALL, FLAG_VERSION, u64(BigInt(q)), [callFd]);
  c.send(Req.SET_VRING_ENABLE, FLAG_VERSION | FLAG_NEED_REPLY, vringState(q, 1));
}

/**
 * Negotiate the way QEMU does for a classic port (no SHARED_BUFFERS):
 * features, REPLY_ACK, owner, VERSION_1, then SET_MEM_TABLE with need-reply.
 * Returns SET_MEM_TABLE's ack (the caller checks it).
 */
export async function negotiateClassic(c: RawClient, regions: MemRegionDesc[], fds: number[]): Promise<RawReply | null> {
  c.send(Req.GET_FEATURES, FLAG_VERSION);
  await c.recv();
  c.send(Req.GET_PROTOCOL_FEATURES, FLAG_VERSION);
  await c.recv();
  c.send(Req.SET_PROTOCOL_FEATURES, FLAG_VERSION, u64(bit(PROTOCOL_F_REPLY_ACK)));
  c.send(Req.SET_OWNER, FLAG_VERSION);
  c.send(Req.SET_FEATURES, FLAG_VERSION, u64(bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES)));
  c.send(Req.SET_MEM_TABLE, FLAG_VERSION | FLAG_NEED_REPLY, memTable(regions), fds);
  return c.recv();
}
