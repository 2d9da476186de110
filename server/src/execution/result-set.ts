import { create } from "@bufbuild/protobuf";
import { NullValue, type ListValue, type Value as JsonValue } from "@bufbuild/protobuf/wkt";
import type { FieldDef, QueryArrayResult } from "pg";
import { ColumnSchema, ResultSetSchema, type Column, type ResultSet } from "../gen/dbgateway/v1/values_pb.js";

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
