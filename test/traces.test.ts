// Traces end to end: an SDK call's span and the gateway's arrive at an OTLP receiver in one trace.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createClient } from "../client-sdk/src/index.js";
import { waitFor } from "./helpers/wait.js";

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
