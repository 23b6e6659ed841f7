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

const U16 = 0;
const U32 = 1;
const I32 = 2;
const U64 = 3;
const I64 = 4;
const NESTED = 5;
const KIND: Readonly<Record<ScalarType, number>> = {
  u16: U16,
  u32: U32,
  i32: I32,
  u64: U64,
  i64: I64,
};
const TWO_POW_32 = 0x1_0000_0000;

/**
 * A layout's value fields flattened into parallel arrays, built once per
 * layout: the reader and writer run on every request, and looking names up
 * in `offsets` or building a message per field showed up in profiles.
 */
interface FieldPlan {
  readonly layout: StructLayout;
  readonly names: readonly string[];
  readonly kinds: readonly number[];
  readonly offsets: readonly number[];
  readonly nested: readonly (FieldPlan | undefined)[];
}

const plans = new WeakMap<StructLayout, FieldPlan>();

function planOf(layout: StructLayout): FieldPlan {
  let plan = plans.get(layout);
  if (plan !== undefined) return plan;
  const names: string[] = [];
  const kinds: number[] = [];
  const fieldOffsets: number[] = [];
  const nested: (FieldPlan | undefined)[] = [];
  const offsets = layout.offsets as Record<string, number>;
  for (const field of layout.fields) {
    if (field.length === 3) continue;
    const [name, type] = field;
    names.push(name);
    fieldOffsets.push(offsets[name]);
    if (typeof type === "string") {
      kinds.push(KIND[type]);
      nested.push(undefined);
    } else {
      kinds.push(NESTED);
      nested.push(planOf(type));
    }
  }
  plan = { layout, names, kinds, offsets: fieldOffsets, nested };
  plans.set(layout, plan);
  return plan;
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
  return readFields(planOf(layout), viewOf(bytes), offset) as StructValue<F>;
}

function readFields(plan: FieldPlan, view: DataView, base: number): Record<string, unknown> {
  const value: Record<string, unknown> = {};
  const { names, kinds, offsets, nested } = plan;
  for (let i = 0; i < names.length; i++) {
    const at = base + offsets[i];
    switch (kinds[i]) {
      case U16:
        value[names[i]] = view.getUint16(at, true);
        break;
      case U32:
        value[names[i]] = view.getUint32(at, true);
        break;
      case I32:
        value[names[i]] = view.getInt32(at, true);
        break;
      case U64:
        value[names[i]] = view.getBigUint64(at, true);
        break;
      case I64:
        value[names[i]] = view.getBigInt64(at, true);
        break;
      default:
        value[names[i]] = readFields(nested[i]!, view, at);
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
  writeFields(planOf(layout), value as Record<string, unknown>, viewOf(target), offset);
  return target.subarray(offset, offset + layout.size);
}

function writeFields(
  plan: FieldPlan,
  value: Record<string, unknown>,
  view: DataView,
  base: number,
): void {
  const { names, kinds, offsets, nested } = plan;
  for (let i = 0; i < names.length; i++) {
    const at = base + offsets[i];
    const fieldValue = value[names[i]];
    switch (kinds[i]) {
      case U16:
        view.setUint16(at, checkInteger(plan, i, fieldValue, 0, 0xffff), true);
        break;
      case U32:
        view.setUint32(at, checkInteger(plan, i, fieldValue, 0, 0xffff_ffff), true);
        break;
      case I32:
        view.setInt32(at, checkInteger(plan, i, fieldValue, -0x8000_0000, 0x7fff_ffff), true);
        break;
      case U64:
        if (typeof fieldValue === "number" && Number.isSafeInteger(fieldValue) && fieldValue >= 0) {
          // Two halves: no BigInt for the sizes, counts and times that are numbers already.
          view.setUint32(at, fieldValue >>> 0, true);
          view.setUint32(at + 4, Math.floor(fieldValue / TWO_POW_32), true);
        } else {
          view.setBigUint64(
            at,
            checkBigInt(plan, i, fieldValue, 0n, 0xffff_ffff_ffff_ffffn),
            true,
          );
        }
        break;
      case I64:
        if (typeof fieldValue === "number" && Number.isSafeInteger(fieldValue)) {
          // `>>> 0` is the low half modulo 2^32, the floored quotient the signed high half.
          view.setUint32(at, fieldValue >>> 0, true);
          view.setInt32(at + 4, Math.floor(fieldValue / TWO_POW_32), true);
        } else {
          view.setBigInt64(
            at,
            checkBigInt(plan, i, fieldValue, -0x8000_0000_0000_0000n, 0x7fff_ffff_ffff_ffffn),
            true,
          );
        }
        break;
      default: {
        const inner = nested[i]!;
        if (typeof fieldValue !== "object" || fieldValue === null) {
          throw new RangeError(`${fieldName(plan, i)}: expected a ${inner.layout.name} object`);
        }
        writeFields(inner, fieldValue as Record<string, unknown>, view, at);
      }
    }
  }
}

/** `struct.field`, for error messages only (built when one is thrown). */
function fieldName(plan: FieldPlan, index: number): string {
  return `${plan.layout.name}.${plan.names[index]}`;
}

function checkInteger(
  plan: FieldPlan,
  index: number,
  value: unknown,
  min: number,
  max: number,
): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `${fieldName(plan, index)}: ${String(value)} is not an integer in [${min}, ${max}]`,
    );
  }
  return value;
}

function checkBigInt(
  plan: FieldPlan,
  index: number,
  value: unknown,
  min: bigint,
  max: bigint,
): bigint {
  let big: bigint;
  if (typeof value === "bigint") {
    big = value;
  } else if (typeof value === "number" && Number.isSafeInteger(value)) {
    big = BigInt(value);
  } else {
    throw new RangeError(
      `${fieldName(plan, index)}: ${String(value)} is not a bigint or safe integer`,
    );
  }
  if (big < min || big > max) {
    throw new RangeError(`${fieldName(plan, index)}: ${big} is out of range`);
  }
  return big;
}
