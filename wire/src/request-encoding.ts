// QueryManyRequest and QueryStreamRequest, the SDK's hot paths, encoded by hand into the bytes protobuf-es's toBinary writes.
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { QueryManyRequestSchema, QueryStreamRequestSchema, TenantQuerySchema } from "./gen/dbgateway/v1/query_service_pb.js";
import { ValueListSchema, ValueSchema, type Value } from "./gen/dbgateway/v1/values_pb.js";
import { MAP_ENTRY_KEY, MAP_ENTRY_VALUE, tagOf } from "./field-tags.js";

/**
 * Request messages encoded by hand from their init shape, without building
 * message objects or walking their descriptors: protobuf-es's `create` and
 * reflective `toBinary` cost the SDK a few microseconds per query of a
 * coalesced QueryMany call (BENCHMARKS.md). Only QueryManyRequest and
 * QueryStreamRequest, the hot paths, are encoded so (`encoderFor` in
 * codecs.ts); the output is the bytes `toBinary` writes (checked in
 * wire/test/request-encoding.test.ts). Parameter values are those the SDK's
 * `toValue` builds.
 */
export const requestEncoders = new Map<string, (init: object) => Uint8Array>([
  [QueryManyRequestSchema.typeName, (init) => encodeQueryManyRequest(init as QueryManyInit)],
  [QueryStreamRequestSchema.typeName, (init) => encodeQueryStreamRequest(init as QueryStreamInit)],
]);

type QueryManyInit = MessageInitShape<typeof QueryManyRequestSchema>;
type QueryStreamInit = MessageInitShape<typeof QueryStreamRequestSchema>;
type TenantQueryInit = NonNullable<QueryManyInit["queries"]>[number];

// Tags from the generated descriptors, once.
const MANY_REQUEST = { platform: tagOf(QueryManyRequestSchema, "platform"), queries: tagOf(QueryManyRequestSchema, "queries") };
const STREAM_REQUEST = {
  platform: tagOf(QueryStreamRequestSchema, "platform"),
  queries: tagOf(QueryStreamRequestSchema, "queries"),
  timeoutMs: tagOf(QueryStreamRequestSchema, "timeoutMs"),
};
const TENANT_QUERY = {
  tenantId: tagOf(TenantQuerySchema, "tenantId"),
  sql: tagOf(TenantQuerySchema, "sql"),
  params: tagOf(TenantQuerySchema, "params"),
  traceContext: tagOf(TenantQuerySchema, "traceContext"),
};
/** A map<string, string> entry's key and value: both length-delimited. */
const MAP_KEY = (MAP_ENTRY_KEY << 3) | WireType.LengthDelimited;
const MAP_VALUE = (MAP_ENTRY_VALUE << 3) | WireType.LengthDelimited;
const VALUE = {
  nullValue: tagOf(ValueSchema, "nullValue"),
  boolValue: tagOf(ValueSchema, "boolValue"),
  int64Value: tagOf(ValueSchema, "int64Value"),
  doubleValue: tagOf(ValueSchema, "doubleValue"),
  textValue: tagOf(ValueSchema, "textValue"),
  bytesValue: tagOf(ValueSchema, "bytesValue"),
  numericValue: tagOf(ValueSchema, "numericValue"),
  jsonValue: tagOf(ValueSchema, "jsonValue"),
  timestampValue: tagOf(ValueSchema, "timestampValue"),
  arrayValue: tagOf(ValueSchema, "arrayValue"),
};
const TIMESTAMP = { seconds: tagOf(TimestampSchema, "seconds"), nanos: tagOf(TimestampSchema, "nanos") };
const ARRAY_VALUES = tagOf(ValueListSchema, "values");

/** QueryManyRequest { platform; repeated TenantQuery queries }. */
function encodeQueryManyRequest(init: QueryManyInit): Uint8Array {
  const w = new BinaryWriter();
  if (init.platform) w.uint32(MANY_REQUEST.platform).string(init.platform);
  writeQueries(w, MANY_REQUEST.queries, init.queries ?? []);
  return w.finish();
}

/**
 * QueryStreamRequest { platform; repeated TenantQuery queries; uint32 timeout_ms;
 * repeated BatchRequest batches; repeated StreamTransactionRequest transactions }:
 * the first three by hand, the batches and transactions (later field numbers,
 * so written after them, as toBinary orders fields) by toBinary.
 */
function encodeQueryStreamRequest(init: QueryStreamInit): Uint8Array {
  const w = new BinaryWriter();
  if (init.platform) w.uint32(STREAM_REQUEST.platform).string(init.platform);
  writeQueries(w, STREAM_REQUEST.queries, init.queries ?? []);
  if (init.timeoutMs) w.uint32(STREAM_REQUEST.timeoutMs).uint32(init.timeoutMs);
  if (init.batches?.length || init.transactions?.length)
    w.raw(toBinary(QueryStreamRequestSchema, create(QueryStreamRequestSchema, { batches: init.batches, transactions: init.transactions })));
  return w.finish();
}

/** TenantQuery { tenant_id; sql; repeated Value params; map<string, string> trace_context }, each with the tag `tag`. */
function writeQueries(w: BinaryWriter, tag: number, queries: readonly TenantQueryInit[]): void {
  for (const query of queries) {
    w.uint32(tag).fork();
    if (query.tenantId) w.uint32(TENANT_QUERY.tenantId).string(query.tenantId);
    if (query.sql) w.uint32(TENANT_QUERY.sql).string(query.sql);
    for (const param of query.params ?? []) {
      w.uint32(TENANT_QUERY.params).fork();
      writeValue(w, param as Value);
      w.join();
    }
    const traceContext = query.traceContext;
    if (traceContext !== undefined) {
      // A map entry: a message { key; value }, each written even when empty (as toBinary does).
      for (const [key, value] of Object.entries(traceContext))
        w.uint32(TENANT_QUERY.traceContext).fork().uint32(MAP_KEY).string(key).uint32(MAP_VALUE).string(value).join();
    }
    w.join();
  }
}

/** The fields of a dbgateway.v1.Value (a oneof: the member set is written even at its default). */
function writeValue(w: BinaryWriter, value: Value): void {
  const { kind } = value;
  switch (kind.case) {
    case "nullValue":
      w.uint32(VALUE.nullValue).int32(kind.value);
      return;
    case "boolValue":
      w.uint32(VALUE.boolValue).bool(kind.value);
      return;
    case "int64Value":
      w.uint32(VALUE.int64Value).int64(kind.value);
      return;
    case "doubleValue":
      w.uint32(VALUE.doubleValue).double(kind.value);
      return;
    case "textValue":
      w.uint32(VALUE.textValue).string(kind.value);
      return;
    case "bytesValue":
      w.uint32(VALUE.bytesValue).bytes(kind.value);
      return;
    case "numericValue":
      w.uint32(VALUE.numericValue).string(kind.value);
      return;
    case "jsonValue":
      w.uint32(VALUE.jsonValue).string(kind.value);
      return;
    case "timestampValue":
      w.uint32(VALUE.timestampValue).fork();
      if (kind.value.seconds !== 0n) w.uint32(TIMESTAMP.seconds).int64(kind.value.seconds);
      if (kind.value.nanos !== 0) w.uint32(TIMESTAMP.nanos).int32(kind.value.nanos);
      w.join();
      return;
    case "arrayValue":
      w.uint32(VALUE.arrayValue).fork();
      for (const element of kind.value.values) {
        w.uint32(ARRAY_VALUES).fork();
        writeValue(w, element);
        w.join();
      }
      w.join();
      return;
    case undefined:
      return;
  }
}
