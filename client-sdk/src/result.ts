// Query results shaped like pg's (rows, rowCount, fields, command), rows decoded into objects or arrays.
import type { Column, ResultSet } from "../../wire/src/gen/dbgateway/v1/values_pb.js";
import type { ListValue } from "@bufbuild/protobuf/wkt";
import { GatewayError } from "./gateway-error.js";
import { readRows, rowBytesOf } from "../../wire/src/row-decoding.js";
import type { TypeParser } from "./type-parsers.js";

/** A column of a result, named as in `pg`'s `FieldDef`. */
export interface Field {
  name: string;
  dataTypeID: number;
  dataTypeModifier: number;
  tableID: number;
  columnID: number;
}

/** The result of a query, shaped like `pg`'s. */
export interface QueryResult<Row> {
  rows: Row[];
  /** Rows returned or affected. */
  rowCount: number;
  fields: Field[];
  /** SELECT, INSERT, UPDATE … */
  command: string;
  /** Time PostgreSQL took, as measured by the gateway. */
  executionTimeMs: number;
  /**
   * For a write on a cluster with streaming replicas, sent as its own Query
   * (see `QueryOptions.readOnly`): its commit token, which a read-only read
   * gives as `readAfter` to see it. Absent otherwise.
   */
  commitToken?: string;
  /** True when the gateways' result cache served it (see `QueryOptions.cacheTtlMs`). */
  fromCache?: boolean;
}

/** How rows are returned: objects keyed by column name (default), or arrays in column order. */
export type RowMode = "array" | undefined;

/** Turns rows of PostgreSQL text values into JavaScript objects keyed by column name, or arrays. */
export class RowDecoder {
  readonly fields: Field[];
  readonly #parsers: TypeParser[];
  readonly #names: string[];

  constructor(columns: readonly Column[], parserFor: (oid: number) => TypeParser) {
    this.fields = columns.map((c) => ({
      name: c.name,
      dataTypeID: c.typeOid,
      dataTypeModifier: c.typeModifier,
      tableID: c.tableOid,
      columnID: c.columnNumber,
    }));
    this.#parsers = columns.map((c) => parserFor(c.typeOid));
    this.#names = columns.map((c) => c.name);
  }

  /**
   * The rows of a result message: read from its bytes where the SDK's own
   * decoder left them so (no `ListValue`s made), else from its `rows`.
   */
  rowsOf<Row>(message: { rows: ListValue[] }, rowMode?: RowMode): Row[] {
    const bytes = rowBytesOf(message);
    if (bytes !== undefined) return readRows<Row>(bytes, this.#parsers, rowMode === "array" ? undefined : this.#names);
    return rowMode === "array" ? message.rows.map((row) => this.decodeArray<Row>(row)) : message.rows.map((row) => this.decode<Row>(row));
  }

  decode<Row>(row: ListValue): Row {
    const out: Record<string, unknown> = {};
    const values = row.values;
    for (let i = 0; i < values.length; i++) {
      const kind = values[i]!.kind;
      out[this.#names[i]!] = kind.case === "stringValue" ? this.#parsers[i]!(kind.value) : null;
    }
    return out as Row;
  }

  decodeArray<Row>(row: ListValue): Row {
    const values = row.values;
    const out = new Array<unknown>(values.length);
    for (let i = 0; i < values.length; i++) {
      const kind = values[i]!.kind;
      out[i] = kind.case === "stringValue" ? this.#parsers[i]!(kind.value) : null;
    }
    return out as Row;
  }
}

/** A whole result, decoded. */
export function decodeResult<Row>(result: ResultSet | undefined, parserFor: (oid: number) => TypeParser, rowMode?: RowMode): QueryResult<Row> {
  if (result === undefined) throw new GatewayError("the gateway sent no result", 13, "INTERNAL", {}, undefined);
  const decoder = new RowDecoder(result.columns, parserFor);
  return {
    rows: decoder.rowsOf<Row>(result, rowMode),
    rowCount: Number(result.rowsAffected),
    fields: decoder.fields,
    command: result.command,
    executionTimeMs: durationMs(result.executionTime),
  };
}

/** Milliseconds of a `google.protobuf.Duration`. */
export function durationMs(duration: { seconds: bigint; nanos: number } | undefined): number {
  return duration === undefined ? 0 : Number(duration.seconds) * 1000 + duration.nanos / 1e6;
}
