/** Argument parsers for the command lines (zcswitch and the bench): errors name the option. */
import { InvalidArgumentError } from 'commander';
import { parseMac } from '../guest/test-packet';

export function intArg(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number, got "${v}"`);
    const n = Number(v);
    if (n < min || n > max) throw new InvalidArgumentError(`${name} must be within ${min}..${max}, got ${n}`);
    return n;
  };
}

export function numArg(name: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new InvalidArgumentError(`${name} must be a number >= ${min}, got "${v}"`);
    return n;
  };
}

export function macArg(name: string) {
  return (v: string): Uint8Array => {
    const m = parseMac(v);
    if (!m) throw new InvalidArgumentError(`${name} must look like 02:00:00:00:00:01, got "${v}"`);
    return m;
  };
}

export function listArg(name: string, min: number, max: number) {
  return (v: string): number[] => v.split(',').map((x) => intArg(name, min, max)(x.trim()));
}

/** A guest-physical address: decimal or 0x hex, page aligned, below 2^52. */
export function addrArg(name: string) {
  return (v: string): number => {
    if (!/^(0x[0-9a-f]+|\d+)$/i.test(v)) throw new InvalidArgumentError(`${name} must be an address like 0x800000000, got "${v}"`);
    const n = Number(v);
    if (n >= 2 ** 52 || n % 4096 !== 0) throw new InvalidArgumentError(`${name} must be page aligned and below 2^52, got ${v}`);
    return n;
  };
}
