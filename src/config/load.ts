/**
 * Config loading: read + JSON.parse + schema + cross-field checks + derived
 * defaults, with errors that name the file, the field path and the problem:
 *
 *   invalid config config/default.json:
 *     ports[0]: unknown field "nmae" (did you mean "name"?)
 *     sharedBuffers.bufSize: must be a multiple of 64 (cache line), got 1000
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { type PathSegment, type RawIssue, crossCheck, resolveConfig } from './checks';
import { describeJsonSyntaxError } from './json';
import { type SwitchConfig, configFileSchema, describeValue, hex } from './schema';
import { MTU_DEFAULT } from '../virtio/defs';

export interface ConfigIssue {
  /** Dotted/bracketed field path, e.g. `ports[1].name`; the root is `(root)`. */
  path: string;
  message: string;
}

export class ConfigError extends Error {
  issues: ConfigIssue[];
  file?: string;

  constructor(source: string, issues: ConfigIssue[], file?: string) {
    super([`invalid config ${source}:`, ...issues.map((i) => `  ${i.path}: ${i.message}`)].join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
    if (file !== undefined) this.file = file;
  }
}

/** `['ports', 1, 'name']` -> `ports[1].name`; `[]` -> `(root)`. */
export function formatPath(path: readonly PathSegment[]): string {
  if (path.length === 0) return '(root)';
  let s = '';
  for (const seg of path) {
    if (typeof seg === 'number') s += `[${seg}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(seg)) s += s === '' ? seg : `.${seg}`;
    else s += `[${JSON.stringify(seg)}]`;
  }
  return s;
}

const TYPE_WORDS: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  integer: 'an integer',
  float: 'a number',
  boolean: 'true or false',
  object: 'an object',
  array: 'an array',
  null: 'null',
  bigint: 'an integer',
};

/** Messages for zod's own (structural) issues. Custom checks carry their own. */
const errorMap: z.ZodErrorMap = (issue, ctx) => {
  switch (issue.code) {
    case 'invalid_type': {
      if (issue.received === 'undefined') return { message: 'is required' };
      const words =
        TYPE_WORDS[issue.expected] ??
        // z.enum reports its options as "'a' | 'b'"
        `one of ${String(issue.expected)
          .split(' | ')
          .map((o) => o.replace(/^'(.*)'$/, '"$1"'))
          .join(', ')}`;
      return { message: `must be ${words}, got ${describeValue(ctx.data)}` };
    }
    case 'invalid_enum_value': {
      const opts = issue.options.map((o) => JSON.stringify(o));
      const words = opts.length === 1 ? opts[0] : `one of ${opts.join(', ')}`;
      return { message: `must be ${words}, got ${describeValue(ctx.data)}` };
    }
    case 'unrecognized_keys':
      return { message: issue.keys.map((k) => `unknown field "${k}"`).join('; ') };
    case 'too_small':
      if (issue.type === 'string') {
        return { message: Number(issue.minimum) === 1 ? 'must not be empty' : `must be at least ${issue.minimum} characters` };
      }
      if (issue.type === 'array') {
        const len = Array.isArray(ctx.data) ? ctx.data.length : '?';
        return { message: `must have at least ${issue.minimum} ${Number(issue.minimum) === 1 ? 'entry' : 'entries'}, got ${len}` };
      }
      return { message: ctx.defaultError };
    case 'too_big':
      if (issue.type === 'array') {
        const len = Array.isArray(ctx.data) ? ctx.data.length : '?';
        return { message: `must have at most ${issue.maximum} entries, got ${len}` };
      }
      return { message: ctx.defaultError };
    default:
      return { message: ctx.defaultError };
  }
};

// --- "did you mean" for unknown fields ---------------------------------------

/** The zod schema that validates the value at `path`, unwrapping wrappers. */
function schemaAt(root: z.ZodTypeAny, path: readonly PathSegment[]): z.ZodTypeAny | undefined {
  const unwrap = (s: z.ZodTypeAny): z.ZodTypeAny => {
    for (;;) {
      if (s instanceof z.ZodDefault) s = s._def.innerType;
      else if (s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.unwrap();
      else if (s instanceof z.ZodEffects) s = s.innerType();
      else return s;
    }
  };
  let s: z.ZodTypeAny | undefined = unwrap(root);
  for (const seg of path) {
    if (s instanceof z.ZodObject && typeof seg === 'string') s = (s.shape as Record<string, z.ZodTypeAny>)[seg];
    else if (s instanceof z.ZodArray && typeof seg === 'number') s = s.element;
    else return undefined;
    if (s === undefined) return undefined;
    s = unwrap(s);
  }
  return s;
}

/** Optimal-string-alignment distance (Levenshtein plus adjacent transpositions). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

function suggest(key: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = c.toLowerCase() === key.toLowerCase() ? 0 : editDistance(key.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(key.length / 3)) ? best : undefined;
}

function unknownFieldIssues(path: PathSegment[], keys: readonly string[]): RawIssue[] {
  const s = schemaAt(configFileSchema, path);
  const candidates = s instanceof z.ZodObject ? Object.keys(s.shape as object) : [];
  return keys.map((k) => {
    const hint = suggest(k, candidates);
    return {
      path,
      message: `unknown field "${k}"${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
      unknownField: true,
    };
  });
}

// --- entry points --------------------------------------------------------------

/**
 * Validate an already-parsed JSON value and return the resolved config.
 * Throws ConfigError listing every problem found. `source` names the input in
 * the error message (a file name, or `<inline>`).
 */
export function parseConfig(raw: unknown, source = '<inline>'): SwitchConfig {
  const result = configFileSchema.safeParse(raw, { errorMap });
  const issues: RawIssue[] = [];
  if (!result.success) {
    for (const zi of result.error.issues) {
      const path = zi.path.map((p) => (typeof p === 'number' ? p : String(p)));
      if (zi.code === 'unrecognized_keys') issues.push(...unknownFieldIssues(path, zi.keys));
      else issues.push({ path, message: zi.message });
    }
  }
  issues.push(...crossCheck(raw, issues));
  if (issues.length > 0 || !result.success) {
    throw new ConfigError(
      source,
      issues.map((i) => ({ path: formatPath(i.path), message: i.message })),
      source === '<inline>' ? undefined : source,
    );
  }
  return resolveConfig(result.data);
}

function readProblem(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT':
      return 'cannot read file: no such file (ENOENT)';
    case 'EACCES':
    case 'EPERM':
      return `cannot read file: permission denied (${e.code})`;
    case 'EISDIR':
      return 'cannot read file: it is a directory (EISDIR)';
    default:
      return `cannot read file: ${e instanceof Error ? e.message : String(err)}`;
  }
}

/** Read, parse and validate a JSON config file. Throws ConfigError naming the file. */
export function loadConfig(file: string): SwitchConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [{ path: '(root)', message: readProblem(err) }], file);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // BOM
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    const p = describeJsonSyntaxError(text, err);
    throw new ConfigError(
      file,
      [{ path: '(root)', message: `invalid JSON at line ${p.line}, column ${p.column} (${file}:${p.line}:${p.column}): ${p.message}` }],
      file,
    );
  }
  return parseConfig(raw, file);
}

/** 0o660 -> "0660" (how modes are written in the config). */
function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** A group as the config writes it: absent when unchanged. */
function group(g: string | number | null): { group?: string | number } {
  return g === null ? {} : { group: g };
}

/**
 * The resolved config in file form (base as a hex string), suitable for
 * JSON.stringify and for feeding back to parseConfig.
 */
export function configToJSON(cfg: SwitchConfig): Record<string, unknown> {
  return {
    ...cfg,
    sharedBuffers: { ...cfg.sharedBuffers, base: hex(cfg.sharedBuffers.base) },
    sockets: { mode: octal(cfg.sockets.mode), ...group(cfg.sockets.group), controlMode: octal(cfg.sockets.controlMode) },
    ports: cfg.ports.map((p) => ({
      ...(p.type === 'tap'
        ? { name: p.name, type: p.type, ifname: p.ifname }
        : p.connect !== undefined // client mode: no socket of its own
          ? { name: p.name, partition: { ...p.partition }, domain: p.domain, connect: p.connect }
          : { name: p.name, partition: { ...p.partition }, domain: p.domain, socket: { mode: octal(p.socket.mode), ...group(p.socket.group) } }),
      // Shown only when turned off: the default stays out of the file.
      ...(!p.offloads ? { offloads: false } : {}),
      ...(p.mtu !== MTU_DEFAULT ? { mtu: p.mtu } : {}),
    })),
    pairs: cfg.pairs.map(([a, b]) => [a, b]),
    ...(cfg.metrics ? { metrics: { listen: cfg.metrics.listen } } : {}),
  };
}
