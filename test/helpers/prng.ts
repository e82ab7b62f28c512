/**
 * Small deterministic PRNG (mulberry32): reproducible "random" test inputs,
 * so a failure reproduces from its seed.
 */

/** Uniform 32-bit unsigned integers. */
export function prngU32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (x ^ (x >>> 14)) >>> 0;
  };
}

/** Uniform in [0, 1). */
export function prng(seed: number): () => number {
  const next = prngU32(seed);
  return () => next() / 4294967296;
}
