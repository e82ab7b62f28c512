/**
 * What a request handler is, for the session (session.ts) and the parts
 * that plug into its table (vrings.ts, shared-buffers-handler.ts).
 */
import type { VhostMessage } from './codec';

/** A reply payload with fds to pass along in the ancillary data. */
export interface ReplyWithFds {
  payload: Buffer;
  fds: number[];
}

/**
 * Handles one request. Returns the reply payload for requests that reply
 * (REPLIES), nothing otherwise; throws ProtocolError for a malformed
 * request (the session disconnects) or Refused for one it declines.
 */
export type Handler = (msg: VhostMessage) => Buffer | ReplyWithFds | void;

/** Request id → handler rows, merged by the session into one table. */
export type HandlerRows = readonly (readonly [number, Handler])[];

/** A request the back-end understood but refuses: ack with failure, keep the session. */
export class Refused extends Error {}
