/**
 * systemd readiness (sd_notify(3)) without libsystemd: when NOTIFY_SOCKET is
 * set (a unit with `Type=notify`), one datagram to it. A path or, with a
 * leading "@", an abstract socket name. Sending never blocks and never fails
 * the switch: a notification that cannot be sent is logged.
 */
import { unixDgramSend } from '../../bindings';
import type { Logger } from '../log';

/** Send `state` (e.g. "READY=1\nSTATUS=...") to $NOTIFY_SOCKET; false when unset or not sent. */
export function sdNotify(state: string, log: Logger, env: NodeJS.ProcessEnv = process.env): boolean {
  const target = env.NOTIFY_SOCKET;
  if (!target) return false;
  try {
    const n = unixDgramSend(target, Buffer.from(state));
    if (n < 0) {
      log.warn({ notifySocket: target }, 'sd_notify: the notify socket is full; notification not sent');
      return false;
    }
    return true;
  } catch (e) {
    log.warn({ notifySocket: target, err: e }, `sd_notify: cannot notify systemd: ${(e as Error).message}`);
    return false;
  }
}
