/**
 * The one authoritative file for virtio constants used by zcswitch: feature
 * bits, descriptor and ring flags, virtio_net_hdr layout and flags. Both the
 * switch and the guest driver import from here; nothing else defines a
 * virtio number. Numbers follow the virtio 1.2 spec (split virtqueues,
 * virtio-net). vhost-user's numbers, including its feature bit 30 and the
 * zcswitch extension's header flags, live in src/vhost/protocol.ts.
 */

// ---- device feature bits (64-bit; we keep them as bigint outside hot paths)
export const VIRTIO_NET_F_CSUM = 0n;
export const VIRTIO_NET_F_GUEST_CSUM = 1n;
export const VIRTIO_NET_F_MTU = 3n;
export const VIRTIO_NET_F_MAC = 5n;
export const VIRTIO_NET_F_GUEST_TSO4 = 7n;
export const VIRTIO_NET_F_GUEST_TSO6 = 8n;
export const VIRTIO_NET_F_GUEST_ECN = 9n;
export const VIRTIO_NET_F_GUEST_UFO = 10n;
export const VIRTIO_NET_F_HOST_TSO4 = 11n;
export const VIRTIO_NET_F_HOST_TSO6 = 12n;
export const VIRTIO_NET_F_HOST_ECN = 13n;
export const VIRTIO_NET_F_HOST_UFO = 14n;
export const VIRTIO_NET_F_MRG_RXBUF = 15n;
export const VIRTIO_NET_F_STATUS = 16n;
export const VIRTIO_NET_F_CTRL_VQ = 17n;
export const VIRTIO_NET_F_MQ = 22n;
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24n;
export const VIRTIO_F_ANY_LAYOUT = 27n;
export const VIRTIO_RING_F_INDIRECT_DESC = 28n;
export const VIRTIO_RING_F_EVENT_IDX = 29n;
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
/** Byte offsets inside virtio_net_hdr. */
export const NET_HDR_FLAGS = 0;
export const NET_HDR_GSO_TYPE = 1;
export const NET_HDR_HDR_LEN = 2;
export const NET_HDR_GSO_SIZE = 4;
export const NET_HDR_CSUM_START = 6;
export const NET_HDR_CSUM_OFFSET = 8;
export const NET_HDR_NUM_BUFFERS = 10;
/** virtio_net_hdr.gso_type (the ECN bit may be or'ed into TCPV4/TCPV6). */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/** MTU limits (L3 bytes): IPv4's minimum, and the largest IP packet. */
export const MTU_MIN = 68;
export const MTU_MAX = 65535;
export const MTU_DEFAULT = 1500;
/** Ethernet header with one VLAN tag: a frame may be this much longer than the MTU. */
export const ETH_HDR_MAX = 18;

/** Ethernet frame limits for the data path. */
export const ETH_MIN_FRAME = 14;
export const ETH_MAX_JUMBO = 65535;
/** The largest GSO frame: a 64 KiB IP packet behind an Ethernet header with one VLAN tag (what a TSO sender may hand over). */
export const ETH_MAX_GSO = 18 + 65535;
