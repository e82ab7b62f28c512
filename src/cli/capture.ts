/**
 * `zcswitch capture`: mirror one port of a running switch into a pcap file
 * (classic libpcap, LINKTYPE_ETHERNET, microsecond timestamps) through the
 * control socket. Ends after --count frames, after --duration seconds, or
 * on Ctrl-C / SIGTERM (the switch is asked to stop, so the file ends on a
 * whole record and the drop count is still reported). `-w -` writes the
 * pcap to stdout (`... -w - | tshark -r -`); the summary then goes to
 * stderr.
 */
import fs from 'node:fs';
import net from 'node:net';
import type { Writable } from 'node:stream';
import { PcapRecordCounter } from '../capture/pcap';
import { type CaptureDirection, type CaptureRequest, type CaptureTrailer, CaptureStreamDecoder } from '../capture/wire';

export interface CaptureOptions {
  control: string;
  port: string;
  write: string;
  count: number;
  snaplen?: number;
  direction: CaptureDirection;
  /** Seconds; 0 = no limit. */
  duration: number;
  /** KiB the switch may queue for us before it drops frames. */
  bufferSize?: number;
  quiet: boolean;
}

export interface CaptureResult {
  captured: number;
  dropped: number;
  reason: string;
  /** Records actually written to the file. */
  written: number;
}

/** Run a capture to completion. Rejects with a readable message (no such port, no switch, switch went away). */
export function runCapture(o: CaptureOptions, onArmed?: () => void): Promise<CaptureResult> {
  return new Promise((resolve, reject) => {
    const req: CaptureRequest = { cmd: 'capture', port: o.port, count: o.count, direction: o.direction };
    if (o.snaplen !== undefined) req.snaplen = o.snaplen;
    if (o.bufferSize !== undefined) req.bufferBytes = o.bufferSize * 1024;
    const sock = net.createConnection(o.control);
    const dec = new CaptureStreamDecoder();
    const counter = new PcapRecordCounter();
    let out: Writable | null = null;
    let trailer: CaptureTrailer | null = null;
    let settled = false;
    let durationTimer: NodeJS.Timeout | null = null;
    let stopTimer: NodeJS.Timeout | null = null;

    const cleanup = () => {
      if (durationTimer) clearTimeout(durationTimer);
      if (stopTimer) clearTimeout(stopTimer);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    };
    const fail = (msg: string) => {
      if (settled) return;
      settled = true;
      cleanup();
      sock.destroy();
      closeOut(() => reject(new Error(msg)));
    };
    const closeOut = (then: () => void) => {
      if (!out) return then();
      if (out === process.stdout) {
        if (process.stdout.writableNeedDrain) process.stdout.once('drain', then);
        else then();
        return;
      }
      out.end(then);
    };
    const done = () => {
      if (settled) return;
      settled = true;
      cleanup();
      sock.destroy();
      const t = trailer!;
      closeOut(() => resolve({ captured: t.captured, dropped: t.dropped, reason: t.reason, written: counter.records }));
    };
    /** Ask the switch to stop; it answers with the end marker and the trailer. */
    const stop = () => {
      if (settled || stopTimer) return;
      if (!sock.destroyed) sock.write('{"cmd":"stop"}\n');
      stopTimer = setTimeout(() => fail('the switch did not confirm the end of the capture within 5 s'), 5000);
    };
    let signals = 0;
    const onSignal = () => {
      if (++signals > 1) fail('interrupted');
      else stop();
    };

    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: Buffer) => {
      let events;
      try {
        events = dec.push(d);
      } catch (e) {
        return fail(`garbled answer from the switch: ${(e as Error).message}`);
      }
      for (const ev of events) {
        if (ev.kind === 'reply') {
          if (ev.reply.ok !== true) return fail(String(ev.reply.error ?? JSON.stringify(ev.reply)));
          try {
            out = o.write === '-' ? process.stdout : fs.createWriteStream(o.write);
          } catch (e) {
            return fail(`cannot write ${o.write}: ${(e as Error).message}`);
          }
          out.on('error', (e) => fail(`cannot write ${o.write}: ${e.message}`));
          out.on('drain', () => sock.resume());
          process.on('SIGINT', onSignal);
          process.on('SIGTERM', onSignal);
          if (o.duration > 0) durationTimer = setTimeout(stop, o.duration * 1000);
          onArmed?.();
        } else if (ev.kind === 'data') {
          counter.push(ev.data);
          // A slow disk slows our reads; the switch then drops (and counts) instead of queueing.
          if (!out!.write(ev.data)) sock.pause();
        } else {
          trailer = ev.trailer;
          if (!counter.aligned) return fail('the capture stream ended in the middle of a record');
          return done();
        }
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      fail(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? `no switch is running at ${o.control} (${e.code})` : e.message);
    });
    sock.on('close', () => {
      if (!settled) {
        fail(out ? `the switch closed the connection before the capture ended (${counter.records} frames written to ${o.write})` : 'the switch closed the connection');
      }
    });
  });
}

export async function captureCommand(o: CaptureOptions): Promise<void> {
  const say = (s: string) => process.stderr.write(s);
  try {
    const r = await runCapture(o, () => {
      if (!o.quiet) {
        const what = o.count > 0 ? `${o.count} frames` : 'until Ctrl-C';
        say(`zcswitch capture: capturing on port ${o.port} (${o.direction}, ${what}) to ${o.write === '-' ? 'stdout' : o.write}\n`);
      }
    });
    const summary = `${r.captured} frames captured on port ${o.port}, ${r.dropped} dropped (reader too slow)` +
      `${o.write === '-' ? '' : `, written to ${o.write}`}\n`;
    if (o.write === '-') say(summary);
    else process.stdout.write(summary);
    if (r.written !== r.captured) {
      say(`zcswitch capture: warning: the switch reported ${r.captured} frames but ${r.written} arrived\n`);
      process.exitCode = 1;
    }
  } catch (e) {
    say(`zcswitch capture: ${(e as Error).message}\n`);
    process.exitCode = 1;
  }
}
