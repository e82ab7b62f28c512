/**
 * GET_SHARED_BUFFERS, the zcswitch extension's one request (docs/protocol.md):
 * the region's memfd and this port's geometry, once the front-end has
 * negotiated PROTOCOL_F_SHARED_BUFFERS.
 */
import { ProtocolError, type SharedBuffersInfo, sharedBuffersInfo } from './codec';
import { type HandlerRows, Refused } from './handler';
import { Req } from './protocol';

export interface SharedBuffersSource {
  /** Whether the front-end acked PROTOCOL_F_SHARED_BUFFERS. */
  negotiated(): boolean;
  /** The region fd and this port's geometry, or a reason it cannot be served. */
  sharedBuffers(): { info: SharedBuffersInfo; fd: number } | string;
}

export function sharedBuffersHandlers(src: SharedBuffersSource): HandlerRows {
  return [
    [
      Req.GET_SHARED_BUFFERS,
      () => {
        if (!src.negotiated()) throw new ProtocolError('GET_SHARED_BUFFERS: the SHARED_BUFFERS protocol feature was not negotiated');
        const r = src.sharedBuffers();
        if (typeof r === 'string') throw new Refused(`GET_SHARED_BUFFERS refused: ${r}`);
        return { payload: sharedBuffersInfo(r.info), fds: [r.fd] };
      },
    ],
  ];
}
