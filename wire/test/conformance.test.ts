// Every hand codec against protobuf-es, both ways, on seeded random messages, every truncation of them, and odd but valid encodings of them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import {
  BatchResponseSchema,
  QueryManyRequestSchema,
  QueryManyResponseSchema,
  QueryResponseSchema,
  QueryStreamRequestSchema,
  QueryStreamResponseSchema,
  TransactionResponseSchema,
} from "../src/gen/dbgateway/v1/query_service_pb.js";
import { ColumnSchema, ResultSetSchema } from "../src/gen/dbgateway/v1/values_pb.js";
import { StatusSchema, type Status } from "../src/gen/google/rpc/status_pb.js";
import { decodeByHand, decoderFor, encoderFor } from "../src/codecs.js";
import {
  encodeAnswers,
  encodeQueryResponse,
  encodeResults,
  encodeTransactionResult,
  type Outcome,
  type StreamOutcome,
  type TransactionAnswer,
} from "../src/response-encoding.js";
import { encodeResultSet, toResultSet, type ResultField, type TextResult } from "../src/result-set.js";
import { encodeRows, RowChunker, STREAM_QUERY_ROWS, type TextRow } from "../src/row-encoding.js";
import { rowBytesOf } from "../src/row-decoding.js";
import { RowDecoder } from "../../client-sdk/src/result.js";
import { typeParsers } from "../../client-sdk/src/type-parsers.js";
import { rewrite, type Oddities } from "./helpers/odd-encodings.js";
import { allByHand, DECODED, Random, randomManyRequest, randomResultSet, randomStatus, randomStreamRequest } from "./helpers/random-messages.js";

/** Each seed makes one random message of each type; a failure names its seed. */
const SEEDS = Array.from({ length: 150 }, (_, i) => i + 1);

/** A random ResultSet, as a message. */
const resultSetOf = (r: Random) => create(ResultSetSchema, randomResultSet(r));

/** Columns enough for every row of `message`, half of them int4 (read straight from the bytes), to read its rows through. */
function rowsThrough(message: object): unknown[] | undefined {
  const withRows = "rows" in message ? (message as { rows: { values: unknown[] }[] }) : (message as { result?: { rows: { values: unknown[] }[] } }).result;
  if (withRows === undefined) return undefined;
  const width = Math.max(0, ...withRows.rows.map((row) => row.values.length));
  const columns = Array.from({ length: width }, (_, i) => create(ColumnSchema, { name: `c${i}`, typeOid: i % 2 ? 23 : 25 }));
  return new RowDecoder(columns, typeParsers("bigint")).rowsOf(withRows as never, "array");
}

/**
 * `bytes` decoded by hand and by the codec as protobuf-es decodes them: the
 * same message (rows read straight from the bytes included), or the same
 * error; never a crash of the hand decoder itself.
 */
function decodesAsProtobufEs(schema: DescMessage, bytes: Uint8Array, what: string, mustBeByHand = false): void {
  let expected: object | undefined;
  let expectedError: Error | undefined;
  try {
    expected = fromBinary(schema, bytes);
  } catch (err) {
    expectedError = err as Error;
  }
  let byHand: object | undefined;
  assert.doesNotThrow(() => (byHand = decodeByHand(schema.typeName, bytes)), `${what}: the hand decoder throws instead of leaving the bytes to fromBinary`);
  if (mustBeByHand) assert.ok(byHand !== undefined, `${what}: left to fromBinary`);
  if (byHand !== undefined) {
    assert.equal(expectedError, undefined, `${what}: decoded by hand, but fromBinary fails (${expectedError?.message})`);
    assert.deepStrictEqual(byHand, expected, `${what}: decoded by hand`);
    if (rowBytesOf((byHand as { result?: object }).result ?? byHand) !== undefined) {
      assert.deepStrictEqual(rowsThrough(byHand), rowsThrough(expected!), `${what}: rows read from the bytes`);
    }
  }
  const decode = decoderFor(schema);
  if (expectedError !== undefined) {
    assert.throws(
      () => decode(bytes),
      (err: unknown) => err instanceof Error && err.message === expectedError.message,
      `${what}: not fromBinary's error`,
    );
  } else {
    assert.deepStrictEqual(decode(bytes), expected, what);
  }
}

describe("the wire codecs against protobuf-es", () => {
  it("decode random messages of every hand-decoded type by hand, as fromBinary does", () => {
    for (const seed of SEEDS) {
      for (const { schema, random } of DECODED) {
        const r = new Random(seed);
        const init = random(r);
        const bytes = Buffer.from(toBinary(schema, create(schema, init as never)));
        decodesAsProtobufEs(schema, bytes, `${schema.typeName}, seed ${seed}`, allByHand(schema, init));
      }
    }
  });

  it("encode random requests by hand into the bytes toBinary writes, which fromBinary reads back", () => {
    for (const seed of SEEDS) {
      const r = new Random(seed);
      for (const [schema, init] of [
        [QueryStreamRequestSchema, randomStreamRequest(r)],
        [QueryManyRequestSchema, randomManyRequest(r)],
      ] as const) {
        const { byHand, encode } = encoderFor(schema);
        assert.ok(byHand);
        const bytes = encode(init);
        assert.deepEqual(bytes, toBinary(schema, create(schema, init as never)), `${schema.typeName}, seed ${seed}`);
        assert.deepStrictEqual(fromBinary(schema, bytes), fromBinary(schema, toBinary(schema, create(schema, init as never))));
      }
    }
  });

  it("encode random result sets, rows, chunks and responses by hand into the bytes toBinary writes", () => {
    for (const seed of SEEDS) {
      const r = new Random(seed);
      const width = r.int(5);
      const fields: ResultField[] = Array.from({ length: width }, () => ({
        name: r.text(),
        dataTypeID: r.u32(),
        dataTypeModifier: r.i32(),
        tableID: r.u32(),
        columnID: r.pick([0, 1, 32_767]),
      }));
      const rows: TextRow[] = r.array(20, () => Array.from({ length: width }, () => (r.chance(0.2) ? null : r.text())));
      const result: TextResult = { fields, rows, command: r.pick(["", "SELECT", "UPDATE"]), rowCount: r.pick([0, 1, 2 ** 32, 2 ** 53 - 1]) };
      const elapsed = BigInt(r.int(2 ** 31)) * BigInt(r.int(1_000));
      const what = `seed ${seed}`;
      const encoded = encodeResultSet(result, elapsed);
      assert.deepEqual(new Uint8Array(encoded), toBinary(ResultSetSchema, toResultSet(result, elapsed)), what);
      assert.deepStrictEqual(fromBinary(ResultSetSchema, encoded), fromBinary(ResultSetSchema, toBinary(ResultSetSchema, toResultSet(result, elapsed))), what);

      const limits = { maxRows: 1 + r.int(8), maxBytes: 1 + r.int(600) };
      const chunker = new RowChunker(STREAM_QUERY_ROWS, limits, 1 + r.int(100));
      for (const row of rows) chunker.addTextRow(row);
      assert.deepEqual(Buffer.concat(chunker.take()), encodeRows(STREAM_QUERY_ROWS, rows), what);

      const outcomes: Outcome<Status>[] = r.array(5, () =>
        r.chance(0.7) ? { result: toBinary(ResultSetSchema, create(ResultSetSchema, randomResultSet(r))) } : { error: create(StatusSchema, randomStatus(r)) },
      );
      const statusBytes = (status: Status) => toBinary(StatusSchema, status);
      const outcome = (o: Outcome<Status>) =>
        o.error === undefined ? { case: "result" as const, value: fromBinary(ResultSetSchema, o.result!) } : { case: "error" as const, value: o.error };
      const results = create(QueryManyResponseSchema, { results: outcomes.map((o) => ({ outcome: outcome(o) })) });
      assert.deepEqual(new Uint8Array(encodeResults(outcomes, statusBytes)), toBinary(QueryManyResponseSchema, results), what);
      const numbers = outcomes.map(() => r.pick([0, 1, 128, 2 ** 32, 2 ** 53 - 1]));
      const answers = create(QueryStreamResponseSchema, { answers: outcomes.map((o, i) => ({ query: BigInt(numbers[i]!), outcome: outcome(o) })) });
      assert.deepEqual(new Uint8Array(encodeAnswers(numbers, outcomes, statusBytes)), toBinary(QueryStreamResponseSchema, answers), what);

      // With batches' answers among them, and transactions' answers behind them.
      const streamOutcomes: StreamOutcome<Status>[] = outcomes.map((o) => (r.chance(0.3) ? { batch: encodeResults(outcomes, statusBytes) } : o));
      const transactions: TransactionAnswer<Status>[] = r.array(3, () => {
        const transaction = r.pick([0, 1, 300, 2 ** 40]);
        if (r.chance(0.3)) return { transaction, failed: create(StatusSchema, randomStatus(r)) };
        const response = r.chance(0.5)
          ? create(TransactionResponseSchema, { kind: { case: "result", value: resultSetOf(r) } })
          : create(TransactionResponseSchema, { kind: { case: "committed", value: {} } });
        return { transaction, response: toBinary(TransactionResponseSchema, response) };
      });
      const streamAnswers = create(QueryStreamResponseSchema, {
        answers: streamOutcomes.map((o, i) => ({
          query: BigInt(numbers[i]!),
          outcome: o.batch !== undefined ? { case: "batch" as const, value: fromBinary(BatchResponseSchema, o.batch) } : outcome(o as Outcome<Status>),
        })),
        transactions: transactions.map((t) => ({
          transaction: BigInt(t.transaction),
          kind:
            t.failed !== undefined
              ? { case: "failed" as const, value: t.failed }
              : { case: "response" as const, value: fromBinary(TransactionResponseSchema, t.response!) },
        })),
      });
      assert.deepEqual(
        new Uint8Array(encodeAnswers(numbers, streamOutcomes, statusBytes, transactions)),
        toBinary(QueryStreamResponseSchema, streamAnswers),
        what,
      );

      const resultSet = create(ResultSetSchema, randomResultSet(r));
      const resultBytes = toBinary(ResultSetSchema, resultSet);
      assert.deepEqual(
        new Uint8Array(encodeQueryResponse(resultBytes)),
        toBinary(QueryResponseSchema, create(QueryResponseSchema, { result: resultSet })),
        what,
      );
      const commitToken = `${r.int(0x10000).toString(16).toUpperCase()}/${r.u32().toString(16).toUpperCase()}`;
      const withToken = encodeQueryResponse(resultBytes, commitToken);
      assert.deepEqual(new Uint8Array(withToken), toBinary(QueryResponseSchema, create(QueryResponseSchema, { result: resultSet, commitToken })), what);
      assert.equal((decodeByHand(QueryResponseSchema.typeName, withToken) as { commitToken: string } | undefined)?.commitToken, commitToken, what);
      const cached = encodeQueryResponse(resultBytes, "", true);
      assert.deepEqual(new Uint8Array(cached), toBinary(QueryResponseSchema, create(QueryResponseSchema, { result: resultSet, fromCache: true })), what);
      assert.equal((decodeByHand(QueryResponseSchema.typeName, cached) as { fromCache: boolean } | undefined)?.fromCache, true, what);
      assert.deepEqual(
        new Uint8Array(encodeTransactionResult(resultBytes)),
        toBinary(TransactionResponseSchema, create(TransactionResponseSchema, { kind: { case: "result", value: resultSet } })),
        what,
      );
    }
  });

  it("decode every truncation of random messages as fromBinary does: the same shorter message, or the same error", () => {
    for (const seed of SEEDS.slice(0, 12)) {
      for (const { schema, random } of DECODED) {
        const bytes = Buffer.from(toBinary(schema, create(schema, random(new Random(seed)) as never)));
        if (bytes.length > 3_000) continue; // every prefix of a long message: quadratic, and no other case
        for (let end = 0; end < bytes.length; end++) decodesAsProtobufEs(schema, bytes.subarray(0, end), `${schema.typeName}, seed ${seed}, cut at ${end}`);
      }
    }
  });

  it("decode odd encodings as fromBinary does: long varints, 32-bit and bool values in 64 bits, fields out of order, unknown fields, singular fields repeated", () => {
    const kinds: Oddities[] = [
      { longVarints: true, shuffled: false, unknown: false, repeated: false },
      { longVarints: false, shuffled: true, unknown: false, repeated: false },
      { longVarints: false, shuffled: false, unknown: true, repeated: false },
      { longVarints: false, shuffled: false, unknown: false, repeated: true },
      { longVarints: false, wideValues: true, shuffled: false, unknown: false, repeated: false },
      { longVarints: true, wideValues: true, shuffled: true, unknown: true, repeated: true },
    ];
    for (const seed of SEEDS) {
      for (const { schema, random } of DECODED) {
        const r = new Random(seed);
        const bytes = toBinary(schema, create(schema, random(r) as never));
        for (const odd of kinds)
          decodesAsProtobufEs(schema, Buffer.from(rewrite(r, schema, bytes, odd)), `${schema.typeName}, seed ${seed}, ${JSON.stringify(odd)}`);
      }
    }
  });

  // The one difference kept on purpose: the gateway passes PostgreSQL's text bytes through, and a SQL_ASCII database's
  // need not be UTF-8. Read by hand, they become what pg itself makes of them; fromBinary would fail the whole result.
  it("reads row text that is not UTF-8 as pg does (U+FFFD for each bad sequence), where fromBinary refuses the message", () => {
    const valid = toBinary(
      QueryResponseSchema,
      create(QueryResponseSchema, { result: { columns: [{ name: "c0", typeOid: 25 }], rows: [{ values: [{ kind: { case: "stringValue", value: "é" } }] }] } }),
    );
    const bytes = Buffer.from(valid);
    const at = bytes.indexOf(Buffer.from("é"));
    assert.ok(at >= 0);
    bytes[at + 1] = 0x28; // 0xc3 0x28: a lead byte without its continuation, then "("
    assert.throws(() => fromBinary(QueryResponseSchema, bytes));
    const byHand = decodeByHand(QueryResponseSchema.typeName, bytes);
    assert.ok(byHand !== undefined, "left to fromBinary");
    assert.deepStrictEqual(rowsThrough(byHand), [[Buffer.from([0xc3, 0x28]).toString("utf8")]]);
    assert.deepStrictEqual(rowsThrough(byHand), [["\ufffd("]]);
  });
});
