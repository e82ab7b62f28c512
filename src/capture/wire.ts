/**
 * The capture stream on the control socket (`zcswitch capture`).
 *
 *   client → {"cmd":"capture","port":"vm1","count":100}\n
 *   switch ← {"ok":true,"port":"vm1",...}\n          (or {"error":"..."}\n and no stream)
 *   switch ← chunk*  : u32 little-endian length L, then L bytes of a pcap file
 *                      (the first chunk starts with the pcap global header;
 *                      chunks hold whole records only)
 *   switch ← u32 0   : end of pcap data, then one trailer line
 *            {"done":true,"captured":100,"dropped":0,"reason":"count"}\n
 *            and the switch closes the connection.
 *   client → any line after the request (e.g. {"cmd":"stop"}\n): stop now;
 *            the switch answers with the end marker and the trailer.
 *   client closes: the switch detaches the mirror (no trailer).
 *
 * Concatenating the chunks' payloads gives a valid pcap file. Frames the
 * switch could not queue because the client reads too slowly are dropped
 * (whole records) and counted in `dropped`.
 */

export const CHUNK_PREFIX = 4;

export type CaptureDirection = 'both' | 'from-vm' | 'to-vm';
export const CAPTURE_DIRECTIONS: readonly CaptureDirection[] = ['both', 'from-vm', 'to-vm'];

export interface CaptureRequest {
  cmd: 'capture';
  port: string;
  /** Stop after this many frames; 0 = until stopped. */
  count?: number;
  /** Bytes kept per frame (default 262144). */
  snaplen?: number;
  direction?: CaptureDirection;
  /** Most bytes the switch queues for this client before it drops frames (default 4 MiB). */
  bufferBytes?: number;
}

export interface CaptureAccepted {
  ok: true;
  port: string;
  count: number;
  snaplen: number;
  direction: CaptureDirection;
  bufferBytes: number;
  linktype: number;
}

export interface CaptureTrailer {
  done: true;
  /** Frames written to the stream. */
  captured: number;
  /** Frames seen but not written: the client was not reading fast enough. */
  dropped: number;
  /** Why it ended: "count" (count reached), "stopped" (the client asked), "switch stopping". */
  reason: string;
}

export type StreamEvent =
  | { kind: 'reply'; reply: Record<string, unknown> }
  | { kind: 'data'; data: Buffer }
  | { kind: 'trailer'; trailer: CaptureTrailer };

/**
 * Incremental decoder of the switch's side of a capture connection: the
 * reply line, pcap chunks, the end marker and the trailer line.
 */
export class CaptureStreamDecoder {
  private state: 'reply' | 'len' | 'data' | 'trailer' | 'done' = 'reply';
  private pending: Buffer = Buffer.alloc(0);
  private need = 0;

  /** Feed bytes; returns the events they complete, in order. */
  push(chunk: Buffer): StreamEvent[] {
    const out: StreamEvent[] = [];
    let buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    for (;;) {
      if (this.state === 'reply' || this.state === 'trailer') {
        const nl = buf.indexOf(0x0a);
        if (nl < 0) break;
        const obj = JSON.parse(buf.subarray(0, nl).toString('utf8')) as Record<string, unknown>;
        buf = buf.subarray(nl + 1);
        if (this.state === 'reply') {
          out.push({ kind: 'reply', reply: obj });
          this.state = obj.ok === true ? 'len' : 'done';
        } else {
          out.push({ kind: 'trailer', trailer: obj as unknown as CaptureTrailer });
          this.state = 'done';
        }
      } else if (this.state === 'len') {
        if (buf.length < CHUNK_PREFIX) break;
        this.need = buf.readUInt32LE(0);
        buf = buf.subarray(CHUNK_PREFIX);
        this.state = this.need === 0 ? 'trailer' : 'data';
      } else if (this.state === 'data') {
        if (buf.length === 0) break;
        const n = Math.min(this.need, buf.length);
        out.push({ kind: 'data', data: buf.subarray(0, n) });
        buf = buf.subarray(n);
        this.need -= n;
        if (this.need === 0) this.state = 'len';
      } else {
        break;
      }
    }
    // Keep only what is still undecoded (a partial line or length prefix), copied.
    this.pending = buf.length > 0 && this.state !== 'done' ? Buffer.from(buf) : Buffer.alloc(0);
    return out;
  }

  get finished(): boolean {
    return this.state === 'done';
  }
}
