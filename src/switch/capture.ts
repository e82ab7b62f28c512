/**
 * `capture` on the control socket: mirror one port's frames into a pcap
 * stream on the requesting connection (wire format: src/capture/wire.ts).
 *
 * The Mirror is called synchronously from the data path. It copies the
 * frame (up to snaplen) with its pcap record header into the current chunk
 * buffer and returns; chunks go to the socket when full and once per
 * event-loop turn (setImmediate), so a busy port costs one socket write per
 * chunk, not per frame. The switch never waits for the client: when the
 * bytes queued on the socket plus the open chunk would pass bufferBytes,
 * the frame is dropped and counted. Nothing is copied unless a capture is
 * running, and the mirror is detached as soon as the count is reached, the
 * client asks to stop, or the client goes away.
 *
 * A port a data-path worker forwards for (forwarding.workers) mirrors into
 * a ring the main thread drains into the session (src/workers/mirror-ring.ts):
 * the frames then carry the worker's timestamp, and the frames the ring had
 * no room for count as dropped too.
 *
 * One capture per port at a time; a second gets an error naming the port.
 */
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  DEFAULT_SNAPLEN,
  LINKTYPE_ETHERNET,
  RECORD_HEADER_SIZE,
  writeGlobalHeader,
  writeRecordHeader,
} from '../capture/pcap';
import { CAPTURE_DIRECTIONS, CHUNK_PREFIX, type CaptureAccepted, type CaptureDirection, type CaptureTrailer } from '../capture/wire';
import type { Logger } from '../log';
import { StreamReply, type StreamSession } from './control';
import { type Mirror, MirrorDir } from '../datapath/mirror';
import type { MirrorSink } from '../workers/mirror-ring';

export const CAPTURE_DEFAULT_BUFFER = 4 * 1024 * 1024;
export const CAPTURE_MIN_BUFFER = 64 * 1024;
export const CAPTURE_MAX_BUFFER = 256 * 1024 * 1024;
const MAX_SNAPLEN = 262144;
/** Usual chunk size; a bigger record gets a chunk of its own. */
const CHUNK_BYTES = 128 * 1024;

/** What capture needs from the switch (Switch satisfies it). */
export interface CaptureTarget {
  readonly dataPorts: readonly { readonly name: string; readonly mirror: Mirror | null }[];
  readonly log: Logger;
  /** A port a data-path worker forwards for drains the worker's mirror ring into the session (MirrorSink). */
  setMirror(portName: string, mirror: (Mirror & MirrorSink) | null): boolean;
}

/** Handle `{"cmd":"capture",...}`: an error object, or a StreamReply that starts the capture. */
export function captureCommand(target: CaptureTarget, cmd: Record<string, unknown>): unknown {
  const bad = (message: string) => ({ error: message });
  if (typeof cmd.port !== 'string' || cmd.port === '') return bad('"port" must be a port name');
  const port = target.dataPorts.find((p) => p.name === cmd.port);
  if (!port) {
    const names = target.dataPorts.map((p) => `"${p.name}"`).join(', ');
    return bad(`no port named ${JSON.stringify(cmd.port)} (ports are ${names})`);
  }
  const int = (key: string, def: number, min: number, max: number): number | string => {
    const v = cmd[key] ?? def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      return `"${key}" must be a whole number within ${min}..${max}, got ${JSON.stringify(v)}`;
    }
    return v;
  };
  const count = int('count', 0, 0, Number.MAX_SAFE_INTEGER);
  const snaplen = int('snaplen', DEFAULT_SNAPLEN, 1, MAX_SNAPLEN);
  const bufferBytes = int('bufferBytes', CAPTURE_DEFAULT_BUFFER, CAPTURE_MIN_BUFFER, CAPTURE_MAX_BUFFER);
  for (const v of [count, snaplen, bufferBytes]) if (typeof v === 'string') return bad(v);
  const direction = (cmd.direction ?? 'both') as CaptureDirection;
  if (!CAPTURE_DIRECTIONS.includes(direction)) {
    return bad(`"direction" must be one of ${CAPTURE_DIRECTIONS.join(', ')}, got ${JSON.stringify(cmd.direction)}`);
  }
  if (port.mirror !== null) return bad(`port ${port.name} is already being captured (one capture per port at a time)`);
  const opts: CaptureAccepted = {
    ok: true, port: port.name, count: count as number, snaplen: snaplen as number, direction,
    bufferBytes: bufferBytes as number, linktype: LINKTYPE_ETHERNET,
  };
  return new StreamReply((sock) => new CaptureSession(target, sock, opts));
}

export class CaptureSession implements Mirror, MirrorSink, StreamSession {
  captured = 0;
  dropped = 0;
  private chunk: Buffer;
  /** Bytes used in chunk, including its 4-byte length prefix. */
  private used = CHUNK_PREFIX;
  private flushQueued = false;
  private attached = false;
  private ended = false;
  private readonly wantFrom: boolean;
  private readonly wantTo: boolean;
  private readonly started = performance.now();

  constructor(
    private readonly target: CaptureTarget,
    private readonly sock: net.Socket,
    private readonly opts: CaptureAccepted,
  ) {
    this.wantFrom = opts.direction !== 'to-vm';
    this.wantTo = opts.direction !== 'from-vm';
    this.chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    sock.write(JSON.stringify(opts) + '\n');
    this.used += writeGlobalHeader(this.chunk, this.used, opts.snaplen);
    this.flush();
    // Any line from the client means "stop"; a closed connection means it went away.
    sock.on('data', (d: string | Buffer) => {
      if (d.toString().includes('\n')) this.finish('stopped');
    });
    sock.on('close', () => {
      if (this.ended) return;
      this.ended = true;
      this.detach();
      target.log.info({ port: opts.port, captured: this.captured, dropped: this.dropped }, 'capture ended: the client went away');
    });
    this.attached = target.setMirror(opts.port, this);
    target.log.info({ port: opts.port, count: opts.count, snaplen: opts.snaplen, direction: opts.direction }, 'capture started');
  }

  /** Data path: keep a copy of one frame, or count it as dropped. */
  frame(mem: Uint8Array, off: number, len: number, dir: MirrorDir): void {
    this.keep(mem, off, len, len, dir, performance.timeOrigin + performance.now());
  }

  /** A frame a worker copied into its mirror ring (src/workers/mirror-ring.ts), with the worker's timestamp. */
  frameAt(bytes: Uint8Array, off: number, kept: number, len: number, dir: MirrorDir, tsMs: number): void {
    // Records drained after the count was reached (the worker wrote them before it detached) are not part of the capture.
    if (this.opts.count > 0 && this.captured >= this.opts.count) return;
    this.keep(bytes, off, kept, len, dir, tsMs);
  }

  /** Frames a worker's mirror ring had no room for. */
  ringDropped(n: number): void {
    this.dropped += n;
  }

  get snaplen(): number {
    return this.opts.snaplen;
  }

  get direction(): CaptureDirection {
    return this.opts.direction;
  }

  get bufferBytes(): number {
    return this.opts.bufferBytes;
  }

  /** `avail` of the frame's `len` bytes are at mem[off]; ts in ms since the epoch. */
  private keep(mem: Uint8Array, off: number, avail: number, len: number, dir: MirrorDir, ts: number): void {
    if (!(dir === MirrorDir.FromVm ? this.wantFrom : this.wantTo) || this.ended) return;
    const snap = avail < this.opts.snaplen ? avail : this.opts.snaplen;
    const incl = len < snap ? len : snap;
    const rec = RECORD_HEADER_SIZE + incl;
    if (this.sock.writableLength + this.used + rec > this.opts.bufferBytes) {
      this.dropped++;
      return;
    }
    if (this.used + rec > this.chunk.length) {
      this.flush();
      if (CHUNK_PREFIX + rec > this.chunk.length) this.chunk = Buffer.allocUnsafe(CHUNK_PREFIX + rec);
    }
    const c = this.chunk;
    let at = this.used;
    at += writeRecordHeader(c, at, ts, incl, len);
    c.set(mem.subarray(off, off + incl), at);
    this.used = at + incl;
    this.captured++;
    if (this.opts.count > 0 && this.captured >= this.opts.count) {
      this.detach();
      setImmediate(() => this.finish('count'));
    } else if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(this.flushSoon);
    }
  }

  private readonly flushSoon = (): void => {
    this.flushQueued = false;
    if (!this.ended) this.flush();
  };

  /** Send the open chunk (if it holds anything) and start a fresh one. */
  private flush(): void {
    if (this.used === CHUNK_PREFIX) return;
    const c = this.chunk;
    c.writeUInt32LE(this.used - CHUNK_PREFIX, 0);
    if (this.used * 4 <= CHUNK_BYTES && c.length === CHUNK_BYTES) {
      // A light load (a few frames per turn): send a copy and keep the chunk.
      if (!this.sock.destroyed) this.sock.write(Buffer.from(c.subarray(0, this.used)));
    } else {
      // The socket keeps the chunk until it is written out: hand it over, start a new one.
      if (!this.sock.destroyed) this.sock.write(c.subarray(0, this.used));
      this.chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    }
    this.used = CHUNK_PREFIX;
  }

  private detach(): void {
    if (!this.attached) return;
    this.attached = false;
    const port = this.target.dataPorts.find((p) => p.name === this.opts.port);
    if (port?.mirror === this) this.target.setMirror(this.opts.port, null);
  }

  /** Detach, send what is left, the end marker and the trailer, and close. */
  private finish(reason: string): void {
    if (this.ended) return;
    this.detach();
    this.flush();
    this.ended = true;
    const trailer: CaptureTrailer = { done: true, captured: this.captured, dropped: this.dropped, reason };
    this.target.log.info({ port: this.opts.port, ...trailer, seconds: (performance.now() - this.started) / 1000 }, 'capture ended');
    if (this.sock.destroyed) return;
    const end = Buffer.alloc(CHUNK_PREFIX); // length 0: end of pcap data
    this.sock.write(end);
    this.sock.end(JSON.stringify(trailer) + '\n');
  }

  shutdown(): void {
    this.finish('switch stopping');
  }
}
