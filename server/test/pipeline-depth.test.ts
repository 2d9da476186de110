// How deep QueryMany pipelines statements: the policy, and a database's time per statement learnt from its pipelines on PostgreSQL.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import pg from "pg";
import { connectionsFor, MAX_PIPELINE_DEPTH, PIPELINE_DEPTH, pipelineDepth, runQueryMany, statementMicros } from "../src/execution/query-many.js";
import { DEFAULT_RESULT_LIMITS, ResultBudget } from "../src/execution/result-budget.js";
import { TenantQuerySchema } from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { ResultSetSchema } from "../../wire/src/gen/dbgateway/v1/values_pb.js";
import { PoolManager } from "../src/pool/pool-manager.js";
import { pgUrl } from "../../test/helpers/gateway.js";

describe("QueryMany pipeline depth: the policy", () => {
  it("pipelines as deep as keeps a pipeline within 1 ms, at most 16 deep, and not at all while unmeasured", () => {
    assert.equal(pipelineDepth(undefined), 1);
    assert.equal(pipelineDepth(0), MAX_PIPELINE_DEPTH);
    assert.equal(pipelineDepth(50), MAX_PIPELINE_DEPTH);
    assert.equal(pipelineDepth(250), 4);
    assert.equal(pipelineDepth(999), 1);
    assert.equal(pipelineDepth(300_000), 1);
  });

  it("spreads slow or unmeasured statements over every free connection, fast ones over as few as their depth needs", () => {
    assert.equal(connectionsFor(64, 16, undefined), 16, "unmeasured: every free connection");
    assert.equal(connectionsFor(6, 16, undefined), 6, "never more connections than statements");
    assert.equal(connectionsFor(64, 16, 300_000), 16, "slow: every free connection");
    assert.equal(connectionsFor(64, 16, 50), 4, "fast: 16 deep");
    assert.equal(connectionsFor(64, 16, 250), 16, "4 deep");
    assert.equal(connectionsFor(64, 2, undefined), 64 / PIPELINE_DEPTH, "waiting for connections: at most PIPELINE_DEPTH deep");
    assert.equal(connectionsFor(64, 2, 50), 4, "waiting, fast: the budget's depth");
  });
});

describe("QueryMany pipeline depth: against PostgreSQL", () => {
  const database = `pipeline_depth_${randomBytes(4).toString("hex")}`;
  let admin: pg.Client;
  let pools: PoolManager;
  const results = new ResultBudget(DEFAULT_RESULT_LIMITS);
  before(async () => {
    admin = new pg.Client({ connectionString: pgUrl() });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    const url = new URL(pgUrl());
    url.pathname = `/${database}`;
    pools = new PoolManager({
      connectionFor: () => ({ connectionString: url.toString() }),
      maxConnectionsPerPool: 16,
      maxTotalConnections: 20,
      maxPools: 2,
      maxWaitersPerPool: 1_000,
      acquireTimeoutMillis: 10_000,
      poolIdleTimeoutMillis: 60_000,
      connectionIdleTimeoutMillis: 60_000,
      maxLifetimeMillis: 3_600_000,
      validateAfterIdleMillis: 60_000,
      reapIntervalMillis: 1_000,
      cancelGraceMillis: 2_000,
    });
  });
  after(async () => {
    await pools.closeAll();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.end();
  });

  /** One QueryMany share of `n` copies of `sql`: how many backends ran them. */
  async function backendsFor(sql: string, n: number): Promise<number> {
    const queries = Array.from({ length: n }, () => create(TenantQuerySchema, { sql }));
    const { outcomes } = await runQueryMany(pools, async () => database, queries, { deadline: Date.now() + 30_000 }, results.account());
    const pids = outcomes.map((o) => {
      assert.ok(o.result !== undefined, o.error?.message);
      return fromBinary(ResultSetSchema, o.result).rows[0]?.values[0]?.kind.value;
    });
    return new Set(pids).size;
  }

  it("learns a database's time per statement from its pipelines, and spreads the next call accordingly", async () => {
    // The pool's 16 connections opened; one statement a connection teaches nothing of the time per statement.
    assert.equal(await backendsFor("SELECT pg_backend_pid() FROM pg_sleep(0.3)", 16), 16);
    assert.equal(statementMicros(pools, database), undefined);
    assert.equal(await backendsFor("SELECT pg_backend_pid()", 64), 16, "unmeasured: every free connection");
    const learned = statementMicros(pools, database);
    assert.ok(learned !== undefined && learned > 0, `a time per statement was learned (${learned})`);
    for (let round = 0; round < 5; round++) {
      const expected = connectionsFor(64, pools.available(database), statementMicros(pools, database));
      assert.equal(await backendsFor("SELECT pg_backend_pid()", 64), expected, `round ${round}: ${statementMicros(pools, database)} µs a statement`);
    }
    // Slow statements pipelined behind each other raise the time at once: the next call spreads again.
    await backendsFor("SELECT pg_backend_pid() FROM pg_sleep(0.05)", 32);
    assert.ok(statementMicros(pools, database)! > 5_000, `${statementMicros(pools, database)} µs a statement after sleeps of 50 ms`);
    assert.equal(await backendsFor("SELECT pg_backend_pid() FROM pg_sleep(0.05)", 16), 16);
  });
});
