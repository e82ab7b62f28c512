/**
 * Capture with data-path workers (docs/design.md, "Data-path workers"): a
 * worker's port mirrors into a single-producer single-consumer ring over a
 * SharedArrayBuffer, and the main thread drains it into the CaptureSession
 * (src/switch/capture.ts), which writes pcap as it does for the main
 * thread's ports. The worker copies the frame (up to snaplen) with its
 * length, direction and timestamp; when the ring is full the frame is
 * dropped and counted in the ring's header. The worker signals only when
 * the reader said it found the ring empty (a flag it sets), so a busy
 * capture costs one message per drain, not one per frame.
 *
 * Layout: a header of HEADER_WORDS Int32 words, then the data area.
 * Records start 8-byte aligned: RECORD_BYTES of header (total record bytes
 * u32, frame length u32, direction u32, bytes kept u32, timestamp f64 in ms
 * since the epoch), then the bytes. A record that would not fit before the
 * end of the area starts at 0, after a WRAP word at its place.
 */
import { performance } from 'node:perf_hooks';
import type { Mirror, MirrorDir } from '../datapath/mirror';

/** Header words: where the writer and the reader are (byte offsets into the data area), drops, the reader's wish to be woken, the filter. */
const HEAD = 0;
const TAIL = 1;
const DROPS = 2;
const WAKE_ME = 3;
const SNAPLEN = 4;
/** Bit 0: frames from the VM; bit 1: frames to the VM. */
const DIRS = 5;
const HEADER_WORDS = 8;
const HEADER_BYTES = HEADER_WORDS * 4;
const RECORD_BYTES = 24;
const WRAP = 0xffffffff;
export const MIRROR_RING_MIN_BYTES = 64 * 1024;
export const MIRROR_RING_MAX_BYTES = 16 * 1024 * 1024;

/** What the main thread's side hands a drained frame to (CaptureSession). */
export interface MirrorSink {
  readonly snaplen: number;
  readonly direction: 'both' | 'from-vm' | 'to-vm';
  /** How many bytes the capture may hold queued (the ring gets this much, within MIRROR_RING_*). */
  readonly bufferBytes: number;
  /** A frame copied in a worker: `kept` of its `len` bytes at bytes[off], taken at tsMs (ms since the epoch). */
  frameAt(bytes: Uint8Array, off: number, kept: number, len: number, dir: MirrorDir, tsMs: number): void;
  /** Frames the ring dropped (it was full). */
  ringDropped(n: number): void;
}

const align8 = (n: number): number => (n + 7) & ~7;

/** A new ring for a capture with these settings. */
export function createMirrorRing(sink: Pick<MirrorSink, 'snaplen' | 'direction' | 'bufferBytes'>): SharedArrayBuffer {
  const bytes = align8(Math.min(MIRROR_RING_MAX_BYTES, Math.max(MIRROR_RING_MIN_BYTES, sink.bufferBytes)));
  const sab = new SharedArrayBuffer(HEADER_BYTES + bytes);
  const h = new Int32Array(sab, 0, HEADER_WORDS);
  h[SNAPLEN] = sink.snaplen;
  h[DIRS] = (sink.direction !== 'to-vm' ? 1 : 0) | (sink.direction !== 'from-vm' ? 2 : 0);
  h[WAKE_ME] = 1;
  return sab;
}

/** The worker's side: a Mirror on the port's queues. */
export class MirrorRingWriter implements Mirror {
  private readonly h: Int32Array;
  private readonly u8: Uint8Array;
  private readonly u32: Uint32Array;
  private readonly f64: Float64Array;
  private readonly size: number;
  private readonly snaplen: number;
  private readonly dirs: number;
  /** Only this side moves HEAD: its own copy saves a load per frame. */
  private head: number;

  /** wake: the reader asked to be told that the ring is no longer empty. */
  constructor(readonly ring: SharedArrayBuffer, private readonly wake: () => void) {
    this.h = new Int32Array(ring, 0, HEADER_WORDS);
    this.size = ring.byteLength - HEADER_BYTES;
    this.u8 = new Uint8Array(ring, HEADER_BYTES, this.size);
    this.u32 = new Uint32Array(ring, HEADER_BYTES, this.size / 4);
    this.f64 = new Float64Array(ring, HEADER_BYTES, this.size / 8);
    this.snaplen = this.h[SNAPLEN];
    this.dirs = this.h[DIRS];
    this.head = Atomics.load(this.h, HEAD);
  }

  frame(mem: Uint8Array, off: number, len: number, dir: MirrorDir): void {
    if ((this.dirs & (1 << dir)) === 0) return;
    const kept = len < this.snaplen ? len : this.snaplen;
    const need = align8(RECORD_BYTES + kept);
    const tail = Atomics.load(this.h, TAIL);
    let at = this.head;
    // The writer never catches up with the reader exactly (head === tail means empty).
    if (tail <= at) {
      const toEnd = this.size - at;
      if (need < toEnd || (need === toEnd && tail > 0)) {
        // fits before the end
      } else if (need < tail) {
        this.u32[at >> 2] = WRAP;
        at = 0;
      } else {
        Atomics.add(this.h, DROPS, 1);
        return;
      }
    } else if (need >= tail - at) {
      Atomics.add(this.h, DROPS, 1);
      return;
    }
    const w = at >> 2;
    this.u32[w] = need;
    this.u32[w + 1] = len;
    this.u32[w + 2] = dir;
    this.u32[w + 3] = kept;
    this.f64[(at >> 3) + 2] = performance.timeOrigin + performance.now();
    this.u8.set(mem.subarray(off, off + kept), at + RECORD_BYTES);
    at += need;
    if (at === this.size) at = 0;
    this.head = at;
    Atomics.store(this.h, HEAD, at);
    if (Atomics.load(this.h, WAKE_ME) !== 0 && Atomics.exchange(this.h, WAKE_ME, 0) !== 0) this.wake();
  }
}

/** The main thread's side: drains the records into a sink. */
export class MirrorRingReader {
  private readonly h: Int32Array;
  private readonly u8: Uint8Array;
  private readonly u32: Uint32Array;
  private readonly f64: Float64Array;
  private readonly size: number;
  private dropsSeen = 0;
  private draining = false;
  /** Set when the capture detaches: a drain in progress stops after its current record. */
  closed = false;

  constructor(readonly ring: SharedArrayBuffer, private readonly sink: MirrorSink) {
    this.h = new Int32Array(ring, 0, HEADER_WORDS);
    this.size = ring.byteLength - HEADER_BYTES;
    this.u8 = new Uint8Array(ring, HEADER_BYTES, this.size);
    this.u32 = new Uint32Array(ring, HEADER_BYTES, this.size / 4);
    this.f64 = new Float64Array(ring, HEADER_BYTES, this.size / 8);
  }

  /** Hand every record to the sink, then ask the writer to wake us when there is more. */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    try {
      for (;;) {
        this.drainOnce();
        if (this.closed) return;
        // Ask for a wake, then look once more: a record written before the flag was set is not missed.
        Atomics.store(this.h, WAKE_ME, 1);
        if (Atomics.load(this.h, HEAD) === Atomics.load(this.h, TAIL)) return;
      }
    } finally {
      this.draining = false;
    }
  }

  private drainOnce(): void {
    let tail = Atomics.load(this.h, TAIL);
    const head = Atomics.load(this.h, HEAD);
    while (tail !== head && !this.closed) {
      let w = tail >> 2;
      if (this.u32[w] === WRAP) {
        tail = 0;
        w = 0;
        if (tail === head) break;
      }
      const need = this.u32[w];
      const len = this.u32[w + 1];
      const dir = this.u32[w + 2] as MirrorDir;
      const kept = this.u32[w + 3];
      const ts = this.f64[(tail >> 3) + 2];
      this.sink.frameAt(this.u8, tail + RECORD_BYTES, kept, len, dir, ts);
      tail += need;
      if (tail === this.size) tail = 0;
      Atomics.store(this.h, TAIL, tail);
    }
    Atomics.store(this.h, TAIL, tail);
    const drops = Atomics.load(this.h, DROPS);
    if (drops !== this.dropsSeen) {
      this.sink.ringDropped((drops - this.dropsSeen) >>> 0);
      this.dropsSeen = drops;
    }
  }
}
