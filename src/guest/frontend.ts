/**
 * The vhost-user front-end half of the guest driver: connect to a port's
 * socket and speak the requests in order, awaiting replies (and REPLY_ACK
 * acks when negotiated). Knows the wire protocol, nothing about packets.
 */
import { unixConnect } from '../../bindings';
import { VhostChannel } from '../vhost/channel';
import { ProtocolError, type VhostMessage, decodeU64 } from '../vhost/codec';
import { FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, PROTOCOL_F_REPLY_ACK, REPLIES, reqName } from '../vhost/protocol';
import { hasBit } from '../virtio/defs';

interface Pending {
  request: number;
  resolve: (m: VhostMessage) => void;
  reject: (e: Error) => void;
}

export class VhostUserFrontend {
  private readonly channel: VhostChannel;
  private readonly pending: Pending[] = [];
  private closedReason: string | null = null;
  ackedProtocol = 0n;

  private constructor(fd: number, private readonly onClose: (reason: string) => void) {
    this.channel = new VhostChannel(fd, (m) => this.onMessage(m), (r) => this.closed(r));
  }

  static connect(socketPath: string, onClose: (reason: string) => void): VhostUserFrontend {
    return new VhostUserFrontend(unixConnect(socketPath), onClose);
  }

  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  /** Send a request that has a reply, and wait for it. */
  async call(request: number, payload: Buffer = Buffer.alloc(0), fds?: number[]): Promise<VhostMessage> {
    if (!REPLIES.has(request)) throw new Error(`${reqName(request)} has no reply; use send()`);
    return this.roundTrip(request, FLAG_VERSION, payload, fds);
  }

  /**
   * Send a request without a reply. With REPLY_ACK negotiated we ask for an
   * ack and fail on a non-zero one, so errors surface where they happen.
   */
  async send(request: number, payload: Buffer = Buffer.alloc(0), fds?: number[]): Promise<void> {
    if (!hasBit(this.ackedProtocol, PROTOCOL_F_REPLY_ACK)) {
      this.transmit(request, FLAG_VERSION, payload, fds);
      return;
    }
    const ack = await this.roundTrip(request, FLAG_VERSION | FLAG_NEED_REPLY, payload, fds);
    const status = decodeU64(ack);
    if (status !== 0n) throw new Error(`${reqName(request)} refused by the back-end (ack ${status})`);
  }

  close(): void {
    this.channel.close('front-end closed');
  }

  private roundTrip(request: number, flags: number, payload: Buffer, fds?: number[]): Promise<VhostMessage> {
    return new Promise((resolve, reject) => {
      this.pending.push({ request, resolve, reject });
      this.transmit(request, flags, payload, fds);
    });
  }

  private transmit(request: number, flags: number, payload: Buffer, fds?: number[]): void {
    if (this.closedReason !== null) throw new Error(`${reqName(request)}: connection closed (${this.closedReason})`);
    if (!this.channel.send(request, flags, payload, fds)) throw new Error(`${reqName(request)}: send failed (${this.closedReason})`);
  }

  private onMessage(m: VhostMessage): void {
    const p = this.pending.shift();
    if (!p || !(m.flags & FLAG_REPLY) || m.request !== p.request) {
      const why = p ? `expected a reply to ${reqName(p.request)}` : 'no request pending';
      p?.reject(new ProtocolError(`unexpected message ${reqName(m.request)} from back-end (${why})`));
      this.channel.close(`unexpected message ${reqName(m.request)}`);
      return;
    }
    p.resolve(m);
  }

  private closed(reason: string): void {
    this.closedReason = reason;
    for (const p of this.pending.splice(0)) p.reject(new Error(`${reqName(p.request)}: connection closed (${reason})`));
    this.onClose(reason);
  }
}

