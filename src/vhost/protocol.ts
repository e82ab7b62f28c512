/**
 * The one authority for the vhost-user wire (qemu docs/interop/vhost-user.rst)
 * and for zcswitch's SHARED_BUFFERS extension (docs/protocol.md): request
 * ids, header flags, feature bits and the layout of every payload we read
 * or write. Pure data: no I/O, no device logic; codec.ts derives encoders
 * and size-checked decoders from the tables here. virtio's own numbers live
 * in src/virtio/defs.ts. Names drop the spec's VHOST_USER_ prefix except
 * where the number lives in virtio's feature space.
 */
import { VIRTQ_MAX_CHAIN } from '../virtio/defs';
import { wireStruct } from './layout';

// ---- requests

/**
 * How a request is answered. 'reply': by a reply message of its own, which
 * the front-end always waits for, so REPLY_ACK does not apply. 'ack': by
 * nothing, or by REPLY_ACK's u64 when the front-end sets NEED_REPLY.
 */
type Answer = 'reply' | 'ack';

/** Every request id we know by name: the single source for Req, reqName and REPLIES. */
const REQUESTS = {
  GET_FEATURES: { id: 1, answer: 'reply' },
  SET_FEATURES: { id: 2, answer: 'ack' },
  SET_OWNER: { id: 3, answer: 'ack' },
  RESET_OWNER: { id: 4, answer: 'ack' },
  SET_MEM_TABLE: { id: 5, answer: 'ack' },
  SET_LOG_BASE: { id: 6, answer: 'ack' },
  SET_LOG_FD: { id: 7, answer: 'ack' },
  SET_VRING_NUM: { id: 8, answer: 'ack' },
  SET_VRING_ADDR: { id: 9, answer: 'ack' },
  SET_VRING_BASE: { id: 10, answer: 'ack' },
  GET_VRING_BASE: { id: 11, answer: 'reply' },
  SET_VRING_KICK: { id: 12, answer: 'ack' },
  SET_VRING_CALL: { id: 13, answer: 'ack' },
  SET_VRING_ERR: { id: 14, answer: 'ack' },
  GET_PROTOCOL_FEATURES: { id: 15, answer: 'reply' },
  SET_PROTOCOL_FEATURES: { id: 16, answer: 'ack' },
  GET_QUEUE_NUM: { id: 17, answer: 'reply' },
  SET_VRING_ENABLE: { id: 18, answer: 'ack' },
  SEND_RARP: { id: 19, answer: 'ack' },
  NET_SET_MTU: { id: 20, answer: 'ack' },
  SET_SLAVE_REQ_FD: { id: 21, answer: 'ack' },
  IOTLB_MSG: { id: 22, answer: 'ack' },
  SET_VRING_ENDIAN: { id: 23, answer: 'ack' },
  GET_CONFIG: { id: 24, answer: 'reply' },
  SET_CONFIG: { id: 25, answer: 'ack' },
  CREATE_CRYPTO_SESSION: { id: 26, answer: 'ack' },
  CLOSE_CRYPTO_SESSION: { id: 27, answer: 'ack' },
  POSTCOPY_ADVISE: { id: 28, answer: 'ack' },
  POSTCOPY_LISTEN: { id: 29, answer: 'ack' },
  POSTCOPY_END: { id: 30, answer: 'ack' },
  GET_INFLIGHT_FD: { id: 31, answer: 'reply' },
  SET_INFLIGHT_FD: { id: 32, answer: 'ack' },
  GPU_SET_SOCKET: { id: 33, answer: 'ack' },
  RESET_DEVICE: { id: 34, answer: 'ack' },
  VRING_KICK: { id: 35, answer: 'ack' },
  GET_MAX_MEM_SLOTS: { id: 36, answer: 'reply' },
  ADD_MEM_REG: { id: 37, answer: 'ack' },
  REM_MEM_REG: { id: 38, answer: 'ack' },
  SET_STATUS: { id: 39, answer: 'ack' },
  GET_STATUS: { id: 40, answer: 'reply' },
  /**
   * Extension: ask for the Shared Buffers region (no payload; the reply is
   * SHARED_BUFFERS_REPLY with the region's memfd). 0x5a00 is far outside
   * the spec's ids (1..40s), so it cannot collide with a future request and
   * stands out in a trace.
   */
  GET_SHARED_BUFFERS: { id: 0x5a00, answer: 'reply' },
} as const satisfies Record<string, { id: number; answer: Answer }>;

type RequestName = keyof typeof REQUESTS;
const requestRows = Object.entries(REQUESTS) as [RequestName, { id: number; answer: Answer }][];

/** Front-end → back-end request ids by name. */
export const Req = Object.freeze(Object.fromEntries(requestRows.map(([name, r]) => [name, r.id]))) as {
  readonly [N in RequestName]: (typeof REQUESTS)[N]['id'];
};

const REQ_NAMES: ReadonlyMap<number, string> = new Map(requestRows.map(([name, r]) => [r.id, name]));

export function reqName(req: number): string {
  return REQ_NAMES.get(req) ?? `UNKNOWN_${req}`;
}

/** Requests whose normal answer is a reply message (REPLY_ACK does not apply). */
export const REPLIES: ReadonlySet<number> = new Set(requestRows.filter(([, r]) => r.answer === 'reply').map(([, r]) => r.id));

// ---- header flags and limits

export const FLAG_VERSION_MASK = 0x3;
export const FLAG_VERSION = 0x1;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** No legal payload is near this; larger means a broken or hostile peer. */
export const MAX_PAYLOAD = 4096;
/** SET_MEM_TABLE carries at most this many regions (and fds): VHOST_MEMORY_BASELINE_NREGIONS. */
export const MAX_MEM_REGIONS = 8;
export const MAX_FDS = 8;

// ---- feature bits

/** A virtio device feature bit that vhost-user reserves: the back-end speaks GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30n;

export const PROTOCOL_F_MQ = 0n;
export const PROTOCOL_F_LOG_SHMFD = 1n;
export const PROTOCOL_F_RARP = 2n;
export const PROTOCOL_F_REPLY_ACK = 3n;
export const PROTOCOL_F_NET_MTU = 4n;
export const PROTOCOL_F_SLAVE_REQ = 5n;
export const PROTOCOL_F_CONFIG = 9n;
export const PROTOCOL_F_STATUS = 16n;

/** SET_VRING_KICK/CALL/ERR u64: bits 0..7 the vring index, bit 8 "no fd". */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;

// ---- payload layouts (codec.ts checks each size on decode)

export const HEADER = wireStruct('vhost-user header', [
  { name: 'request', offset: 0, type: 'u32' },
  { name: 'flags', offset: 4, type: 'u32' },
  { name: 'size', offset: 8, type: 'u32' },
]);

/** Features, protocol features, status, queue num, vring fd index, ack. */
export const U64_PAYLOAD = wireStruct('u64', [{ name: 'value', offset: 0, type: 'u64' }]);

export const VRING_STATE = wireStruct('vhost_vring_state', [
  { name: 'index', offset: 0, type: 'u32' },
  { name: 'num', offset: 4, type: 'u32' },
]);

export const VRING_ADDR = wireStruct('vhost_vring_addr', [
  { name: 'index', offset: 0, type: 'u32' },
  { name: 'flags', offset: 4, type: 'u32' },
  { name: 'desc', offset: 8, type: 'u64' },
  { name: 'used', offset: 16, type: 'u64' },
  { name: 'avail', offset: 24, type: 'u64' },
  { name: 'log', offset: 32, type: 'u64' },
]);

/** SET_MEM_TABLE: this header, then nregions MEMORY_REGIONs. */
export const MEMORY_HEADER = wireStruct('vhost_user_memory', [
  { name: 'nregions', offset: 0, type: 'u32' },
  { name: 'padding', offset: 4, type: 'pad32' },
]);

export const MEMORY_REGION = wireStruct('vhost_user_memory_region', [
  { name: 'guestPhysAddr', offset: 0, type: 'u64' },
  { name: 'memorySize', offset: 8, type: 'u64' },
  { name: 'userspaceAddr', offset: 16, type: 'u64' },
  { name: 'mmapOffset', offset: 24, type: 'u64' },
]);

// ---- the zcswitch extension: SHARED_BUFFERS (docs/protocol.md)
// Its request is GET_SHARED_BUFFERS in the request table above.

/**
 * Protocol feature bit for the Shared Buffers region. The spec uses bits
 * 0..18 today; 40 leaves ample room for it to grow and still fits the u64.
 */
export const PROTOCOL_F_SHARED_BUFFERS = 40n;

/**
 * Protocol feature bit: rx descriptors by buffer (docs/protocol.md, "Pair
 * mode: rx descriptors by buffer"). A front-end that acks it keeps rx
 * descriptor b for shared buffer b, and the switch re-posts a buffer the
 * front-end sends (ownership rule 2 done by the switch), so a sender
 * writes no rx entry per packet. Only the gift exchange on rx queues of at
 * least bufCount entries; anywhere else it changes nothing.
 */
export const PROTOCOL_F_RX_BY_BUFFER = 41n;

/**
 * Protocol feature bit: the swap's buffer in the used element (docs/protocol.md,
 * "Swaps: the exchanged buffer in the used element"). For a front-end that
 * acks it, a swap completes the sender's tx entry with used len = the index
 * of the buffer it got in exchange + 1 and leaves its tx descriptor as it
 * was; used len 0 still means "nothing exchanged, the buffer is yours". So
 * the sender never reads back a descriptor line the switch has just
 * written. Swaps only (a bridge, or a pair with pairExchange "swap").
 */
export const PROTOCOL_F_SWAP_IN_USED = 42n;

/**
 * Protocol feature bit: RETURNED in the used element (docs/protocol.md,
 * "Pair mode: RETURNED in the used element"). For a front-end that acks
 * it, the switch completes the posting of a buffer it hands back
 * (ownership rule 5) with used len VIRTIO_NET_HDR_SIZE | USED_LEN_RETURNED
 * as well as setting the header flag; a plain 12-byte completion is then
 * always a gift. So the front-end tells the two apart without reading
 * a gift's first line, which the peer touched last and which a sender
 * is about to write (pulling it over for a read costs a second transfer).
 * The gift exchange only (nothing is RETURNED with swaps).
 */
export const PROTOCOL_F_RETURNED_IN_USED = 43n;
/** Used len bit of a RETURNED completion (PROTOCOL_F_RETURNED_IN_USED); never a length, a buffer is far smaller. */
export const USED_LEN_RETURNED = 0x8000_0000;

/** GET_SHARED_BUFFERS reply; the region's memfd travels in the ancillary data. */
export const SHARED_BUFFERS_REPLY = wireStruct('GET_SHARED_BUFFERS reply', [
  { name: 'base', offset: 0, type: 'u64' },
  { name: 'size', offset: 8, type: 'u64' },
  { name: 'bufSize', offset: 16, type: 'u32' },
  { name: 'bufCount', offset: 20, type: 'u32' },
  { name: 'partitionStart', offset: 24, type: 'u32' },
  { name: 'partitionCount', offset: 28, type: 'u32' },
  { name: 'giftHigh', offset: 32, type: 'u32' },
  { name: 'giftLow', offset: 36, type: 'u32' },
  { name: 'flags', offset: 40, type: 'u32' },
  { name: 'reserved', offset: 44, type: 'pad32' },
]);

/**
 * SHARED_BUFFERS_REPLY.flags bit 0, bridge (swap) semantics (docs/protocol.md,
 * "Bridge mode"): the VM posts its own empty buffers on rx; the switch
 * completes rx and tx descriptors with the buffer address it wrote into
 * them, so the driver reads the address back on completion. Without it:
 * pair semantics (post what the peer owns; address match).
 */
export const SHARED_BUFFERS_F_SWAP = 1;

/**
 * SHARED_BUFFERS_REPLY.flags bit 1: the switch backs the buffers with 2 MiB
 * pages. A front-end should map the region 2 MiB-aligned and ask for PMD
 * mappings too (MADV_COLLAPSE): otherwise the kernel may map part of it with
 * 4 KiB entries in the front-end, and with big buffers every buffer it
 * touches is then a TLB miss (docs/PERFORMANCE.md, "64 KiB frames").
 */
export const SHARED_BUFFERS_F_HUGE_PAGES = 2;

/**
 * virtio_net_hdr.flags: the buffer is not a packet but an empty shared
 * buffer handed to the receiver, whose free pool grows by one
 * (docs/protocol.md, ownership rule 4). The spec's flags are 1, 2 and 4;
 * starting at 0x40 leaves room for new spec bits before a collision.
 */
export const VIRTIO_NET_HDR_F_GIFT_BUFFER = 0x40;
/**
 * virtio_net_hdr.flags: the switch could not deliver this shared buffer and
 * hands it back to its sender through the sender's own posted rx
 * descriptor (docs/protocol.md, ownership rule 5). The sender still owns
 * it; it is not a packet. The next bit after GIFT_BUFFER, still within the
 * u8.
 */
export const VIRTIO_NET_HDR_F_RETURNED = 0x80;
/**
 * A gift may carry several buffers: a chain of descriptors, each a whole
 * shared buffer with length VIRTIO_NET_HDR_SIZE; only the first header
 * needs GIFT_BUFFER. The switch delivers each link to the peer as its own
 * 12-byte rx completion, so one tx entry moves up to this many buffers: the
 * longest chain the switch accepts at all.
 */
export const GIFT_CHAIN_MAX = VIRTQ_MAX_CHAIN;
