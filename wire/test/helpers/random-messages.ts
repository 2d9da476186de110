// Seeded random messages of every type the hand codecs read or write, for the conformance suite (wire/test/conformance.test.ts).
import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import {
  BatchResponseSchema,
  type BatchRequestSchema,
  type StreamTransactionRequestSchema,
  QueryManyRequestSchema,
  QueryManyResponseSchema,
  QueryResponseSchema,
  QueryStreamRequestSchema,
  QueryStreamResponseSchema,
  StreamQueryResponseSchema,
  TransactionResponseSchema,
} from "../../src/gen/dbgateway/v1/query_service_pb.js";
import { ResultSetSchema, ValueSchema, type Value } from "../../src/gen/dbgateway/v1/values_pb.js";
import type { StatusSchema } from "../../src/gen/google/rpc/status_pb.js";

/** A seeded PRNG (mulberry32), so that a failure names a seed that reproduces it. */
export class Random {
  #state: number;
  constructor(readonly seed: number) {
    this.#state = seed;
  }
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }
  int(below: number): number {
    return Math.floor(this.next() * below);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  array<T>(most: number, make: () => T): T[] {
    return Array.from({ length: this.int(most + 1) }, make);
  }
  /** Text of every length class a varint length distinguishes, ASCII, multi-byte and astral, digits (for the integer fast path) and NUL. */
  text(): string {
    const unit = this.pick(["a", "é", "🐘", "7", "\0", " ", "-"]);
    return this.pick(["", "0", "-12", "2147483647", "9999999999", "naïve 🐘", "line\nbreak", unit.repeat(this.pick([1, 2, 63, 64, 127, 128, 200]))]);
  }
  u32(): number {
    return this.pick([0, 1, 127, 128, 16_384, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]);
  }
  i32(): number {
    return this.pick([0, 1, -1, 127, 128, -128, 2 ** 31 - 1, -(2 ** 31)]);
  }
  u64(): bigint {
    return this.pick([0n, 1n, 127n, 128n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n]);
  }
  i64(): bigint {
    return BigInt.asIntN(64, this.u64());
  }
  double(): number {
    return this.pick([0, -0, 0.5, -1.5e300, Number.NaN, Number.POSITIVE_INFINITY, Number.MIN_VALUE]);
  }
}

/** A request parameter: every kind, those the server leaves to fromBinary (timestamp, array) included. */
function randomParam(r: Random, depth = 0): Value {
  const kinds = [
    "nullValue",
    "boolValue",
    "int64Value",
    "doubleValue",
    "textValue",
    "bytesValue",
    "numericValue",
    "jsonValue",
    "timestampValue",
    "arrayValue",
    undefined,
  ];
  const kind = r.pick(depth > 1 ? kinds.slice(0, 8) : kinds);
  const make = {
    nullValue: () => 0,
    boolValue: () => r.chance(0.5),
    int64Value: () => r.i64(),
    doubleValue: () => r.double(),
    textValue: () => r.text(),
    bytesValue: () => new Uint8Array(r.array(130, () => r.int(256))),
    numericValue: () => r.pick(["-12.5000", "1e-40", "NaN"]),
    jsonValue: () => '{"a":[1,true]}',
    timestampValue: () => ({ seconds: r.i64() / 4n, nanos: r.int(1_000_000_000) }),
    arrayValue: () => ({ values: r.array(3, () => randomParam(r, depth + 1)) }),
  };
  if (kind === undefined) return create(ValueSchema);
  return create(ValueSchema, { kind: { case: kind, value: make[kind as keyof typeof make]() } } as never);
}

function randomQueries(r: Random) {
  return r.array(4, () => ({
    tenantId: r.pick(["", "t1", "tenant-42"]),
    sql: r.text(),
    params: r.array(4, () => randomParam(r)),
    traceContext: Object.fromEntries(r.array(2, () => [r.pick(["traceparent", "tracestate", "", "__proto__x"]), r.text()])) as Record<string, string>,
  }));
}

export const randomStreamRequest = (r: Random): MessageInitShape<typeof QueryStreamRequestSchema> => ({
  platform: r.pick(["", "clinic"]),
  queries: randomQueries(r),
  timeoutMs: r.u32(),
  batches: r.chance(0.3) ? r.array(2, () => randomBatch(r)) : [],
  transactions: r.chance(0.3) ? r.array(3, () => randomTransactionFrame(r)) : [],
});

function randomStatements(r: Random) {
  return r.array(3, () => ({ sql: r.text(), params: r.array(2, () => randomParam(r)) }));
}

function randomOptions(r: Random) {
  return r.chance(0.5) ? { isolationLevel: r.int(4), readOnly: r.chance(0.5), deferrable: r.chance(0.5) } : undefined;
}

function randomBatch(r: Random): MessageInitShape<typeof BatchRequestSchema> {
  return {
    platform: r.pick(["", "clinic"]),
    tenantId: r.pick(["", "t1"]),
    statements: randomStatements(r),
    atomic: r.chance(0.5),
    transactionOptions: randomOptions(r),
  };
}

function randomTransactionFrame(r: Random): MessageInitShape<typeof StreamTransactionRequestSchema> {
  const kinds = [
    () => ({ case: "begin" as const, value: { platform: r.pick(["", "clinic"]), tenantId: r.pick(["", "t1"]), options: randomOptions(r) } }),
    () => ({ case: "statement" as const, value: randomStatements(r)[0] ?? { sql: r.text() } }),
    () => ({ case: "commit" as const, value: {} }),
    () => ({ case: "rollback" as const, value: {} }),
  ];
  return { transaction: r.u64(), request: { kind: r.pick(kinds)() }, timeoutMs: r.chance(0.5) ? r.u32() : 0 };
}

function randomTransactionResponse(r: Random): MessageInitShape<typeof TransactionResponseSchema> {
  const kinds = [
    () => ({ case: "result" as const, value: randomResultSet(r) }),
    () => ({ case: "begun" as const, value: {} }),
    () => ({ case: "committed" as const, value: {} }),
    () => ({ case: "rolledBack" as const, value: {} }),
    () => ({ case: "error" as const, value: randomStatus(r) }),
  ];
  return { kind: r.pick(kinds)() };
}
export const randomManyRequest = (r: Random): MessageInitShape<typeof QueryManyRequestSchema> => ({
  platform: r.pick(["", "clinic"]),
  queries: randomQueries(r),
});

/** A ResultSet of `width` columns whose rows hold every kind of google.protobuf.Value a hand decoder reads (text, NULL, number, bool). */
export function randomResultSet(r: Random, width = r.int(4)): MessageInitShape<typeof ResultSetSchema> {
  const rowCount = r.pick([0, 1, 2, 15, 16, 40]);
  return {
    columns: Array.from({ length: width }, () => ({
      name: r.text(),
      typeOid: r.pick([0, 21, 23, 25, 26, 2 ** 32 - 1]),
      typeModifier: r.i32(),
      tableOid: r.u32(),
      columnNumber: r.u32(),
    })),
    rows: Array.from({ length: rowCount }, () => ({ values: Array.from({ length: width }, () => ({ kind: randomKind(r) })) })),
    command: r.pick(["", "SELECT", "INSERT"]),
    rowsAffected: r.u64(),
    executionTime: r.chance(0.2) ? undefined : { seconds: r.i64(), nanos: r.i32() },
  };
}

function randomKind(r: Random) {
  const n = r.int(10);
  if (n < 6) return { case: "stringValue" as const, value: r.text() };
  if (n < 8) return { case: "nullValue" as const, value: 0 };
  return n === 8 ? { case: "numberValue" as const, value: r.double() } : { case: "boolValue" as const, value: r.chance(0.5) };
}

export function randomStatus(r: Random): MessageInitShape<typeof StatusSchema> {
  return {
    code: r.int(17),
    message: r.text(),
    details: r.array(2, () => ({ typeUrl: "type.googleapis.com/x", value: new Uint8Array(r.array(5, () => r.int(256))) })),
  };
}

function randomOutcome(r: Random) {
  return r.chance(0.75) ? { case: "result" as const, value: randomResultSet(r) } : { case: "error" as const, value: randomStatus(r) };
}

/** The messages the hand decoders read, each with a random instance. */
export const DECODED: { schema: DescMessage; random: (r: Random) => object }[] = [
  { schema: QueryStreamRequestSchema, random: randomStreamRequest },
  { schema: QueryManyRequestSchema, random: randomManyRequest },
  { schema: QueryResponseSchema, random: (r) => ({ result: r.chance(0.9) ? randomResultSet(r) : undefined }) },
  { schema: QueryManyResponseSchema, random: (r) => ({ results: r.array(4, () => ({ outcome: randomOutcome(r) })) }) },
  { schema: BatchResponseSchema, random: (r) => ({ results: r.array(4, () => ({ outcome: randomOutcome(r) })) }) },
  {
    schema: QueryStreamResponseSchema,
    random: (r) => ({
      answers: r.array(4, () => ({
        query: r.u64(),
        outcome: r.chance(0.8) ? randomOutcome(r) : { case: "batch" as const, value: { results: r.array(3, () => ({ outcome: randomOutcome(r) })) } },
      })),
      transactions: r.array(3, () => ({
        transaction: r.u64(),
        kind: r.chance(0.7) ? { case: "response" as const, value: randomTransactionResponse(r) } : { case: "failed" as const, value: randomStatus(r) },
      })),
      // The gateway's first response only: left to fromBinary.
      features: r.chance(0.1) ? { batches: r.chance(0.5), transactions: r.chance(0.5) } : undefined,
    }),
  },
  { schema: TransactionResponseSchema, random: (r) => ({ kind: { case: "result", value: randomResultSet(r) } }) },
  {
    schema: StreamQueryResponseSchema,
    random: (r) => {
      const { columns, rows, ...summary } = randomResultSet(r);
      return { columns: r.chance(0.5) ? columns : [], rows, summary: r.chance(0.5) ? summary : undefined };
    },
  },
];

/** Whether the hand decoders were written for every part of `init` (else they leave it to fromBinary). */
export function allByHand(schema: DescMessage, init: object): boolean {
  if (schema === QueryStreamRequestSchema || schema === QueryManyRequestSchema) {
    const handKinds = new Set([undefined, "nullValue", "boolValue", "int64Value", "doubleValue", "textValue", "bytesValue", "numericValue", "jsonValue"]);
    const request = init as { queries: { params: Value[] }[]; batches?: unknown[]; transactions?: unknown[] };
    // Batches and transactions are left to fromBinary: the gateway's hot path is queries.
    if ((request.batches?.length ?? 0) > 0 || (request.transactions?.length ?? 0) > 0) return false;
    return request.queries.every((q) => q.params.every((p) => handKinds.has(p.kind.case)));
  }
  if (schema === QueryStreamResponseSchema) return (init as { features?: object }).features === undefined;
  return true;
}
