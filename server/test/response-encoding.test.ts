// QueryManyResponse and QueryStreamResponse written by hand (as the server binds them to its errors): the bytes protobuf-es's toBinary writes, errors and query numbers included.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { toRpcStatus } from "../src/client-errors.js";
import { GatewayError } from "../src/errors.js";
import { QueryManyResponseSchema, QueryStreamResponseSchema } from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { ResultSetSchema } from "../../wire/src/gen/dbgateway/v1/values_pb.js";
import type { Outcome } from "../src/execution/pipeline.js";
import { encodeAnswers, encodeResults } from "../src/execution/response-encoding.js";

const results = [
  create(ResultSetSchema, { command: "SELECT", rowsAffected: 1n, rows: [{ values: [{ kind: { case: "stringValue", value: "a" } }] }] }),
  create(ResultSetSchema, {}),
  create(ResultSetSchema, { command: "UPDATE", rowsAffected: 300n }),
];
const error = new GatewayError("DATABASE_NOT_FOUND", "no such database");
const outcomes: Outcome[] = [
  { result: toBinary(ResultSetSchema, results[0]!) },
  { error },
  { result: toBinary(ResultSetSchema, results[1]!) },
  { result: toBinary(ResultSetSchema, results[2]!) },
];
const expected = (o: number) =>
  o === 1 ? { case: "error" as const, value: toRpcStatus(error) } : { case: "result" as const, value: results[o === 0 ? 0 : o - 1]! };

describe("response encoding by hand", () => {
  it("writes QueryManyResponse as toBinary does", () => {
    const message = create(QueryManyResponseSchema, { results: outcomes.map((_, o) => ({ outcome: expected(o) })) });
    assert.deepEqual(new Uint8Array(encodeResults(outcomes).bytes), toBinary(QueryManyResponseSchema, message));
  });

  it("writes QueryStreamResponse as toBinary does, each answer with its query's number", () => {
    for (const first of [0, 1, 127, 128, 2 ** 32, 2 ** 53 - 10]) {
      const indexes = [3, 0, 2, 1];
      const picked = indexes.map((i) => outcomes[i]!);
      const numbers = indexes.map((i) => first + i);
      const message = create(QueryStreamResponseSchema, { answers: indexes.map((i) => ({ query: BigInt(first + i), outcome: expected(i) })) });
      assert.deepEqual(new Uint8Array(encodeAnswers(numbers, picked).bytes), toBinary(QueryStreamResponseSchema, message), `first ${first}`);
    }
  });
});
