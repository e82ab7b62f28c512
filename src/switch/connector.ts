/**
 * Client mode of a port (`ports[].connect`): the front-end listens (QEMU
 * `-chardev socket,server=on`, DPDK virtio-user `server=1`, libvirt
 * `mode='server'`) and the switch connects to it. The connection is then
 * served exactly as an accepted one (Port.accept). Connecting never blocks
 * the event loop (a non-blocking AF_UNIX connect completes at once or fails);
 * a front-end that is not there yet, or that went away, is retried with
 * back-off (100 ms doubling to 5 s), logged once per outage.
 */
import { type NativeError, unixConnect } from '../../bindings';
import type { Logger } from '../log';
import { closeFdQuiet } from '../vhost/memory-table';
import type { Port } from './port';

export const CONNECT_RETRY_MIN_MS = 100;
export const CONNECT_RETRY_MAX_MS = 5000;
/** A session shorter than this does not reset the back-off (a front-end that accepts and hangs up at once). */
const SHORT_SESSION_MS = 1000;

export class PortConnector {
  private timer: NodeJS.Timeout | null = null;
  private delayMs = CONNECT_RETRY_MIN_MS;
  /** In an outage that has been logged: its end is logged too, and nothing in between. */
  private failing = false;
  private failures = 0;
  private connectedAt = 0;
  private stopped = false;

  constructor(private readonly port: Port, readonly path: string, private readonly log: Logger) {}

  /** First attempt now. */
  start(): void {
    this.attempt();
  }

  /** The port's session ended (front-end gone, or the switch dropped it): connect again. */
  lost(): void {
    if (this.stopped) return;
    if (Date.now() - this.connectedAt >= SHORT_SESSION_MS) this.delayMs = CONNECT_RETRY_MIN_MS;
    this.log.info({ port: this.port.name, connect: this.path, retryMs: this.delayMs }, 'client-mode port: reconnecting to the front-end');
    this.retry();
  }

  /** No more attempts (switch stopping). Idempotent. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private retry(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.attempt();
    }, this.delayMs);
    this.delayMs = Math.min(CONNECT_RETRY_MAX_MS, this.delayMs * 2);
  }

  private attempt(): void {
    if (this.stopped || this.port.attached) return;
    let fd = -1;
    let why: string | null = null;
    let code: string | undefined;
    try {
      fd = unixConnect(this.path, true);
      if (fd < 0) {
        why = 'its listen backlog is full';
        code = 'EAGAIN';
      }
    } catch (e) {
      why = (e as Error).message;
      code = (e as NativeError).code;
    }
    if (why !== null) {
      this.failures++;
      if (!this.failing) {
        this.failing = true;
        this.log.warn(
          { port: this.port.name, connect: this.path, code, retryMs: this.delayMs },
          `client-mode port: cannot connect to the front-end at ${this.path}: ${why}; retrying with back-off (up to ${CONNECT_RETRY_MAX_MS / 1000} s) until it listens`,
        );
      }
      this.retry();
      return;
    }
    this.log.info(
      { port: this.port.name, connect: this.path, failedAttempts: this.failures },
      'client-mode port: connected to the front-end',
    );
    this.failing = false;
    this.failures = 0;
    this.connectedAt = Date.now();
    try {
      this.port.accept(fd);
    } catch (e) {
      // As for an accepted connection: one that cannot be served is closed and tried again.
      this.log.error({ port: this.port.name, err: e }, `cannot serve the connection: ${(e as Error).message}`);
      if (this.port.attached) this.port.disconnect(`cannot serve the connection: ${(e as Error).message}`);
      else {
        closeFdQuiet(fd);
        this.lost();
      }
    }
  }
}
