// QueryStreamRequest and QueryManyRequest decoded by hand, always to what protobuf-es's fromBinary gives, or its error.
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import {
  QueryManyRequestSchema,
  QueryStreamRequestSchema,
  TenantQuerySchema,
  type QueryManyRequest,
  type QueryStreamRequest,
  type TenantQuery,
} from "./gen/dbgateway/v1/query_service_pb.js";
import { ValueSchema, type Value } from "./gen/dbgateway/v1/values_pb.js";
import { MAP_ENTRY_KEY, MAP_ENTRY_VALUE, numberOf, tagOf } from "./field-tags.js";
import { GIVE_UP } from "./wire-reader.js";

// Field numbers from the generated descriptors, once.
const STREAM_REQUEST = {
  platform: numberOf(QueryStreamRequestSchema, "platform"),
  queries: numberOf(QueryStreamRequestSchema, "queries"),
  timeoutMs: numberOf(QueryStreamRequestSchema, "timeoutMs"),
};
const MANY_REQUEST = { platform: numberOf(QueryManyRequestSchema, "platform"), queries: numberOf(QueryManyRequestSchema, "queries") };
if (STREAM_REQUEST.platform !== MANY_REQUEST.platform) throw new Error("QueryStreamRequest and QueryManyRequest no longer share platform's number");
const TENANT_QUERY = {
  tenantId: numberOf(TenantQuerySchema, "tenantId"),
  sql: numberOf(TenantQuerySchema, "sql"),
  params: numberOf(TenantQuerySchema, "params"),
  traceContext: numberOf(TenantQuerySchema, "traceContext"),
};

/**
 * QueryStreamRequest and QueryManyRequest, the hot paths' requests, decoded
 * by hand: protobuf-es's reflective `fromBinary` cost about 10 µs of a lone
 * query's time in the gateway and 1.5 µs per query of a coalesced message
 * (BENCHMARKS.md). The scalars are read with protobuf-es's own BinaryReader,
 * as `fromBinary` reads them (UTF-8 checked, int64 as bigint), into the same
 * message objects. Anything else (an unknown field, an unexpected wire type,
 * a timestamp or array parameter, malformed bytes) is left to `fromBinary`,
 * which decodes the whole message again: the result is always what
 * `fromBinary` gives, or its error (`decoderFor` in codecs.ts; checked in
 * wire/test/request-decoding.test.ts).
 */
export const requestDecoders = new Map<string, (bytes: Uint8Array) => object>([
  [
    QueryStreamRequestSchema.typeName,
    (bytes) =>
      readRequest(
        bytes,
        { $typeName: "dbgateway.v1.QueryStreamRequest", platform: "", queries: [], timeoutMs: 0, batches: [], transactions: [] },
        STREAM_REQUEST.queries,
      ),
  ],
  [
    QueryManyRequestSchema.typeName,
    (bytes) => readRequest(bytes, { $typeName: "dbgateway.v1.QueryManyRequest", platform: "", queries: [] }, MANY_REQUEST.queries),
  ],
]);

/** Checks a field's wire type, leaving anything else to `fromBinary`. */
function expect(wireType: WireType, expected: WireType): void {
  if (wireType !== expected) throw GIVE_UP;
}

/**
 * QueryStreamRequest { string platform; repeated TenantQuery queries; uint32 timeout_ms }
 * or QueryManyRequest { string platform; repeated TenantQuery queries } (no timeout_ms),
 * read into `message`, whose queries are field number `queriesField`.
 */
function readRequest<M extends QueryStreamRequest | QueryManyRequest>(bytes: Uint8Array, message: M, queriesField: number): M {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === STREAM_REQUEST.platform) {
      expect(wireType, WireType.LengthDelimited);
      message.platform = reader.string(true);
    } else if (fieldNo === queriesField) {
      expect(wireType, WireType.LengthDelimited);
      message.queries.push(readTenantQuery(reader));
    } else if (fieldNo === STREAM_REQUEST.timeoutMs && "timeoutMs" in message) {
      expect(wireType, WireType.Varint);
      message.timeoutMs = reader.uint32();
    } else {
      throw GIVE_UP;
    }
  }
  if (reader.pos !== reader.len) throw GIVE_UP;
  return message;
}

/** TenantQuery { string tenant_id; string sql; repeated Value params; map<string, string> trace_context }, length-delimited. */
function readTenantQuery(reader: BinaryReader): TenantQuery {
  const query: TenantQuery = { $typeName: "dbgateway.v1.TenantQuery", tenantId: "", sql: "", params: [], traceContext: {} };
  const end = lengthDelimitedEnd(reader);
  while (reader.pos < end) {
    const [fieldNo, wireType] = reader.tag();
    expect(wireType, WireType.LengthDelimited);
    if (fieldNo === TENANT_QUERY.tenantId) query.tenantId = reader.string(true);
    else if (fieldNo === TENANT_QUERY.sql) query.sql = reader.string(true);
    else if (fieldNo === TENANT_QUERY.params) query.params.push(readValue(reader));
    else if (fieldNo === TENANT_QUERY.traceContext) readTraceContextEntry(reader, query.traceContext);
    else throw GIVE_UP;
  }
  if (reader.pos !== end) throw GIVE_UP;
  return query;
}

/** Value's scalar kinds by field number: the wire type each is written with, its oneof case and how it is read. */
const VALUE_KINDS = new Map<number, { wireType: WireType; case: string; read: (reader: BinaryReader) => unknown }>(
  (
    [
      ["nullValue", (r) => r.int32()],
      ["boolValue", (r) => r.bool()],
      ["int64Value", (r) => r.int64()],
      ["doubleValue", (r) => r.double()],
      ["textValue", (r) => r.string(true)],
      ["bytesValue", (r) => r.bytes()],
      ["numericValue", (r) => r.string(true)],
      ["jsonValue", (r) => r.string(true)],
    ] as const satisfies readonly (readonly [Value["kind"]["case"], (reader: BinaryReader) => unknown])[]
  ).map(([kind, read]) => [numberOf(ValueSchema, kind), { wireType: (tagOf(ValueSchema, kind) & 7) as WireType, case: kind, read }]),
);

/** A Value of a scalar kind; a timestamp or an array is left to `fromBinary`. */
function readValue(reader: BinaryReader): Value {
  const value: Value = { $typeName: "dbgateway.v1.Value", kind: { case: undefined } };
  const end = lengthDelimitedEnd(reader);
  while (reader.pos < end) {
    const [fieldNo, wireType] = reader.tag();
    const kind = VALUE_KINDS.get(fieldNo);
    if (kind === undefined) throw GIVE_UP;
    expect(wireType, kind.wireType);
    value.kind = { case: kind.case, value: kind.read(reader) } as Value["kind"];
  }
  if (reader.pos !== end) throw GIVE_UP;
  return value;
}

/** One entry of the trace_context map (key and value; either may be absent: ""); a later entry for a key wins. */
function readTraceContextEntry(reader: BinaryReader, map: { [key: string]: string }): void {
  const end = lengthDelimitedEnd(reader);
  let key = "";
  let value = "";
  while (reader.pos < end) {
    const [fieldNo, wireType] = reader.tag();
    expect(wireType, WireType.LengthDelimited);
    if (fieldNo === MAP_ENTRY_KEY) key = reader.string(true);
    else if (fieldNo === MAP_ENTRY_VALUE) value = reader.string(true);
    else throw GIVE_UP;
  }
  if (reader.pos !== end) throw GIVE_UP;
  map[key] = value;
}

/** Reads a length prefix and returns where its content ends (within the buffer, or `fromBinary` decides). */
function lengthDelimitedEnd(reader: BinaryReader): number {
  const end = reader.uint32() + reader.pos;
  if (end > reader.len) throw GIVE_UP;
  return end;
}
