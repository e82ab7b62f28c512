/**
 * Front-end memory that vanishes under the switch. A front-end can shrink
 * the memfd behind its memory table after SET_MEM_TABLE (ftruncate); the
 * next access to a page past the new end raises SIGBUS. Every front-end
 * mapping is registered with the native SIGBUS guard (bindings/README.md,
 * "Guest-memory fault guard"), which turns such a fault into zero-filled
 * memory and a flag. pollGuestFaults() reads the guard's counter (an atomic
 * load, no syscall) and, only when it moved, hands each faulted mapping to
 * the owner that registered it: the port is then counted, logged and
 * disconnected. The data path calls it once per PollLoop slice.
 */
import { guardMapping, mappingFaultCount, takeMappingFaults } from '../../bindings';

type FaultHandler = () => void;

const owners = new Map<number, FaultHandler>();
let nextId = 1;
let seen = 0;

/** Guard a front-end mapping; `onFault` runs (once) from pollGuestFaults after a fault in it. Returns its id. */
export function guardGuestMapping(buf: ArrayBuffer, onFault: FaultHandler): number {
  const id = nextId;
  nextId = nextId >= 0x7fff_ffff ? 1 : nextId + 1;
  guardMapping(buf, id);
  owners.set(id, onFault);
  return id;
}

/**
 * The mapping is about to be unmapped: report a fault it took first (the
 * native side keeps faults of unmapped mappings, but the owner must still be
 * known), then forget the owner.
 */
export function forgetGuestMapping(id: number): void {
  pollGuestFaults();
  owners.delete(id);
}

/** Dispatch faults recorded since the last call; returns how many mappings faulted. Cheap when none did. */
export function pollGuestFaults(): number {
  const c = mappingFaultCount();
  if (c === seen) return 0;
  seen = c;
  const ids = takeMappingFaults();
  for (const id of ids) {
    const h = owners.get(id);
    owners.delete(id);
    h?.();
  }
  return ids.length;
}
