/**
 * OwnershipLedger: who owns every shared buffer at every instant
 * (docs/protocol.md, "Ownership"). Owners are small port ids; POOL is the switch's own free
 * pool (buffers not yet handed out, or reclaimed from a port that went
 * away). Counts are kept incrementally so the hot path is O(1), and
 * check() recounts from scratch to prove conservation:
 * sum over owners (ports + pool) == bufCount.
 */
export const POOL = 0xffff;
export const MAX_PORTS = 256;

export interface LedgerCheck {
  ok: boolean;
  bufCount: number;
  pool: number;
  owned: Record<number, number>;
  problems: string[];
}

/** Bytes of a ledger's memory (ledgerBytes): owned counts, the pool count, then the owner array. */
export function ledgerBytes(bufCount: number): number {
  return 4 * (MAX_PORTS + 1) + 2 * bufCount;
}

export class OwnershipLedger {
  /** owner[i] = port id owning buffer i, or POOL. */
  readonly owner: Uint16Array;
  /** owned[p] = number of buffers port p owns; owned[MAX_PORTS] is the pool's count. */
  readonly owned: Int32Array;
  /**
   * The memory the arrays live in: a SharedArrayBuffer when a worker thread
   * forwards for the domain (src/workers/), so that the control plane reads
   * the same ledger; it writes only while that worker is paused.
   */
  readonly memory: ArrayBuffer | SharedArrayBuffer;

  /** `shared`: an existing ledger's memory (another thread's view of it); absent: a new ledger, every buffer in the pool. */
  constructor(readonly bufCount: number, shared?: SharedArrayBuffer | 'shared') {
    const fresh = shared === undefined || shared === 'shared';
    this.memory = shared instanceof SharedArrayBuffer ? shared
      : shared === 'shared' ? new SharedArrayBuffer(ledgerBytes(bufCount)) : new ArrayBuffer(ledgerBytes(bufCount));
    if (this.memory.byteLength !== ledgerBytes(bufCount)) throw new RangeError(`ledger memory of ${this.memory.byteLength} B for ${bufCount} buffers`);
    this.owned = new Int32Array(this.memory, 0, MAX_PORTS + 1);
    this.owner = new Uint16Array(this.memory, 4 * (MAX_PORTS + 1), bufCount);
    if (fresh) {
      this.owner.fill(POOL);
      this.owned[MAX_PORTS] = bufCount;
    }
  }

  /**
   * Set on the control plane's view of a ledger that a worker thread writes
   * (src/workers/): the control-plane operations below run in that worker,
   * between its rounds, so the ledger keeps one writer. transfer() is the
   * data path's and never goes through it.
   */
  remote: { assignRange(start: number, count: number, p: number): boolean; reclaim(p: number): number; check(): LedgerCheck } | null = null;

  /** Buffers in the pool. */
  get pool(): number {
    return this.owned[MAX_PORTS];
  }

  ownerOf(i: number): number {
    return this.owner[i];
  }

  /** Move buffer i to a new owner (a port id or POOL). */
  transfer(i: number, to: number): void {
    const from = this.owner[i];
    if (from === to) return;
    // The pool's count is owned[MAX_PORTS]: POOL maps there (one select, no branch on the count).
    this.owned[from === POOL ? MAX_PORTS : from]--;
    this.owned[to === POOL ? MAX_PORTS : to]++;
    this.owner[i] = to;
  }

  /** Give port p the range [start, start+count) if every buffer in it is in the pool. */
  assignRange(start: number, count: number, p: number): boolean {
    if (this.remote !== null) return this.remote.assignRange(start, count, p);
    for (let i = start; i < start + count; i++) if (this.owner[i] !== POOL) return false;
    for (let i = start; i < start + count; i++) this.transfer(i, p);
    return true;
  }

  /** Return everything port p owns to the pool; returns how many buffers. */
  reclaim(p: number): number {
    if (this.remote !== null) return this.remote.reclaim(p);
    let n = 0;
    for (let i = 0; i < this.bufCount; i++) {
      if (this.owner[i] === p) {
        this.transfer(i, POOL);
        n++;
      }
    }
    return n;
  }

  /** Recount from the owner array and compare with the running counts. */
  check(): LedgerCheck {
    if (this.remote !== null) return this.remote.check();
    const counts = new Map<number, number>();
    let pool = 0;
    for (let i = 0; i < this.bufCount; i++) {
      const o = this.owner[i];
      if (o === POOL) pool++;
      else counts.set(o, (counts.get(o) ?? 0) + 1);
    }
    const problems: string[] = [];
    if (pool !== this.pool) problems.push(`pool count ${this.pool} but ${pool} buffers are in the pool`);
    let sum = pool;
    const owned: Record<number, number> = {};
    for (let p = 0; p < MAX_PORTS; p++) {
      const c = counts.get(p) ?? 0;
      if (c !== this.owned[p]) problems.push(`port ${p} count ${this.owned[p]} but owns ${c} buffers`);
      if (c) owned[p] = c;
      sum += c;
    }
    if (sum !== this.bufCount) problems.push(`owners hold ${sum} buffers, region has ${this.bufCount}`);
    return { ok: problems.length === 0, bufCount: this.bufCount, pool, owned, problems };
  }
}
