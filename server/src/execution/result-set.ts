import { create } from "@bufbuild/protobuf";
import { NullValue, type Value as JsonValue } from "@bufbuild/protobuf/wkt";
import type { QueryArrayResult } from "pg";
import { ColumnSchema, ResultSetSchema, type ResultSet } from "../gen/dbgateway/v1/values_pb.js";

const NULL: JsonValue = { $typeName: "google.protobuf.Value", kind: { case: "nullValue", value: NullValue.NULL_VALUE } };

/**
 * Builds the protobuf result of a statement from node-postgres's result in
 * array row mode with text pass-through parsers: every value is PostgreSQL's
 * text form, or null.
 */
export function toResultSet(result: QueryArrayResult<(string | null)[]>, elapsedNanos: bigint): ResultSet {
  return create(ResultSetSchema, {
    columns: result.fields.map((f) =>
      create(ColumnSchema, {
        name: f.name,
        typeOid: f.dataTypeID,
        typeModifier: f.dataTypeModifier,
        tableOid: f.tableID,
        columnNumber: f.columnID,
      }),
    ),
    rows: result.rows.map((row) => ({
      $typeName: "google.protobuf.ListValue" as const,
      values: row.map((v): JsonValue => (v === null ? NULL : { $typeName: "google.protobuf.Value", kind: { case: "stringValue", value: v } })),
    })),
    command: result.command ?? "",
    rowsAffected: BigInt(result.rowCount ?? 0),
    executionTime: { seconds: elapsedNanos / 1_000_000_000n, nanos: Number(elapsedNanos % 1_000_000_000n) },
  });
}
