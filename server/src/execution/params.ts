// Request parameters (protobuf Values) to node-postgres parameters, exactly; an invalid one is INVALID_PARAMETER naming it ($1, $2 …).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Value } from "../../../wire/src/gen/dbgateway/v1/values_pb.js";
import { GatewayError } from "../errors.js";

/** PostgreSQL's numeric input syntax, plus its special values. */
const NUMERIC = /^\s*(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:NaN|Infinity|inf))\s*$/i;

/** A parameter as node-postgres sends it: text, a Buffer (sent in binary), an array, or null. */
export type PgParam = string | Buffer | null | PgParam[];

/**
 * Converts typed protobuf values into node-postgres parameters, exactly:
 * int64 as decimal text, bytes as a binary parameter, timestamps with
 * microseconds, arrays (with NULL elements) as arrays. Invalid values are
 * INVALID_ARGUMENT naming the parameter ($1, $2 …).
 */
export function toPgParams(values: readonly Value[]): PgParam[] {
  return values.map((value, i) => toPgParam(value, `$${i + 1}`));
}

function toPgParam(value: Value, where: string): PgParam {
  const kind = value.kind;
  switch (kind.case) {
    case undefined:
    case "nullValue":
      return null;
    case "boolValue":
      return kind.value ? "true" : "false";
    case "int64Value":
      return kind.value.toString();
    case "doubleValue":
      // JavaScript prints the shortest text that reads back as the same double.
      return doubleText(kind.value);
    case "textValue":
      if (kind.value.includes("\0")) throw invalid(where, "text cannot contain a zero byte (use bytes_value)");
      return kind.value;
    case "bytesValue":
      return Buffer.from(kind.value.buffer, kind.value.byteOffset, kind.value.byteLength);
    case "numericValue":
      if (!NUMERIC.test(kind.value)) throw invalid(where, "numeric_value is not a decimal number");
      return kind.value.trim();
    case "jsonValue":
      try {
        JSON.parse(kind.value);
      } catch {
        throw invalid(where, "json_value is not valid JSON");
      }
      if (kind.value.includes("\0")) throw invalid(where, "json_value cannot contain a zero byte");
      return kind.value;
    case "timestampValue":
      return timestampText(kind.value.seconds, kind.value.nanos, where);
    case "arrayValue":
      return kind.value.values.map((element, j) => toPgParam(element, `${where}[${j}]`));
  }
}

/** PostgreSQL's spelling of a double; JavaScript prints the shortest text that reads back as the same value. */
function doubleText(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "Infinity";
  if (value === -Infinity) return "-Infinity";
  return Object.is(value, -0) ? "-0" : String(value);
}

/** An ISO 8601 UTC instant with microseconds, as PostgreSQL reads it. */
function timestampText(seconds: bigint, nanos: number, where: string): string {
  if (nanos < 0 || nanos > 999_999_999) throw invalid(where, "timestamp_value nanos must be 0 to 999,999,999");
  const date = timestampDate({ seconds, nanos: 0, $typeName: "google.protobuf.Timestamp" });
  if (Number.isNaN(date.getTime()) || date.getUTCFullYear() < 1 || date.getUTCFullYear() > 9999) {
    throw invalid(where, "timestamp_value must be within years 1 to 9999");
  }
  const micros = String(Math.floor(nanos / 1000)).padStart(6, "0");
  return `${date.toISOString().slice(0, 19)}.${micros}Z`;
}

function invalid(where: string, message: string): GatewayError {
  return new GatewayError("INVALID_PARAMETER", `parameter ${where}: ${message}`, { metadata: { parameter: where } });
}
