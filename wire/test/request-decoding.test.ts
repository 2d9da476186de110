// The gateway's hand decoding of QueryStreamRequest and QueryManyRequest: always what fromBinary gives, for random messages too.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { QueryManyRequestSchema, QueryStreamRequestSchema } from "../src/gen/dbgateway/v1/query_service_pb.js";
import { ValueSchema, type Value } from "../src/gen/dbgateway/v1/values_pb.js";
import { decodeByHand, decoderFor } from "../src/codecs.js";

/** Every scalar kind of Value, with edge values, and the kinds left to fromBinary (timestamp, array). */
const PARAMS: Value[] = [
  { case: undefined },
  { case: "nullValue", value: 0 },
  { case: "boolValue", value: true },
  { case: "boolValue", value: false },
  { case: "int64Value", value: 0n },
  { case: "int64Value", value: 1n },
  { case: "int64Value", value: -1n },
  { case: "int64Value", value: 9_223_372_036_854_775_807n },
  { case: "int64Value", value: -9_223_372_036_854_775_808n },
  { case: "doubleValue", value: 0.5 },
  { case: "doubleValue", value: -0 },
  { case: "doubleValue", value: Number.NaN },
  { case: "doubleValue", value: Number.NEGATIVE_INFINITY },
  { case: "textValue", value: "" },
  { case: "textValue", value: "naïve 🐘" },
  { case: "bytesValue", value: new Uint8Array([0, 1, 255]) },
  { case: "bytesValue", value: new Uint8Array(0) },
  { case: "numericValue", value: "-12.50" },
  { case: "jsonValue", value: '{"a":[1,true]}' },
].map((kind) => create(ValueSchema, { kind } as never));
const LEFT_TO_FROM_BINARY: Value[] = [
  create(ValueSchema, { kind: { case: "timestampValue", value: { seconds: 1_700_000_000n, nanos: 123_000 } } }),
  create(ValueSchema, { kind: { case: "arrayValue", value: { values: [PARAMS[5]!, PARAMS[14]!] } } }),
];

const decodeStream = decoderFor(QueryStreamRequestSchema);
const decodeMany = decoderFor(QueryManyRequestSchema);

/** The hand decoder gives what fromBinary gives, whatever the bytes; `byHand`: without leaving it to fromBinary. */
function same(schema: DescMessage, decode: (bytes: Uint8Array) => object, bytes: Uint8Array, what: string, byHand = false): void {
  if (byHand) assert.deepStrictEqual(decodeByHand(schema.typeName, bytes), fromBinary(schema, bytes), `${what}: decoded by hand`);
  let expected: unknown;
  try {
    expected = fromBinary(schema, bytes);
  } catch (err) {
    assert.throws(() => decode(bytes), { message: (err as Error).message }, `${what}: fromBinary fails, so must the hand decoder`);
    return;
  }
  assert.deepStrictEqual(decode(bytes), expected, what);
}

describe("request decoding by hand", () => {
  it("reads QueryStreamRequest and QueryManyRequest as fromBinary does, for every scalar kind of parameter", () => {
    const queries = [
      { tenantId: "t1", sql: "SELECT $1", params: PARAMS },
      { tenantId: "", sql: "SELECT 1", params: [] },
      {
        tenantId: "t2",
        sql: "SELECT $1, $2",
        params: PARAMS.slice(3, 5),
        traceContext: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "" },
      },
    ];
    for (const timeoutMs of [0, 1, 30_000, 2 ** 32 - 1]) {
      const bytes = toBinary(QueryStreamRequestSchema, create(QueryStreamRequestSchema, { platform: "clinic", queries, timeoutMs }));
      same(QueryStreamRequestSchema, decodeStream, bytes, `QueryStreamRequest, timeout ${timeoutMs}`, true);
    }
    same(
      QueryManyRequestSchema,
      decodeMany,
      toBinary(QueryManyRequestSchema, create(QueryManyRequestSchema, { platform: "clinic", queries })),
      "QueryManyRequest",
      true,
    );
    same(QueryStreamRequestSchema, decodeStream, new Uint8Array(0), "an empty message", true);
  });

  it("leaves timestamps, arrays, unknown fields and odd encodings to fromBinary, with the same result", () => {
    for (const param of LEFT_TO_FROM_BINARY) {
      const bytes = toBinary(
        QueryStreamRequestSchema,
        create(QueryStreamRequestSchema, { platform: "p", queries: [{ tenantId: "t", sql: "SELECT $1, $2", params: [PARAMS[6]!, param] }] }),
      );
      same(QueryStreamRequestSchema, decodeStream, bytes, `a ${param.kind.case} parameter`);
    }
    const w = () => new BinaryWriter();
    const query = w().tag(1, WireType.LengthDelimited).string("t").tag(2, WireType.LengthDelimited).string("SELECT 1").finish();
    // [what, bytes, decoded by hand]
    const cases: [string, Uint8Array, boolean?][] = [
      [
        "an unknown field in the request",
        w().tag(1, WireType.LengthDelimited).string("p").tag(9, WireType.Varint).uint32(7).tag(2, WireType.LengthDelimited).bytes(query).finish(),
      ],
      [
        "an unknown field in a query",
        w().tag(2, WireType.LengthDelimited).bytes(w().tag(1, WireType.LengthDelimited).string("t").tag(12, WireType.Bit32).fixed32(1).finish()).finish(),
      ],
      [
        "an unknown field in a parameter",
        w()
          .tag(2, WireType.LengthDelimited)
          .bytes(w().tag(3, WireType.LengthDelimited).bytes(w().tag(3, WireType.Varint).int64(5n).tag(20, WireType.Varint).uint32(1).finish()).finish())
          .finish(),
      ],
      ["a varint where a string belongs", w().tag(1, WireType.Varint).uint32(5).finish()],
      [
        "two kinds in one parameter (the last wins)",
        w()
          .tag(2, WireType.LengthDelimited)
          .bytes(
            w().tag(3, WireType.LengthDelimited).bytes(w().tag(3, WireType.Varint).int64(5n).tag(5, WireType.LengthDelimited).string("x").finish()).finish(),
          )
          .finish(),
        true,
      ],
      [
        "fields out of order, a platform twice (the last wins)",
        w()
          .tag(3, WireType.Varint)
          .uint32(10)
          .tag(2, WireType.LengthDelimited)
          .bytes(query)
          .tag(1, WireType.LengthDelimited)
          .string("a")
          .tag(1, WireType.LengthDelimited)
          .string("b")
          .finish(),
        true,
      ],
      [
        "a trace-context entry without a key, one for __proto__, and a key twice",
        w()
          .tag(2, WireType.LengthDelimited)
          .bytes(
            w()
              .tag(4, WireType.LengthDelimited)
              .bytes(w().tag(2, WireType.LengthDelimited).string("v0").finish())
              .tag(4, WireType.LengthDelimited)
              .bytes(w().tag(1, WireType.LengthDelimited).string("__proto__").tag(2, WireType.LengthDelimited).string("x").finish())
              .tag(4, WireType.LengthDelimited)
              .bytes(w().tag(1, WireType.LengthDelimited).string("k").tag(2, WireType.LengthDelimited).string("1").finish())
              .tag(4, WireType.LengthDelimited)
              .bytes(w().tag(1, WireType.LengthDelimited).string("k").tag(2, WireType.LengthDelimited).string("2").finish())
              .finish(),
          )
          .finish(),
        true,
      ],
      [
        "invalid UTF-8 in the SQL",
        w()
          .tag(2, WireType.LengthDelimited)
          .bytes(
            w()
              .tag(2, WireType.LengthDelimited)
              .bytes(new Uint8Array([0x53, 0xff, 0xfe]))
              .finish(),
          )
          .finish(),
      ],
      ["a length past the end", new Uint8Array([0x12, 0x40, 0x0a, 0x01, 0x74])],
      [
        "a query's length past its own fields",
        w()
          .tag(2, WireType.LengthDelimited)
          .bytes(new Uint8Array([0x0a, 0x05, 0x74]))
          .finish(),
      ],
      ["a truncated varint", new Uint8Array([0x18, 0xff])],
      ["an illegal tag", new Uint8Array([0x00])],
    ];
    for (const [what, bytes, byHand] of cases) {
      same(QueryStreamRequestSchema, decodeStream, bytes, what, byHand);
      same(QueryManyRequestSchema, decodeMany, bytes, what); // its queries are field 4: 2 and 3 are unknown there
    }
  });

  it("reads random messages as fromBinary does", () => {
    let seed = 7;
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
    for (let i = 0; i < 300; i++) {
      const queries = Array.from({ length: Math.floor(random() * 5) }, () => ({
        tenantId: pick(["", "t1", "tenant-42"]),
        sql: pick(["SELECT 1", "SELECT $1", "UPDATE items SET note = $2 WHERE id = $1"]),
        params: Array.from({ length: Math.floor(random() * 4) }, () => pick(random() < 0.9 ? PARAMS : LEFT_TO_FROM_BINARY)),
        traceContext: (random() < 0.3 ? { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } : {}) as Record<string, string>,
      }));
      const stream = toBinary(
        QueryStreamRequestSchema,
        create(QueryStreamRequestSchema, { platform: pick(["", "clinic"]), queries, timeoutMs: Math.floor(random() * 60_000) }),
      );
      const scalarsOnly = queries.every((q) => q.params.every((p) => PARAMS.includes(p)));
      same(QueryStreamRequestSchema, decodeStream, stream, `random QueryStreamRequest ${i}`, scalarsOnly);
      // Cut short at a random place: malformed, or a shorter valid message.
      same(QueryStreamRequestSchema, decodeStream, stream.subarray(0, Math.floor(random() * stream.length)), `random QueryStreamRequest ${i}, cut short`);
      const many = toBinary(QueryManyRequestSchema, create(QueryManyRequestSchema, { platform: "clinic", queries }));
      same(QueryManyRequestSchema, decodeMany, many, `random QueryManyRequest ${i}`, scalarsOnly);
    }
  });
});
