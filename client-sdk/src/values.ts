// Statement parameters from JavaScript values to typed protobuf Values, exactly: int64, double, text, bytes, timestamps, arrays, JSON.
import { create } from "@bufbuild/protobuf";
import { NullValue, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ValueSchema, type Value } from "../../wire/src/gen/dbgateway/v1/values_pb.js";

/** A JavaScript value that can be sent as a statement parameter. */
export type Param = null | undefined | boolean | number | bigint | string | Uint8Array | Date | readonly Param[] | { [key: string]: unknown };

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/**
 * Encodes a parameter the way node-postgres would send it, but typed and
 * exact: integers (number or bigint) as int64, other numbers as double,
 * strings as text, Buffers/Uint8Arrays as bytes, Dates as timestamps, arrays
 * as arrays, and plain objects as JSON.
 */
export function toValue(param: Param): Value {
  if (param === null || param === undefined) return create(ValueSchema, { kind: { case: "nullValue", value: NullValue.NULL_VALUE } });
  switch (typeof param) {
    case "boolean":
      return create(ValueSchema, { kind: { case: "boolValue", value: param } });
    case "bigint":
      if (param < INT64_MIN || param > INT64_MAX) throw new RangeError(`bigint parameter ${param} does not fit in int64`);
      return create(ValueSchema, { kind: { case: "int64Value", value: param } });
    case "number":
      return Number.isSafeInteger(param)
        ? create(ValueSchema, { kind: { case: "int64Value", value: BigInt(param) } })
        : create(ValueSchema, { kind: { case: "doubleValue", value: param } });
    case "string":
      return create(ValueSchema, { kind: { case: "textValue", value: param } });
    case "object":
      if (param instanceof Uint8Array) return create(ValueSchema, { kind: { case: "bytesValue", value: param } });
      if (param instanceof Date) {
        if (Number.isNaN(param.getTime())) throw new RangeError("invalid Date parameter");
        return create(ValueSchema, { kind: { case: "timestampValue", value: timestampFromMs(param.getTime()) } });
      }
      if (Array.isArray(param)) return create(ValueSchema, { kind: { case: "arrayValue", value: { values: param.map(toValue) } } });
      return create(ValueSchema, { kind: { case: "jsonValue", value: JSON.stringify(param) } });
    default:
      throw new TypeError(`cannot send a ${typeof param} as a parameter`);
  }
}
