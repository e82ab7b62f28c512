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
/**
 * Ids are per thread: the guard's table is the process's, and each thread
 * (the main one, every data-path worker: src/workers/) takes every fault
 * from it. Thread k's ids are (k << ID_THREAD_SHIFT) + 1 .. + ID_SPAN - 1;
 * a fault of another thread's mapping goes to foreignFaults.
 */
export const ID_THREAD_SHIFT = 24;
const ID_SPAN = 1 << ID_THREAD_SHIFT;
let idBase = 0;
let nextId = 1;
let seen = 0;
/** Faults of mappings another thread registered (null: none expected; they are dropped). */
let foreignFaults: ((ids: number[]) => void) | null = null;

/** This thread's id range (thread 0: the main thread) and where faults of other threads' mappings go. */
export function setGuardThread(thread: number, foreign: (ids: number[]) => void): void {
  idBase = thread * ID_SPAN;
  nextId = idBase + 1;
  foreignFaults = foreign;
}

/** Faults another thread took for this thread's mappings: run their owners. */
export function dispatchGuestFaults(ids: readonly number[]): void {
  for (const id of ids) {
    const h = owners.get(id);
    owners.delete(id);
    h?.();
  }
}

/** Guard a front-end mapping; `onFault` runs (once) from pollGuestFaults after a fault in it. Returns its id. */
export function guardGuestMapping(buf: ArrayBuffer, onFault: FaultHandler): number {
  const id = nextId;
  nextId = nextId >= idBase + ID_SPAN - 1 ? idBase + 1 : nextId + 1;
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
  let foreign: number[] | null = null;
  for (const id of ids) {
    if (id < idBase || id >= idBase + ID_SPAN) {
      (foreign ??= []).push(id);
      continue;
    }
    const h = owners.get(id);
    owners.delete(id);
    h?.();
  }
  if (foreign !== null) foreignFaults?.(foreign);
  return ids.length;
}
