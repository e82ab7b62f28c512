/**
 * A raw front-end that acts like QEMU with `-device ivshmem-plain` on the
 * region the switch publishes (docs/qemu.md): a classic vhost-user front-end
 * (no SHARED_BUFFERS) whose SET_MEM_TABLE carries its rings (a memfd at
 * guest-physical 0) and the region file at a guest-physical address of its
 * choosing; it reads the geometry from the region header and names buffer i
 * by its own address, bar + i × bufSize. Tests drive its rings by hand.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Test } from 'tap';
import { closeFd, eventfdCreate, eventfdSignal, memfdCreate, mmapShared, munmap } from '../../bindings';
import { type RegionHeader, readRegionHeader } from '../../src/shm/region-header';
import { memTable } from '../../src/vhost/codec';
import { FLAG_NEED_REPLY, FLAG_VERSION, Req } from '../../src/vhost/protocol';
import { VIRTQ_DESC_F_WRITE } from '../../src/virtio/defs';
import { DriverQueue } from '../../src/virtio/driver-queue';
import { SplitRing } from '../../src/virtio/ring';
import type { SwitchProc } from './procs';
import { RawClient, negotiateClassic, sendVringStart } from './unit-vhost-client';

const RING_MEM = 0x4000;
const RING_UA = 0x7f00_0000_0000n;
const REGION_UA = 0x7e00_0000_0000n;
/** Ring size of both vrings (room for every buffer of a small test region on rx). */
export const BAR_RING_NUM = 128;
const NUM = BAR_RING_NUM;
const RING_AT = [{ desc: 0x0, avail: 0x800, used: 0x1000 }, { desc: 0x2000, avail: 0x2800, used: 0x3000 }];


/**
 * A classic front-end (no SHARED_BUFFERS) with the region as a BAR: its rings
 * in a memfd at guest-physical 0, the region file at guest-physical `bar`
 * (mmap offset `offset`, `size` bytes). Knows buffer i as bar + i × bufSize.
 */
export class BarFrontEnd {
  readonly c: RawClient;
  readonly rx: DriverQueue;
  readonly tx: DriverQueue;
  readonly region: Uint8Array;
  /** The region header as read at construction (geometry, partitions). */
  readonly header: RegionHeader;
  /** Buffers this front-end owns (the test keeps it). */
  readonly owned = new Set<number>();
  private readonly ringFd: number;
  private readonly regionFd: number;
  private readonly ringBuf: ArrayBuffer;
  private readonly regionBuf: ArrayBuffer;
  private readonly kick = [eventfdCreate(), eventfdCreate()];
  private readonly call = [eventfdCreate(), eventfdCreate()];

  constructor(sw: SwitchProc, readonly port: string, regionFile: string, readonly bar: number) {
    this.c = RawClient.connect(path.join(sw.dir, `${port}.sock`));
    this.ringFd = memfdCreate(`${port}-rings`, RING_MEM);
    this.ringBuf = mmapShared(this.ringFd, RING_MEM);
    // What QEMU does with mem-path=<regionFile>,share=on: open it read-write and map it shared.
    this.regionFd = fs.openSync(regionFile, 'r+');
    const size = fs.fstatSync(this.regionFd).size;
    this.regionBuf = mmapShared(this.regionFd, size);
    this.region = new Uint8Array(this.regionBuf);
    this.header = readRegionHeader(this.region);
    const parts = (q: number) => ({
      desc: { buffer: this.ringBuf, byteOffset: RING_AT[q].desc },
      avail: { buffer: this.ringBuf, byteOffset: RING_AT[q].avail },
      used: { buffer: this.ringBuf, byteOffset: RING_AT[q].used },
    });
    this.rx = new DriverQueue(new SplitRing(NUM, parts(0)), false);
    this.tx = new DriverQueue(new SplitRing(NUM, parts(1)), false);
  }

  close(): void {
    this.c.close();
    munmap(this.ringBuf);
    munmap(this.regionBuf);
    for (const fd of [this.ringFd, this.regionFd, ...this.kick, ...this.call]) closeFd(fd);
  }

  async ack(t: Test, what: string): Promise<void> {
    const r = await this.c.recv();
    t.equal(r?.payload.readBigUInt64LE(0), 0n, `${this.port}: ${what} acked`);
  }

  /** Negotiate like QEMU without SHARED_BUFFERS, map rings + region, start both vrings. */
  async start(t: Test, region: { offset: number; size: number } = { offset: 0, size: this.region.byteLength }): Promise<void> {
    const c = this.c;
    const table = await negotiateClassic(c, [
      { guestPhysAddr: 0n, memorySize: BigInt(RING_MEM), userspaceAddr: RING_UA, mmapOffset: 0n },
      { guestPhysAddr: BigInt(this.bar), memorySize: BigInt(region.size), userspaceAddr: REGION_UA, mmapOffset: BigInt(region.offset) },
    ], [this.ringFd, this.regionFd]);
    t.equal(table?.payload.readBigUInt64LE(0), 0n, `${this.port}: SET_MEM_TABLE acked`);
    for (let q = 0; q < 2; q++) {
      sendVringStart(c, q, NUM, RING_UA, RING_AT[q], this.kick[q], this.call[q]);
      await this.ack(t, `vring ${q} enable`);
    }
  }

  /** A new memory table: the rings, and the region at `bar` (null: without it, as when the guest turns the BAR off). */
  async remap(t: Test, bar: number | null): Promise<void> {
    const regions = [{ guestPhysAddr: 0n, memorySize: BigInt(RING_MEM), userspaceAddr: RING_UA, mmapOffset: 0n }];
    if (bar !== null) regions.push({ guestPhysAddr: BigInt(bar), memorySize: BigInt(this.region.byteLength), userspaceAddr: REGION_UA, mmapOffset: 0n });
    this.c.send(Req.SET_MEM_TABLE, FLAG_VERSION | FLAG_NEED_REPLY, memTable(regions), bar === null ? [this.ringFd] : [this.ringFd, this.regionFd]);
    await this.ack(t, `SET_MEM_TABLE (${bar === null ? 'no BAR' : `BAR at 0x${bar.toString(16)}`})`);
  }

  addr(b: number): number {
    return this.bar + b * this.header.bufSize;
  }

  /** Post buffer b on rx (a whole buffer, device-writable, at our address for it). */
  postRx(b: number): void {
    const d = this.rx.allocDesc();
    this.rx.ring.setDesc(d, this.addr(b), this.header.bufSize, VIRTQ_DESC_F_WRITE, 0);
    this.rx.addAvail(d);
  }

  sendTx(b: number, len: number): void {
    const d = this.tx.allocDesc();
    this.tx.ring.setDesc(d, this.addr(b), len, 0, 0);
    this.tx.addAvail(d);
  }

  publish(): void {
    this.rx.publishAvail();
    this.tx.publishAvail();
    eventfdSignal(this.kick[0]);
    eventfdSignal(this.kick[1]);
  }

  /** Reap rx: each entry as (buffer index from OUR descriptor's address, length); throws on an address outside our window. */
  reapRx(): { b: number; len: number }[] {
    const out: { b: number; len: number }[] = [];
    while (this.rx.usedPending() > 0) {
      const id = this.rx.popUsed();
      const addr = this.rx.ring.descAddr(id);
      this.rx.freeDesc(id);
      const off = addr - this.bar;
      const { bufSize, bufCount } = this.header;
      if (off < 0 || off % bufSize !== 0 || off / bufSize >= bufCount) throw new Error(`${this.port}: rx completion at 0x${addr.toString(16)}, not one of our buffers`);
      out.push({ b: off / bufSize, len: this.rx.lastUsedLen });
    }
    while (this.tx.usedPending() > 0) this.tx.freeDesc(this.tx.popUsed());
    return out;
  }
}
