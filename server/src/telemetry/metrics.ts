// The gateway's Prometheus metrics (prom-client), every label with a bounded set of values, the pools' counts read at scrape time.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ListenerStats } from "../notifications/listener-hub.js";
import type { ManagerStats, PoolStats } from "../pool/pool-manager.js";

/** Where the gauges read the current state at scrape time. */
export interface MetricSources {
  poolTotals(): ManagerStats;
  pools(): PoolStats[];
  listeners(): ListenerStats;
  /** Whether PostgreSQL answered the last health check. */
  postgresUp(): boolean;
  /** Bytes of buffered results held now (see `ResultBudget`). */
  bufferedResultBytes?(): number;
  /** TCP connections open on the gRPC port now. */
  clientConnections?(): number;
  /** Statements, batches and transactions running or waiting for a connection, per platform (see `Quotas.inFlight`). */
  statementsInFlight?(): Map<string, number>;
  /** Each PostgreSQL cluster: whether it answered its last health check, the gateway's connections to it and its limit (Infinity: none). */
  clusters?(): ClusterMetrics[];
  /** Each streaming replica: whether it serves reads, and how far behind its primary it was at its last check. */
  replicas?(): { cluster: string; name: string; up: boolean; lagMillis: number }[];
  /** With REDIS_URL only: whether Redis answers (rates and nonces shared), else absent. */
  redisUp?(): boolean;
}

/** What the metrics show of one cluster. */
export interface ClusterMetrics {
  name: string;
  up: boolean;
  connections: number;
  maxConnections: number;
}

/** Seconds: from a fast point query to a long report. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * The gateway's Prometheus metrics (prom-client), named after seed 001 §4.5
 * and §9.1 with Prometheus's conventions (`_total` counters, `_seconds`).
 * Every label has a bounded set of values: platforms are the configured ones,
 * methods and reasons come from the contract, and the one per-database metric
 * (`db_gateway_pool_connections`) lists only pools that hold connections,
 * which `MAX_POOLS` caps. Counts the pool manager keeps are read at scrape
 * time rather than copied on every call.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  /** Calls by platform ("admin" for AdminService, "" before authentication) and method. */
  readonly queries: Counter<"platform" | "method">;
  /** Statements by platform and method: a coalesced QueryMany call counts each of its queries. */
  readonly statements: Counter<"platform" | "method">;
  readonly duration: Histogram<"platform" | "method">;
  /** Failed calls by reason (the ErrorInfo reason: a fixed catalogue). */
  readonly errors: Counter<"type">;
  readonly poolWait: Histogram;
  readonly rateLimited: Counter<"platform">;
  /** Calls refused by a quota, by platform, limit and scope (platform or tenant). */
  readonly quotaRefusals: Counter<"platform" | "limit" | "scope">;
  /** Read-only calls (Query, StreamQuery, READ ONLY transactions) on clusters with replicas, by cluster and who served them. */
  readonly readOnlyCalls: Counter<"cluster" | "served_by">;
  readonly openStreams: Gauge<"method">;
  readonly openTransactions: Gauge;
  readonly auditFailures: Counter;
  /** Calls refused by authentication: no valid API key, or a client certificate that is not the key's. */
  readonly authRefusals: Counter<"event">;
  /** Calls authenticated by each key: a rotation is over once the old key is no longer counted. */
  readonly apiKeyCalls: Counter<"principal" | "key">;
  /** Connections to the gRPC port closed before they could carry a call, by reason (`ConnectionRefusal`). */
  readonly clientConnectionsRefused: Counter<"reason">;

  #sources: MetricSources | undefined;

  /** Where the gauges read the gateway's state, once its parts exist (until then they are not reported). */
  observe(sources: MetricSources): void {
    this.#sources = sources;
  }

  /** `redis`: REDIS_URL is set, and `db_gateway_redis_up` is reported. */
  constructor(options: { redis?: boolean } = {}) {
    const registers = [this.registry];
    const source = () => this.#sources;
    collectDefaultMetrics({ register: this.registry });
    // prom-client names three gauges with "_total", which Prometheus keeps for counters (promtool
    // rejects them); the same counts remain as nodejs_active_handles, _requests and _resources by type.
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) this.registry.removeSingleMetric(name);
    this.queries = new Counter({
      name: "db_gateway_queries_total",
      help: "Calls received, by platform and method.",
      labelNames: ["platform", "method"],
      registers,
    });
    this.statements = new Counter({
      name: "db_gateway_statements_total",
      help: "Statements received, by platform and method: one per Query or StreamQuery call, each statement of a QueryMany, Batch or Transaction call.",
      labelNames: ["platform", "method"],
      registers,
    });
    this.duration = new Histogram({
      name: "db_gateway_query_duration_seconds",
      help: "Duration of calls, from arrival to the last response, by platform and method.",
      labelNames: ["platform", "method"],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.errors = new Counter({
      name: "db_gateway_errors_total",
      help: "Failed calls, and queries of QueryMany calls and QueryStream messages that failed on their own, by reason (the ErrorInfo reason).",
      labelNames: ["type"],
      registers,
    });
    this.poolWait = new Histogram({
      name: "db_gateway_pool_wait_seconds",
      help: "Time calls waited for a connection (0 when one was idle).",
      buckets: [0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.rateLimited = new Counter({
      name: "db_gateway_rate_limited_total",
      help: "Calls refused by a rate limit (RATE_LIMITED): the platform's (RATE_LIMIT_PER_SEC or its quota), or one of its tenants' quota.",
      labelNames: ["platform"],
      registers,
    });
    this.readOnlyCalls = new Counter({
      name: "db_gateway_read_only_calls_total",
      help: "Read-only calls to databases of clusters with streaming replicas, by cluster and by who served them: a replica's name (r1, r2 …) or primary.",
      labelNames: ["cluster", "served_by"],
      registers,
    });
    this.quotaRefusals = new Counter({
      name: "db_gateway_quota_refusals_total",
      help:
        "Calls refused by a quota, by platform, limit (calls_per_second, max_concurrent_statements) and scope (platform: the platform's calls together; " +
        "tenant: one of its databases). RATE_LIMITED and QUOTA_EXCEEDED errors.",
      labelNames: ["platform", "limit", "scope"],
      registers,
    });
    this.openStreams = new Gauge({ name: "db_gateway_open_streams", help: "Streaming calls in progress, by method.", labelNames: ["method"], registers });
    this.openTransactions = new Gauge({
      name: "db_gateway_open_transactions",
      help: "Interactive transactions in progress: Transaction calls, and transactions carried on QueryStreams.",
      registers,
    });
    this.auditFailures = new Counter({
      name: "db_gateway_audit_failures_total",
      help: "Administrative actions whose audit record could not be written.",
      registers,
    });
    this.authRefusals = new Counter({
      name: "db_gateway_auth_refusals_total",
      help: "Calls refused by authentication, by event: unauthenticated (no valid API key), certificate_mismatch (a client certificate not for the key's principal).",
      labelNames: ["event"],
      registers,
    });
    this.apiKeyCalls = new Counter({
      name: "db_gateway_api_key_calls_total",
      help: "Calls authenticated, by principal (admin or the platform) and key (its key id: the first 8 hex digits of the key's SHA-256). A key no longer counted can be retired.",
      labelNames: ["principal", "key"],
      registers,
    });
    this.clientConnectionsRefused = new Counter({
      name: "db_gateway_client_connections_refused_total",
      help:
        "Connections to the gRPC port closed before they could carry a call, by reason: max_connections (beyond MAX_CLIENT_CONNECTIONS, closed as accepted), " +
        "tls_handshake_timeout (no complete handshake within TLS_HANDSHAKE_TIMEOUT_SECS), tls_handshake_failed (a refused certificate, a client that left, bytes that are not TLS).",
      labelNames: ["reason"],
      registers,
    });

    const gauge = (name: string, help: string, read: (sources: MetricSources) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const sources = source();
          if (sources !== undefined) this.set(read(sources));
        },
      });
    const total = (name: string, help: string, read: (sources: MetricSources) => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          const sources = source();
          if (sources !== undefined) this.inc(read(sources));
        },
      });
    gauge("db_gateway_postgres_up", "1 when PostgreSQL answered the last health check, else 0.", (sources) => (sources.postgresUp() ? 1 : 0));
    // Only with REDIS_URL: a gauge without labels would otherwise read 0, "Redis down", where there is none.
    if (options.redis) {
      gauge(
        "db_gateway_redis_up",
        "1 while Redis (REDIS_URL) answers: rate limits, statements in flight and signed-request nonces shared by the gateways; 0 while each gateway applies its own.",
        (sources) => (sources.redisUp?.() === true ? 1 : 0),
      );
    }
    gauge("db_gateway_active_pools", "Database pools holding connections.", (sources) => sources.poolTotals().activePools);
    gauge(
      "db_gateway_total_connections",
      "PostgreSQL connections of all pools: connecting, idle and busy.",
      (sources) => sources.poolTotals().totalConnections,
    );
    gauge("db_gateway_max_connections", "The global connection cap (MAX_TOTAL_CONNECTIONS).", (sources) => sources.poolTotals().maxTotalConnections);
    gauge("db_gateway_pool_waiting", "Calls waiting for a connection.", (sources) => sources.poolTotals().waiting);
    total("db_gateway_pool_hits_total", "Calls served at once by an idle connection.", (sources) => sources.poolTotals().hits);
    total("db_gateway_pool_misses_total", "Calls that waited for a connection to be opened or freed.", (sources) => sources.poolTotals().misses);
    total("db_gateway_pool_acquire_timeouts_total", "Calls that found no connection in time (POOL_EXHAUSTED).", (sources) => sources.poolTotals().timeouts);
    total("db_gateway_pool_rejections_total", "Calls refused because too many were waiting (TOO_MANY_WAITERS).", (sources) => sources.poolTotals().rejected);
    total("db_gateway_pool_evictions_total", "Pools closed for being unused or beyond MAX_POOLS.", (sources) => sources.poolTotals().evictions);
    total("db_gateway_connections_opened_total", "PostgreSQL connections opened.", (sources) => sources.poolTotals().connectionsOpened);
    new Gauge({
      name: "db_gateway_pool_connections",
      help: "Connections of each pool that holds any, by state (at most MAX_POOLS databases).",
      labelNames: ["database", "state"],
      registers,
      collect() {
        this.reset();
        for (const p of source()?.pools() ?? []) {
          if (p.size === 0) continue;
          this.set({ database: p.database, state: "idle" }, p.idle);
          this.set({ database: p.database, state: "busy" }, p.busy);
          this.set({ database: p.database, state: "connecting" }, p.connecting);
        }
      },
    });
    new Gauge({
      name: "db_gateway_cluster_up",
      help: "1 when the PostgreSQL cluster answered its last health check, else 0, by cluster (the settings' names).",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const c of source()?.clusters?.() ?? []) this.set({ cluster: c.name }, c.up ? 1 : 0);
      },
    });
    new Gauge({
      name: "db_gateway_cluster_connections",
      help: "PostgreSQL connections of all pools to each cluster: connecting, idle and busy.",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const c of source()?.clusters?.() ?? []) this.set({ cluster: c.name }, c.connections);
      },
    });
    new Gauge({
      name: "db_gateway_cluster_max_connections",
      help: "The connection cap of each cluster with one (CLUSTER_MAX_CONNECTIONS_<NAME>).",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const c of source()?.clusters?.() ?? []) if (Number.isFinite(c.maxConnections)) this.set({ cluster: c.name }, c.maxConnections);
      },
    });
    new Gauge({
      name: "db_gateway_replica_up",
      help: "1 when the streaming replica answered its last check as a replica, else 0, by cluster and replica.",
      labelNames: ["cluster", "replica"],
      registers,
      collect() {
        this.reset();
        for (const r of source()?.replicas?.() ?? []) this.set({ cluster: r.cluster, replica: r.name }, r.up ? 1 : 0);
      },
    });
    new Gauge({
      name: "db_gateway_replica_lag_seconds",
      help: "How far behind its primary the streaming replica was at its last check (0: it had replayed everything), by cluster and replica.",
      labelNames: ["cluster", "replica"],
      registers,
      collect() {
        this.reset();
        for (const r of source()?.replicas?.() ?? [])
          if (r.up && Number.isFinite(r.lagMillis)) this.set({ cluster: r.cluster, replica: r.name }, r.lagMillis / 1000);
      },
    });
    new Gauge({
      name: "db_gateway_platform_statements",
      help: "Statements, batches and transactions of each platform running or waiting for a connection (what max_concurrent_statements limits).",
      labelNames: ["platform"],
      registers,
      collect() {
        this.reset();
        for (const [platform, n] of source()?.statementsInFlight?.() ?? []) this.set({ platform }, n);
      },
    });
    gauge("db_gateway_listen_connections", "Listening connections (one per database with Listen subscribers).", (sources) => sources.listeners().databases);
    gauge("db_gateway_listen_subscribers", "Listen calls in progress.", (sources) => sources.listeners().subscribers);
    gauge(
      "db_gateway_buffered_result_bytes",
      "Bytes of buffered results held, of MAX_BUFFERED_RESULT_BYTES.",
      (sources) => sources.bufferedResultBytes?.() ?? 0,
    );
    gauge(
      "db_gateway_client_connections",
      "TCP connections open on the gRPC port, in their TLS handshake or past it (at most MAX_CLIENT_CONNECTIONS).",
      (sources) => sources.clientConnections?.() ?? 0,
    );
  }

  /** The exposition text for GET /metrics. */
  expose(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
