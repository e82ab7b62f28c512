/**
 * MAC learning table for bridge mode: open addressing with linear probing
 * over typed arrays, so learning and lookup allocate nothing. A MAC is kept
 * as (hi, lo32) where hi is the MAC's first 16 bits with the VLAN above them
 * (vlan << 16 | hi16): learning is per VLAN; entries older than the ageing time are treated as absent
 * on lookup and reused on insert; sweep() drops them for good (stats).
 */
const EMPTY = -1;
/** A full table sweeps out aged entries at most this often (a sweep rehashes the table). */
const SWEEP_EVERY_MS = 1000;

/** A learned MAC, for stats and `zcswitch macs`. */
export interface MacEntry {
  mac: string;
  vlan: number;
  port: number;
  ageSec: number;
}

export class MacTable {
  private readonly hi: Uint32Array;
  private readonly lo: Uint32Array;
  private readonly port: Int16Array;
  private readonly seen: Float64Array;
  private readonly mask: number;
  private count = 0;
  private lastSweep = -Infinity;

  constructor(size: number, private readonly ageingMs: number) {
    let cap = 16;
    while (cap < size * 2) cap <<= 1; // keep the load factor under one half
    this.mask = cap - 1;
    this.hi = new Uint32Array(cap);
    this.lo = new Uint32Array(cap);
    this.port = new Int16Array(cap).fill(EMPTY);
    this.seen = new Float64Array(cap);
    this.limit = size;
  }

  private readonly limit: number;

  private slot(hi: number, lo: number): number {
    let h = Math.imul(lo ^ (hi << 16) ^ (hi >>> 3), 0x9e3779b1) >>> 0;
    h ^= h >>> 15;
    return h & this.mask;
  }

  /** Port that last sent from this MAC, or -1 (unknown or aged out). */
  lookup(hi: number, lo: number, now: number): number {
    for (let i = this.slot(hi, lo), n = 0; n <= this.mask; i = (i + 1) & this.mask, n++) {
      const p = this.port[i];
      if (p === EMPTY) return -1;
      if (this.lo[i] === lo && this.hi[i] === hi) return now - this.seen[i] <= this.ageingMs ? p : -1;
    }
    return -1;
  }

  /** Record that this MAC was seen on port p. */
  learn(hi: number, lo: number, p: number, now: number): void {
    let free = -1;
    for (let i = this.slot(hi, lo), n = 0; n <= this.mask; i = (i + 1) & this.mask, n++) {
      const q = this.port[i];
      if (q === EMPTY) {
        if (free < 0) free = i;
        break;
      }
      if (this.lo[i] === lo && this.hi[i] === hi) {
        this.port[i] = p;
        this.seen[i] = now;
        return;
      }
      if (free < 0 && now - this.seen[i] > this.ageingMs) free = i;
    }
    if (free < 0) return; // full: we flood instead of learning
    if (this.port[free] === EMPTY) {
      if (this.count >= this.limit) {
        // Aged and forgotten entries still count until swept: sweep (it
        // rehashes, so at most once a second) and try again, else flood.
        if (now - this.lastSweep < SWEEP_EVERY_MS) return;
        this.lastSweep = now;
        if (this.sweep(now) === 0) return;
        return this.learn(hi, lo, p, now);
      }
      this.count++;
    }
    this.hi[free] = hi;
    this.lo[free] = lo;
    this.port[free] = p;
    this.seen[free] = now;
  }

  /** Forget every MAC learned on port p (it went away). */
  forgetPort(p: number): void {
    for (let i = 0; i <= this.mask; i++) if (this.port[i] === p) this.seen[i] = -Infinity;
  }

  /** Live entries, for stats (allocates: not for the data path). */
  entries(now: number): MacEntry[] {
    const out: MacEntry[] = [];
    for (let i = 0; i <= this.mask; i++) {
      if (this.port[i] !== EMPTY && now - this.seen[i] <= this.ageingMs) {
        const b = [(this.hi[i] >>> 8) & 0xff, this.hi[i] & 0xff, this.lo[i] >>> 24, (this.lo[i] >>> 16) & 0xff, (this.lo[i] >>> 8) & 0xff, this.lo[i] & 0xff];
        out.push({
          mac: b.map((x) => x.toString(16).padStart(2, '0')).join(':'), vlan: this.hi[i] >>> 16, port: this.port[i],
          ageSec: (now - this.seen[i]) / 1000,
        });
      }
    }
    return out;
  }

  /** Drop aged entries (rehashing the survivors keeps probe chains intact). */
  sweep(now: number): number {
    const keep: [number, number, number, number][] = [];
    let dropped = 0;
    for (let i = 0; i <= this.mask; i++) {
      if (this.port[i] === EMPTY) continue;
      if (now - this.seen[i] <= this.ageingMs) keep.push([this.hi[i], this.lo[i], this.port[i], this.seen[i]]);
      else dropped++;
    }
    if (dropped === 0) return 0;
    this.port.fill(EMPTY);
    this.count = 0;
    for (const [hi, lo, p, seen] of keep) this.learn(hi, lo, p, seen);
    return dropped;
  }
}
