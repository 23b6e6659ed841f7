/**
 * Declarative C struct layouts: a struct is a list of named fields, offsets
 * follow C's natural alignment (as the FUSE header relies on), and values are
 * read and written little-endian through one generic reader and writer.
 *
 * Reserved fields (padding, `unused[N]`) are part of the layout but not of
 * the values: the writer zeroes them and the reader skips them.
 *
 * @module
 */

import { FuseProtocolError } from "./fuse_errors.ts";

/** The scalar field types the FUSE ABI uses. `i64` holds signed times. */
export type ScalarType = "u16" | "u32" | "i32" | "u64" | "i64";

/**
 * One field: `[name, type]` is a value field; `[name, type, count]` is a
 * reserved field (an array of `count` scalars, zero on write, skipped on read).
 * A value field's type may be another layout (a nested struct).
 */
export type FieldSpec =
  | readonly [name: string, type: ScalarType | StructLayout]
  | readonly [name: string, type: ScalarType, reserved: number];

/** A struct layout with its computed offsets, size and alignment. */
export interface StructLayout<F extends readonly FieldSpec[] = readonly FieldSpec[]> {
  /** The C name, used in error messages. */
  readonly name: string;
  /** The fields in C declaration order. */
  readonly fields: F;
  /** Byte offset of every field, reserved ones included. */
  readonly offsets: Readonly<Record<F[number][0], number>>;
  /** `sizeof`, including tail padding. */
  readonly size: number;
  /** `alignof`: the largest alignment of its fields. */
  readonly align: number;
}

/** True for a reserved field spec (`[name, type, count]`). */
export type IsReservedField<E> = E extends readonly [string, unknown, number] ? true : false;

/** The decoded type of a field of type `T`. */
export type FieldOutput<T> = T extends "u64" | "i64" ? bigint
  : T extends StructLayout<infer G> ? StructValue<G>
  : number;

/** The type a field of type `T` accepts when written. */
export type FieldInput<T> = T extends "u64" | "i64" ? bigint | number
  : T extends StructLayout<infer G> ? StructInput<G>
  : number;

/** The decoded value of a struct: 64-bit fields as bigint, the rest as number. */
export type StructValue<F extends readonly FieldSpec[]> = {
  [E in F[number] as IsReservedField<E> extends true ? never : E[0]]: FieldOutput<E[1]>;
};

/** What the writer accepts: 64-bit fields as bigint or safe-integer number. */
export type StructInput<F extends readonly FieldSpec[]> = {
  [E in F[number] as IsReservedField<E> extends true ? never : E[0]]: FieldInput<E[1]>;
};

const SCALAR_SIZE: Readonly<Record<ScalarType, number>> = {
  u16: 2,
  u32: 4,
  i32: 4,
  u64: 8,
  i64: 8,
};

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

/** Lays out `fields` as a C compiler does on x86-64/aarch64 (natural alignment). */
export function defineStruct<const F extends readonly FieldSpec[]>(
  name: string,
  fields: F,
): StructLayout<F> {
  const offsets: Record<string, number> = {};
  let offset = 0;
  let align = 1;
  for (const field of fields) {
    const [fieldName, type] = field;
    const count = field.length === 3 ? field[2] : 1;
    const fieldAlign = typeof type === "string" ? SCALAR_SIZE[type] : type.align;
    const fieldSize = typeof type === "string" ? SCALAR_SIZE[type] * count : type.size;
    if (fieldName in offsets) throw new Error(`${name}: field ${fieldName} declared twice`);
    offset = alignUp(offset, fieldAlign);
    offsets[fieldName] = offset;
    offset += fieldSize;
    align = Math.max(align, fieldAlign);
  }
  return {
    name,
    fields,
    offsets: offsets as Record<F[number][0], number>,
    size: alignUp(offset, align),
    align,
  };
}

/**
 * A DataView over the whole buffer of `bytes`, one kept per direction: the
 * request handler decodes from and encodes into the same few buffers every
 * request, and a new DataView costs more than the struct it reads. Callers
 * check bounds against `bytes` and add its byteOffset.
 */
class BufferViewCache {
  #buffer: ArrayBufferLike | undefined;
  #view: DataView | undefined;

  of(bytes: Uint8Array): DataView {
    const buffer = bytes.buffer;
    if (buffer !== this.#buffer || this.#view!.byteLength !== buffer.byteLength) {
      this.#view = new DataView(buffer);
      this.#buffer = buffer;
    }
    return this.#view!;
  }
}

const readViews = new BufferViewCache();
const writeViews = new BufferViewCache();

/**
 * The DataView over the whole buffer of `bytes` that the struct writers
 * keep (made again only when another buffer comes): for an encoder that
 * writes fields itself into a reply buffer. Offsets are from the start of
 * the buffer: add `bytes.byteOffset`.
 */
export function writeViewOf(bytes: Uint8Array): DataView {
  return writeViews.of(bytes);
}

const TWO_POW_32 = 0x1_0000_0000;

type Reader = (view: DataView, base: number) => Record<string, unknown>;
type Writer = (value: Record<string, unknown>, view: DataView, base: number) => void;

/**
 * A layout's reader and writer, generated once per layout as straight-line
 * code (one DataView call per field at a constant offset, an object literal
 * of fixed shape): they run several times per request, and the generic
 * loop (a property lookup per field name, keyed stores) showed up in
 * profiles. Only field names and offsets of our own layouts go into the
 * code, never guest data.
 */
interface Codec {
  readonly read: Reader;
  readonly write: Writer;
}

const codecs = new WeakMap<StructLayout, Codec>();

/** The integer range of each 32-bit-or-smaller scalar type. */
const INTEGER_RANGE: Readonly<Record<"u16" | "u32" | "i32", readonly [number, number]>> = {
  u16: [0, 0xffff],
  u32: [0, 0xffff_ffff],
  i32: [-0x8000_0000, 0x7fff_ffff],
};
const SETTER = { u16: "setUint16", u32: "setUint32", i32: "setInt32" } as const;
const GETTER = {
  u16: "getUint16",
  u32: "getUint32",
  i32: "getInt32",
  u64: "getBigUint64",
  i64: "getBigInt64",
} as const;

function codecOf(layout: StructLayout): Codec {
  const known = codecs.get(layout);
  if (known !== undefined) return known;
  const offsets = layout.offsets as Record<string, number>;
  const nested: Codec[] = [];
  const names: string[] = [];
  const readParts: string[] = [];
  const writeParts: string[] = [];
  /** Bytes a value field covers: the rest (gaps, tail padding, reserved fields) is zeroed. */
  const covered = new Uint8Array(layout.size);
  for (const field of layout.fields) {
    if (field.length === 3) continue;
    const [name, type] = field;
    const fieldSize = typeof type === "string" ? SCALAR_SIZE[type] : type.size;
    covered.fill(1, offsets[name], offsets[name] + fieldSize);
    const index = names.length;
    names.push(name);
    const key = JSON.stringify(name);
    const at = `base + ${offsets[name]}`;
    writeParts.push(`v = value[${key}];`);
    if (typeof type !== "string") {
      nested[index] = codecOf(type);
      readParts.push(`${key}: nested[${index}].read(view, ${at})`);
      writeParts.push(
        `if (typeof v !== "object" || v === null) notObject(${index});`,
        `nested[${index}].write(v, view, ${at});`,
      );
      continue;
    }
    readParts.push(`${key}: view.${GETTER[type]}(${at}, true)`);
    if (type === "u64" || type === "i64") {
      // Safe-integer numbers as two halves, no BigInt: `>>> 0` is the low half
      // modulo 2^32, the floored quotient the (signed, for i64) high half.
      const high = type === "u64" ? "setUint32" : "setInt32";
      const numberOk = type === "u64"
        ? "Number.isSafeInteger(v) && v >= 0"
        : "Number.isSafeInteger(v)";
      const setter = type === "u64" ? "setBigUint64" : "setBigInt64";
      const range = type === "u64"
        ? "0n, 0xffffffffffffffffn"
        : "-0x8000000000000000n, 0x7fffffffffffffffn";
      writeParts.push(
        `if (typeof v === "number" && ${numberOk}) {`,
        `  view.setUint32(${at}, v >>> 0, true);`,
        `  view.${high}(${at} + 4, Math.floor(v / ${TWO_POW_32}), true);`,
        `} else {`,
        `  view.${setter}(${at}, checkBigInt(${index}, v, ${range}), true);`,
        `}`,
      );
    } else {
      const [min, max] = INTEGER_RANGE[type];
      writeParts.push(
        `if (typeof v !== "number" || !Number.isInteger(v) || v < ${min} || v > ${max}) {`,
        `  notInteger(${index}, v, ${min}, ${max});`,
        `}`,
        `view.${SETTER[type]}(${at}, v, true);`,
      );
    }
  }
  // Zeroed first, so that the buffer's earlier contents never show through.
  const zeroing: string[] = [];
  for (let at = 0; at < layout.size;) {
    if (covered[at]) {
      at++;
    } else if (
      at % 4 === 0 && at + 4 <= layout.size && !covered.subarray(at, at + 4).some(Boolean)
    ) {
      zeroing.push(`view.setUint32(base + ${at}, 0);`);
      at += 4;
    } else {
      zeroing.push(`view.setUint8(base + ${at}, 0);`);
      at++;
    }
  }
  const what = (index: number) => `${layout.name}.${names[index]}`;
  const notInteger = (index: number, value: unknown, min: number, max: number): never => {
    throw new RangeError(`${what(index)}: ${String(value)} is not an integer in [${min}, ${max}]`);
  };
  const notObject = (index: number): never => {
    const type = layout.fields.find((f) => f[0] === names[index])![1] as StructLayout;
    throw new RangeError(`${what(index)}: expected a ${type.name} object`);
  };
  const checkBigInt = (index: number, value: unknown, min: bigint, max: bigint): bigint => {
    let big: bigint;
    if (typeof value === "bigint") {
      big = value;
    } else if (typeof value === "number" && Number.isSafeInteger(value)) {
      big = BigInt(value);
    } else {
      throw new RangeError(`${what(index)}: ${String(value)} is not a bigint or safe integer`);
    }
    if (big < min || big > max) throw new RangeError(`${what(index)}: ${big} is out of range`);
    return big;
  };
  const make = new Function(
    "nested",
    "notInteger",
    "notObject",
    "checkBigInt",
    `"use strict";
    return {
      read(view, base) { return { ${readParts.join(", ")} }; },
      write(value, view, base) { let v; ${zeroing.join(" ")} ${writeParts.join("\n")} },
    };`,
  );
  const codec = make(nested, notInteger, notObject, checkBigInt) as Codec;
  codecs.set(layout, codec);
  return codec;
}

/**
 * Reads a `layout` struct at `offset` of `bytes`. Throws FuseProtocolError
 * when the struct does not fit: `bytes` usually comes from the guest.
 */
export function readStruct<F extends readonly FieldSpec[]>(
  layout: StructLayout<F>,
  bytes: Uint8Array,
  offset = 0,
): StructValue<F> {
  if (offset < 0 || offset + layout.size > bytes.byteLength) {
    throw new FuseProtocolError(
      `${layout.name}: needs ${layout.size} bytes at offset ${offset}, input has ${bytes.byteLength}`,
    );
  }
  return codecOf(layout).read(readViews.of(bytes), bytes.byteOffset + offset) as StructValue<F>;
}

/**
 * Writes `value` as a `layout` struct at `offset` of `target` (reserved
 * fields and padding zeroed) and returns the struct's bytes as a view of `target`.
 * Without `target` a new array of exactly `layout.size` bytes is used.
 * Values that do not fit their field throw RangeError: they come from our
 * own code, not from the guest. A u32 takes 0..2^32-1 only; flags combined
 * with `|` turn negative once bit 31 is set, so apply `>>> 0` to them.
 */
export function writeStruct<F extends readonly FieldSpec[]>(
  layout: StructLayout<F>,
  value: StructInput<F>,
  target: Uint8Array = new Uint8Array(layout.size),
  offset = 0,
): Uint8Array {
  if (!Number.isInteger(offset) || offset < 0 || offset + layout.size > target.byteLength) {
    throw new RangeError(
      `${layout.name}: needs ${layout.size} bytes at offset ${offset}, target has ${target.byteLength}`,
    );
  }
  // The codec zeroes gaps, tail padding and reserved fields: nothing the buffer held leaks.
  codecOf(layout).write(
    value as Record<string, unknown>,
    writeViews.of(target),
    target.byteOffset + offset,
  );
  return target.subarray(offset, offset + layout.size);
}

/**
 * {@linkcode writeStruct} through a DataView the caller keeps (a reused
 * reply buffer's): no view or result array is made per call. `offset` is
 * relative to the view.
 */
export function writeStructToView<F extends readonly FieldSpec[]>(
  layout: StructLayout<F>,
  value: StructInput<F>,
  view: DataView,
  offset = 0,
): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + layout.size > view.byteLength) {
    throw new RangeError(
      `${layout.name}: needs ${layout.size} bytes at offset ${offset}, target has ${view.byteLength}`,
    );
  }
  codecOf(layout).write(value as Record<string, unknown>, view, offset);
}
