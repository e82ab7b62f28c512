/**
 * Per-port counters. Plain number fields (monomorphic, no allocation on
 * update) plus a Float64Array of drop counts indexed by Drop. "rx" is what
 * the switch received from the VM (the VM's tx queue); "tx" is what the
 * switch delivered to the VM (its rx queue).
 */
export const enum Drop {
  BadHead,
  BadNext,
  ChainLoop,
  ChainTooLong,
  Indirect,
  BadOrder,
  BadAddress,
  BadZcDesc,
  NotOwner,
  TooShort,
  TooLong,
  PeerDown,
  NoRxBuffer,
  RxTooSmall,
  BadRxDesc,
  DupRxPost,
  NoReturnSlot,
  RingBroken,
  /** Bridge: the destination MAC lives on the port the frame came from. */
  Hairpin,
  /** A call to the VM would have blocked (its call eventfd saturated, O_NONBLOCK cleared): the port is disconnected. */
  CallBlocked,
  /** The one destination had no rx buffer for longer than forwarding.rxWaitMs (src/datapath/flow-control.ts). */
  RxWaitTimeout,
  /** Offloads: NEEDS_CSUM with csum_start/csum_offset outside the frame. */
  BadCsumOffset,
  /** Offloads: a gso_type the switch did not offer (UDP/UFO, USO, unknown). */
  BadGsoType,
  /** Offloads: a GSO frame with gso_size 0. */
  BadGsoSize,
  /** Offloads: hdr_len past the end of the frame. */
  BadHdrLen,
  /** Offloads: gso_type says TCP but the frame is not Ethernet/IP/TCP where the header says (or its checksum is not left open). */
  BadGsoFrame,
  /** A frame longer than the receiver's MTU (plus an Ethernet header) that the switch cannot cut to fit. */
  OverMtu,
  /** Bridge: an 802.1Q-tagged frame on an access port. */
  VlanTagged,
  /** Bridge: a frame on a trunk that is untagged or of a VLAN the trunk does not carry. */
  VlanNotAllowed,
  /** Bridge: a source MAC not in the port's `macs` (never learned). */
  SpoofedMac,
  /** Bridge: unicast from an isolated port to another isolated port. */
  Isolated,
  /** The port's rx rate limit (what the switch takes from it); counted on that port. */
  RxLimit,
  /** The port's tx rate limit (what the switch delivers to it); counted on that port. */
  TxLimit,
  Count,
}

/** Each reason's name in stats output, metrics and logs: one entry beside each Drop, checked complete by the type. */
const DROP_NAME_OF: Record<Exclude<Drop, Drop.Count>, string> = {
  [Drop.BadHead]: 'bad-head',
  [Drop.BadNext]: 'bad-next',
  [Drop.ChainLoop]: 'chain-loop',
  [Drop.ChainTooLong]: 'chain-too-long',
  [Drop.Indirect]: 'indirect',
  [Drop.BadOrder]: 'bad-order',
  [Drop.BadAddress]: 'bad-address',
  [Drop.BadZcDesc]: 'bad-zc-desc',
  [Drop.NotOwner]: 'not-owner',
  [Drop.TooShort]: 'too-short',
  [Drop.TooLong]: 'too-long',
  [Drop.PeerDown]: 'peer-down',
  [Drop.NoRxBuffer]: 'no-rx-buffer',
  [Drop.RxTooSmall]: 'rx-too-small',
  [Drop.BadRxDesc]: 'bad-rx-desc',
  [Drop.DupRxPost]: 'dup-rx-post',
  [Drop.NoReturnSlot]: 'no-return-slot',
  [Drop.RingBroken]: 'ring-broken',
  [Drop.Hairpin]: 'hairpin',
  [Drop.CallBlocked]: 'call-blocked',
  [Drop.RxWaitTimeout]: 'rx-wait-timeout',
  [Drop.BadCsumOffset]: 'bad-csum-offset',
  [Drop.BadGsoType]: 'bad-gso-type',
  [Drop.BadGsoSize]: 'bad-gso-size',
  [Drop.BadHdrLen]: 'bad-hdr-len',
  [Drop.BadGsoFrame]: 'bad-gso-frame',
  [Drop.OverMtu]: 'over-mtu',
  [Drop.VlanTagged]: 'vlan-tagged',
  [Drop.VlanNotAllowed]: 'vlan-not-allowed',
  [Drop.SpoofedMac]: 'spoofed-mac',
  [Drop.Isolated]: 'isolated',
  [Drop.RxLimit]: 'rx-limit',
  [Drop.TxLimit]: 'tx-limit',
};

/** Names indexed by Drop. */
export const DROP_NAMES: readonly string[] = Array.from({ length: Drop.Count }, (_, i) => DROP_NAME_OF[i as Exclude<Drop, Drop.Count>]);

export class PortCounters {
  rxPackets = 0;
  rxBytes = 0;
  txPackets = 0;
  txBytes = 0;
  /** Packets delivered by moving a descriptor (no payload byte touched). */
  zeroCopy = 0;
  /** Packets delivered by copying. */
  copied = 0;
  /** Payload bytes the switch copied on behalf of this port's traffic. */
  copiedBytes = 0;
  giftsIn = 0;
  giftsOut = 0;
  /** Shared buffers handed back to this port (undeliverable, or delivered by copy). */
  returned = 0;
  kicks = 0;
  calls = 0;
  /** Front-end memory that vanished under a mapping (SIGBUS survived; the port was disconnected). */
  guestMemoryFaults = 0;
  /** Offloads: GSO frames (larger than the MTU) the switch took from this port. */
  gsoFrames = 0;
  /** Offloads: frames the switch cut from GSO frames and delivered to this port (it did not negotiate what they needed). */
  segmented = 0;
  /** Offloads: frames whose open checksum the switch completed for this port. */
  checksummed = 0;
  readonly drops = new Float64Array(Drop.Count);
  /** Called the first time each drop reason occurs (a log line per reason, not per packet). */
  onFirstDrop: ((reason: string) => void) | null = null;

  drop(reason: Drop): void {
    if (this.drops[reason]++ === 0 && this.onFirstDrop !== null) this.onFirstDrop(DROP_NAMES[reason]);
  }

  totalDrops(): number {
    let n = 0;
    for (let i = 0; i < this.drops.length; i++) n += this.drops[i];
    return n;
  }

  snapshot(): Record<string, unknown> {
    const drops: Record<string, number> = {};
    DROP_NAMES.forEach((name, i) => {
      if (this.drops[i]) drops[name] = this.drops[i];
    });
    return {
      rxPackets: this.rxPackets, rxBytes: this.rxBytes, txPackets: this.txPackets, txBytes: this.txBytes,
      zeroCopy: this.zeroCopy, copied: this.copied, copiedBytes: this.copiedBytes, giftsIn: this.giftsIn,
      giftsOut: this.giftsOut, returned: this.returned, kicks: this.kicks, calls: this.calls,
      guestMemoryFaults: this.guestMemoryFaults, gsoFrames: this.gsoFrames, segmented: this.segmented, checksummed: this.checksummed, drops,
    };
  }

  reset(): void {
    this.rxPackets = this.rxBytes = this.txPackets = this.txBytes = 0;
    this.zeroCopy = this.copied = this.copiedBytes = this.giftsIn = this.giftsOut = this.returned = 0;
    this.kicks = this.calls = this.guestMemoryFaults = 0;
    this.gsoFrames = this.segmented = this.checksummed = 0;
    this.drops.fill(0);
  }
}

/** What a port carries its per-queue counters in: [4q]=rx pkts, [4q+1]=rx bytes, [4q+2]=tx pkts, [4q+3]=tx bytes. */
export interface Counted {
  readonly counters: PortCounters;
  readonly queueCounters: Float64Array;
}

/** The switch took a packet of `bytes` payload from the VM on queue pair q. */
export function countRx(p: Counted, q: number, bytes: number): void {
  countRxRun(p, q, 1, bytes);
}

/** The switch delivered a packet of `bytes` payload to the VM on queue pair q. */
export function countTx(p: Counted, q: number, bytes: number): void {
  countTxRun(p, q, 1, bytes);
}

/** countRx for a run of `packets` packets of `bytes` payload in all (the zero-copy fast lane counts once per run). */
export function countRxRun(p: Counted, q: number, packets: number, bytes: number): void {
  p.counters.rxPackets += packets;
  p.counters.rxBytes += bytes;
  p.queueCounters[4 * q] += packets;
  p.queueCounters[4 * q + 1] += bytes;
}

/** countTx for a run of `packets` packets of `bytes` payload in all. */
export function countTxRun(p: Counted, q: number, packets: number, bytes: number): void {
  p.counters.txPackets += packets;
  p.counters.txBytes += bytes;
  p.queueCounters[4 * q + 2] += packets;
  p.queueCounters[4 * q + 3] += bytes;
}
