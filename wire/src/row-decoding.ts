// Result rows (google.protobuf.ListValue entries) checked without being decoded, then read straight into the SDK's row objects, or into ListValues when asked for.
import type { ListValue, Value } from "@bufbuild/protobuf/wkt";
import { LIST_VALUE_ENTRY, VALUE } from "./tags.js";
import { GIVE_UP, Reader, utf8 } from "./wire-reader.js";

/** Turns PostgreSQL's text form of one value into a JavaScript value. */
export type TypeParser = (text: string) => unknown;

/**
 * int2, int4 and oid values, as pg-types parses them. Values that have this
 * parser are read straight from the response's bytes, with no string made of
 * them first (`readRows`).
 */
export const parseInteger: TypeParser = (text) => parseInt(text, 10);

// ListValue.values is one byte (tags.ts makes sure), which `nextValue` steps over unread.
const { nullValue: NULL_VALUE, numberValue: NUMBER_VALUE, stringValue: STRING_VALUE, boolValue: BOOL_VALUE } = VALUE;

/**
 * The rows of a result message as the hand-written decoders leave them:
 * checked, and not yet made into objects. A row's values are read straight
 * into the caller's row objects (`readRows`), with no
 * `ListValue` and `Value` objects made of them: those were most of the
 * objects, and much of the CPU, per decoded row (BENCHMARKS.md).
 */
export interface RowBytes {
  readonly buf: Buffer;
  /** Each row's start and end in `buf`, one pair after another. */
  readonly bounds: readonly number[];
}

const ROW_BYTES = Symbol("row bytes");

/** The rows of a message the hand-written decoders made, as bytes; undefined for any other message. */
export function rowBytesOf(message: object): RowBytes | undefined {
  return (message as { [ROW_BYTES]?: RowBytes })[ROW_BYTES];
}

/**
 * Results of fewer rows than this get their `ListValue`s at once: making
 * `rows` lazy costs more than the objects it saves on a row or two (a
 * QueryMany response of 64 one-row results decoded twice as slowly).
 */
const LAZY_ROWS = 16;

/**
 * Gives a message with rows a lazy `rows` (the `ListValue`s, made on first
 * use and kept) and, unseen by enumeration and equality, its row bytes; or,
 * below `LAZY_ROWS` rows, its `ListValue`s.
 */
export function withRowBytes<M extends { rows: ListValue[] }>(message: M, buf: Buffer, bounds: number[]): M {
  if (bounds.length < 2 * LAZY_ROWS) {
    message.rows = listValues(buf, bounds);
    return message;
  }
  const setRows = (target: M, rows: ListValue[]) =>
    Object.defineProperty(target, "rows", { value: rows, enumerable: true, configurable: true, writable: true });
  Object.defineProperty(message, ROW_BYTES, { value: { buf, bounds } satisfies RowBytes });
  Object.defineProperty(message, "rows", {
    enumerable: true,
    configurable: true,
    get(this: M) {
      const rows = listValues(buf, bounds);
      setRows(this, rows);
      return rows;
    },
    set(this: M, rows: ListValue[]) {
      setRows(this, rows);
    },
  });
  return message;
}

/** The checked rows at `bounds` in `buf` as `ListValue`s. */
function listValues(buf: Buffer, bounds: readonly number[]): ListValue[] {
  const rows: ListValue[] = [];
  for (let i = 0; i < bounds.length; i += 2) rows.push(readListValue(new Reader(buf, bounds[i]!, bounds[i + 1]!)));
  return rows;
}

/**
 * Checks a row (a `ListValue`) as `readListValue` would read it, making
 * nothing, and records its bounds: the same messages give up here as there,
 * and also those whose entries' tags take more than the one byte that
 * `nextValue` steps over.
 */
export function skipListValue(r: Reader, bounds: number[]): void {
  bounds.push(r.pos, r.end);
  while (r.more()) {
    if (r.buf[r.pos] !== LIST_VALUE_ENTRY) throw GIVE_UP;
    r.pos++;
    const valueEnd = r.uint32() + r.pos;
    if (valueEnd > r.end) throw GIVE_UP;
    while (r.pos < valueEnd) {
      switch (r.tag()) {
        case STRING_VALUE:
          r.skip();
          break;
        case NULL_VALUE:
        case BOOL_VALUE:
          r.uint32();
          break;
        case NUMBER_VALUE:
          r.double();
          break;
        default:
          throw GIVE_UP;
      }
    }
    if (r.pos !== valueEnd) throw GIVE_UP;
  }
}

/**
 * Rows of checked row bytes, each value made by its column's parser (NULL:
 * null): objects keyed by `names`, or without names arrays in column order.
 */
export function readRows<Row>(rows: RowBytes, parsers: readonly TypeParser[], names?: readonly string[]): Row[] {
  const { buf, bounds } = rows;
  const out = new Array<Row>(bounds.length >>> 1);
  const r = new Reader(buf, 0, buf.length);
  for (let k = 0; k < bounds.length; k += 2) {
    const row = (names === undefined ? [] : {}) as Record<string | number, unknown>;
    r.pos = bounds[k]!;
    const end = bounds[k + 1]!;
    for (let i = 0; r.pos < end; i++) row[names === undefined ? i : names[i]!] = nextValue(r, parsers[i]!);
    out[k >>> 1] = row as Row;
  }
  return out;
}

/**
 * The next value of a checked row, made by its column's parser: null for
 * NULL (and for the number and bool kinds, which the gateway does not send).
 * The last kind in the value counts, as protobuf reads a oneof.
 */
function nextValue(r: Reader, parser: TypeParser): unknown {
  r.pos++; // the tag of ListValue.values, one byte (checked)
  const end = r.uint32() + r.pos;
  let start = -1;
  let stop = 0;
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag === STRING_VALUE) {
      const length = r.uint32();
      start = r.pos;
      stop = r.pos += length;
    } else if (tag === NUMBER_VALUE) {
      r.pos += 8;
      start = -1;
    } else {
      r.uint32();
      start = -1;
    }
  }
  if (start < 0) return null;
  if (parser === parseInteger) {
    const n = integerAt(r.buf, start, stop);
    if (n !== undefined) return n;
  }
  return parser(start === stop ? "" : utf8(r.buf, start, stop));
}

/**
 * PostgreSQL's text of an int2, int4 or oid (an optional minus and up to ten
 * digits) as the number `parseInt` makes of it; undefined for anything else.
 */
function integerAt(buf: Buffer, start: number, end: number): number | undefined {
  const negative = buf[start] === 0x2d;
  let i = negative ? start + 1 : start;
  if (i === end || end - i > 10) return undefined;
  let n = 0;
  for (; i < end; i++) {
    const digit = buf[i]! - 0x30;
    if (digit < 0 || digit > 9) return undefined;
    n = n * 10 + digit;
  }
  return negative ? -n : n;
}

function readListValue(r: Reader): ListValue {
  const values: Value[] = [];
  while (r.more()) {
    if (r.tag() !== LIST_VALUE_ENTRY) throw GIVE_UP;
    values.push(readValue(r.sub()));
  }
  return { $typeName: "google.protobuf.ListValue", values };
}

/** A `google.protobuf.Value` of the kinds a result holds: text, NULL, and (for completeness) number and bool. */
function readValue(r: Reader): Value {
  let kind: Value["kind"] = { case: undefined };
  while (r.more()) {
    const tag = r.tag();
    switch (tag) {
      case STRING_VALUE:
        kind = { case: "stringValue", value: r.string() };
        break;
      case NULL_VALUE:
        kind = { case: "nullValue", value: r.int32() };
        break;
      case NUMBER_VALUE:
        kind = { case: "numberValue", value: r.double() };
        break;
      case BOOL_VALUE:
        kind = { case: "boolValue", value: r.bool() };
        break;
      default:
        throw GIVE_UP;
    }
  }
  return { $typeName: "google.protobuf.Value", kind };
}
