// Health end to end: grpc.health.v1 and /health follow PostgreSQL, and turn NOT_SERVING while the gateway drains.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient as createConnectClient } from "@connectrpc/connect";
import { HealthCheckResponse_ServingStatus, Health } from "../wire/src/gen/health/v1/health_pb.js";
import { metricSample, metricsText, rawTransport, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { startOwnPostgres, type OwnPostgres } from "./helpers/own-postgres.js";
import { testPki } from "./helpers/pki.js";
import { waitFor } from "./helpers/wait.js";

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
      assert.deepEqual(Object.keys(healthy.body).sort(), ["active_pools", "clusters", "postgres_connected", "status", "total_connections"]);
      assert.deepEqual(healthy.body.clusters, { primary: { connected: true } });
      assert.equal(healthy.body.status, "healthy");
      await server.stop();
      await waitFor(async () => (await status()) === HealthCheckResponse_ServingStatus.NOT_SERVING, 5_000, "NOT_SERVING");
      assert.deepEqual(await http("/health"), {
        status: 503,
        body: { status: "unhealthy", postgres_connected: false, active_pools: 0, total_connections: 0, clusters: { primary: { connected: false } } },
      });
      assert.equal((await http("/health/ready")).status, 503);
      assert.equal((await http("/health/live")).status, 200, "alive: restarting the gateway would not help");
      assert.equal(metricSample(await metricsText(t), "db_gateway_postgres_up"), 0);
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
