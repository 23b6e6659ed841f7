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

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
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
  return readFields(layout, viewOf(bytes), offset) as StructValue<F>;
}

function readFields(layout: StructLayout, view: DataView, base: number): Record<string, unknown> {
  const value: Record<string, unknown> = {};
  const offsets = layout.offsets as Record<string, number>;
  for (const field of layout.fields) {
    if (field.length === 3) continue;
    const [name, type] = field;
    const at = base + offsets[name];
    switch (type) {
      case "u16":
        value[name] = view.getUint16(at, true);
        break;
      case "u32":
        value[name] = view.getUint32(at, true);
        break;
      case "i32":
        value[name] = view.getInt32(at, true);
        break;
      case "u64":
        value[name] = view.getBigUint64(at, true);
        break;
      case "i64":
        value[name] = view.getBigInt64(at, true);
        break;
      default:
        value[name] = readFields(type, view, at);
    }
  }
  return value;
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
  // Zero first: gaps, tail padding and reserved fields must not leak what the buffer held.
  target.fill(0, offset, offset + layout.size);
  writeFields(layout, value as Record<string, unknown>, viewOf(target), offset);
  return target.subarray(offset, offset + layout.size);
}

function writeFields(
  layout: StructLayout,
  value: Record<string, unknown>,
  view: DataView,
  base: number,
): void {
  const offsets = layout.offsets as Record<string, number>;
  for (const field of layout.fields) {
    if (field.length === 3) continue;
    const [name, type] = field;
    const at = base + offsets[name];
    const what = `${layout.name}.${name}`;
    const fieldValue = value[name];
    switch (type) {
      case "u16":
        view.setUint16(at, checkInteger(what, fieldValue, 0, 0xffff), true);
        break;
      case "u32":
        view.setUint32(at, checkInteger(what, fieldValue, 0, 0xffff_ffff), true);
        break;
      case "i32":
        view.setInt32(at, checkInteger(what, fieldValue, -0x8000_0000, 0x7fff_ffff), true);
        break;
      case "u64":
        view.setBigUint64(at, checkBigInt(what, fieldValue, 0n, 0xffff_ffff_ffff_ffffn), true);
        break;
      case "i64":
        view.setBigInt64(
          at,
          checkBigInt(what, fieldValue, -0x8000_0000_0000_0000n, 0x7fff_ffff_ffff_ffffn),
          true,
        );
        break;
      default:
        if (typeof fieldValue !== "object" || fieldValue === null) {
          throw new RangeError(`${what}: expected a ${type.name} object`);
        }
        writeFields(type, fieldValue as Record<string, unknown>, view, at);
    }
  }
}

function checkInteger(what: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${what}: ${String(value)} is not an integer in [${min}, ${max}]`);
  }
  return value;
}

function checkBigInt(what: string, value: unknown, min: bigint, max: bigint): bigint {
  let big: bigint;
  if (typeof value === "bigint") {
    big = value;
  } else if (typeof value === "number" && Number.isSafeInteger(value)) {
    big = BigInt(value);
  } else {
    throw new RangeError(`${what}: ${String(value)} is not a bigint or safe integer`);
  }
  if (big < min || big > max) throw new RangeError(`${what}: ${big} is out of range`);
  return big;
}
