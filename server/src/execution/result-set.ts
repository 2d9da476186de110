import { create } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { NullValue, type ListValue, type Value as JsonValue } from "@bufbuild/protobuf/wkt";
import type { FieldDef, QueryArrayResult } from "pg";
import { ColumnSchema, ResultSetSchema, type Column, type ResultSet } from "../gen/dbgateway/v1/values_pb.js";
import { encodeRows } from "./row-encoding.js";

const NULL: JsonValue = { $typeName: "google.protobuf.Value", kind: { case: "nullValue", value: NullValue.NULL_VALUE } };

/** A row in node-postgres's array row mode with text pass-through parsers: PostgreSQL's text form of each value, or null. */
export type TextRow = (string | null)[];

/**
 * Builds the protobuf result of a statement from node-postgres's result in
 * array row mode with text pass-through parsers: every value is PostgreSQL's
 * text form, or null.
 */
export function toResultSet(result: QueryArrayResult<TextRow>, elapsedNanos: bigint): ResultSet {
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
 * bytes `toBinary` writes for it: see server/test/row-encoding.test.ts):
 * rows by hand, the rest with protobuf-es's BinaryWriter, and no message
 * objects built. Query and QueryMany, the hot paths, send their results so.
 */
export function encodeResultSet(result: QueryArrayResult<TextRow>, elapsedNanos: bigint): Uint8Array {
  const w = new BinaryWriter();
  // proto3: fields at their default value are not written.
  for (const f of result.fields) {
    w.tag(1, WireType.LengthDelimited).fork();
    if (f.name !== "") w.tag(1, WireType.LengthDelimited).string(f.name);
    if (f.dataTypeID !== 0) w.tag(2, WireType.Varint).uint32(f.dataTypeID);
    if (f.dataTypeModifier !== 0) w.tag(3, WireType.Varint).int32(f.dataTypeModifier);
    if (f.tableID !== 0) w.tag(4, WireType.Varint).uint32(f.tableID);
    if (f.columnID !== 0) w.tag(5, WireType.Varint).uint32(f.columnID);
    w.join();
  }
  if (result.rows.length > 0) w.raw(encodeRows(2, result.rows));
  if (result.command) w.tag(3, WireType.LengthDelimited).string(result.command);
  if (result.rowCount) w.tag(4, WireType.Varint).uint64(result.rowCount);
  const { seconds, nanos } = toDuration(elapsedNanos);
  w.tag(5, WireType.LengthDelimited).fork();
  if (seconds !== 0n) w.tag(1, WireType.Varint).int64(seconds);
  if (nanos !== 0) w.tag(2, WireType.Varint).int32(nanos);
  w.join();
  return w.finish();
}

/** Column metadata of a result. */
export function toColumns(fields: readonly FieldDef[]): Column[] {
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
