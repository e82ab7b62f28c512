/**
 * The one authoritative file for virtio constants used by zcswitch: feature
 * bits, descriptor and ring flags, virtio_net_hdr flags, and our two
 * extensions (the SHARED_BUFFERS protocol feature and the GIFT_BUFFER /
 * RETURNED header flags). Both the switch and the guest driver import from
 * here; nothing else defines a virtio number.
 *
 * Numbers follow the virtio 1.2 spec (split virtqueues, virtio-net) and the
 * vhost-user spec (qemu docs/interop/vhost-user.rst).
 */

// ---- device feature bits (64-bit; we keep them as bigint outside hot paths)
export const VIRTIO_NET_F_CSUM = 0n;
export const VIRTIO_NET_F_GUEST_CSUM = 1n;
export const VIRTIO_NET_F_MTU = 3n;
export const VIRTIO_NET_F_MAC = 5n;
export const VIRTIO_NET_F_MRG_RXBUF = 15n;
export const VIRTIO_NET_F_STATUS = 16n;
export const VIRTIO_NET_F_CTRL_VQ = 17n;
export const VIRTIO_NET_F_MQ = 22n;
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24n;
export const VIRTIO_F_ANY_LAYOUT = 27n;
export const VIRTIO_RING_F_INDIRECT_DESC = 28n;
export const VIRTIO_RING_F_EVENT_IDX = 29n;
/** vhost-user: the back-end speaks GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30n;
export const VIRTIO_F_VERSION_1 = 32n;

export const bit = (n: bigint): bigint => 1n << n;
export const hasBit = (mask: bigint, n: bigint): boolean => (mask & (1n << n)) !== 0n;

// ---- split virtqueue descriptor flags (virtq_desc.flags)
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;

// ---- ring flags
/** avail.flags: driver asks the device not to interrupt (no EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: device asks the driver not to kick (no EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** The largest queue size a split ring may have (virtio 1.2 §2.7). */
export const VIRTQ_MAX_SIZE = 32768;
/** Longest descriptor chain we accept; a longer one is treated as a loop. */
export const VIRTQ_MAX_CHAIN = 64;

// ---- virtio_net_hdr (virtio 1.x: 12 bytes, num_buffers always present)
export const VIRTIO_NET_HDR_SIZE = 12;
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;
/**
 * zcswitch extension (docs/protocol.md, ownership rule 4): the buffer is not a packet but an empty
 * shared buffer handed to the receiver, whose free pool grows by one.
 * Chosen well above the spec's bits so a future spec bit cannot collide
 * before 0x40.
 */
export const VIRTIO_NET_HDR_F_GIFT_BUFFER = 0x40;
/**
 * A gift may carry several buffers: a chain of descriptors, each a whole
 * shared buffer with length VIRTIO_NET_HDR_SIZE; only the first header
 * needs GIFT_BUFFER. The switch delivers each link to the peer as its own
 * 12-byte rx completion, so one tx entry moves up to this many buffers.
 */
export const GIFT_CHAIN_MAX = VIRTQ_MAX_CHAIN;
/**
 * zcswitch extension: the switch could not deliver this shared buffer and
 * hands it back to its sender through the sender's own posted rx
 * descriptor (docs/protocol.md, ownership rule 5). The sender still owns it; it is not a packet.
 */
export const VIRTIO_NET_HDR_F_RETURNED = 0x80;

/** Byte offsets inside virtio_net_hdr. */
export const NET_HDR_FLAGS = 0;
export const NET_HDR_GSO_TYPE = 1;
export const NET_HDR_NUM_BUFFERS = 10;

// ---- vhost-user SHARED_BUFFERS extension (docs/protocol.md)
/**
 * vhost-user protocol feature bit for the Shared Buffers region. The spec
 * uses bits 0..18 today; 40 leaves ample room.
 */
export const VHOST_USER_PROTOCOL_F_SHARED_BUFFERS = 40n;
/**
 * Front-end request id for GET_SHARED_BUFFERS. Spec ids stop around 50;
 * 0x5a00 is far outside the range and easy to spot in a trace.
 */
export const VHOST_USER_GET_SHARED_BUFFERS = 0x5a00;

/** Ethernet frame limits for the data path. */
export const ETH_MIN_FRAME = 14;
export const ETH_MAX_JUMBO = 65535;
