// QueryStreamRequest and QueryManyRequest decoded by hand, always to what protobuf-es's fromBinary gives, or its error.
import { fromBinary, type DescMessage } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { QueryManyRequest, QueryStreamRequest, TenantQuery } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { Value } from "../../../wire/src/gen/dbgateway/v1/values_pb.js";

/**
 * QueryStreamRequest and QueryManyRequest, the hot paths' requests, decoded
 * by hand: protobuf-es's reflective `fromBinary` cost about 10 µs of a lone
 * query's time in the gateway and 1.5 µs per query of a coalesced message
 * (BENCHMARKS.md). The scalars are read with protobuf-es's own BinaryReader,
 * as `fromBinary` reads them (UTF-8 checked, int64 as bigint), into the same
 * message objects. Anything else (an unknown field, an unexpected wire type,
 * a timestamp or array parameter, malformed bytes) is left to `fromBinary`,
 * which decodes the whole message again: the result is always what
 * `fromBinary` gives, or its error (checked in
 * server/test/request-decoding.test.ts).
 */
const DECODERS = new Map<string, (bytes: Uint8Array) => object>([
  [
    "dbgateway.v1.QueryStreamRequest",
    (bytes) => readRequest(bytes, { $typeName: "dbgateway.v1.QueryStreamRequest", platform: "", queries: [], timeoutMs: 0 }, 2),
  ],
  ["dbgateway.v1.QueryManyRequest", (bytes) => readRequest(bytes, { $typeName: "dbgateway.v1.QueryManyRequest", platform: "", queries: [] }, 4)],
]);

/** The decoder of a request message: by hand where there is one, else `fromBinary`. */
export function decoderFor(schema: DescMessage): (bytes: Uint8Array) => object {
  const byHand = DECODERS.get(schema.typeName);
  if (byHand === undefined) return (bytes) => fromBinary(schema, bytes);
  return (bytes) => tryByHand(byHand, bytes) ?? fromBinary(schema, bytes);
}

/**
 * The message decoded by hand, or undefined where it is left to `fromBinary`
 * (no hand decoder for the type, something unexpected, or malformed bytes,
 * which `fromBinary` then fails on as it always has).
 */
export function decodeByHand(typeName: string, bytes: Uint8Array): object | undefined {
  const byHand = DECODERS.get(typeName);
  return byHand === undefined ? undefined : tryByHand(byHand, bytes);
}

function tryByHand(decode: (bytes: Uint8Array) => object, bytes: Uint8Array): object | undefined {
  try {
    return decode(bytes);
  } catch {
    return undefined;
  }
}

/** Thrown where the hand decoder stops and `fromBinary` takes over (made once: no stack per throw). */
const unexpected = new Error("left to fromBinary");

function expect(wireType: WireType, expected: WireType): void {
  if (wireType !== expected) throw unexpected;
}

/**
 * QueryStreamRequest { string platform = 1; repeated TenantQuery queries = 2; uint32 timeout_ms = 3 }
 * or QueryManyRequest { string platform = 1; repeated TenantQuery queries = 4 } (no timeout_ms),
 * read into `message`, whose queries are field `queriesField`.
 */
function readRequest<M extends QueryStreamRequest | QueryManyRequest>(bytes: Uint8Array, message: M, queriesField: number): M {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1) {
      expect(wireType, WireType.LengthDelimited);
      message.platform = reader.string(true);
    } else if (fieldNo === queriesField) {
      expect(wireType, WireType.LengthDelimited);
      message.queries.push(readTenantQuery(reader));
    } else if (fieldNo === 3 && "timeoutMs" in message) {
      expect(wireType, WireType.Varint);
      message.timeoutMs = reader.uint32();
    } else {
      throw unexpected;
    }
  }
  if (reader.pos !== reader.len) throw unexpected;
  return message;
}

/** TenantQuery { string tenant_id = 1; string sql = 2; repeated Value params = 3; map<string, string> trace_context = 4 }, length-delimited. */
function readTenantQuery(reader: BinaryReader): TenantQuery {
  const query: TenantQuery = { $typeName: "dbgateway.v1.TenantQuery", tenantId: "", sql: "", params: [], traceContext: {} };
  const end = lengthDelimitedEnd(reader);
  while (reader.pos < end) {
    const [fieldNo, wireType] = reader.tag();
    expect(wireType, WireType.LengthDelimited);
    if (fieldNo === 1) query.tenantId = reader.string(true);
    else if (fieldNo === 2) query.sql = reader.string(true);
    else if (fieldNo === 3) query.params.push(readValue(reader));
    else if (fieldNo === 4) readTraceContextEntry(reader, query.traceContext);
    else throw unexpected;
  }
  if (reader.pos !== end) throw unexpected;
  return query;
}

/** Value's scalar kinds by field number: the wire type each is written with, its oneof case and how it is read. */
const VALUE_KINDS = new Map<number, { wireType: WireType; case: string; read: (reader: BinaryReader) => unknown }>([
  [1, { wireType: WireType.Varint, case: "nullValue", read: (r) => r.int32() }],
  [2, { wireType: WireType.Varint, case: "boolValue", read: (r) => r.bool() }],
  [3, { wireType: WireType.Varint, case: "int64Value", read: (r) => r.int64() }],
  [4, { wireType: WireType.Bit64, case: "doubleValue", read: (r) => r.double() }],
  [5, { wireType: WireType.LengthDelimited, case: "textValue", read: (r) => r.string(true) }],
  [6, { wireType: WireType.LengthDelimited, case: "bytesValue", read: (r) => r.bytes() }],
  [7, { wireType: WireType.LengthDelimited, case: "numericValue", read: (r) => r.string(true) }],
  [8, { wireType: WireType.LengthDelimited, case: "jsonValue", read: (r) => r.string(true) }],
]);

/** A Value of a scalar kind; a timestamp or an array is left to `fromBinary`. */
function readValue(reader: BinaryReader): Value {
  const value: Value = { $typeName: "dbgateway.v1.Value", kind: { case: undefined } };
  const end = lengthDelimitedEnd(reader);
  while (reader.pos < end) {
    const [fieldNo, wireType] = reader.tag();
    const kind = VALUE_KINDS.get(fieldNo);
    if (kind === undefined) throw unexpected;
    expect(wireType, kind.wireType);
    value.kind = { case: kind.case, value: kind.read(reader) } as Value["kind"];
  }
  if (reader.pos !== end) throw unexpected;
  return value;
}

/** One entry of the trace_context map (key = 1, value = 2; either may be absent: ""); a later entry for a key wins. */
function readTraceContextEntry(reader: BinaryReader, map: { [key: string]: string }): void {
  const end = lengthDelimitedEnd(reader);
  let key = "";
  let value = "";
  while (reader.pos < end) {
    const [fieldNo, wireType] = reader.tag();
    expect(wireType, WireType.LengthDelimited);
    if (fieldNo === 1) key = reader.string(true);
    else if (fieldNo === 2) value = reader.string(true);
    else throw unexpected;
  }
  if (reader.pos !== end) throw unexpected;
  map[key] = value;
}

/** Reads a length prefix and returns where its content ends (within the buffer, or `fromBinary` decides). */
function lengthDelimitedEnd(reader: BinaryReader): number {
  const end = reader.uint32() + reader.pos;
  if (end > reader.len) throw unexpected;
  return end;
}
