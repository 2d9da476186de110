// The SDK's hand decoding of result messages and rows: what protobuf-es gives, with the same fallback and the same errors.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import {
  BatchResponseSchema,
  QueryManyResponseSchema,
  QueryResponseSchema,
  QueryStreamResponseSchema,
  StreamQueryResponseSchema,
  TransactionResponseSchema,
} from "../src/gen/dbgateway/v1/query_service_pb.js";
import { ColumnSchema, type ResultSetSchema } from "../src/gen/dbgateway/v1/values_pb.js";
import { decodeByHand, decoderFor } from "../src/codecs.js";
import { rowBytesOf } from "../src/row-decoding.js";
import { RowDecoder } from "../../client-sdk/src/result.js";
import { typeParsers } from "../../client-sdk/src/type-parsers.js";

/** The init form only (not a built message): its parts can be spread into another init. */
type ResultSetInit = Exclude<MessageInitShape<typeof ResultSetSchema>, MessageShape<typeof ResultSetSchema>>;

const texts = ["", "a", "ünïcødé ✓ 𝄞", "x".repeat(127), "y".repeat(128), "z".repeat(70_000), "line\nbreak\0nul"];

/** A result with every field set, values of every length class, NULLs, and extreme numbers. */
function resultSet(seed: number): ResultSetInit {
  return {
    columns: [
      { name: "id", typeOid: 23, typeModifier: -1, tableOid: 4_294_967_295, columnNumber: 1 },
      { name: "nöte", typeOid: 25, typeModifier: 2_147_483_647, tableOid: 16_384, columnNumber: 32_767 },
      {},
    ],
    rows: Array.from({ length: seed % 4 }, (_, r) => ({
      values: [
        { kind: { case: "stringValue" as const, value: texts[(seed + r) % texts.length]! } },
        { kind: { case: "nullValue" as const, value: 0 } },
        { kind: { case: "stringValue" as const, value: String(seed * r) } },
      ],
    })),
    command: seed % 2 ? "SELECT" : "",
    rowsAffected: [0n, 1n, 127n, 128n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n + 1n, 2n ** 64n - 1n][seed % 8]!,
    executionTime: seed % 3 === 0 ? undefined : { seconds: BigInt(seed) * 1_000_000_007n, nanos: 999_999_999 - seed },
  };
}

/** Asserts that the hand-written decoder decodes `message` by itself, to exactly what protobuf-es decodes. */
function assertSameAsProtobufEs<S extends DescMessage>(schema: S, message: MessageInitShape<S>): void {
  // grpc-js hands the decoder Buffers (so bytes fields, as in an error's details, are Buffers too).
  const bytes = Buffer.from(toBinary(schema, create(schema, message)));
  const byHand = decodeByHand(schema.typeName, bytes);
  assert.ok(byHand !== undefined, `${schema.typeName} was left to fromBinary`);
  assert.deepStrictEqual(byHand, fromBinary(schema, bytes));
  // A Uint8Array that is not a Buffer, at an offset in a larger buffer.
  const shifted = new Uint8Array(bytes.length + 3).subarray(3);
  shifted.set(bytes);
  assert.deepStrictEqual(decodeByHand(schema.typeName, shifted), fromBinary(schema, bytes));
}

describe("decoding result messages by hand", () => {
  it("gives what protobuf-es gives, for every result message", () => {
    for (let seed = 0; seed < 24; seed++) {
      assertSameAsProtobufEs(QueryResponseSchema, { result: resultSet(seed) });
      assertSameAsProtobufEs(TransactionResponseSchema, { kind: { case: "result", value: resultSet(seed) } });
      const results = [
        { outcome: { case: "result" as const, value: resultSet(seed) } },
        {
          outcome: {
            case: "error" as const,
            value: { code: 3, message: "invalid input syntax", details: [{ typeUrl: "type.googleapis.com/x", value: new Uint8Array([1, 2]) }] },
          },
        },
        { outcome: { case: "result" as const, value: resultSet(seed + 1) } },
        {},
      ];
      assertSameAsProtobufEs(QueryManyResponseSchema, { results });
      assertSameAsProtobufEs(BatchResponseSchema, { results });
      const numbers = [0n, 1n, 127n, 128n, 2n ** 32n, 2n ** 53n - 1n];
      assertSameAsProtobufEs(QueryStreamResponseSchema, { answers: results.map((r, i) => ({ query: numbers[(seed + i) % numbers.length]!, ...r })) });
      const { columns, rows, command, rowsAffected, executionTime } = resultSet(seed);
      assertSameAsProtobufEs(StreamQueryResponseSchema, {
        columns: seed % 2 ? columns : [],
        rows,
        summary: seed % 3 ? { command, rowsAffected, executionTime } : undefined,
      });
    }
    assertSameAsProtobufEs(QueryResponseSchema, {});
    assertSameAsProtobufEs(StreamQueryResponseSchema, {});
    assertSameAsProtobufEs(QueryManyResponseSchema, { results: [] });
    assertSameAsProtobufEs(QueryStreamResponseSchema, { answers: [] });
  });

  it("decodes numbers and booleans in values, and negative durations", () => {
    assertSameAsProtobufEs(StreamQueryResponseSchema, {
      rows: [
        {
          values: [
            { kind: { case: "numberValue", value: -1.5e300 } },
            { kind: { case: "boolValue", value: true } },
            { kind: { case: "boolValue", value: false } },
            {},
          ],
        },
      ],
      summary: { executionTime: { seconds: -5n, nanos: -7 } },
    });
  });

  it("reads rows from their bytes into the objects and arrays made from protobuf-es's ListValues", () => {
    const parserFor = (oid: number) => (oid === 23 ? (text: string) => Number(text) * 2 : (text: string) => `<${text}>`);
    const check = (
      schema: typeof QueryResponseSchema | typeof StreamQueryResponseSchema,
      init: MessageInitShape<typeof QueryResponseSchema> | MessageInitShape<typeof StreamQueryResponseSchema>,
    ) => {
      const bytes = Buffer.from(toBinary(schema, create(schema, init as never)));
      const byHand = decodeByHand(schema.typeName, bytes) as { result?: { columns: never[]; rows: never[] }; columns?: never[]; rows?: never[] };
      const reference = fromBinary(schema, bytes) as typeof byHand;
      const [hand, ref] =
        schema === QueryResponseSchema
          ? [byHand.result!, reference.result!]
          : [byHand as { columns: never[]; rows: never[] }, reference as { columns: never[]; rows: never[] }];
      // Results of 16 rows or more are read from their bytes; smaller ones through ListValues.
      assert.equal(rowBytesOf(hand) !== undefined, ref.rows.length >= 16);
      const decoder = new RowDecoder(ref.columns, parserFor);
      assert.deepStrictEqual(decoder.rowsOf(hand), decoder.rowsOf(ref));
      assert.deepStrictEqual(decoder.rowsOf(hand, "array"), decoder.rowsOf(ref, "array"));
      assert.equal(rowBytesOf(ref), undefined);
      // The whole message, lazy rows included, is what protobuf-es makes.
      assert.deepStrictEqual(byHand, reference);
      return decoder.rowsOf(hand, "array");
    };
    for (let seed = 0; seed < 24; seed++) {
      const { columns, rows, ...rest } = resultSet(seed);
      for (const copies of [1, 6, 16]) {
        const many = Array.from({ length: copies }, () => rows ?? []).flat();
        check(QueryResponseSchema, { result: { columns, rows: many, ...rest } });
        check(StreamQueryResponseSchema, { columns, rows: many });
      }
    }
    // A value that names two kinds counts the last, as protobuf reads a oneof; numbers and bools are not text: null.
    const value = (...fields: [number, number, Uint8Array | number][]) => {
      const writer = new BinaryWriter();
      for (const [field, wireType, content] of fields) {
        writer.tag(field, wireType);
        if (typeof content !== "number") writer.bytes(content);
        else if (wireType === WireType.Bit64) writer.double(content);
        else writer.int32(content);
      }
      return writer.finish();
    };
    const text = (t: string) => new TextEncoder().encode(t);
    const row = new BinaryWriter();
    for (const v of [
      value([3, WireType.LengthDelimited, text("first")], [1, WireType.Varint, 0]),
      value([1, WireType.Varint, 0], [3, WireType.LengthDelimited, text("last")]),
      value([2, WireType.Bit64, 2.5]),
      value([4, WireType.Varint, 1]),
      value(),
      value([3, WireType.LengthDelimited, text("")]),
    ])
      row.tag(1, WireType.LengthDelimited).bytes(v);
    const rowBytes = row.finish();
    const writer = new BinaryWriter();
    for (let i = 0; i < 16; i++) writer.tag(2, WireType.LengthDelimited).bytes(rowBytes);
    const message = writer.finish();
    const columns = Array.from({ length: 6 }, (_, i) => create(ColumnSchema, { name: `c${i}`, typeOid: 25 }));
    const decoded = decodeByHand(StreamQueryResponseSchema.typeName, message) as { rows: never[] };
    assert.ok(rowBytesOf(decoded) !== undefined);
    assert.deepStrictEqual(new RowDecoder(columns, parserFor).rowsOf(decoded, "array"), Array(16).fill([null, "<last>", null, null, null, "<>"]));
    assert.deepStrictEqual(decoded, fromBinary(StreamQueryResponseSchema, message));
  });

  it("reads int2, int4 and oid values from their bytes as parseInt reads their text", () => {
    const texts = [
      "0",
      "-0",
      "7",
      "-32768",
      "32767",
      "-2147483648",
      "2147483647",
      "4294967295",
      "9999999999",
      "12345678901",
      "-",
      "",
      "1e3",
      "12a",
      " 1",
      "+5",
      "٣",
    ];
    const columns = [21, 23, 26].map((typeOid) => create(ColumnSchema, { name: `c${typeOid}`, typeOid }));
    const rows = texts.map((text) => ({ values: columns.map(() => ({ kind: { case: "stringValue" as const, value: text } })) }));
    assert.ok(rows.length >= 16); // read from their bytes
    const bytes = Buffer.from(toBinary(StreamQueryResponseSchema, create(StreamQueryResponseSchema, { columns, rows })));
    const decoder = new RowDecoder(columns, typeParsers("bigint"));
    const decoded = decoder.rowsOf<Record<string, number>>(decodeByHand(StreamQueryResponseSchema.typeName, bytes) as { rows: never[] });
    assert.deepStrictEqual(
      decoded,
      texts.map((text) => ({ c21: parseInt(text, 10), c23: parseInt(text, 10), c26: parseInt(text, 10) })),
    );
    assert.ok(Object.is(decoded[1]!.c23, -0));
  });

  it("leaves to protobuf-es what it was not written for, with the same result", () => {
    // A field a newer gateway might add, on a result, a column and a value.
    const unknown = (schema: DescMessage, init: Record<string, unknown>, field: number) => {
      const writer = new BinaryWriter();
      writer.raw(toBinary(schema, create(schema, init)));
      writer.tag(field, WireType.LengthDelimited).string("new");
      return writer.finish();
    };
    const withUnknown = unknown(QueryResponseSchema, { result: resultSet(5) }, 9);
    assert.equal(decodeByHand(QueryResponseSchema.typeName, withUnknown), undefined);
    assert.deepStrictEqual(decoderFor(QueryResponseSchema)(withUnknown), fromBinary(QueryResponseSchema, withUnknown));
    assert.equal(fromBinary(QueryResponseSchema, withUnknown).$unknown?.length, 1);

    // Other kinds of transaction response, and values that hold structures.
    const begun = toBinary(TransactionResponseSchema, create(TransactionResponseSchema, { kind: { case: "begun", value: {} } }));
    assert.equal(decodeByHand(TransactionResponseSchema.typeName, begun), undefined);
    assert.deepStrictEqual(decoderFor(TransactionResponseSchema)(begun), fromBinary(TransactionResponseSchema, begun));
    const nested = toBinary(
      StreamQueryResponseSchema,
      create(StreamQueryResponseSchema, { rows: [{ values: [{ kind: { case: "listValue", value: { values: [] } } }] }] }),
    );
    assert.equal(decodeByHand(StreamQueryResponseSchema.typeName, nested), undefined);
    assert.deepStrictEqual(decoderFor(StreamQueryResponseSchema)(nested), fromBinary(StreamQueryResponseSchema, nested));
  });

  it("fails on malformed messages exactly as protobuf-es does", () => {
    const bytes = toBinary(QueryResponseSchema, create(QueryResponseSchema, { result: resultSet(7) }));
    for (const cut of [1, 2, 10, bytes.length - 1]) {
      const truncated = bytes.subarray(0, cut);
      assert.equal(decodeByHand(QueryResponseSchema.typeName, truncated), undefined, `cut at ${cut}`);
      assert.throws(
        () => decoderFor(QueryResponseSchema)(truncated),
        (err: Error) => {
          assert.throws(() => fromBinary(QueryResponseSchema, truncated), { message: err.message });
          return true;
        },
      );
    }
  });
});
