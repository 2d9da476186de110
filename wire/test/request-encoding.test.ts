// The SDK's hand-encoded QueryManyRequest and QueryStreamRequest: the bytes protobuf-es's toBinary writes, for every kind of parameter.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { QueryManyRequestSchema, QueryRequestSchema, QueryStreamRequestSchema } from "../src/gen/dbgateway/v1/query_service_pb.js";
import { ValueSchema } from "../src/gen/dbgateway/v1/values_pb.js";
import { encoderFor } from "../src/codecs.js";
import { toValue } from "../../client-sdk/src/values.js";

const PARAMS = [
  null,
  true,
  false,
  0,
  1,
  -1,
  2 ** 53 - 1,
  -(2 ** 53),
  9_223_372_036_854_775_807n,
  -9_223_372_036_854_775_808n,
  0.5,
  -0,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  "",
  "naïve 🐘",
  new Uint8Array([0, 1, 255]),
  new Uint8Array(0),
  new Date(0),
  new Date(-1_234_567),
  new Date("2026-11-24T12:34:56.789Z"),
  [1, [2, null], "x", []],
  { a: 1, b: [true] },
].map(toValue);

describe("request encoding by hand", () => {
  it("writes QueryManyRequest as toBinary does, for every kind of parameter toValue makes", () => {
    const { byHand, encode } = encoderFor(QueryManyRequestSchema);
    assert.equal(byHand, true);
    const inits = [
      { platform: "clinic", queries: [{ tenantId: "t1", sql: "SELECT $1", params: PARAMS }] },
      { platform: "clinic", queries: PARAMS.map((p, i) => ({ tenantId: i % 2 === 0 ? "" : `tenant_${i}`, sql: `SELECT $1 -- ${i}`, params: [p] })) },
      { platform: "", queries: [{ tenantId: "", sql: "", params: [] }] },
      { platform: "p", queries: [] },
      {
        platform: "p",
        queries: [{ sql: "SELECT 1", params: [create(ValueSchema, { kind: { case: "numericValue", value: "-12.5000" } }), create(ValueSchema)] }],
      },
    ];
    for (const init of inits) {
      assert.deepEqual(encode(init), toBinary(QueryManyRequestSchema, create(QueryManyRequestSchema, init)));
    }
  });

  it("writes QueryStreamRequest as toBinary does, with and without a timeout, with and without trace contexts", () => {
    const { byHand, encode } = encoderFor(QueryStreamRequestSchema);
    assert.equal(byHand, true);
    const inits: MessageInitShape<typeof QueryStreamRequestSchema>[] = [
      { platform: "clinic", queries: [{ tenantId: "t1", sql: "SELECT $1", params: PARAMS }], timeoutMs: 0 },
      {
        platform: "clinic",
        queries: PARAMS.map((p, i) => ({ tenantId: i % 2 === 0 ? "" : `tenant_${i}`, sql: `SELECT $1 -- ${i}`, params: [p] })),
        timeoutMs: 250,
      },
      { platform: "p", queries: [{ sql: "SELECT 1" }], timeoutMs: 2 ** 32 - 1 },
      { platform: "", queries: [] },
      {
        platform: "p",
        queries: [
          { sql: "SELECT 1", traceContext: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "congo=t61rcWkgMzE" } },
          { sql: "SELECT 2", traceContext: {} },
          { sql: "SELECT 3", traceContext: { baggage: "", "": "x" } },
        ],
      },
    ];
    for (const init of inits) {
      assert.deepEqual(encode(init), toBinary(QueryStreamRequestSchema, create(QueryStreamRequestSchema, init)));
    }
  });

  it("leaves other requests to protobuf-es", () => {
    const { byHand, encode } = encoderFor(QueryRequestSchema);
    assert.equal(byHand, false);
    const message = create(QueryRequestSchema, { platform: "p", sql: "SELECT 1" });
    assert.deepEqual(encode(message), toBinary(QueryRequestSchema, message));
  });
});
