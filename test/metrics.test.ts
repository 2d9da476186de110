// Metrics end to end: GET /metrics checked by promtool, the alert rules, and what the counters count.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createClient, GatewayError } from "../client-sdk/src/index.js";
import { metricSample, metricsText, startTestGateway, type TestGateway } from "./helpers/gateway.js";

const root = new URL("..", import.meta.url).pathname;

function promtool(): string | undefined {
  try {
    execFileSync("promtool", ["--version"], { stdio: "ignore" });
    return "promtool";
  } catch {
    return undefined;
  }
}

describe("metrics", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxPools: 20 } });
    platform = t.platforms[0]!;
  });
  after(() => t.close());

  it("GET /metrics passes promtool check metrics, and has every metric the alerts and the dashboard use", async (ctx) => {
    await t.client().platform(platform).query("SELECT 1");
    const text = await metricsText(t);
    const used = new Set<string>();
    for (const file of ["ops/prometheus/alerts.yml", "ops/grafana/db-gateway.json"]) {
      for (const m of (await readFile(join(root, file), "utf8")).matchAll(/\b(db_gateway_[a-z_]+|process_[a-z_]+|nodejs_[a-z0-9_]+)\b/g)) used.add(m[1]!);
    }
    assert.ok(used.size > 10);
    for (const name of used) {
      const base = name.replace(/_(bucket|sum|count)$/, "");
      assert.match(text, new RegExp(`^# TYPE ${base} `, "m"), `${name} is used in ops/ but not exposed`);
    }
    const tool = promtool();
    if (tool === undefined) {
      ctx.skip("promtool is not installed (Debian's prometheus package; .ci/run installs it)");
      return;
    }
    const check = execFileSync(tool, ["check", "metrics"], { input: text, encoding: "utf8" });
    assert.equal(check.trim(), "");
  });

  it("the alert rules pass promtool check rules and their unit tests", async (ctx) => {
    const tool = promtool();
    if (tool === undefined) {
      ctx.skip("promtool is not installed (Debian's prometheus package; .ci/run installs it)");
      return;
    }
    execFileSync(tool, ["check", "rules", "ops/prometheus/alerts.yml"], { cwd: root, stdio: "pipe" });
    const out = execFileSync(tool, ["test", "rules", "ops/prometheus/alerts.test.yml"], { cwd: root, encoding: "utf8" });
    assert.match(out, /SUCCESS/);
  });

  it("counters and histograms move as calls happen", async (ctx) => {
    const before = await metricsText(t);
    const db = t.client().platform(platform);
    // Query calls: the SDK without coalescing (by default its queries go over a QueryStream, below).
    const unaryClient = createClient({ ...t.clientOptions(t.keys[platform]!), coalesce: false });
    ctx.after(() => unaryClient.close());
    const calls = unaryClient.platform(platform);
    for (let i = 0; i < 3; i++) await calls.query("SELECT $1::int AS i", [i]);
    await assert.rejects(calls.query("SELECT * FROM no_such_table"));
    // Batch and Transaction calls too: the coalescing SDK carries them over its QueryStream once it is open.
    await calls.batch(["SELECT 1", "SELECT 2"]);
    for await (const row of db.stream("SELECT generate_series(1, 3)")) void row;
    await calls.transaction(async (tx) => {
      await tx.query("SELECT 1");
      await tx.query("SELECT 2");
    });
    const now = await metricsText(t);
    const delta = (name: string, labels: Record<string, string> = {}) => metricSample(now, name, labels) - metricSample(before, name, labels);
    assert.equal(delta("db_gateway_queries_total", { platform, method: "Query" }), 4);
    assert.equal(delta("db_gateway_queries_total", { platform, method: "Batch" }), 1);
    assert.equal(delta("db_gateway_queries_total", { platform, method: "StreamQuery" }), 1);
    assert.equal(delta("db_gateway_queries_total", { platform, method: "Transaction" }), 1);
    assert.equal(delta("db_gateway_statements_total", { platform, method: "Query" }), 4);
    assert.equal(delta("db_gateway_statements_total", { platform, method: "Batch" }), 2);
    assert.equal(delta("db_gateway_statements_total", { platform, method: "StreamQuery" }), 1);
    assert.equal(delta("db_gateway_statements_total", { platform, method: "Transaction" }), 2);
    assert.equal(delta("db_gateway_query_duration_seconds_count", { platform, method: "Query" }), 4);
    assert.equal(delta("db_gateway_query_duration_seconds_bucket", { platform, method: "Query", le: "+Inf" }), 4);
    assert.equal(delta("db_gateway_errors_total", { type: "QUERY_FAILED" }), 1);
    assert.ok(delta("db_gateway_pool_hits_total") + delta("db_gateway_pool_misses_total") >= 6);
    assert.ok(delta("db_gateway_pool_wait_seconds_count") >= 6);
    assert.equal(metricSample(now, "db_gateway_open_streams", { method: "StreamQuery" }), 0);
    assert.equal(metricSample(now, "db_gateway_postgres_up"), 1);
    assert.ok(metricSample(now, "db_gateway_total_connections") >= 1);
    assert.equal(metricSample(now, "db_gateway_max_connections"), 50);
  });

  it("a QueryStream counts each message as a call, each query as a statement, and each failed query as an error", async () => {
    const before = await metricsText(t);
    const db = t.client().platform(platform);
    await db.query("SELECT 1");
    await Promise.all([db.query("SELECT 2"), db.query("SELECT 3")]);
    const failures = await Promise.allSettled([
      db.query("SELECT * FROM no_such_table"),
      db.query("SELECT * FROM no_such_table"),
      db.tenant("nobody").query("SELECT 1"),
    ]);
    assert.deepEqual(
      failures.map((f) => f.status === "rejected" && GatewayError.from(f.reason).reason),
      ["QUERY_FAILED", "QUERY_FAILED", "DATABASE_NOT_FOUND"],
    );
    const now = await metricsText(t);
    const delta = (name: string, labels: Record<string, string> = {}) => metricSample(now, name, labels) - metricSample(before, name, labels);
    // Three messages, and the stream itself if the SDK has half-closed it by now (500 ms after its last answer).
    const streamCalls = delta("db_gateway_queries_total", { platform, method: "QueryStream" });
    assert.ok(streamCalls === 3 || streamCalls === 4, `${streamCalls} QueryStream calls`);
    assert.equal(delta("db_gateway_statements_total", { platform, method: "QueryStream" }), 6);
    assert.equal(delta("db_gateway_queries_total", { platform, method: "Query" }), 0);
    assert.equal(delta("db_gateway_errors_total", { type: "QUERY_FAILED" }), 2);
    assert.equal(delta("db_gateway_errors_total", { type: "DATABASE_NOT_FOUND" }), 1);
  });
});
