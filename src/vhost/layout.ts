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

/** 'pad32' is padding or a reserved word: written as 0, not decoded. */
export type FieldType = 'u32' | 'u64' | 'pad32';

export const FIELD_WIDTH: Readonly<Record<FieldType, number>> = { u32: 4, u64: 8, pad32: 4 };

export interface Field {
  readonly name: string;
  readonly offset: number;
  readonly type: FieldType;
}

/** The decoded form of a struct: one property per field (u64 as bigint), padding left out. */
export type StructValue<F extends readonly Field[]> = {
  [E in F[number] as E['type'] extends 'pad32' ? never : E['name']]: E['type'] extends 'u64' ? bigint : number;
};

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
    const values = v as Record<string, number | bigint>;
    for (const f of fields) {
      if (f.type === 'u64') b.writeBigUInt64LE(values[f.name] as bigint, at + f.offset);
      else b.writeUInt32LE(f.type === 'u32' ? (values[f.name] as number) : 0, at + f.offset);
    }
  };
  const read = (b: Buffer, at: number): StructValue<F> => {
    const v: Record<string, number | bigint> = {};
    for (const f of fields) {
      if (f.type === 'u64') v[f.name] = b.readBigUInt64LE(at + f.offset);
      else if (f.type === 'u32') v[f.name] = b.readUInt32LE(at + f.offset);
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
