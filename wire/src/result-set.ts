// A statement's ResultSet from node-postgres's result: as a protobuf message, or written by hand straight into its wire bytes.
import { create } from "@bufbuild/protobuf";
import { NullValue, type ListValue, type Value as JsonValue } from "@bufbuild/protobuf/wkt";
import { ColumnSchema, ResultSetSchema, type Column, type ResultSet } from "./gen/dbgateway/v1/values_pb.js";
import { COLUMN, DURATION, RESULT_SET } from "./tags.js";
import { encodeRows, RESULT_SET_ROWS, type TextRow } from "./row-encoding.js";
import { int32Size, lengthDelimitedSize, varintSize, writeInt32Field, writeStringField, writeVarint, writeVarintField } from "./wire-writer.js";

// Defined with the rows' encoding (which result sets use), and part of this module's API too.
export type { TextRow };

/** A column as node-postgres describes it (its `FieldDef`, of which only these are sent). */
export interface ResultField {
  name: string;
  dataTypeID: number;
  dataTypeModifier: number;
  tableID: number;
  columnID: number;
}

/** A statement's columns, command tag and row count, as node-postgres reports them (a `QueryResultBase`). */
export interface ResultHead {
  fields: readonly ResultField[];
  command: string;
  rowCount: number | null;
}

/** node-postgres's result in array row mode with text pass-through parsers (a `QueryArrayResult<TextRow>`). */
export interface TextResult extends ResultHead {
  rows: readonly TextRow[];
}

const NULL: JsonValue = { $typeName: "google.protobuf.Value", kind: { case: "nullValue", value: NullValue.NULL_VALUE } };

/**
 * Builds the protobuf result of a statement from node-postgres's result in
 * array row mode with text pass-through parsers: every value is PostgreSQL's
 * text form, or null.
 */
export function toResultSet(result: TextResult, elapsedNanos: bigint): ResultSet {
  return create(ResultSetSchema, {
    columns: toColumns(result.fields),
    rows: result.rows.map(toRow),
    command: result.command ?? "",
    rowsAffected: BigInt(result.rowCount ?? 0),
    executionTime: toDuration(elapsedNanos),
  });
}

/**
 * The same result as `toResultSet`, already in its wire encoding (the same
 * bytes `toBinary` writes for it: see wire/test/row-encoding.test.ts),
 * written by hand into one buffer sized beforehand, with no message objects
 * built.
 */
export function encodeResultSet(result: TextResult, elapsedNanos: bigint): Uint8Array {
  return encodeResultSetOf(result, result.rows.length > 0 ? [encodeRows(RESULT_SET_ROWS, result.rows)] : [], elapsedNanos);
}

/**
 * `encodeResultSet` for a result whose rows are encoded already: `rows` are
 * the entries of `ResultSet.rows` in order, as `encodeRows` or a
 * `RowChunker` writes them. The statements of every call that buffers its
 * results are sent so (see `BufferedQuery`).
 */
export function encodeResultSetOf(result: ResultHead, rows: readonly Uint8Array[], elapsedNanos: bigint): Uint8Array {
  // Pass 1: sizes. proto3: fields at their default value are not written.
  const { fields } = result;
  const nameLengths: number[] = [];
  const columnLengths: number[] = [];
  let size = 0;
  for (const f of fields) {
    const nameLength = f.name === "" ? 0 : Buffer.byteLength(f.name, "utf8");
    let column = nameLength === 0 ? 0 : lengthDelimitedSize(nameLength);
    if (f.dataTypeID !== 0) column += 1 + varintSize(f.dataTypeID);
    if (f.dataTypeModifier !== 0) column += 1 + int32Size(f.dataTypeModifier);
    if (f.tableID !== 0) column += 1 + varintSize(f.tableID);
    if (f.columnID !== 0) column += 1 + varintSize(f.columnID);
    nameLengths.push(nameLength);
    columnLengths.push(column);
    size += lengthDelimitedSize(column);
  }
  for (const chunk of rows) size += chunk.length;
  const command = result.command ?? "";
  const commandLength = command === "" ? 0 : Buffer.byteLength(command, "utf8");
  if (commandLength !== 0) size += lengthDelimitedSize(commandLength);
  const rowCount = result.rowCount ?? 0;
  if (rowCount !== 0) size += 1 + varintSize(rowCount);
  const duration = toDuration(elapsedNanos);
  const seconds = Number(duration.seconds);
  const durationLength = (seconds !== 0 ? 1 + varintSize(seconds) : 0) + (duration.nanos !== 0 ? 1 + varintSize(duration.nanos) : 0);
  size += lengthDelimitedSize(durationLength);
  // Pass 2: bytes.
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const [i, f] of fields.entries()) {
    out[at++] = RESULT_SET.columns;
    at = writeVarint(out, at, columnLengths[i]!);
    if (nameLengths[i] !== 0) at = writeStringField(out, at, COLUMN.name, f.name, nameLengths[i]!);
    if (f.dataTypeID !== 0) at = writeVarintField(out, at, COLUMN.typeOid, f.dataTypeID);
    if (f.dataTypeModifier !== 0) at = writeInt32Field(out, at, COLUMN.typeModifier, f.dataTypeModifier);
    if (f.tableID !== 0) at = writeVarintField(out, at, COLUMN.tableOid, f.tableID);
    if (f.columnID !== 0) at = writeVarintField(out, at, COLUMN.columnNumber, f.columnID);
  }
  for (const chunk of rows) {
    out.set(chunk, at);
    at += chunk.length;
  }
  if (commandLength !== 0) at = writeStringField(out, at, RESULT_SET.command, command, commandLength);
  if (rowCount !== 0) at = writeVarintField(out, at, RESULT_SET.rowsAffected, rowCount);
  out[at++] = RESULT_SET.executionTime;
  at = writeVarint(out, at, durationLength);
  if (seconds !== 0) at = writeVarintField(out, at, DURATION.seconds, seconds);
  if (duration.nanos !== 0) at = writeVarintField(out, at, DURATION.nanos, duration.nanos);
  if (at !== size) throw new Error(`a result set was sized at ${size} bytes but ${at} were written`);
  return out;
}

/** Column metadata of a result. */
export function toColumns(fields: readonly ResultField[]): Column[] {
  return fields.map((f) =>
    create(ColumnSchema, {
      name: f.name,
      typeOid: f.dataTypeID,
      typeModifier: f.dataTypeModifier,
      tableOid: f.tableID,
      columnNumber: f.columnID,
    }),
  );
}

/** One row as a `google.protobuf.ListValue`: a string per value, or null. */
export function toRow(row: TextRow): ListValue {
  return {
    $typeName: "google.protobuf.ListValue",
    values: row.map((v): JsonValue => (v === null ? NULL : { $typeName: "google.protobuf.Value", kind: { case: "stringValue", value: v } })),
  };
}

/** A `google.protobuf.Duration` of nanoseconds. */
export function toDuration(nanos: bigint): { seconds: bigint; nanos: number } {
  return { seconds: nanos / 1_000_000_000n, nanos: Number(nanos % 1_000_000_000n) };
}
