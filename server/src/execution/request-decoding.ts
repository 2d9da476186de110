import { fromBinary, type DescMessage } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { QueryManyRequest, QueryStreamRequest, TenantQuery } from "../gen/dbgateway/v1/query_service_pb.js";
import type { Value } from "../gen/dbgateway/v1/values_pb.js";

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
  ["dbgateway.v1.QueryStreamRequest", decodeQueryStreamRequest],
  ["dbgateway.v1.QueryManyRequest", decodeQueryManyRequest],
]);

/** The decoder of a request message: by hand where there is one, else `fromBinary`. */
export function decoderFor(schema: DescMessage): (bytes: Uint8Array) => object {
  if (!DECODERS.has(schema.typeName)) return (bytes) => fromBinary(schema, bytes);
  return (bytes) => decodeByHand(schema.typeName, bytes) ?? fromBinary(schema, bytes);
}

/**
 * The message decoded by hand, or undefined where it is left to `fromBinary`
 * (no hand decoder for the type, something unexpected, or malformed bytes,
 * which `fromBinary` then fails on as it always has).
 */
export function decodeByHand(typeName: string, bytes: Uint8Array): object | undefined {
  const decode = DECODERS.get(typeName);
  if (decode === undefined) return undefined;
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

/** QueryStreamRequest { string platform = 1; repeated TenantQuery queries = 2; uint32 timeout_ms = 3 }. */
function decodeQueryStreamRequest(bytes: Uint8Array): QueryStreamRequest {
  const message: QueryStreamRequest = { $typeName: "dbgateway.v1.QueryStreamRequest", platform: "", queries: [], timeoutMs: 0 };
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1) {
      expect(wireType, WireType.LengthDelimited);
      message.platform = reader.string(true);
    } else if (fieldNo === 2) {
      expect(wireType, WireType.LengthDelimited);
      message.queries.push(readTenantQuery(reader));
    } else if (fieldNo === 3) {
      expect(wireType, WireType.Varint);
      message.timeoutMs = reader.uint32();
    } else {
      throw unexpected;
    }
  }
  if (reader.pos !== reader.len) throw unexpected;
  return message;
}

/** QueryManyRequest { string platform = 1; repeated TenantQuery queries = 4 }. */
function decodeQueryManyRequest(bytes: Uint8Array): QueryManyRequest {
  const message: QueryManyRequest = { $typeName: "dbgateway.v1.QueryManyRequest", platform: "", queries: [] };
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1) {
      expect(wireType, WireType.LengthDelimited);
      message.platform = reader.string(true);
    } else if (fieldNo === 4) {
      expect(wireType, WireType.LengthDelimited);
      message.queries.push(readTenantQuery(reader));
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

/** A Value of a scalar kind; a timestamp or an array is left to `fromBinary`. */
function readValue(reader: BinaryReader): Value {
  const value: Value = { $typeName: "dbgateway.v1.Value", kind: { case: undefined } };
  const end = lengthDelimitedEnd(reader);
  while (reader.pos < end) {
    const [fieldNo, wireType] = reader.tag();
    switch (fieldNo) {
      case 1:
        expect(wireType, WireType.Varint);
        value.kind = { case: "nullValue", value: reader.int32() };
        break;
      case 2:
        expect(wireType, WireType.Varint);
        value.kind = { case: "boolValue", value: reader.bool() };
        break;
      case 3:
        expect(wireType, WireType.Varint);
        value.kind = { case: "int64Value", value: reader.int64() as bigint };
        break;
      case 4:
        expect(wireType, WireType.Bit64);
        value.kind = { case: "doubleValue", value: reader.double() };
        break;
      case 5:
        expect(wireType, WireType.LengthDelimited);
        value.kind = { case: "textValue", value: reader.string(true) };
        break;
      case 6:
        expect(wireType, WireType.LengthDelimited);
        value.kind = { case: "bytesValue", value: reader.bytes() };
        break;
      case 7:
        expect(wireType, WireType.LengthDelimited);
        value.kind = { case: "numericValue", value: reader.string(true) };
        break;
      case 8:
        expect(wireType, WireType.LengthDelimited);
        value.kind = { case: "jsonValue", value: reader.string(true) };
        break;
      default:
        throw unexpected;
    }
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
