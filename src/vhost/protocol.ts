/**
 * vhost-user wire protocol: request ids, header flags, protocol feature bits
 * and the byte layout of every payload we read or write (qemu
 * docs/interop/vhost-user.rst). Pure data: no I/O, no device logic. Each
 * payload has a SIZE constant and codec.ts checks it on every decode
 * (libmemif style).
 */
import { VHOST_USER_GET_SHARED_BUFFERS, VHOST_USER_PROTOCOL_F_SHARED_BUFFERS } from '../virtio/defs';

/** Front-end → back-end requests. */
export const enum Req {
  GET_FEATURES = 1,
  SET_FEATURES = 2,
  SET_OWNER = 3,
  RESET_OWNER = 4,
  SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6,
  SET_LOG_FD = 7,
  SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10,
  GET_VRING_BASE = 11,
  SET_VRING_KICK = 12,
  SET_VRING_CALL = 13,
  SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
  SEND_RARP = 19,
  NET_SET_MTU = 20,
  SET_SLAVE_REQ_FD = 21,
  IOTLB_MSG = 22,
  SET_VRING_ENDIAN = 23,
  GET_CONFIG = 24,
  SET_CONFIG = 25,
  CREATE_CRYPTO_SESSION = 26,
  CLOSE_CRYPTO_SESSION = 27,
  POSTCOPY_ADVISE = 28,
  POSTCOPY_LISTEN = 29,
  POSTCOPY_END = 30,
  GET_INFLIGHT_FD = 31,
  SET_INFLIGHT_FD = 32,
  GPU_SET_SOCKET = 33,
  RESET_DEVICE = 34,
  VRING_KICK = 35,
  GET_MAX_MEM_SLOTS = 36,
  ADD_MEM_REG = 37,
  REM_MEM_REG = 38,
  SET_STATUS = 39,
  GET_STATUS = 40,
  GET_SHARED_BUFFERS = VHOST_USER_GET_SHARED_BUFFERS,
}

const REQ_NAMES: Record<number, string> = {
  1: 'GET_FEATURES', 2: 'SET_FEATURES', 3: 'SET_OWNER', 4: 'RESET_OWNER', 5: 'SET_MEM_TABLE',
  6: 'SET_LOG_BASE', 7: 'SET_LOG_FD', 8: 'SET_VRING_NUM', 9: 'SET_VRING_ADDR', 10: 'SET_VRING_BASE',
  11: 'GET_VRING_BASE', 12: 'SET_VRING_KICK', 13: 'SET_VRING_CALL', 14: 'SET_VRING_ERR',
  15: 'GET_PROTOCOL_FEATURES', 16: 'SET_PROTOCOL_FEATURES', 17: 'GET_QUEUE_NUM', 18: 'SET_VRING_ENABLE',
  19: 'SEND_RARP', 20: 'NET_SET_MTU', 21: 'SET_SLAVE_REQ_FD', 22: 'IOTLB_MSG', 23: 'SET_VRING_ENDIAN',
  24: 'GET_CONFIG', 25: 'SET_CONFIG', 26: 'CREATE_CRYPTO_SESSION', 27: 'CLOSE_CRYPTO_SESSION',
  28: 'POSTCOPY_ADVISE', 29: 'POSTCOPY_LISTEN', 30: 'POSTCOPY_END', 31: 'GET_INFLIGHT_FD',
  32: 'SET_INFLIGHT_FD', 33: 'GPU_SET_SOCKET', 34: 'RESET_DEVICE', 35: 'VRING_KICK',
  36: 'GET_MAX_MEM_SLOTS', 37: 'ADD_MEM_REG', 38: 'REM_MEM_REG', 39: 'SET_STATUS', 40: 'GET_STATUS',
  [VHOST_USER_GET_SHARED_BUFFERS]: 'GET_SHARED_BUFFERS',
};

export function reqName(req: number): string {
  return REQ_NAMES[req] ?? `UNKNOWN_${req}`;
}

// ---- header: u32 request, u32 flags, u32 size
export const HDR_SIZE = 12;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_VERSION = 0x1;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** No legal payload is near this; larger means a broken or hostile peer. */
export const MAX_PAYLOAD = 4096;
/** SET_MEM_TABLE carries at most this many regions (and fds). */
export const MAX_MEM_REGIONS = 8;
export const MAX_FDS = 8;

// ---- protocol feature bits
export const PROTOCOL_F_MQ = 0n;
export const PROTOCOL_F_LOG_SHMFD = 1n;
export const PROTOCOL_F_RARP = 2n;
export const PROTOCOL_F_REPLY_ACK = 3n;
export const PROTOCOL_F_NET_MTU = 4n;
export const PROTOCOL_F_SLAVE_REQ = 5n;
export const PROTOCOL_F_CONFIG = 9n;
export const PROTOCOL_F_STATUS = 16n;
export const PROTOCOL_F_SHARED_BUFFERS = VHOST_USER_PROTOCOL_F_SHARED_BUFFERS;

// ---- payload layouts (sizes are checked on decode)
/** u64: features, protocol features, status, queue num, ack. */
export const U64_SIZE = 8;
/** vhost_vring_state: u32 index, u32 num. */
export const VRING_STATE_SIZE = 8;
/** vhost_vring_addr: u32 index, u32 flags, u64 desc, u64 used, u64 avail, u64 log. */
export const VRING_ADDR_SIZE = 40;
/** vhost_user_memory header: u32 nregions, u32 padding. */
export const MEM_HDR_SIZE = 8;
/** vhost_user_memory_region: u64 guest_phys_addr, u64 memory_size, u64 userspace_addr, u64 mmap_offset. */
export const MEM_REGION_SIZE = 32;
/** SET_VRING_KICK/CALL/ERR u64: bits 0..7 index, bit 8 "no fd". */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;
/**
 * GET_SHARED_BUFFERS reply (zcswitch extension), region memfd in the
 * ancillary data:
 *   u64 base, u64 size, u32 bufSize, u32 bufCount,
 *   u32 partitionStart, u32 partitionCount, u32 giftHigh, u32 giftLow,
 *   u32 flags (SHARED_BUFFERS_F_*), u32 reserved (0)
 */
export const SHARED_BUFFERS_SIZE = 48;
/**
 * Bridge (swap) semantics (docs/protocol.md, "Bridge mode"): the VM posts its own empty buffers on
 * rx; the switch completes rx and tx descriptors with the buffer address it
 * wrote into them, so the driver reads the address back on completion.
 * Without it: pair semantics (post what the peer owns; address match).
 */
export const SHARED_BUFFERS_F_SWAP = 1;

/** Requests whose normal answer is a reply message (REPLY_ACK does not apply). */
export const REPLIES: ReadonlySet<number> = new Set<number>([
  Req.GET_FEATURES, Req.GET_PROTOCOL_FEATURES, Req.GET_VRING_BASE, Req.GET_QUEUE_NUM,
  Req.GET_CONFIG, Req.GET_INFLIGHT_FD, Req.GET_MAX_MEM_SLOTS, Req.GET_STATUS, Req.GET_SHARED_BUFFERS,
]);
