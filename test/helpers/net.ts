/**
 * A tiny IPv4 host on top of the in-process GuestDriver, so a real Linux
 * guest can talk to a guest-driver VM: it answers ARP requests for its IP
 * and ICMP echo requests, can send pings and UDP datagrams itself, and keeps
 * every other frame it receives for the test to inspect. Frames go out in
 * shared buffers (zero-copy send; the switch copies them into the Linux
 * guest's own memory).
 */
import type { GuestDriver } from '../../src/guest/driver';

const ETH_ARP = 0x0806;
const ETH_IP = 0x0800;
const IP_ICMP = 1;
const IP_UDP = 17;

export function parseMac(s: string): Uint8Array {
  return Uint8Array.from(s.split(':').map((x) => parseInt(x, 16)));
}

export function parseIp(s: string): Uint8Array {
  return Uint8Array.from(s.split('/')[0].split('.').map(Number));
}

export const fmtMac = (m: Uint8Array): string => [...m].map((x) => x.toString(16).padStart(2, '0')).join(':');
export const fmtIp = (m: Uint8Array): string => [...m].join('.');

const get16 = (m: Uint8Array, o: number): number => (m[o] << 8) | m[o + 1];
function put16(m: Uint8Array, o: number, v: number): void {
  m[o] = (v >>> 8) & 0xff;
  m[o + 1] = v & 0xff;
}

/** Internet checksum of m[from, to). */
export function inetChecksum(m: Uint8Array, from: number, to: number, seed = 0): number {
  let s = seed;
  for (let i = from; i + 1 < to; i += 2) s += (m[i] << 8) | m[i + 1];
  if ((to - from) & 1) s += m[to - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** A frame the host did not answer itself (echo replies, ICMP errors, ...), copied out. */
export interface SeenFrame {
  frame: Uint8Array;
  srcMac: string;
  ethertype: number;
  /** IPv4 only. */
  srcIp?: string;
  proto?: number;
  /** ICMP only. */
  icmpType?: number;
  icmpCode?: number;
  /** Echo replies: identifier and sequence. */
  id?: number;
  seq?: number;
  /** ICMP payload (echo data, or the quoted datagram of an error). */
  icmpData?: Uint8Array;
}

export class NetResponder {
  readonly mac: Uint8Array;
  readonly ip: Uint8Array;
  readonly seen: SeenFrame[] = [];
  arpAnswered = 0;
  /** MACs that sent us ARP requests. */
  readonly arpFrom = new Set<string>();
  echoAnswered = 0;
  /** Bytes of the largest frame received. */
  maxFrame = 0;
  private stopped = false;
  private readonly scratch = new Uint8Array(2048);
  private waiters: (() => void)[] = [];

  constructor(private readonly drv: GuestDriver, mac: string, ip: string) {
    this.mac = parseMac(mac);
    this.ip = parseIp(ip);
  }

  start(): void {
    this.drv.pollMode();
    this.loop();
  }

  stop(): void {
    this.stopped = true;
  }

  /** Wait for a received frame matching pred (earlier frames count too). */
  async waitFor(what: string, pred: (f: SeenFrame) => boolean, timeoutMs = 10_000): Promise<SeenFrame> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const f = this.seen.find(pred);
      if (f) return f;
      const left = end - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (saw ${this.seen.length} other frames)`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Send an ICMP echo request with `size` payload bytes (pattern (seq + i) & 0xff). */
  ping(dstMac: string, dstIp: string, id: number, seq: number, size: number): boolean {
    const m = this.scratch;
    const ipLen = 20 + 8 + size;
    this.eth(m, parseMac(dstMac), ETH_IP);
    this.ipv4(m, parseIp(dstIp), IP_ICMP, ipLen);
    const o = 34;
    m[o] = 8;
    m[o + 1] = 0;
    put16(m, o + 2, 0);
    put16(m, o + 4, id);
    put16(m, o + 6, seq);
    for (let i = 0; i < size; i++) m[o + 8 + i] = (seq + i) & 0xff;
    put16(m, o + 2, inetChecksum(m, o, o + 8 + size));
    return this.send(m, 14 + ipLen);
  }

  /** Send a UDP datagram (checksum filled in). */
  sendUdp(dstMac: string, dstIp: string, srcPort: number, dstPort: number, payload: Uint8Array): boolean {
    const m = this.scratch;
    const udpLen = 8 + payload.length;
    const dip = parseIp(dstIp);
    this.eth(m, parseMac(dstMac), ETH_IP);
    this.ipv4(m, dip, IP_UDP, 20 + udpLen);
    const o = 34;
    put16(m, o, srcPort);
    put16(m, o + 2, dstPort);
    put16(m, o + 4, udpLen);
    put16(m, o + 6, 0);
    m.set(payload, o + 8);
    // Pseudo-header: src, dst, proto, length.
    let seed = get16(this.ip, 0) + get16(this.ip, 2) + get16(dip, 0) + get16(dip, 2) + IP_UDP + udpLen;
    seed = (seed & 0xffff) + (seed >>> 16);
    put16(m, o + 6, inetChecksum(m, o, o + udpLen, seed) || 0xffff);
    return this.send(m, 34 + udpLen);
  }

  private eth(m: Uint8Array, dst: Uint8Array, type: number): void {
    m.set(dst, 0);
    m.set(this.mac, 6);
    put16(m, 12, type);
  }

  private ipv4(m: Uint8Array, dst: Uint8Array, proto: number, totalLen: number): void {
    const o = 14;
    m[o] = 0x45;
    m[o + 1] = 0;
    put16(m, o + 2, totalLen);
    put16(m, o + 4, 0);
    put16(m, o + 6, 0x4000); // DF
    m[o + 8] = 64;
    m[o + 9] = proto;
    put16(m, o + 10, 0);
    m.set(this.ip, o + 12);
    m.set(dst, o + 16);
    put16(m, o + 10, inetChecksum(m, o, o + 20));
  }

  /** Copy a frame into a free shared buffer and transmit it. */
  private send(frame: Uint8Array, len: number): boolean {
    if (this.stopped) return false;
    const drv = this.drv;
    drv.receive(0); // reap tx completions and returned buffers
    const b = drv.alloc();
    if (b < 0) return false;
    drv.shared!.mem.set(frame.subarray(0, len), drv.frameOffset(b));
    if (!drv.send(b, len)) {
      drv.release(b);
      return false;
    }
    drv.flush();
    return true;
  }

  private readonly loop = (): void => {
    if (this.stopped) return;
    const drv = this.drv;
    let n: number;
    while ((n = drv.receive(64)) > 0) {
      for (let i = 0; i < n; i++) {
        const tok = drv.rxToken[i];
        this.handle(drv.packetMem(tok), drv.packetOffset(tok), drv.rxLen[i]);
        drv.release(tok);
      }
    }
    drv.flush();
    if (this.waiters.length && this.seen.length) for (const w of this.waiters.splice(0)) w();
    // Sleep on the call eventfds; a timer bounds the wait in case a call is missed.
    const t = setTimeout(this.loop, 50);
    drv.waitForWork(() => {
      clearTimeout(t);
      drv.pollMode();
      this.loop();
    });
  };

  private handle(mem: Uint8Array, off: number, len: number): void {
    if (len < 14) return;
    if (len > this.maxFrame) this.maxFrame = len;
    const f = mem.subarray(off, off + len);
    const type = get16(f, 12);
    if (type === ETH_ARP && len >= 42 && get16(f, 20) === 1 && this.isMe(f, 38)) {
      // ARP request for our address: answer it.
      const m = this.scratch;
      this.eth(m, f.subarray(6, 12), ETH_ARP);
      m.set(f.subarray(14, 20), 14); // htype, ptype, hlen, plen
      put16(m, 20, 2);
      m.set(this.mac, 22);
      m.set(this.ip, 28);
      m.set(f.subarray(22, 28), 32);
      m.set(f.subarray(28, 32), 38);
      this.arpFrom.add(fmtMac(f.subarray(6, 12)));
      if (this.send(m, 42)) this.arpAnswered++;
      return;
    }
    if (type === ETH_IP && len >= 34 && (f[14] >> 4) === 4) {
      const ihl = (f[14] & 0xf) * 4;
      const ipLen = get16(f, 16);
      const proto = f[23];
      const l4 = 14 + ihl;
      if (ipLen + 14 > len || l4 > len) return;
      if (proto === IP_ICMP && f[l4] === 8 && this.isMe(f, 30)) {
        // Echo request: reply with the same id, seq and data.
        const m = this.scratch;
        const icmpLen = ipLen - ihl;
        this.eth(m, f.subarray(6, 12), ETH_IP);
        this.ipv4(m, f.subarray(26, 30), IP_ICMP, 20 + icmpLen);
        m.set(f.subarray(l4, l4 + icmpLen), 34);
        m[34] = 0;
        put16(m, 36, 0);
        put16(m, 36, inetChecksum(m, 34, 34 + icmpLen));
        if (this.send(m, 34 + icmpLen)) this.echoAnswered++;
        return;
      }
      const s: SeenFrame = { frame: Uint8Array.from(f), srcMac: fmtMac(f.subarray(6, 12)), ethertype: type, srcIp: fmtIp(f.subarray(26, 30)), proto };
      if (proto === IP_ICMP) {
        s.icmpType = f[l4];
        s.icmpCode = f[l4 + 1];
        s.id = get16(f, l4 + 4);
        s.seq = get16(f, l4 + 6);
        s.icmpData = Uint8Array.from(f.subarray(l4 + 8, 14 + ipLen));
      }
      this.seen.push(s);
      return;
    }
    this.seen.push({ frame: Uint8Array.from(f), srcMac: fmtMac(f.subarray(6, 12)), ethertype: type });
  }

  private isMe(f: Uint8Array, o: number): boolean {
    return f[o] === this.ip[0] && f[o + 1] === this.ip[1] && f[o + 2] === this.ip[2] && f[o + 3] === this.ip[3];
  }
}
