// Observability end to end: metrics (checked by promtool), alert rules, call logs, health, draining, the audit trail, rate limits and traces.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { createClient as createConnectClient } from "@connectrpc/connect";
import pg from "pg";
import { HealthCheckResponse_ServingStatus, Health } from "../wire/src/gen/health/v1/health_pb.js";
import { RetryInfoSchema } from "../wire/src/gen/google/rpc/error_details_pb.js";
import { ConnectError } from "@connectrpc/connect";
import { Code, createClient, GatewayError } from "../client-sdk/src/index.js";
import { createLogger } from "../server/src/telemetry/logger.js";
import { metricsText, rawTransport, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { startOwnPostgres, type OwnPostgres } from "./helpers/own-postgres.js";
import { testPki } from "./helpers/pki.js";
import { waitFor } from "./helpers/wait.js";

const root = new URL("..", import.meta.url).pathname;

/** The value of one series in Prometheus text, or 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (match?.[1] !== name) continue;
    const set = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => set[k] === v)) return Number(match[3]);
  }
  return 0;
}

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
    await db.batch(["SELECT 1", "SELECT 2"]);
    for await (const row of db.stream("SELECT generate_series(1, 3)")) void row;
    await db.transaction(async (tx) => {
      await tx.query("SELECT 1");
      await tx.query("SELECT 2");
    });
    const now = await metricsText(t);
    const delta = (name: string, labels: Record<string, string> = {}) => sample(now, name, labels) - sample(before, name, labels);
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
    assert.equal(sample(now, "db_gateway_open_streams", { method: "StreamQuery" }), 0);
    assert.equal(sample(now, "db_gateway_postgres_up"), 1);
    assert.ok(sample(now, "db_gateway_total_connections") >= 1);
    assert.equal(sample(now, "db_gateway_max_connections"), 50);
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
    const delta = (name: string, labels: Record<string, string> = {}) => sample(now, name, labels) - sample(before, name, labels);
    // Three messages, and the stream itself if the SDK has half-closed it by now (500 ms after its last answer).
    const streamCalls = delta("db_gateway_queries_total", { platform, method: "QueryStream" });
    assert.ok(streamCalls === 3 || streamCalls === 4, `${streamCalls} QueryStream calls`);
    assert.equal(delta("db_gateway_statements_total", { platform, method: "QueryStream" }), 6);
    assert.equal(delta("db_gateway_queries_total", { platform, method: "Query" }), 0);
    assert.equal(delta("db_gateway_errors_total", { type: "QUERY_FAILED" }), 2);
    assert.equal(delta("db_gateway_errors_total", { type: "DATABASE_NOT_FOUND" }), 1);
  });
});

describe("logs", () => {
  const lines: string[] = [];
  let t: TestGateway;
  before(async () => {
    const sink = new Writable({
      write(chunk, _encoding, done) {
        lines.push(...String(chunk).split("\n").filter(Boolean));
        done();
      },
    });
    t = await startTestGateway({ platforms: 1, overrides: { logger: createLogger("info", sink) } });
  });
  after(() => t.close());

  it("one JSON line per call with the standard fields, the caller's request id sent back, and no secret or parameter", async (ctx) => {
    const platform = t.platforms[0]!;
    const secretValue = "s3cr3t-parameter-value";
    let echoed: string | null = null;
    await t
      .client()
      .raw.query.query(
        { platform, sql: "SELECT $1::text AS v", params: [{ kind: { case: "textValue", value: secretValue } }] },
        { headers: { "x-request-id": "req-abc-123" }, onHeader: (h) => (echoed = h.get("x-request-id")) },
      );
    assert.equal(echoed, "req-abc-123");
    // Query calls (the SDK without coalescing), then the same over a QueryStream (the SDK's default).
    const unaryClient = createClient({ ...t.clientOptions(t.keys[platform]!), coalesce: false });
    ctx.after(() => unaryClient.close());
    const unary = unaryClient.platform(platform);
    await assert.rejects(unary.query("SELECT $1::int", [`${secretValue}-2`])); // PostgreSQL's message quotes it
    await assert.rejects(unary.tenant("nobody").query("SELECT 1"));
    const streamed = t.client().platform(platform);
    await Promise.allSettled([
      streamed.query("SELECT $1::int", [`${secretValue}-3`]),
      streamed.query("SELECT $1::int", [`${secretValue}-4`]),
      streamed.tenant("nobody").query("SELECT 1"),
    ]);
    await new Promise((r) => setTimeout(r, 100));
    const calls = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "call");
    assert.ok(calls.length >= 3, `${calls.length} call lines`);
    for (const line of calls) {
      for (const field of ["time", "request_id", "platform", "operation", "database", "status", "duration_ms"])
        assert.ok(field in line, `${field} in ${JSON.stringify(line)}`);
      assert.ok(!Number.isNaN(Date.parse(String(line.time))));
    }
    const first = calls.find((l) => l.request_id === "req-abc-123")!;
    assert.deepEqual([first.platform, first.operation, first.database, first.status], [platform, "dbgateway.v1.QueryService/Query", `${platform}_main`, "OK"]);
    const failed = calls.find((l) => l.reason === "QUERY_FAILED")!;
    assert.equal(failed.sqlstate, "22P02");
    const notFound = calls.find((l) => l.reason === "DATABASE_NOT_FOUND")!;
    assert.equal(notFound.status, "NOT_FOUND");
    // A message whose queries failed on their own: OK as a message, its queries' failures tallied by reason and SQLSTATE.
    const message = calls.find((l) => l.operation === "dbgateway.v1.QueryService/QueryStream" && l.query_errors !== undefined)!;
    assert.ok(message, JSON.stringify(calls));
    assert.equal(message.status, "OK");
    assert.deepEqual(message.query_errors, [
      { reason: "DATABASE_NOT_FOUND", count: 1 },
      { reason: "QUERY_FAILED", sqlstate: "22P02", count: 2 },
    ]);
    const all = lines.join("\n");
    for (const secret of [secretValue, t.keys[platform]!, t.adminKey, t.gatewaySecret, "BEGIN CERTIFICATE", "PRIVATE KEY"]) {
      assert.ok(!all.includes(secret), `the logs contain "${secret.slice(0, 12)}…"`);
    }
  });
});

describe("health", () => {
  let server: OwnPostgres;
  let t: TestGateway;
  before(async () => {
    server = await startOwnPostgres();
    t = await startTestGateway({ platforms: 1, databaseUrl: server.url, overrides: { healthCheckMillis: 300 } });
  });
  after(async () => {
    await t.close();
    await server.close();
  });

  it("turns NOT_SERVING (grpc.health.v1 and /health) while PostgreSQL is stopped, and SERVING again when it returns", async () => {
    const { transport, close } = rawTransport(t, { cert: testPki().client.cert, key: testPki().client.key });
    const health = createConnectClient(Health, transport);
    const status = async () => (await health.check({ service: "" })).status;
    const http = async (path: string) => {
      const res = await fetch(`${t.httpUrl}${path}`);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    try {
      assert.equal(await status(), HealthCheckResponse_ServingStatus.SERVING);
      const healthy = await http("/health");
      assert.equal(healthy.status, 200);
      assert.deepEqual(Object.keys(healthy.body).sort(), ["active_pools", "postgres_connected", "status", "total_connections"]);
      assert.equal(healthy.body.status, "healthy");
      await server.stop();
      await waitFor(async () => (await status()) === HealthCheckResponse_ServingStatus.NOT_SERVING, 5_000, "NOT_SERVING");
      assert.deepEqual(await http("/health"), { status: 503, body: { status: "unhealthy", postgres_connected: false, active_pools: 0, total_connections: 0 } });
      assert.equal((await http("/health/ready")).status, 503);
      assert.equal((await http("/health/live")).status, 200, "alive: restarting the gateway would not help");
      assert.equal(sample(await metricsText(t), "db_gateway_postgres_up"), 0);
      await server.start();
      await waitFor(async () => (await status()) === HealthCheckResponse_ServingStatus.SERVING, 10_000, "SERVING again");
      assert.equal((await http("/health/ready")).status, 200);
    } finally {
      close();
    }
  });
});

describe("health while draining", () => {
  it("/health and /health/ready say draining while calls in flight finish", async () => {
    const t = await startTestGateway({ platforms: 1 });
    try {
      const running = t.client().platform(t.platforms[0]!).query("SELECT pg_sleep(1)");
      running.catch(() => undefined); // awaited below; a failure must not count as unhandled before that
      await waitFor(async () => ((await t.adminClient().admin().getPoolStats()).totals?.totalConnections ?? 0) > 0, 5_000, "the call running");
      const httpUrl = t.httpUrl;
      const closing = t.gateway.close(5_000);
      const health = await fetch(`${httpUrl}/health`);
      assert.equal(health.status, 503);
      assert.equal(((await health.json()) as { status: string }).status, "draining");
      assert.equal((await fetch(`${httpUrl}/health/ready`)).status, 503);
      assert.equal((await fetch(`${httpUrl}/health/live`)).status, 200);
      await running;
      await closing;
    } finally {
      await t.close().catch(() => undefined);
    }
  });
});

describe("audit trail", () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
  });
  after(() => t.close());

  it("records every administrative action with who, what, when and the outcome, newest first, append-only", async () => {
    const platform = t.platforms[0]!;
    const admin = t.adminClient().admin();
    const started = Date.now();
    await admin.createTenant(platform, "audited");
    await assert.rejects(admin.createTenant(platform, "audited"));
    await admin.dropTenant(platform, "audited");
    const raw = t.adminClient().raw.admin;
    const { events } = await raw.listAuditEvents({ platform });
    assert.deepEqual(
      events.map((e) => [e.action, e.tenantId, e.database, e.outcome]),
      [
        ["tenant.drop", "audited", `${platform}_audited`, "OK"],
        ["tenant.create", "audited", `${platform}_audited`, "DATABASE_EXISTS"],
        ["tenant.create", "audited", `${platform}_audited`, "OK"],
      ],
    );
    for (const e of events) {
      assert.match(e.actor, /^admin key, client certificate "test-client"$/);
      assert.match(e.peer, /127\.0\.0\.1|localhost|::1/);
      assert.ok(e.requestId.length > 0);
      assert.ok(Number(e.time!.seconds) * 1000 >= started - 1_000);
    }
    const page = await raw.listAuditEvents({ platform, pageSize: 2 });
    assert.equal(page.events.length, 2);
    const rest = await raw.listAuditEvents({ platform, pageSize: 2, pageToken: page.nextPageToken });
    assert.deepEqual(
      rest.events.map((e) => e.id),
      [events[2]!.id],
    );
    assert.equal(rest.nextPageToken, "");
    // Append-only, even for the administrative role that writes it.
    const url = new URL(t.databaseUrl);
    url.pathname = `/catalog_${platform}`;
    const direct = new pg.Client({ connectionString: url.toString() });
    await direct.connect();
    try {
      for (const sql of ["UPDATE audit_log SET outcome = 'OK'", "DELETE FROM audit_log", "TRUNCATE audit_log"]) {
        await assert.rejects(direct.query(sql), /append-only/, sql);
      }
    } finally {
      await direct.end();
    }
    // A platform key cannot read it.
    await assert.rejects(t.client().raw.admin.listAuditEvents({}), (err: unknown) => GatewayError.from(err).code === Code.PermissionDenied);
  });
});

describe("rate limits", () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway({ platforms: 2, overrides: { rateLimit: { perSecond: 5, burst: 5 } } });
  });
  after(() => t.close());

  it("refuse calls beyond a platform's rate with RESOURCE_EXHAUSTED, RATE_LIMITED and a RetryInfo, per platform", async () => {
    const [a, b] = t.platforms as [string, string];
    const refusedOf = (results: PromiseSettledResult<unknown>[]) => {
      const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => GatewayError.from(r.reason));
      for (const err of refused) {
        assert.equal(err.code, Code.ResourceExhausted);
        assert.equal(err.reason, "RATE_LIMITED");
        assert.ok(err.retryable === false);
        const retry = ConnectError.from(err.cause).findDetails(RetryInfoSchema)[0];
        assert.ok(retry?.retryDelay !== undefined && retry.retryDelay.nanos + Number(retry.retryDelay.seconds) * 1e9 > 0);
      }
      return refused.length;
    };
    const refill = () => new Promise((resolve) => setTimeout(resolve, 1_100));
    // Twenty clients' QueryStreams opened at once: those over the limit are refused as calls.
    const opened = refusedOf(await Promise.allSettled(Array.from({ length: 20 }, () => t.client(a).platform(a).query("SELECT 1"))));
    assert.ok(opened >= 10, `${opened} streams refused`);
    // Query calls.
    await refill();
    const calls = refusedOf(
      await Promise.allSettled(Array.from({ length: 12 }, () => t.client(a).platform(a).query("SELECT 1", [], { signal: new AbortController().signal }))),
    );
    assert.ok(calls >= 4, `${calls} Query calls refused`);
    // Messages of one open stream, one turn after another: those over the limit get the error as their answer.
    await refill();
    const db = t.client(a).platform(a);
    const messages: PromiseSettledResult<unknown>[] = [];
    for (let i = 0; i < 12; i++) messages.push(...(await Promise.allSettled([db.query("SELECT 1")])));
    const answered = refusedOf(messages);
    assert.ok(answered >= 4, `${answered} messages refused`);
    // Another platform has a bucket of its own.
    await t.client(b).platform(b).query("SELECT 1");
    assert.ok(sample(await metricsText(t), "db_gateway_rate_limited_total", { platform: a }) >= 18);
  });
});

describe("traces", () => {
  it("an SDK query inside a span arrives at an OTLP receiver in its caller's trace, as a Query call and over a QueryStream", async () => {
    const { trace, context } = await import("@opentelemetry/api");
    const { AsyncLocalStorageContextManager } = await import("@opentelemetry/context-async-hooks");
    const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = await import("@opentelemetry/sdk-trace-base");
    const { createServer } = await import("node:http");
    const { startGatewayProcess } = await import("./helpers/gateway-process.js");
    const { dropPlatformDatabases, pgUrl } = await import("./helpers/gateway.js");

    // A real OTLP/HTTP (JSON) receiver.
    const received: {
      traceId: string;
      spanId: string;
      parentSpanId?: string;
      name: string;
      kind: number;
      attributes: { key: string; value: Record<string, unknown> }[];
      links?: { traceId: string; spanId: string }[];
    }[] = [];
    const receiver = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        if (req.url === "/v1/traces") {
          const payload = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: (typeof received)[number][] }[] }[] };
          for (const rs of payload.resourceSpans) for (const ss of rs.scopeSpans) received.push(...ss.spans);
        }
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    const receiverPort = await new Promise<number>((resolve) => receiver.listen(0, "127.0.0.1", () => resolve((receiver.address() as { port: number }).port)));

    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    trace.setGlobalTracerProvider(provider);

    const gateway = await startGatewayProcess({
      databaseUrl: pgUrl(),
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiverPort}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_BSP_SCHEDULE_DELAY: "100",
        OTEL_SERVICE_NAME: "db-gateway-test",
      },
    });
    let unaryClient: ReturnType<typeof createClient> | undefined;
    let manyClient: ReturnType<typeof createClient> | undefined;
    try {
      await gateway.adminClient().admin().createTenant(gateway.platform, "");
      const db = gateway.client().platform(gateway.platform);
      // A Query call: the SDK without coalescing.
      unaryClient = createClient({ ...gateway.clientOptions(gateway.platformKey), coalesce: false });
      const unary = unaryClient.platform(gateway.platform);
      const caller = trace.getTracer("test");
      let callerSpan: { traceId: string; spanId: string } | undefined;
      await caller.startActiveSpan("checkout", async (span) => {
        callerSpan = span.spanContext();
        await unary.query("SELECT $1::text AS secret_param", ["not-in-the-trace"]);
        span.end();
      });
      const server = () => received.find((s) => s.traceId === callerSpan!.traceId && s.name === "dbgateway.v1.QueryService/Query");
      await waitFor(
        () => server() !== undefined && received.filter((s) => s.parentSpanId === server()!.spanId).length >= 2,
        10_000,
        "the gateway's spans",
      ).catch((err: Error) => {
        throw new Error(
          `${err.message}; caller ${JSON.stringify(callerSpan)} received ${JSON.stringify(received.map((s) => [s.name, s.traceId, s.spanId, s.parentSpanId]))}`,
        );
      });
      const serverSpan = server()!;
      assert.equal(serverSpan.parentSpanId, callerSpan!.spanId, "the caller's span is the parent of the gateway's server span");
      assert.equal(serverSpan.kind, 2); // SERVER
      const attr = (s: (typeof received)[number], key: string) => Object.values(s.attributes.find((a) => a.key === key)?.value ?? {})[0];
      assert.equal(attr(serverSpan, "rpc.system"), "grpc");
      assert.equal(attr(serverSpan, "rpc.method"), "Query");
      const children = received.filter((s) => s.parentSpanId === serverSpan.spanId);
      const acquire = children.find((s) => s.name === "pool.acquire");
      const statement = children.find((s) => attr(s, "db.system") === "postgresql");
      assert.ok(acquire, `children: ${children.map((c) => c.name).join(", ")}`);
      assert.ok(statement);
      assert.equal(statement.name, `SELECT ${gateway.platform}_main`);
      assert.equal(attr(statement, "db.namespace"), `${gateway.platform}_main`);
      assert.equal(attr(statement, "db.query.text"), "SELECT $1::text AS secret_param");
      assert.ok(!JSON.stringify(received).includes("not-in-the-trace"), "parameter values never reach a trace");
      assert.deepEqual(
        exporter.getFinishedSpans().map((s) => s.name),
        ["checkout"],
      );

      // By default the SDK sends its queries over a QueryStream, which carries many callers' queries: the stream's
      // span is in no caller's trace, and each statement's span is in its own caller's, linked to the message's span.
      const spansOf = async (name: string, run: () => Promise<unknown>) =>
        caller.startActiveSpan(name, async (span) => {
          await run();
          span.end();
          return span.spanContext();
        });
      // A lone query, then two callers' queries made in the same turn (one message).
      const lone = await spansOf("lookup", () => db.query("SELECT 0 AS lone"));
      const [a, b] = await Promise.all([spansOf("report-a", () => db.query("SELECT 1 AS a")), spansOf("report-b", () => db.query("SELECT 2 AS b"))]);
      const statementOf = (sql: string) => received.find((s) => attr(s, "db.query.text") === sql);
      const byId = (spanId: string | undefined) => received.find((s) => s.spanId === spanId);
      // The stream ends (and its span with it) once the SDK half-closes it, 500 ms after its last answer.
      const stream = () => received.find((s) => s.name === "dbgateway.v1.QueryService/QueryStream");
      const sqls = ["SELECT 0 AS lone", "SELECT 1 AS a", "SELECT 2 AS b"];
      await waitFor(
        () => stream() !== undefined && sqls.every((sql) => byId(statementOf(sql)?.links?.[0]?.spanId) !== undefined),
        10_000,
        "the stream's spans",
      ).catch((err: Error) => {
        throw new Error(`${err.message}; received ${JSON.stringify(received.map((s) => [s.name, s.traceId, s.spanId, s.parentSpanId, s.links]))}`);
      });
      assert.equal(stream()!.parentSpanId || undefined, undefined, "the stream's span is a root: in no caller's trace");
      /** A statement's span: in its caller's trace, a child of its caller's span; returns the span it links to. */
      const linkedFrom = (sql: string, callerOf: { traceId: string; spanId: string }) => {
        const statement = statementOf(sql)!;
        assert.equal(statement.traceId, callerOf.traceId, `${sql}: in its caller's trace`);
        assert.equal(statement.parentSpanId, callerOf.spanId, `${sql}: a child of its caller's span`);
        assert.equal(statement.kind, 3); // CLIENT
        assert.equal(statement.name, `SELECT ${gateway.platform}_main`);
        return byId(statement.links![0]!.spanId)!;
      };
      for (const [sql, callerOf] of [
        ["SELECT 0 AS lone", lone],
        ["SELECT 1 AS a", a],
        ["SELECT 2 AS b", b],
      ] as const) {
        const message = linkedFrom(sql, callerOf);
        assert.equal(message.name, "dbgateway.v1.QueryService/QueryStream message", `${sql}: linked to the message that carried it`);
        assert.equal(attr(message, "rpc.method"), "QueryStream");
        assert.equal(message.parentSpanId, stream()!.spanId, "a message's span is a child of the stream's");
        assert.equal(message.traceId, stream()!.traceId);
      }
      assert.notEqual(a.traceId, b.traceId);
      assert.equal(
        statementOf("SELECT 1 AS a")!.links![0]!.spanId,
        statementOf("SELECT 2 AS b")!.links![0]!.spanId,
        "the two callers' queries went in one message",
      );
      assert.notEqual(statementOf("SELECT 0 AS lone")!.links![0]!.spanId, statementOf("SELECT 1 AS a")!.links![0]!.spanId);

      // QueryMany calls (queryStream: false) carry each query's caller's trace context the same way; the call's own
      // span is in its first query's caller's trace.
      manyClient = createClient({ ...gateway.clientOptions(gateway.platformKey), queryStream: false });
      const many = manyClient.platform(gateway.platform);
      const [c, d] = await Promise.all([spansOf("many-c", () => many.query("SELECT 3 AS c")), spansOf("many-d", () => many.query("SELECT 4 AS d"))]);
      // A query whose trace context holds no valid span context: its span stays under the call's.
      const raw = await spansOf("raw", () =>
        manyClient!.raw.query.queryMany({
          platform: gateway.platform,
          queries: [{ sql: "SELECT 5 AS bogus", traceContext: { traceparent: "00-not-a-trace" } }],
        }),
      );
      await waitFor(
        () =>
          ["SELECT 3 AS c", "SELECT 4 AS d"].every((sql) => byId(statementOf(sql)?.links?.[0]?.spanId) !== undefined) &&
          statementOf("SELECT 5 AS bogus") !== undefined &&
          byId(statementOf("SELECT 5 AS bogus")!.parentSpanId) !== undefined,
        10_000,
        "the QueryMany spans",
      );
      for (const call of [linkedFrom("SELECT 3 AS c", c), linkedFrom("SELECT 4 AS d", d)]) {
        assert.equal(call.name, "dbgateway.v1.QueryService/QueryMany");
        assert.equal(call.parentSpanId, c.spanId, "the call's span: under its first query's caller's");
      }
      const bogus = statementOf("SELECT 5 AS bogus")!;
      assert.deepEqual(bogus.links ?? [], []);
      const bogusCall = byId(bogus.parentSpanId)!;
      assert.equal(bogusCall.name, "dbgateway.v1.QueryService/QueryMany");
      assert.equal(bogusCall.parentSpanId, raw.spanId);
    } finally {
      unaryClient?.close();
      manyClient?.close();
      await gateway.close();
      await dropPlatformDatabases([gateway.platform]);
      receiver.close();
      trace.disable();
      context.disable();
    }
  });
});
