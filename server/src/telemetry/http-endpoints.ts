// The operators' HTTP port: /metrics for Prometheus, and /health, /health/live and /health/ready for orchestrators.
import { createServer, type Server } from "node:http";
import type { HealthMonitor } from "./health.js";
import type { GatewayMetrics } from "./metrics.js";

/** The operators' HTTP port. */
export interface HttpEndpoints {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Serves, on a port of their own (plain HTTP, for Prometheus and
 * orchestrators on the host's network):
 *
 * - `GET /metrics`: the Prometheus exposition;
 * - `GET /health`: seed 001 §4.4's shape, 200 when healthy, else 503;
 * - `GET /health/live`: 200 while the process serves requests (liveness);
 * - `GET /health/ready`: 200 when PostgreSQL answers and the gateway is not draining, else 503 (readiness).
 */
export async function startHttpEndpoints(options: { host: string; port: number; metrics: GatewayMetrics; health: HealthMonitor }): Promise<HttpEndpoints> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    switch (path) {
      case "/metrics":
        options.metrics.expose().then(
          (text) => {
            res.writeHead(200, { "content-type": options.metrics.contentType });
            res.end(text);
          },
          () => json(500, { error: "metrics could not be collected" }),
        );
        return;
      case "/health": {
        const report = options.health.report();
        json(report.status === "healthy" || report.status === "degraded" ? 200 : 503, report);
        return;
      }
      case "/health/live":
        json(200, { status: "alive" });
        return;
      case "/health/ready":
        json(options.health.serving ? 200 : 503, { status: options.health.serving ? "ready" : "not ready" });
        return;
      default:
        json(404, { error: "not found", endpoints: ["/metrics", "/health", "/health/live", "/health/ready"] });
    }
  });
  server.keepAliveTimeout = 65_000;
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve((server.address() as { port: number }).port));
  });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
