// QueryManyRequest and QueryStreamRequest, the SDK's hot paths, encoded by hand into the bytes protobuf-es's toBinary writes.
import { toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { QueryManyRequestSchema, QueryStreamRequestSchema } from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { Value } from "../../wire/src/gen/dbgateway/v1/values_pb.js";

/**
 * Request messages encoded by hand from their init shape, without building
 * message objects or walking their descriptors: protobuf-es's `create` and
 * reflective `toBinary` cost the SDK a few microseconds per query of a
 * coalesced QueryMany call (BENCHMARKS.md). Only QueryManyRequest and
 * QueryStreamRequest, the hot paths, are encoded so; the output is the bytes `toBinary` writes (checked in
 * client-sdk/test/request-encoding.test.ts). Parameter values are those
 * `toValue` builds.
 */
const ENCODERS = new Map<string, (init: object) => Uint8Array>([
  ["dbgateway.v1.QueryManyRequest", (init) => encodeQueryManyRequest(init as QueryManyInit)],
  ["dbgateway.v1.QueryStreamRequest", (init) => encodeQueryStreamRequest(init as QueryStreamInit)],
]);

type QueryManyInit = MessageInitShape<typeof QueryManyRequestSchema>;
type QueryStreamInit = MessageInitShape<typeof QueryStreamRequestSchema>;
type TenantQueryInit = NonNullable<QueryManyInit["queries"]>[number];

/**
 * The encoder of a request message from its init shape: by hand where there
 * is one (then `byHand` is true and the init shape need not be made into a
 * message first), else protobuf-es's `toBinary` of the message.
 */
export function encoderFor(schema: DescMessage): { byHand: boolean; encode: (message: object) => Uint8Array } {
  const byHand = ENCODERS.get(schema.typeName);
  if (byHand !== undefined) return { byHand: true, encode: byHand };
  return { byHand: false, encode: (message) => toBinary(schema, message as never) };
}

/** QueryManyRequest { platform = 1; repeated TenantQuery queries = 4 }. */
function encodeQueryManyRequest(init: QueryManyInit): Uint8Array {
  const w = new BinaryWriter();
  if (init.platform) w.tag(1, WireType.LengthDelimited).string(init.platform);
  writeQueries(w, 4, init.queries ?? []);
  return w.finish();
}

/** QueryStreamRequest { platform = 1; repeated TenantQuery queries = 2; uint32 timeout_ms = 3 }. */
function encodeQueryStreamRequest(init: QueryStreamInit): Uint8Array {
  const w = new BinaryWriter();
  if (init.platform) w.tag(1, WireType.LengthDelimited).string(init.platform);
  writeQueries(w, 2, init.queries ?? []);
  if (init.timeoutMs) w.tag(3, WireType.Varint).uint32(init.timeoutMs);
  return w.finish();
}

/** TenantQuery { tenant_id = 1; sql = 2; repeated Value params = 3; map<string, string> trace_context = 4 }, each as field `field`. */
function writeQueries(w: BinaryWriter, field: number, queries: readonly TenantQueryInit[]): void {
  for (const query of queries) {
    w.tag(field, WireType.LengthDelimited).fork();
    if (query.tenantId) w.tag(1, WireType.LengthDelimited).string(query.tenantId);
    if (query.sql) w.tag(2, WireType.LengthDelimited).string(query.sql);
    for (const param of query.params ?? []) {
      w.tag(3, WireType.LengthDelimited).fork();
      writeValue(w, param as Value);
      w.join();
    }
    const traceContext = query.traceContext;
    if (traceContext !== undefined) {
      // A map entry: a message { key = 1; value = 2 }, each written even when empty (as toBinary does).
      for (const [key, value] of Object.entries(traceContext))
        w.tag(4, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(key).tag(2, WireType.LengthDelimited).string(value).join();
    }
    w.join();
  }
}

/** The fields of a dbgateway.v1.Value (a oneof: the member set is written even at its default). */
function writeValue(w: BinaryWriter, value: Value): void {
  const { kind } = value;
  switch (kind.case) {
    case "nullValue":
      w.tag(1, WireType.Varint).int32(kind.value);
      return;
    case "boolValue":
      w.tag(2, WireType.Varint).bool(kind.value);
      return;
    case "int64Value":
      w.tag(3, WireType.Varint).int64(kind.value);
      return;
    case "doubleValue":
      w.tag(4, WireType.Bit64).double(kind.value);
      return;
    case "textValue":
      w.tag(5, WireType.LengthDelimited).string(kind.value);
      return;
    case "bytesValue":
      w.tag(6, WireType.LengthDelimited).bytes(kind.value);
      return;
    case "numericValue":
      w.tag(7, WireType.LengthDelimited).string(kind.value);
      return;
    case "jsonValue":
      w.tag(8, WireType.LengthDelimited).string(kind.value);
      return;
    case "timestampValue":
      w.tag(9, WireType.LengthDelimited).fork();
      if (kind.value.seconds !== 0n) w.tag(1, WireType.Varint).int64(kind.value.seconds);
      if (kind.value.nanos !== 0) w.tag(2, WireType.Varint).int32(kind.value.nanos);
      w.join();
      return;
    case "arrayValue":
      w.tag(10, WireType.LengthDelimited).fork();
      for (const element of kind.value.values) {
        w.tag(1, WireType.LengthDelimited).fork();
        writeValue(w, element);
        w.join();
      }
      w.join();
      return;
    case undefined:
      return;
  }
}
