/**
 * Wire structs as field tables (the rust-vmm / libmemif idea): a payload is
 * declared once as rows of (name, offset, type), and its size, encoder and
 * decoder are all derived from those rows, so they cannot drift apart.
 * Offsets are written out so each table reads like the spec's struct; they
 * are checked when the table is built (packed, in order), which plays the
 * part of libmemif's compile-time size checks. Fields are little-endian:
 * vhost-user is host-endian and zcswitch only runs on little-endian hosts
 * (src/virtio/net-hdr.ts checks).
 */

/**
 * 'pad16'/'pad32' are padding or reserved words: written as 0, not decoded.
 * 'text8'/'text32' are UTF-8 strings NUL-padded to 8/32 bytes; 'bytes6' is
 * six raw bytes (a MAC address).
 */
export type FieldType = 'u16' | 'u32' | 'u64' | 'pad16' | 'pad32' | 'text8' | 'text32' | 'bytes6';

export const FIELD_WIDTH: Readonly<Record<FieldType, number>> = {
  u16: 2, u32: 4, u64: 8, pad16: 2, pad32: 4, text8: 8, text32: 32, bytes6: 6,
};

export interface Field {
  readonly name: string;
  readonly offset: number;
  readonly type: FieldType;
}

type FieldValue<T extends FieldType> = T extends 'u64' ? bigint : T extends 'text8' | 'text32' ? string : T extends 'bytes6' ? Uint8Array : number;

/** The decoded form of a struct: one property per field (u64 as bigint, text as string), padding left out. */
export type StructValue<F extends readonly Field[]> = {
  [E in F[number] as E['type'] extends 'pad16' | 'pad32' ? never : E['name']]: FieldValue<E['type']>;
};

const utf8 = new TextDecoder('utf-8', { fatal: true });

export interface WireStruct<F extends readonly Field[]> {
  /** The spec's name for the struct, for messages. */
  readonly name: string;
  readonly fields: F;
  /** Bytes on the wire: the end of the last field. */
  readonly size: number;
  write(b: Buffer, at: number, v: StructValue<F>): void;
  read(b: Buffer, at: number): StructValue<F>;
  encode(v: StructValue<F>): Buffer;
}

export function wireStruct<const F extends readonly Field[]>(name: string, fields: F): WireStruct<F> {
  let size = 0;
  for (const f of fields) {
    if (f.offset !== size) throw new Error(`${name}.${f.name}: offset ${f.offset}, but the fields before it end at ${size}`);
    size += FIELD_WIDTH[f.type];
  }
  const write = (b: Buffer, at: number, v: StructValue<F>): void => {
    const values = v as Record<string, number | bigint | string | Uint8Array>;
    for (const f of fields) {
      const o = at + f.offset;
      const w = FIELD_WIDTH[f.type];
      switch (f.type) {
        case 'u64': b.writeBigUInt64LE(values[f.name] as bigint, o); break;
        case 'u32': b.writeUInt32LE(values[f.name] as number, o); break;
        case 'u16': b.writeUInt16LE(values[f.name] as number, o); break;
        case 'text8':
        case 'text32': {
          const t = Buffer.from(values[f.name] as string, 'utf8');
          if (t.length > w) throw new RangeError(`${name}.${f.name}: ${t.length} bytes of UTF-8, at most ${w} fit`);
          b.fill(0, o, o + w);
          t.copy(b, o);
          break;
        }
        case 'bytes6': {
          const t = values[f.name] as Uint8Array;
          if (t.length !== w) throw new RangeError(`${name}.${f.name}: ${t.length} bytes, expected ${w}`);
          b.set(t, o);
          break;
        }
        default: b.fill(0, o, o + w);
      }
    }
  };
  const read = (b: Buffer, at: number): StructValue<F> => {
    const v: Record<string, number | bigint | string | Uint8Array> = {};
    for (const f of fields) {
      const o = at + f.offset;
      const w = FIELD_WIDTH[f.type];
      switch (f.type) {
        case 'u64': v[f.name] = b.readBigUInt64LE(o); break;
        case 'u32': v[f.name] = b.readUInt32LE(o); break;
        case 'u16': v[f.name] = b.readUInt16LE(o); break;
        case 'text8':
        case 'text32': {
          const nul = b.subarray(o, o + w).indexOf(0);
          try {
            v[f.name] = utf8.decode(b.subarray(o, nul < 0 ? o + w : o + nul));
          } catch {
            throw new Error(`${name}.${f.name}: not valid UTF-8`);
          }
          break;
        }
        case 'bytes6': v[f.name] = Uint8Array.from(b.subarray(o, o + w)); break;
        default: break;
      }
    }
    return v as StructValue<F>;
  };
  const encode = (v: StructValue<F>): Buffer => {
    const b = Buffer.alloc(size);
    write(b, 0, v);
    return b;
  };
  return { name, fields, size, write, read, encode };
}
