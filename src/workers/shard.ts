/**
 * Which data-path worker forwards for which ports (docs/design.md,
 * "Threads"). The unit is an L2 domain: ports joined by a pair, by a
 * sharing domain (one region, one ledger) or by a bridge (the caller's
 * joins, TAP uplinks included) always land in the same worker,
 * so every ledger and every pair's state has exactly one writer and no
 * frame ever crosses threads. Domains go to the least-loaded worker (by
 * ports), largest first; ties to the lowest index, so the placement is the
 * same at every start.
 */
export interface ShardPort {
  id: number;
  name: string;
  /** Sharing domain name; null: none (a TAP uplink, which joins its bridge's worker through a join). */
  domain: string | null;
}

export interface Shards {
  /** worker index by port id (undefined: not a port). */
  workerOf: Map<number, number>;
  /** Each worker's ports by name, and the sharing domains it owns. */
  workers: { ports: string[]; domains: string[] }[];
}

export function assignShards(ports: readonly ShardPort[], pairs: readonly (readonly [string, string])[], workers: number): Shards {
  if (workers < 1) throw new RangeError(`assignShards: ${workers} workers`);
  // Union-find over ports: same sharing domain, or paired.
  const parent = ports.map((_, i) => i);
  const find = (i: number): number => {
    while (parent[i] !== i) i = parent[i] = parent[parent[i]];
    return i;
  };
  const join = (a: number, b: number): void => {
    parent[find(a)] = find(b);
  };
  const byName = new Map(ports.map((p, i) => [p.name, i]));
  const firstOfDomain = new Map<string, number>();
  ports.forEach((p, i) => {
    if (p.domain === null) return;
    const f = firstOfDomain.get(p.domain);
    if (f === undefined) firstOfDomain.set(p.domain, i);
    else join(i, f);
  });
  for (const [a, b] of pairs) {
    const ia = byName.get(a);
    const ib = byName.get(b);
    if (ia !== undefined && ib !== undefined) join(ia, ib);
  }
  const groups = new Map<number, number[]>();
  ports.forEach((_, i) => {
    const r = find(i);
    let g = groups.get(r);
    if (g === undefined) groups.set(r, (g = []));
    g.push(i);
  });
  // Largest first; equal sizes in order of their first port.
  const ordered = [...groups.values()].sort((x, y) => y.length - x.length || x[0] - y[0]);
  const out: Shards = { workerOf: new Map(), workers: Array.from({ length: workers }, () => ({ ports: [], domains: [] })) };
  const load = new Array<number>(workers).fill(0);
  for (const g of ordered) {
    let w = 0;
    for (let k = 1; k < workers; k++) if (load[k] < load[w]) w = k;
    load[w] += g.length;
    for (const i of g) {
      const p = ports[i];
      out.workerOf.set(p.id, w);
      out.workers[w].ports.push(p.name);
      if (p.domain !== null && !out.workers[w].domains.includes(p.domain)) out.workers[w].domains.push(p.domain);
    }
  }
  return out;
}
