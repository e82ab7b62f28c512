/**
 * One vhost-user connection: reads whole messages (header, payload, fds)
 * from a non-blocking Unix socket owned by the native addon, and writes
 * messages with their fds. The header is read with its own recvmsg so fds
 * always attach to the message they were sent with. Used by both the
 * switch's back-end and the guest driver's front-end.
 */
import { FdWatcher, closeFd, unixRecvMsg, unixSendMsg } from '../../bindings';
import { encodeMessage, type VhostMessage } from './codec';
import { HEADER, MAX_FDS, MAX_PAYLOAD, reqName } from './protocol';
import { closeFdQuiet } from './memory-table';

/** Messages handled per readability callback before yielding to other ports. */
const MAX_MESSAGES_PER_WAKE = 64;

export class VhostChannel {
  private readonly watcher: FdWatcher;
  private readonly rx = Buffer.alloc(HEADER.size + MAX_PAYLOAD);
  private have = 0;
  private want = HEADER.size;
  private fds: number[] = [];
  private closed = false;

  constructor(
    readonly fd: number,
    private readonly onMessage: (msg: VhostMessage) => void,
    private readonly onClose: (reason: string) => void,
  ) {
    // Fault boundary for this connection: whatever throws while serving it
    // closes it (the owner's onClose logs the reason); only a throw from the
    // close itself goes on to the process's last-resort handler.
    this.watcher = new FdWatcher(fd, () => {
      try {
        this.readable();
      } catch (e) {
        if (this.closed) throw e;
        this.close(`internal error while serving this connection: ${(e as Error)?.message ?? String(e)}`);
      }
    });
    this.watcher.start();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Send one message; a peer that does not read is dropped rather than waited for. */
  send(request: number, flags: number, payload: Buffer, fds?: number[]): boolean {
    if (this.closed) return false;
    const bytes = encodeMessage(request, flags, payload);
    let n: number;
    try {
      n = unixSendMsg(this.fd, bytes, fds);
    } catch (e) {
      this.close(`send ${reqName(request)} failed: ${(e as Error).message}`);
      return false;
    }
    if (n !== bytes.length) {
      this.close(`send ${reqName(request)}: peer is not reading (${n} of ${bytes.length} bytes sent)`);
      return false;
    }
    return true;
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
    for (const fd of this.fds) closeFdQuiet(fd);
    this.fds = [];
    try {
      closeFd(this.fd);
    } catch {
      /* already closed */
    }
    this.onClose(reason);
  }

  private readable(): void {
    for (let handled = 0; handled < MAX_MESSAGES_PER_WAKE && !this.closed; ) {
      let n: number;
      try {
        n = unixRecvMsg(this.fd, this.rx.subarray(this.have), this.fds, this.want - this.have);
      } catch (e) {
        this.close(`receive failed: ${(e as Error).message}`);
        return;
      }
      if (n < 0) return; // EAGAIN: wait for the next wake
      if (n === 0) {
        this.close('peer closed the connection');
        return;
      }
      if (this.fds.length > MAX_FDS) {
        this.close(`peer sent ${this.fds.length} fds with one message (at most ${MAX_FDS})`);
        return;
      }
      this.have += n;
      if (this.have < this.want) continue;
      const hdr = HEADER.read(this.rx, 0);
      if (this.want === HEADER.size) {
        if (hdr.size > MAX_PAYLOAD) {
          this.close(`${reqName(hdr.request)}: payload size ${hdr.size} exceeds ${MAX_PAYLOAD}`);
          return;
        }
        this.want = HEADER.size + hdr.size;
        if (hdr.size > 0) continue;
      }
      const msg: VhostMessage = {
        request: hdr.request,
        flags: hdr.flags,
        payload: Buffer.from(this.rx.subarray(HEADER.size, this.want)),
        fds: this.fds,
      };
      this.fds = [];
      this.have = 0;
      this.want = HEADER.size;
      handled++;
      this.onMessage(msg);
    }
  }
}
