// QueryMany: independent queries pipelined, each as its own call; and the SDK coalescing one turn's queries into one call.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, createClient, GatewayError } from "../client-sdk/src/index.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { BatchResult } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { TenantQuerySchema } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { callsOf, metricValue, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { waitFor } from "./helpers/wait.js";

/** The first column of the first row of a QueryMany result, as PostgreSQL's text. */
function cell(result: BatchResult | undefined, column = 0): unknown {
  if (result?.outcome.case === "error") assert.fail(`expected a result, got the error "${result.outcome.value.message}"`);
  if (result?.outcome.case !== "result") return undefined;
  return result.outcome.value.rows[0]?.values[column]?.kind.value;
}

describe("QueryMany: independent queries, pipelined, each as its own call", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    // One connection: every statement of a call is pipelined on the same backend.
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1 } });
    platform = t.platforms[0]!;
  });
  after(() => t.close());

  const queryMany = (sqls: (string | MessageInitShape<typeof TenantQuerySchema>)[], timeoutMs?: number) =>
    t.client().raw.query.queryMany({ platform, queries: sqls.map((s) => (typeof s === "string" ? { sql: s } : s)) }, { timeoutMs });

  it("resets session state between the statements of one call, on the same backend", async () => {
    const { results } = await queryMany([
      "SELECT pg_backend_pid()",
      "SET work_mem = '7MB'",
      "SELECT set_config('app.tenant', 'leaked', false)",
      "PREPARE leaked_plan AS SELECT 1",
      "CREATE TEMP TABLE leaked_temp (v int)",
      "LISTEN leaked_channel",
      "SELECT pg_advisory_lock(4242)",
      "SET search_path = pg_catalog",
      `SELECT current_setting('work_mem') || ' ' || coalesce(current_setting('app.tenant', true), '') || ' ' ||
              (SELECT count(*) FROM pg_prepared_statements) || ' ' || (to_regclass('pg_temp.leaked_temp') IS NULL) || ' ' ||
              (SELECT count(*) FROM pg_listening_channels()) || ' ' ||
              (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) || ' ' ||
              current_setting('search_path'), pg_backend_pid()`,
    ]);
    assert.equal(results.length, 9);
    for (const r of results) assert.equal(r.outcome.case, "result");
    assert.equal(cell(results[8]), '4MB  0 true 0 0 "$user", public');
    assert.equal(cell(results[8], 1), cell(results[0]), "the same backend ran every statement");
  });

  it("never runs a statement inside a transaction another one left open", async () => {
    await queryMany(["CREATE TABLE IF NOT EXISTS marks (v int)"]);
    const { results } = await queryMany([
      "BEGIN",
      "INSERT INTO marks VALUES (1)",
      "SELECT 'between'",
      "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
      "INSERT INTO marks VALUES (2)",
      "SELECT current_setting('transaction_isolation')",
    ]);
    assert.deepEqual(
      results.map((r) => r.outcome.case),
      ["result", "result", "result", "result", "result", "result"],
    );
    assert.equal(cell(results[2]), "between");
    assert.equal(cell(results[5]), "read committed", "not inside the SERIALIZABLE transaction opened before it");
    const check = await t.pg(`${platform}_main`);
    try {
      const { rows } = await check.query("SELECT array_agg(v ORDER BY v) AS v FROM marks");
      assert.deepEqual(rows[0].v, [1, 2], "both inserts committed on their own");
    } finally {
      await check.end();
    }
  });

  it("gives each statement its own result or error, in request order", async () => {
    const { results } = await queryMany([
      { sql: "SELECT $1::text", params: [{ kind: { case: "textValue", value: "a" } }] },
      "SELECT 1 / 0",
      "  ",
      "SELECT no_such_column FROM pg_class",
      { sql: "SELECT $1::text", params: [{ kind: { case: "textValue", value: "e" } }] },
    ]);
    assert.equal(cell(results[0]), "a");
    const errors = results.map((r) => (r.outcome.case === "error" ? GatewayError.fromStatus(r.outcome.value) : undefined));
    assert.equal(errors[1]?.reason, "QUERY_FAILED");
    assert.equal(errors[1]?.metadata.sqlstate, "22012");
    assert.equal(errors[2]?.code, Code.InvalidArgument);
    assert.equal(errors[2]?.reason, "INVALID_REQUEST");
    assert.equal(errors[3]?.metadata.sqlstate, "42703");
    assert.equal(cell(results[4]), "e");
  });

  it("runs each query in its own tenant's database, with an error of its own for a tenant that does not exist", async () => {
    await t.adminClient().admin().createTenant(platform, "north");
    await t.adminClient().admin().createTenant(platform, "south");
    const { results } = await queryMany([
      { tenantId: "north", sql: "SELECT current_database()" },
      { sql: "SELECT current_database()" },
      { tenantId: "missing", sql: "SELECT current_database()" },
      { tenantId: "south", sql: "SELECT current_database()" },
      { tenantId: "north", sql: "SELECT 1 / 0" },
      { tenantId: "bad name!", sql: "SELECT current_database()" },
      { tenantId: "north", sql: "SELECT current_database()" },
    ]);
    assert.deepEqual(
      [0, 1, 3, 6].map((i) => cell(results[i])),
      [`${platform}_north`, `${platform}_main`, `${platform}_south`, `${platform}_north`],
    );
    const errors = results.map((r) => (r.outcome.case === "error" ? GatewayError.fromStatus(r.outcome.value) : undefined));
    assert.equal(errors[2]?.code, Code.NotFound);
    assert.equal(errors[2]?.reason, "DATABASE_NOT_FOUND");
    assert.equal(errors[2]?.metadata.tenant_id, "missing");
    assert.equal(errors[4]?.metadata.sqlstate, "22012");
    assert.equal(errors[5]?.code, Code.InvalidArgument);
  });

  it("refuses, as a whole, a call for another platform than the key's", async () => {
    const other = t.client().raw.query.queryMany({ platform: `${platform}x`, queries: [{ sql: "SELECT 1" }] });
    await rejectsWith(other, Code.PermissionDenied, "PERMISSION_DENIED");
  });

  it("refuses an empty call and one over 1,000 statements", async () => {
    await rejectsWith(queryMany([]), Code.InvalidArgument, "INVALID_REQUEST");
    await rejectsWith(queryMany(Array.from({ length: 1_001 }, () => "SELECT 1")), Code.InvalidArgument, "INVALID_REQUEST");
  });

  it("ends at the call's deadline, cancelling the running statement, and the connection serves the next call", async () => {
    const started = Date.now();
    const err = await queryMany(["SELECT pg_sleep(30)", "SELECT pg_sleep(30)"], 300).then(
      () => undefined,
      (e: unknown) => GatewayError.from(e),
    );
    assert.equal(err?.code, Code.DeadlineExceeded);
    assert.ok(Date.now() - started < 5_000);
    const { results } = await queryMany(["SELECT 'after'"], 20_000);
    assert.equal(cell(results[0]), "after");
    const check = await t.pg();
    try {
      await waitFor(async () => (await check.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'")).rows[0].n === 0);
    } finally {
      await check.end();
    }
  });

  it("ends at the call's deadline on every database it holds a connection of, and each serves the next call", async () => {
    // One connection of each of three databases at once, under the call's one deadline.
    const sleeps = [{ sql: "SELECT pg_sleep(31)" }, { tenantId: "north", sql: "SELECT pg_sleep(31)" }, { tenantId: "south", sql: "SELECT pg_sleep(31)" }];
    const check = await t.pg();
    try {
      const started = Date.now();
      const err = await queryMany(sleeps, 500).then(
        () => undefined,
        (e: unknown) => GatewayError.from(e),
      );
      assert.equal(err?.code, Code.DeadlineExceeded);
      assert.ok(Date.now() - started < 5_000);
      // Cancelled on PostgreSQL on all three backends, not only on the first.
      await waitFor(async () => (await check.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(31)'")).rows[0].n === 0);
      const { results } = await queryMany(
        ["", "north", "south"].map((tenantId) => ({ tenantId, sql: "SELECT current_database()" })),
        20_000,
      );
      assert.deepEqual(
        results.map((r) => cell(r)),
        [`${platform}_main`, `${platform}_north`, `${platform}_south`],
      );
    } finally {
      await check.end();
    }
  });
});

describe("SDK: concurrent queries of one platform are coalesced", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
  });
  after(() => t.close());

  it("sends queries made in one turn together (one QueryMany call without a QueryStream), each getting its own result", async () => {
    const client = createClient({ ...t.clientOptions(t.keys[platform]!), queryStream: false });
    const db = client.platform(platform);
    const before = await callsOf(t, platform, "QueryMany");
    const statementsBefore = await callsOf(t, platform, "QueryMany", "db_gateway_statements_total");
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => db.query<{ n: number; db: string }>("SELECT $1::int AS n, current_database() AS db", [i])),
    );
    assert.deepEqual(
      results.map((r) => r.rows[0]!.n),
      Array.from({ length: 50 }, (_, i) => i),
    );
    assert.ok(results.every((r) => r.rows[0]!.db === `${platform}_main`));
    assert.equal((await callsOf(t, platform, "QueryMany")) - before, 1);
    assert.equal((await callsOf(t, platform, "QueryMany", "db_gateway_statements_total")) - statementsBefore, 50);
    client.close();
  });

  it("fails only the query that failed", async () => {
    const db = t.client().platform(platform);
    const outcomes = await Promise.allSettled([db.query("SELECT 1 AS one"), db.query("SELECT 1 / $1::int", [0]), db.query("SELECT 3 AS three")]);
    assert.equal(outcomes[0].status, "fulfilled");
    assert.equal(outcomes[2].status, "fulfilled");
    assert.equal(outcomes[1].status, "rejected");
    const error = (outcomes[1] as PromiseRejectedResult).reason as GatewayError;
    assert.ok(error instanceof GatewayError);
    assert.equal(error.metadata.sqlstate, "22012");
  });

  it("keeps timeouts and calls with a signal apart, and sends queries to several tenants together", async () => {
    await t.adminClient().admin().createTenant(platform, "clinic_001");
    const client = t.client();
    const main = client.platform(platform);
    const tenant = main.tenant("clinic_001");
    // The earlier tests' streams are counted once they end (half-closed once idle).
    await waitFor(async () => (await metricValue(t, `db_gateway_open_streams{method="QueryStream"}`)) === 0, 5_000, "no stream open");
    const before = { messages: await callsOf(t, platform, "QueryStream"), one: await callsOf(t, platform, "Query") };
    const signal = new AbortController().signal;
    const results = await Promise.all([
      main.query("SELECT current_database() AS db"),
      main.query("SELECT current_database() AS db"),
      tenant.query("SELECT current_database() AS db"),
      tenant.query("SELECT current_database() AS db"),
      main.query("SELECT current_database() AS db", [], { timeoutMs: 10_000 }),
      main.query("SELECT current_database() AS db", [], { signal }),
    ]);
    assert.deepEqual(
      results.map((r) => r.rows[0]!.db),
      [`${platform}_main`, `${platform}_main`, `${platform}_clinic_001`, `${platform}_clinic_001`, `${platform}_main`, `${platform}_main`],
    );
    // Over the stream the first four open: main and tenant, two each, in one message, the one with its own
    // timeout in another (each message counts as a call); the one with a signal is a Query call of its own.
    assert.equal((await callsOf(t, platform, "QueryStream")) - before.messages, 2);
    assert.equal((await callsOf(t, platform, "Query")) - before.one, 1);
    client.close();
  });

  it("can be turned off", async () => {
    const client = (await import("../client-sdk/src/index.js")).createClient({ ...t.clientOptions(t.keys[platform]!), coalesce: false });
    try {
      const before = await callsOf(t, platform, "QueryMany");
      await Promise.all(Array.from({ length: 5 }, () => client.platform(platform).query("SELECT 1")));
      assert.equal(await callsOf(t, platform, "QueryMany"), before);
    } finally {
      client.close();
    }
  });
});

describe("QueryMany: how deep statements are pipelined", () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 16 } });
  });
  after(() => t.close());

  /** One call of `n` copies of `sql` to a platform's main database: the backends that ran them, and how long it took. */
  async function run(platform: string, sql: string, n: number): Promise<{ backends: number; millis: number }> {
    const client = createClient(t.clientOptions(t.keys[platform]!));
    try {
      const started = performance.now();
      const { results } = await client.raw.query.queryMany({ platform, queries: Array.from({ length: n }, () => ({ sql })) });
      const millis = performance.now() - started;
      return { backends: new Set(results.map((r) => cell(r))).size, millis };
    } finally {
      client.close();
    }
  }

  it("runs slow statements side by side, each on a connection of its own", async () => {
    const platform = t.platforms[0]!;
    for (let round = 0; round < 3; round++) {
      const { backends, millis } = await run(platform, "SELECT pg_backend_pid() FROM pg_sleep(0.3)", 6);
      assert.equal(backends, 6, `round ${round}: 6 statements on ${backends} backends`);
      assert.ok(millis < 1_500, `round ${round}: 6 sleeps of 0.3 s took ${Math.round(millis)} ms (1.8 s one after another)`);
    }
  });
});
