// Property-based fuzzing (fast-check) of every QueryService and AdminService request, typed and as raw bytes, through a real gateway over mutual TLS.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import {
  CreateTenantRequestSchema,
  DropTenantRequestSchema,
  GetPoolStatsRequestSchema,
  ListAuditEventsRequestSchema,
  ListDatabasesRequestSchema,
  ListQuotasRequestSchema,
  SetQuotaRequestSchema,
} from "../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import {
  BatchRequestSchema,
  ListenRequestSchema,
  QueryManyRequestSchema,
  QueryRequestSchema,
  QueryStreamRequestSchema,
  StreamQueryRequestSchema,
  TransactionRequestSchema,
} from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { ValueSchema } from "../wire/src/gen/dbgateway/v1/values_pb.js";
import { ErrorInfoSchema } from "../wire/src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../wire/src/gen/google/rpc/status_pb.js";
import { createClient } from "../client-sdk/src/index.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { testPki } from "./helpers/pki.js";

/** Every call's deadline: far above what any generated call needs, so reaching it means a hang. */
const DEADLINE_MS = 5_000;
/** Runs per method: that many generated requests, and half as many of raw bytes (2,100 calls in all). */
const RUNS = Number(process.env.FUZZ_RUNS ?? 100);

/** The codes the gateway documents for bad input and for calls ended early; INTERNAL, UNKNOWN, UNAVAILABLE and DATA_LOSS are not among them. */
const ALLOWED = new Set([
  grpc.status.OK,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
  grpc.status.PERMISSION_DENIED,
  grpc.status.FAILED_PRECONDITION,
  grpc.status.OUT_OF_RANGE,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.ALREADY_EXISTS,
  grpc.status.ABORTED,
  grpc.status.UNAUTHENTICATED,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.CANCELLED,
  grpc.status.UNIMPLEMENTED,
]);

type Kind = "unary" | "server" | "bidi";
type Who = "platform" | "admin" | "bogus";

/** One call as sent: the method, whose key, its request messages' bytes, and its deadline. */
interface Call {
  path: string;
  kind: Kind;
  who: Who;
  bodies: readonly Uint8Array[];
  deadlineMs: number;
}

/** How a call ended, and every byte the gateway sent back in it. */
interface Outcome {
  code: grpc.status;
  details: string;
  reason: string;
  /** Response messages, the status message and every metadata value, as the client received them. */
  received: Buffer[];
  /** The client cancelled it after its first response (Listen, which otherwise never ends). */
  cancelledByUs: boolean;
}

const QUERY = "/dbgateway.v1.QueryService/";
const ADMIN = "/dbgateway.v1.AdminService/";

describe("request fuzz: every request, typed and as raw bytes, ends with a documented status", () => {
  let t: TestGateway;
  /** The platform whose key makes the calls, and another one of the same gateway whose name must never leak to it. */
  let p: string;
  let q: string;
  const clients = new Map<Who, { client: grpc.Client; key: string }>();
  /** Tenant ids CreateTenant and DropTenant may really create and drop: a few, so that most calls find them existing or gone. */
  let ownTenants: string[];

  before(async () => {
    t = await startTestGateway({ platforms: 2 });
    [p, q] = t.platforms as [string, string];
    ownTenants = ["fz0", "fz1", "fz2"];
    const admin = t.adminClient().admin();
    await admin.createTenant(p, "fz");
    // The other platform has a tenant too: its name must not leak either.
    await admin.createTenant(q, "secret");
    const pki = testPki();
    const keyOf: Record<Who, string> = { platform: t.keys[p]!, admin: t.adminKey, bogus: `key-${p}-not-the-key` };
    for (const who of ["platform", "admin", "bogus"] as const) {
      const tls = who === "bogus" ? t.tlsFor(t.keys[p]!) : t.tlsFor(keyOf[who]);
      const credentials = grpc.credentials.createSsl(Buffer.from(pki.ca.cert), Buffer.from(tls.key), Buffer.from(tls.cert));
      clients.set(who, { client: new grpc.Client(`localhost:${t.port}`, credentials, { "grpc.max_receive_message_length": -1 }), key: keyOf[who] });
    }
  });

  after(async () => {
    for (const { client } of clients.values()) client.close();
    await t?.close();
  });

  /** Sends a call with grpc-js and bytes as they are (so undecodable ones too), resolving with how it ended; rejects if it outlives its deadline. */
  function send(call: Call): Promise<Outcome> {
    const { client, key } = clients.get(call.who)!;
    const metadata = new grpc.Metadata();
    metadata.set("x-api-key", key);
    const identity = (b: Buffer | Uint8Array) => Buffer.from(b);
    const options = { deadline: Date.now() + call.deadlineMs };
    const received: Buffer[] = [];
    let cancelledByUs = false;
    return new Promise<Outcome>((resolve, reject) => {
      const hang = setTimeout(() => reject(new Error(`no status ${call.deadlineMs + 3_000} ms after the call began`)), call.deadlineMs + 3_000);
      const onStatus = (status: grpc.StatusObject) => {
        clearTimeout(hang);
        received.push(Buffer.from(status.details));
        for (const values of Object.values(status.metadata.getMap())) received.push(Buffer.from(values));
        resolve({ code: status.code, details: status.details, reason: reasonOf(status.metadata), received, cancelledByUs });
      };
      let stream: grpc.ClientUnaryCall | grpc.ClientReadableStream<Buffer> | grpc.ClientDuplexStream<Buffer, Buffer>;
      if (call.kind === "unary") {
        stream = client.makeUnaryRequest(call.path, identity, identity, Buffer.from(call.bodies[0]!), metadata, options, (_err, response) => {
          if (response !== undefined) received.push(response);
        });
      } else if (call.kind === "server") {
        stream = client.makeServerStreamRequest(call.path, identity, identity, Buffer.from(call.bodies[0]!), metadata, options);
      } else {
        const duplex = client.makeBidiStreamRequest(call.path, identity, identity, metadata, options);
        for (const body of call.bodies) duplex.write(Buffer.from(body));
        duplex.end();
        stream = duplex;
      }
      stream.on("metadata", (headers: grpc.Metadata) => {
        for (const values of Object.values(headers.getMap())) received.push(Buffer.from(values));
      });
      if (call.kind !== "unary") {
        const readable = stream as grpc.ClientReadableStream<Buffer>;
        readable.on("data", (message: Buffer) => {
          received.push(message);
          // Listen streams until cancelled: once it answers, it has shown what it does with the request.
          if (call.path.endsWith("/Listen") && !cancelledByUs) {
            cancelledByUs = true;
            readable.cancel();
          }
        });
        // Every error also arrives as the status.
        readable.on("error", () => undefined);
      }
      stream.on("status", onStatus);
    });
  }

  /** The properties every call must have; `request` is what was sent, to tell an echo of it from a leak. */
  function check(call: Call, outcome: Outcome): void {
    const summary = `${call.path} (${call.who} key) ended with ${grpc.status[outcome.code]} ${outcome.reason}: ${outcome.details}`;
    assert.ok(ALLOWED.has(outcome.code), summary);
    if (outcome.code === grpc.status.DEADLINE_EXCEEDED) assert.ok(call.deadlineMs < DEADLINE_MS, `a harmless call hung for its whole deadline: ${summary}`);
    if (outcome.code === grpc.status.CANCELLED)
      assert.ok(outcome.cancelledByUs || call.deadlineMs < DEADLINE_MS, `cancelled, though nobody cancelled it: ${summary}`);
    // The admin may see every platform; a platform's key must never be told another's names, unless it named them itself.
    if (call.who !== "admin") {
      for (const secret of [q, `${q}_secret`]) {
        const named = call.bodies.some((b) => Buffer.from(b).includes(secret));
        if (!named) assert.ok(!outcome.received.some((b) => b.includes(secret)), `${secret} appeared in the answer to a ${p} call: ${summary}`);
      }
    }
  }

  async function runAndCheck(call: Call): Promise<void> {
    check(call, await send(call));
  }

  /**
   * Removes every quota of the platform: SetQuota's runs store some (a rate of 0 would refuse the platform's
   * every call), so that the calls after them meet the gateway's defaults again.
   */
  async function clearQuotas(): Promise<void> {
    const admin = createClient(t.clientOptions(t.adminKey));
    try {
      const { quotas } = await admin.raw.admin.listQuotas({ platform: p });
      for (const { platform, scope, tenantId } of quotas) await admin.raw.admin.setQuota({ quota: { platform, scope, tenantId, limits: {} } });
      assert.deepEqual((await admin.raw.admin.listQuotas({ platform: p })).quotas, []);
    } finally {
      admin.close();
    }
  }

  /** After each method's runs: the gateway serves a normal SDK query, and no pool of the test's platforms has a busy connection or a waiter left. */
  async function stillServing(): Promise<void> {
    await clearQuotas();
    const sdk = createClient(t.clientOptions(t.keys[p]!));
    try {
      assert.deepEqual((await sdk.platform(p).query("SELECT 1 AS one", [], { timeoutMs: DEADLINE_MS })).rows, [{ one: 1 }]);
    } finally {
      sdk.close();
    }
    await eventually(async () => {
      const { pools } = await t.adminClient().admin().getPoolStats();
      const busy = pools.filter((pool) => pool.busy > 0 || pool.waiting > 0 || pool.connecting > 0);
      assert.deepEqual(
        busy.map((pool) => `${pool.database}: ${pool.busy} busy, ${pool.waiting} waiting, ${pool.connecting} connecting`),
        [],
      );
    });
  }

  // ---- arbitraries -------------------------------------------------------

  /** Strings of every sort: ASCII, any code point (NULs, lone surrogates), graphemes, and a few chosen ones. */
  const anyString = fc.oneof(
    { weight: 3, arbitrary: fc.string() },
    { weight: 3, arbitrary: fc.string({ unit: "binary" }) },
    fc.string({ unit: "grapheme", maxLength: 8 }),
    { weight: 2, arbitrary: fc.constantFrom("\0", "a\0b", "x".repeat(64), "é", "🙂", "NULL", "'; --", "$1", "main", "_", "..", "fz\0") },
  );
  /** Oversize values are rare: each costs a few hundred KiB on the wire. */
  const rarely = <T>(usual: fc.Arbitrary<T>, oversize: T) => fc.oneof({ weight: 60, arbitrary: usual }, fc.constant(oversize));
  const uint32 = fc.oneof(fc.constantFrom(0, 1, 2, 0xffffffff), fc.nat(), fc.integer({ min: 0, max: 0xffffffff }));
  const int64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
  const uint64 = fc.oneof(fc.constantFrom(0n, 1n, 2n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
  const who = fc.constantFrom<Who>("platform", "platform", "platform", "platform", "platform", "platform", "admin", "bogus");
  /** Mostly the key's own platform, so that calls get past authorization and reach the database. */
  const platformField = () =>
    fc.oneof({ weight: 12, arbitrary: fc.constant(p) }, fc.constant(q), fc.constant(""), fc.constant(p.toUpperCase()), fc.constant(`${p}\0`), anyString);
  /** The main database, an existing tenant, tenants that do not exist, and junk. */
  const tenantField = () =>
    fc.oneof(
      { weight: 3, arbitrary: fc.constant("") },
      { weight: 3, arbitrary: fc.constant("fz") },
      fc.stringMatching(/^[a-z0-9_]{1,12}$/),
      fc.constantFrom("secret", "main", "FZ", "x".repeat(64), "fz0"),
      anyString,
    );
  /** Statements that create nothing lasting (temporary tables, cursors and session settings die with the call), PostgreSQL's errors, and junk. */
  const HARMLESS = [
    "SELECT 1",
    "SELECT $1",
    "SELECT $1, $2, $3",
    "SELECT $1::text",
    "SELECT $1::int8",
    "SELECT $1::int4",
    "SELECT $1::float8",
    "SELECT $1::numeric",
    "SELECT $1::jsonb",
    "SELECT $1::json",
    "SELECT $1::bytea",
    "SELECT $1::bool",
    "SELECT $1::timestamptz",
    "SELECT $1::date",
    "SELECT $1::uuid",
    "SELECT $1::int8[]",
    "SELECT $1::text[][]",
    "SELECT $1::numeric[]",
    "SELECT $70000",
    "SELECT $0",
    "VALUES (1), (2)",
    "SHOW server_version",
    "SELECT generate_series(1, 500) AS n",
    "SELECT repeat('x', 100000) AS big",
    "SELECT 1/0",
    "SELECT 'a'::int",
    "SELECT * FROM no_such_table",
    "DO $$ BEGIN RAISE EXCEPTION 'boom'; END $$",
    "SELECT pg_sleep(0.02)",
    "SELECT pg_try_advisory_lock(1)",
    "SELECT set_config('search_path', 'nowhere', false)",
    "SET statement_timeout = 1",
    "SET LOCAL lock_timeout = '1ms'",
    "RESET ALL",
    "CREATE TEMP TABLE fuzz_tmp (id int)",
    "PREPARE fuzz_p AS SELECT 1",
    "EXECUTE fuzz_p",
    "DECLARE fuzz_c CURSOR FOR SELECT 1",
    "FETCH fuzz_c",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT s",
    "ROLLBACK TO SAVEPOINT s",
    "RELEASE s",
    "LISTEN fuzz",
    "NOTIFY fuzz, 'x'",
    "UNLISTEN *",
    "COPY (SELECT 1) TO STDOUT",
    "COPY fuzz FROM STDIN",
    "SELECT 1; SELECT 2",
    "",
    " ",
    ";",
    "-- nothing",
  ];
  const sqlField = rarely(fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...HARMLESS) }, anyString), `SELECT 1 -- ${"x".repeat(100_000)}`);

  type ValueInit = MessageInitShape<typeof ValueSchema>;
  const scalar: fc.Arbitrary<ValueInit> = fc.oneof(
    fc.constant({}),
    fc.oneof(fc.constant(0), fc.integer()).map((v) => ({ kind: { case: "nullValue" as const, value: v } })),
    fc.boolean().map((v) => ({ kind: { case: "boolValue" as const, value: v } })),
    fc.oneof(int64, fc.constantFrom(0n, -1n, 2n ** 63n - 1n, -(2n ** 63n))).map((v) => ({ kind: { case: "int64Value" as const, value: v } })),
    fc.double().map((v) => ({ kind: { case: "doubleValue" as const, value: v } })),
    anyString.map((v) => ({ kind: { case: "textValue" as const, value: v } })),
    fc.uint8Array({ maxLength: 64 }).map((v) => ({ kind: { case: "bytesValue" as const, value: v } })),
    fc
      .oneof(anyString, fc.constantFrom("NaN", "Infinity", "-Infinity", "-12.5000", "1e-40", "1e1000000", "1e-1000000"), fc.double().map(String))
      .map((v) => ({ kind: { case: "numericValue" as const, value: v } })),
    fc.oneof(anyString, fc.json()).map((v) => ({ kind: { case: "jsonValue" as const, value: v } })),
    fc
      .record({ seconds: fc.oneof(int64, fc.bigInt({ min: -62135596800n, max: 253402300799n })), nanos: fc.integer() })
      .map((v) => ({ kind: { case: "timestampValue" as const, value: v } })),
  );
  /** Values of every kind, arrays nested and mixed. */
  const { value } = fc.letrec<{ value: ValueInit }>((tie) => ({
    value: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      scalar,
      fc.array(tie("value"), { maxLength: 4 }).map((values) => ({ kind: { case: "arrayValue" as const, value: { values } } })),
    ),
  }));
  const TOO_MANY_PARAMS: ValueInit[] = Array.from({ length: 65_536 }, () => ({ kind: { case: "nullValue" as const, value: 0 } }));
  const params = rarely(fc.array(value, { maxLength: 6 }), TOO_MANY_PARAMS);
  const traceContext = fc.oneof(
    fc.constant({}),
    fc.dictionary(anyString, anyString, { maxKeys: 12 }),
    fc.constant({ traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "x=y" }),
  );
  const tenantQuery = fc.record({ tenantId: tenantField(), sql: sqlField, params, traceContext });
  const TOO_MANY_QUERIES = Array.from({ length: 1_001 }, () => ({ sql: "SELECT 1" }));
  const queries = rarely(fc.array(tenantQuery, { maxLength: 6 }), TOO_MANY_QUERIES);
  const transactionOptions = fc.record(
    { isolationLevel: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer()), readOnly: fc.boolean(), deferrable: fc.boolean() },
    { requiredKeys: [] },
  );
  const statement = fc.record({ sql: sqlField, params });
  const batchRequest = () =>
    fc.record({
      platform: platformField(),
      tenantId: tenantField(),
      statements: rarely(fc.array(statement, { maxLength: 6 }), TOO_MANY_QUERIES),
      atomic: fc.boolean(),
      transactionOptions: fc.option(transactionOptions, { nil: undefined }),
    });
  const begin = () =>
    fc
      .record({ platform: platformField(), tenantId: tenantField(), options: fc.option(transactionOptions, { nil: undefined }) })
      .map((v) => ({ kind: { case: "begin" as const, value: v } }));
  const transactionRequest = () =>
    fc.oneof(
      begin(),
      { weight: 4, arbitrary: statement.map((v) => ({ kind: { case: "statement" as const, value: v } })) },
      fc.constant({ kind: { case: "commit" as const, value: {} } }),
      fc.constant({ kind: { case: "rollback" as const, value: {} } }),
      fc.constant({}),
    );
  const deadline = fc.oneof({ weight: 9, arbitrary: fc.constant(DEADLINE_MS) }, fc.integer({ min: 1, max: 100 }));
  /** A quota's limits: each unset, within its bounds, at them, or far outside (NaN, negative, zero, 2^32 - 1). */
  const optional = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined });
  const anyQuotaLimits = fc.record(
    {
      callsPerSecond: optional(fc.oneof(fc.constantFrom(0, 0.001, 1, 1_000_000, 1_000_001, -1), fc.double())),
      burst: optional(uint32),
      maxConcurrentStatements: optional(uint32),
      maxConnections: optional(uint32),
      maxStatementTime: optional(fc.record({ seconds: fc.oneof(fc.constantFrom(0n, 1n, 60n), int64), nanos: fc.integer() })),
    },
    { requiredKeys: [] },
  );
  /** Limits the gateway takes (within each one's bounds, for a pool of 5 connections): so that quotas are really stored and applied. */
  const validQuotaLimits = fc.record(
    {
      callsPerSecond: optional(fc.double({ min: 0, max: 1_000_000, noNaN: true })),
      burst: optional(fc.integer({ min: 1, max: 1_000_000 })),
      maxConcurrentStatements: optional(fc.integer({ min: 1, max: 1_000 })),
      maxConnections: optional(fc.integer({ min: 1, max: 5 })),
      maxStatementTime: optional(fc.record({ seconds: fc.bigInt({ min: 0n, max: 59n }), nanos: fc.integer({ min: 1_000_000, max: 999_999_999 }) })),
    },
    { requiredKeys: [] },
  );

  const bytesOf = <S extends DescMessage>(schema: S, init: MessageInitShape<S>) => toBinary(schema, create(schema, init));

  /** Each method: its kind, and its requests' bytes generated from typed messages. */
  const methods = (): { path: string; kind: Kind; bodies: fc.Arbitrary<Uint8Array[]>; who?: fc.Arbitrary<Who> }[] => {
    const adminWho = fc.constantFrom<Who>("admin", "admin", "admin", "admin", "platform", "bogus");
    /** Tenant ids for the admin calls: mostly the few that may really be made, and junk. */
    const adminTenant = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...ownTenants) }, fc.constantFrom("", "main", "fz"), anyString);
    /** Admin calls name the test's own platform (or junk that names none): nothing of anyone else's is touched. */
    const adminPlatform = fc.oneof({ weight: 6, arbitrary: fc.constant(p) }, fc.constant(""), anyString);
    return [
      {
        path: `${QUERY}Query`,
        kind: "unary",
        bodies: fc.record({ platform: platformField(), tenantId: tenantField(), sql: sqlField, params }).map((r) => [bytesOf(QueryRequestSchema, r)]),
      },
      {
        path: `${QUERY}QueryMany`,
        kind: "unary",
        bodies: fc.record({ platform: platformField(), queries }).map((r) => [bytesOf(QueryManyRequestSchema, r)]),
      },
      {
        path: `${QUERY}StreamQuery`,
        kind: "server",
        bodies: fc
          .record({ platform: platformField(), tenantId: tenantField(), sql: sqlField, params, maxRowsPerMessage: uint32, maxBytesPerMessage: uint32 })
          .map((r) => [bytesOf(StreamQueryRequestSchema, r)]),
      },
      { path: `${QUERY}Batch`, kind: "unary", bodies: batchRequest().map((r) => [bytesOf(BatchRequestSchema, r)]) },
      {
        path: `${QUERY}Transaction`,
        kind: "bidi",
        // Mostly a begin first, so that the statements run.
        bodies: fc
          .tuple(fc.oneof({ weight: 4, arbitrary: begin() }, transactionRequest()), fc.array(transactionRequest(), { maxLength: 6 }))
          .map(([first, rest]) => [first, ...rest].map((r) => bytesOf(TransactionRequestSchema, r))),
      },
      {
        path: `${QUERY}QueryStream`,
        kind: "bidi",
        bodies: fc
          .array(
            fc.record({
              platform: platformField(),
              queries: fc.array(tenantQuery, { maxLength: 3 }),
              timeoutMs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 50 }), uint32),
              batches: fc.array(batchRequest(), { maxLength: 1 }),
              transactions: fc.array(
                fc.record({
                  transaction: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0n, 1n) }, uint64),
                  request: fc.oneof({ weight: 2, arbitrary: begin() }, transactionRequest()),
                  timeoutMs: fc.oneof(fc.constant(0), uint32),
                }),
                { maxLength: 3 },
              ),
            }),
            { minLength: 1, maxLength: 3 },
          )
          .map((messages) => messages.map((m) => bytesOf(QueryStreamRequestSchema, m))),
      },
      {
        path: `${QUERY}Listen`,
        kind: "server",
        bodies: fc
          .record({
            platform: platformField(),
            tenantId: tenantField(),
            channels: fc.oneof(
              fc.array(fc.stringMatching(/^[a-z_][a-z0-9_]{0,20}$/), { maxLength: 4 }),
              fc.array(anyString, { maxLength: 4 }),
              fc.constant(Array.from({ length: 2_000 }, (_, i) => `c${i}`)),
            ),
          })
          .map((r) => [bytesOf(ListenRequestSchema, r)]),
      },
      {
        path: `${ADMIN}CreateTenant`,
        kind: "unary",
        who: adminWho,
        bodies: fc
          .record({
            platform: adminPlatform,
            tenantId: adminTenant,
            template: fc.oneof(
              { weight: 3, arbitrary: fc.constant("") },
              fc.constantFrom(`${p}_main`, `${p}_fz`, `${q}_main`, "postgres", "template1"),
              anyString,
            ),
          })
          .map((r) => [bytesOf(CreateTenantRequestSchema, r)]),
      },
      {
        path: `${ADMIN}DropTenant`,
        kind: "unary",
        who: adminWho,
        bodies: fc.record({ platform: adminPlatform, tenantId: adminTenant }).map((r) => [bytesOf(DropTenantRequestSchema, r)]),
      },
      {
        path: `${ADMIN}ListDatabases`,
        kind: "unary",
        who: adminWho,
        bodies: fc.record({ platform: adminPlatform }).map((r) => [bytesOf(ListDatabasesRequestSchema, r)]),
      },
      {
        path: `${ADMIN}GetPoolStats`,
        kind: "unary",
        who: adminWho,
        bodies: fc.record({ platform: adminPlatform }).map((r) => [bytesOf(GetPoolStatsRequestSchema, r)]),
      },
      {
        path: `${ADMIN}SetQuota`,
        kind: "unary",
        who: adminWho,
        bodies: fc
          .record({
            quota: fc.oneof(
              // Mostly a quota the gateway takes, for the test's platform: stored, applied, then replaced or removed by later runs.
              {
                weight: 3,
                arbitrary: fc.oneof(
                  fc.record({ platform: fc.constant(p), scope: fc.constantFrom(1, 2), limits: validQuotaLimits }),
                  fc.record({ platform: fc.constant(p), scope: fc.constant(3), tenantId: adminTenant, limits: validQuotaLimits }),
                ),
              },
              {
                weight: 2,
                arbitrary: fc.record(
                  {
                    platform: adminPlatform,
                    // The three scopes, UNSPECIFIED, and values no enum has.
                    scope: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 3 }) }, fc.integer()),
                    tenantId: adminTenant,
                    limits: anyQuotaLimits,
                    updateTime: fc.record({ seconds: int64, nanos: fc.integer() }),
                  },
                  { requiredKeys: [] },
                ),
              },
              fc.constant(undefined),
            ),
          })
          .map((r) => [bytesOf(SetQuotaRequestSchema, r)]),
      },
      {
        path: `${ADMIN}ListQuotas`,
        kind: "unary",
        who: adminWho,
        bodies: fc.record({ platform: fc.oneof(adminPlatform, fc.constant(q)) }).map((r) => [bytesOf(ListQuotasRequestSchema, r)]),
      },
      {
        path: `${ADMIN}ListAuditEvents`,
        kind: "unary",
        who: adminWho,
        bodies: fc
          .record({
            platform: adminPlatform,
            pageSize: uint32,
            pageToken: fc.oneof(fc.constant(""), anyString, fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String), fc.base64String()),
          })
          .map((r) => [bytesOf(ListAuditEventsRequestSchema, r)]),
      },
    ];
  };

  /** Over grpc-js's 4 MiB limit on received messages; shown short in a counterexample. */
  const TOO_LARGE = Object.assign(new Uint8Array(5 * 1024 * 1024).fill(0x0a), { [fc.toStringMethod]: () => "(5 MiB of 0x0a)" });
  /** Bytes a decoder may choke on: random, a generated request with some bytes overwritten or cut, and too large for the gateway to take. */
  const rawBodies = (typed: fc.Arbitrary<Uint8Array[]>) => {
    const mutated = fc
      .tuple(typed, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), fc.option(fc.nat(), { nil: undefined }))
      .map(([bodies, edits, cut]) =>
        bodies.map((body) => {
          const bytes = Uint8Array.from(body);
          for (const [at, byte] of edits) if (bytes.length > 0) bytes[at % bytes.length] = byte;
          return cut === undefined ? bytes : bytes.subarray(0, cut % (bytes.length + 1));
        }),
      );
    const random = fc.array(fc.uint8Array({ maxLength: 256 }), { minLength: 1, maxLength: 3 });
    return fc.oneof({ weight: 15, arbitrary: random }, { weight: 15, arbitrary: mutated }, fc.constant([TOO_LARGE]));
  };

  // Built lazily: the arbitraries need the platform names made in before().
  const METHOD_NAMES = ["Query", "QueryMany", "StreamQuery", "Batch", "Transaction", "QueryStream", "Listen"]
    .map((m) => `${QUERY}${m}`)
    .concat(["CreateTenant", "DropTenant", "ListDatabases", "GetPoolStats", "ListAuditEvents", "SetQuota", "ListQuotas"].map((m) => `${ADMIN}${m}`));

  for (const path of METHOD_NAMES) {
    const name = path.split("/").slice(1).join(".");
    it(`${name}: generated requests`, async () => {
      const method = methods().find((m) => m.path === path)!;
      await fc.assert(
        fc.asyncProperty(fc.record({ bodies: method.bodies, who: method.who ?? who, deadlineMs: deadline }), (input) =>
          runAndCheck({ path, kind: method.kind, ...input }),
        ),
        { numRuns: RUNS, includeErrorInReport: true },
      );
      await stillServing();
    });

    it(`${name}: undecodable bytes`, async () => {
      const method = methods().find((m) => m.path === path)!;
      await fc.assert(
        fc.asyncProperty(fc.record({ bodies: rawBodies(method.bodies), who: method.who ?? who }), (input) =>
          runAndCheck({ path, kind: method.kind, deadlineMs: DEADLINE_MS, ...input }),
        ),
        { numRuns: Math.ceil(RUNS / 2), includeErrorInReport: true },
      );
      await stillServing();
    });
  }

  it("no PostgreSQL connection of the test's databases is left busy, in a transaction or running a query", async () => {
    await stillServing();
    const admin = await t.pg();
    await eventually(async () => {
      const { rows } = await admin.query<{ datname: string; state: string; query: string }>(
        `SELECT datname, state, query FROM pg_stat_activity
          WHERE (starts_with(datname, $1) OR starts_with(datname, $2)) AND state IS DISTINCT FROM 'idle' AND pid <> pg_backend_pid()`,
        [`${p}_`, `${q}_`],
      );
      assert.deepEqual(rows, []);
    });
    // The admin fuzz made and dropped databases of its own platform only (dropped with it after the test): the other's are as they were.
    const { rows } = await admin.query<{ datname: string }>("SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1", [`${q}_`]);
    assert.deepEqual(
      rows.map((r) => r.datname),
      [`${q}_main`, `${q}_secret`],
    );
  });
});

/** The reason of the ErrorInfo in a status's details, if any. */
function reasonOf(metadata: grpc.Metadata): string {
  const [bin] = metadata.get("grpc-status-details-bin");
  if (!(bin instanceof Buffer)) return "";
  try {
    const status = fromBinary(StatusSchema, bin);
    const info = status.details.find((d) => d.typeUrl.endsWith("google.rpc.ErrorInfo"));
    return info === undefined ? "" : fromBinary(ErrorInfoSchema, info.value).reason;
  } catch {
    return "(undecodable details)";
  }
}

/** Retries `check` for up to 3 s: connections go back to their pools just after a call's status has left. */
async function eventually(check: () => Promise<void>): Promise<void> {
  const end = Date.now() + 3_000;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
