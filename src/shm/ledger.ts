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

export class OwnershipLedger {
  /** owner[i] = port id owning buffer i, or POOL. */
  readonly owner: Uint16Array;
  /** owned[p] = number of buffers port p owns. */
  readonly owned = new Int32Array(MAX_PORTS);
  pool: number;

  constructor(readonly bufCount: number) {
    this.owner = new Uint16Array(bufCount).fill(POOL);
    this.pool = bufCount;
  }

  ownerOf(i: number): number {
    return this.owner[i];
  }

  /** Move buffer i to a new owner (a port id or POOL). */
  transfer(i: number, to: number): void {
    const from = this.owner[i];
    if (from === to) return;
    if (from === POOL) this.pool--;
    else this.owned[from]--;
    if (to === POOL) this.pool++;
    else this.owned[to]++;
    this.owner[i] = to;
  }

  /** Give port p the range [start, start+count) if every buffer in it is in the pool. */
  assignRange(start: number, count: number, p: number): boolean {
    for (let i = start; i < start + count; i++) if (this.owner[i] !== POOL) return false;
    for (let i = start; i < start + count; i++) this.transfer(i, p);
    return true;
  }

  /** Return everything port p owns to the pool; returns how many buffers. */
  reclaim(p: number): number {
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
