// The SDK's result messages and their rows decoded by hand, to what protobuf-es's fromBinary gives; anything unexpected is left to it.
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { Duration, ListValue, Value } from "@bufbuild/protobuf/wkt";
import type {
  BatchResult,
  QueryAnswer,
  QueryResponse,
  QueryStreamResponse,
  StreamQueryResponse,
  StreamSummary,
  TransactionResponse,
} from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { Column, ResultSet } from "../../wire/src/gen/dbgateway/v1/values_pb.js";
import { StatusSchema } from "../../wire/src/gen/google/rpc/status_pb.js";
import { parseInteger, type TypeParser } from "./type-parsers.js";

/**
 * Hand-written protobuf decoding of the responses that carry rows.
 *
 * protobuf-es decodes by reflection: for every field of every message it
 * looks the field up in the schema and goes through a reflective setter.
 * Rows are the bulk of every result, two or more `google.protobuf.Value`s
 * per row, so this was most of the SDK's CPU per streamed row
 * (BENCHMARKS.md). These decoders walk the wire format of the few result
 * messages directly and build the very objects `fromBinary` builds (plain
 * objects with `$typeName`, the same fields and defaults; compared with
 * `fromBinary` in test/result-decoding.test.ts).
 *
 * Anything they were not written for (an unknown field from a newer
 * gateway, an unexpected wire type, a singular message sent twice, a
 * malformed message) makes them give up, and `fromBinary` decodes the
 * message instead: the same result or the same error, only slower.
 */

/** Decoders by the message's type name. */
const DECODERS = new Map<string, (r: Reader) => object>([
  ["dbgateway.v1.QueryResponse", readQueryResponse],
  ["dbgateway.v1.QueryManyResponse", (r) => readResultsResponse(r, "dbgateway.v1.QueryManyResponse")],
  ["dbgateway.v1.BatchResponse", (r) => readResultsResponse(r, "dbgateway.v1.BatchResponse")],
  ["dbgateway.v1.StreamQueryResponse", readStreamQueryResponse],
  ["dbgateway.v1.TransactionResponse", readTransactionResponse],
  ["dbgateway.v1.QueryStreamResponse", readQueryStreamResponse],
]);

/** A decoder of `schema`'s messages: hand-written for result messages, `fromBinary` for the rest. */
export function decoderFor<S extends DescMessage>(schema: S): (bytes: Uint8Array) => MessageShape<S> {
  if (!DECODERS.has(schema.typeName)) return (bytes) => fromBinary(schema, bytes);
  return (bytes) => (decodeByHand(schema.typeName, bytes) as MessageShape<S> | undefined) ?? fromBinary(schema, bytes);
}

/** A result message decoded by hand, or undefined where the hand-written decoders give up. */
export function decodeByHand(typeName: string, bytes: Uint8Array): object | undefined {
  const read = DECODERS.get(typeName);
  if (read === undefined) return undefined;
  const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  try {
    return read(new Reader(buffer, 0, buffer.length));
  } catch {
    return undefined;
  }
}

/** Thrown where the hand-written decoders stop and `fromBinary` takes over (one object: nothing is built per throw). */
const GIVE_UP = new Error("left to fromBinary");

const VARINT = 0;
const I64 = 1;
const LEN = 2;

class Reader {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly end: number,
  ) {}

  more(): boolean {
    return this.pos < this.end;
  }

  /** A field's tag: field number << 3 | wire type. */
  tag(): number {
    return this.uint32();
  }

  /** A varint's low 32 bits, unsigned (the rest of a longer varint is read and dropped, as protobuf does for 32-bit fields). */
  uint32(): number {
    const buf = this.buf;
    let pos = this.pos;
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      if (shift === 70) throw GIVE_UP; // more than 10 bytes
      const b = buf[pos++]!;
      if (shift < 32) value |= (b & 0x7f) << shift; // bits past 32 fall off the shift
      if (b < 0x80) break;
    }
    if (pos > this.end) throw GIVE_UP;
    this.pos = pos;
    return value >>> 0;
  }

  int32(): number {
    return this.uint32() | 0;
  }

  /** A varint of up to 64 bits, unsigned. */
  uint64(): bigint {
    const buf = this.buf;
    let pos = this.pos;
    let low = 0;
    let high = 0;
    let b = 0x80;
    for (let shift = 0; shift < 28 && b >= 0x80; shift += 7) {
      b = buf[pos++]!;
      low |= (b & 0x7f) << shift;
    }
    if (b >= 0x80) {
      b = buf[pos++]!;
      low |= (b & 0x0f) << 28;
      high = (b & 0x7f) >> 4;
      for (let shift = 3; shift < 32 && b >= 0x80; shift += 7) {
        b = buf[pos++]!;
        high |= (b & 0x7f) << shift;
      }
      if (b >= 0x80) throw GIVE_UP;
    }
    if (pos > this.end) throw GIVE_UP;
    this.pos = pos;
    return high === 0 ? BigInt(low >>> 0) : (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
  }

  int64(): bigint {
    return BigInt.asIntN(64, this.uint64());
  }

  double(): number {
    if (this.pos + 8 > this.end) throw GIVE_UP;
    const value = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return value;
  }

  /** The bounds of a length-delimited field's bytes, as a reader of them; this reader moves past them. */
  sub(): Reader {
    const length = this.uint32();
    const start = this.pos;
    const end = start + length;
    if (end > this.end) throw GIVE_UP;
    this.pos = end;
    return new Reader(this.buf, start, end);
  }

  /** Moves past a length-delimited field. */
  skip(): void {
    const length = this.uint32();
    if (this.pos + length > this.end) throw GIVE_UP;
    this.pos += length;
  }

  string(): string {
    const length = this.uint32();
    const start = this.pos;
    const end = start + length;
    if (end > this.end) throw GIVE_UP;
    this.pos = end;
    return length === 0 ? "" : utf8(this.buf, start, end);
  }
}

/**
 * A Buffer's bytes as UTF-8 text through Buffer's own `utf8Slice` (in every
 * Node.js, though undeclared): `toString` checks its arguments and looks the
 * encoding up before calling it, a fifth of the time per short value.
 */
function utf8(buf: Buffer, start: number, end: number): string {
  return (buf as Buffer & { utf8Slice(start: number, end: number): string }).utf8Slice(start, end);
}

/** Checks a field's wire type, giving up on anything else. */
function expect(tag: number, wireType: number): void {
  if ((tag & 7) !== wireType) throw GIVE_UP;
}

function readQueryResponse(r: Reader): QueryResponse {
  const message: QueryResponse = { $typeName: "dbgateway.v1.QueryResponse" };
  while (r.more()) {
    const tag = r.tag();
    if (tag !== ((1 << 3) | LEN) || message.result !== undefined) throw GIVE_UP;
    message.result = readResultSet(r.sub());
  }
  return message;
}

function readResultsResponse<T extends "dbgateway.v1.QueryManyResponse" | "dbgateway.v1.BatchResponse">(
  r: Reader,
  typeName: T,
): { $typeName: T; results: BatchResult[] } {
  const results: BatchResult[] = [];
  while (r.more()) {
    if (r.tag() !== ((1 << 3) | LEN)) throw GIVE_UP;
    results.push(readBatchResult(r.sub()));
  }
  return { $typeName: typeName, results };
}

function readBatchResult(r: Reader): BatchResult {
  const message: BatchResult = { $typeName: "dbgateway.v1.BatchResult", outcome: { case: undefined } };
  while (r.more()) message.outcome = readOutcome(r, r.tag(), message.outcome, 1);
  return message;
}

/**
 * A `oneof outcome { ResultSet result = resultField; google.rpc.Status error
 * = resultField + 1 }` field whose tag was just read (a second one, or any
 * other field, is left to fromBinary).
 */
function readOutcome(r: Reader, tag: number, outcome: BatchResult["outcome"], resultField: number): BatchResult["outcome"] {
  if (outcome.case !== undefined) throw GIVE_UP;
  expect(tag, LEN);
  if (tag >>> 3 === resultField) return { case: "result", value: readResultSet(r.sub()) };
  if (tag >>> 3 === resultField + 1) return { case: "error", value: readStatus(r.sub()) };
  throw GIVE_UP;
}

function readQueryStreamResponse(r: Reader): QueryStreamResponse {
  const answers: QueryAnswer[] = [];
  while (r.more()) {
    if (r.tag() !== ((1 << 3) | LEN)) throw GIVE_UP;
    answers.push(readQueryAnswer(r.sub()));
  }
  return { $typeName: "dbgateway.v1.QueryStreamResponse", answers };
}

function readQueryAnswer(r: Reader): QueryAnswer {
  const message: QueryAnswer = { $typeName: "dbgateway.v1.QueryAnswer", query: 0n, outcome: { case: undefined } };
  while (r.more()) {
    const tag = r.tag();
    if (tag === ((1 << 3) | VARINT)) message.query = r.uint64();
    else message.outcome = readOutcome(r, tag, message.outcome, 2);
  }
  return message;
}

function readTransactionResponse(r: Reader): TransactionResponse {
  // Only a statement's result is worth decoding by hand; the other kinds are small and rare.
  if (r.tag() !== ((2 << 3) | LEN)) throw GIVE_UP;
  const result = readResultSet(r.sub());
  if (r.more()) throw GIVE_UP;
  return { $typeName: "dbgateway.v1.TransactionResponse", kind: { case: "result", value: result } };
}

function readStreamQueryResponse(r: Reader): StreamQueryResponse {
  const message: StreamQueryResponse = { $typeName: "dbgateway.v1.StreamQueryResponse", columns: [], rows: [] };
  const bounds: number[] = [];
  while (r.more()) {
    const tag = r.tag();
    expect(tag, LEN);
    switch (tag >>> 3) {
      case 1:
        message.columns.push(readColumn(r.sub()));
        break;
      case 2:
        skipListValue(r.sub(), bounds);
        break;
      case 3:
        if (message.summary !== undefined) throw GIVE_UP;
        message.summary = readStreamSummary(r.sub());
        break;
      default:
        throw GIVE_UP;
    }
  }
  return withRowBytes(message, r.buf, bounds);
}

function readStreamSummary(r: Reader): StreamSummary {
  const message: StreamSummary = { $typeName: "dbgateway.v1.StreamSummary", command: "", rowsAffected: 0n };
  while (r.more()) readSummaryField(r, r.tag(), message, 1);
  return message;
}

/**
 * Reads one of the `command`, `rows_affected` and `execution_time` fields
 * that a ResultSet (numbered from 3) and a StreamSummary (from 1) share;
 * gives up on any other field.
 */
function readSummaryField(r: Reader, tag: number, message: Pick<ResultSet, "command" | "rowsAffected" | "executionTime">, first: number): void {
  switch (tag) {
    case (first << 3) | LEN:
      message.command = r.string();
      break;
    case ((first + 1) << 3) | VARINT:
      message.rowsAffected = r.uint64();
      break;
    case ((first + 2) << 3) | LEN:
      if (message.executionTime !== undefined) throw GIVE_UP;
      message.executionTime = readDuration(r.sub());
      break;
    default:
      throw GIVE_UP;
  }
}

function readResultSet(r: Reader): ResultSet {
  const message: ResultSet = { $typeName: "dbgateway.v1.ResultSet", columns: [], rows: [], command: "", rowsAffected: 0n };
  const bounds: number[] = [];
  while (r.more()) {
    const tag = r.tag();
    switch (tag) {
      case (1 << 3) | LEN:
        message.columns.push(readColumn(r.sub()));
        break;
      case (2 << 3) | LEN:
        skipListValue(r.sub(), bounds);
        break;
      default:
        readSummaryField(r, tag, message, 3);
    }
  }
  return withRowBytes(message, r.buf, bounds);
}

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
function withRowBytes<M extends { rows: ListValue[] }>(message: M, buf: Buffer, bounds: number[]): M {
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
 * nothing, and records its bounds: the same messages give up here as there.
 */
function skipListValue(r: Reader, bounds: number[]): void {
  bounds.push(r.pos, r.end);
  while (r.more()) {
    if (r.tag() !== ((1 << 3) | LEN)) throw GIVE_UP;
    const valueEnd = r.uint32() + r.pos;
    if (valueEnd > r.end) throw GIVE_UP;
    while (r.pos < valueEnd) {
      switch (r.tag()) {
        case (3 << 3) | LEN:
          r.skip();
          break;
        case (1 << 3) | VARINT:
        case (4 << 3) | VARINT:
          r.uint32();
          break;
        case (2 << 3) | I64:
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
    if (tag === ((3 << 3) | LEN)) {
      const length = r.uint32();
      start = r.pos;
      stop = r.pos += length;
    } else if (tag === ((2 << 3) | I64)) {
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

function readColumn(r: Reader): Column {
  const message: Column = { $typeName: "dbgateway.v1.Column", name: "", typeOid: 0, typeModifier: 0, tableOid: 0, columnNumber: 0 };
  while (r.more()) {
    const tag = r.tag();
    switch (tag) {
      case (1 << 3) | LEN:
        message.name = r.string();
        break;
      case (2 << 3) | VARINT:
        message.typeOid = r.uint32();
        break;
      case (3 << 3) | VARINT:
        message.typeModifier = r.int32();
        break;
      case (4 << 3) | VARINT:
        message.tableOid = r.uint32();
        break;
      case (5 << 3) | VARINT:
        message.columnNumber = r.uint32();
        break;
      default:
        throw GIVE_UP;
    }
  }
  return message;
}

function readListValue(r: Reader): ListValue {
  const values: Value[] = [];
  while (r.more()) {
    if (r.tag() !== ((1 << 3) | LEN)) throw GIVE_UP;
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
      case (3 << 3) | LEN:
        kind = { case: "stringValue", value: r.string() };
        break;
      case (1 << 3) | VARINT:
        kind = { case: "nullValue", value: r.int32() };
        break;
      case (2 << 3) | I64:
        kind = { case: "numberValue", value: r.double() };
        break;
      case (4 << 3) | VARINT:
        kind = { case: "boolValue", value: r.uint32() !== 0 };
        break;
      default:
        throw GIVE_UP;
    }
  }
  return { $typeName: "google.protobuf.Value", kind };
}

function readDuration(r: Reader): Duration {
  const message: Duration = { $typeName: "google.protobuf.Duration", seconds: 0n, nanos: 0 };
  while (r.more()) {
    const tag = r.tag();
    if (tag === ((1 << 3) | VARINT)) message.seconds = r.int64();
    else if (tag === ((2 << 3) | VARINT)) message.nanos = r.int32();
    else throw GIVE_UP;
  }
  return message;
}

/** An error's `google.rpc.Status`: rare, so protobuf-es decodes it. */
function readStatus(r: Reader) {
  return fromBinary(StatusSchema, r.buf.subarray(r.pos, r.end));
}
