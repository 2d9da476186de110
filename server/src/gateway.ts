// Starts a gateway from resolved options (registry, roles, pools, services over mutual TLS, operators' port); its close drains calls first.
import { setMaxListeners } from "node:events";
import type pg from "pg";
import * as grpc from "@grpc/grpc-js";
import { beforeStatement, GatewayError } from "./errors.js";
import { AdminService } from "../../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import { QueryService } from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { AuditLog } from "./audit/audit-log.js";
import { openCatalog } from "./audit/catalog.js";
import { DEFAULT_RESULT_LIMITS, ResultBudget } from "./execution/result-budget.js";
import { loadStatementParser, StatementPolicy } from "./execution/statement-policy.js";
import { DEFAULT_CLIENT_CONNECTION_LIMITS, limitClientConnections } from "./grpc/client-connections.js";
import { exposeRequestEncodings, frameCompressedMessages, listeningServers } from "./grpc/grpc-js-internals.js";
import { OpenCalls } from "./grpc/open-calls.js";
import { addService, type ServiceHooks } from "./grpc/service-adapter.js";
import { addStandardServices } from "./grpc/standard-services.js";
import { ListenerHub } from "./notifications/listener-hub.js";
import { PoolManager, type PoolManagerOptions } from "./pool/pool-manager.js";
import { requireAdmin } from "./principal.js";
import { createAdminService } from "./services/admin-service.js";
import { createQueryService } from "./services/query-service.js";
import { CleanupStack } from "./cleanup-stack.js";
import { Clusters } from "./tenancy/clusters.js";
import { followTenantChanges, PlacementStore } from "./tenancy/placement-store.js";
import { DatabaseRegistry } from "./tenancy/registry.js";
import { MoveStore } from "./tenancy/move-store.js";
import { TenantMover } from "./tenancy/tenant-move.js";
import { TenantPauses } from "./tenancy/tenant-pause.js";
import { administrativeConnections, clusterReplicas } from "./database/cluster-connections.js";
import { startReconciliation } from "./tenancy/catalog-reconciliation.js";
import { Migrator } from "./tenancy/migrator.js";
import { RecentCalls } from "./tenancy/recent-calls.js";
import { backupAdministration } from "./services/backup-admin.js";
import { TenantRoles } from "./tenancy/roles.js";
import { QuotaStore } from "./tenancy/quota-store.js";
import { quotaDefaults, Quotas } from "./tenancy/quotas.js";
import { Router } from "./tenancy/router.js";
import { CallTelemetry } from "./telemetry/call-telemetry.js";
import { HealthMonitor } from "./telemetry/health.js";
import { startHttpEndpoints } from "./telemetry/http-endpoints.js";
import { loggableError } from "./telemetry/logger.js";
import { GatewayMetrics } from "./telemetry/metrics.js";
import { SharedConcurrency } from "./coordination/shared-concurrency.js";
import { SharedNonces } from "./coordination/shared-nonces.js";
import { SharedRateLimits } from "./coordination/shared-rate-limits.js";
import { SharedRedis } from "./coordination/shared-redis.js";
import { ResultCache } from "./coordination/result-cache.js";

export type { GatewayOptions } from "./gateway-options.js";
import type { GatewayOptions } from "./gateway-options.js";

/** A running gateway. */
export interface Gateway {
  readonly port: number;
  /** The port of /metrics and /health. */
  readonly metricsPort: number;
  /**
   * Drains, then closes every connection. New calls are refused (UNAVAILABLE,
   * SHUTTING_DOWN, `statement_sent: "false"`; clients are told to go
   * elsewhere, HTTP/2's GOAWAY, and the port closes), QueryStreams stop
   * reading, and Listen subscriptions and transactions not yet begun end.
   * Calls in flight finish and answer within `graceMillis` (default 5,000);
   * then what still runs is interrupted: its client gets SHUTTING_DOWN with
   * `statement_sent: "true"`, an open transaction is rolled back
   * (ROLLED_BACK_AT_SHUTDOWN), a COMMIT on its way is COMMIT_OUTCOME_UNKNOWN.
   * Resolves once every call has its status and the connections are closed.
   */
  close(graceMillis?: number): Promise<void>;
  /**
   * Takes new secrets, all or none: TLS material (server certificate and key,
   * client CA, CRL), API keys and signing secrets (see `Authentication.reload`).
   */
  reload(trigger: string, load: () => ReloadedMaterial): Promise<ReloadOutcome>;
}

export type { ReloadedMaterial, ReloadOutcome } from "./grpc/authentication.js";
import { Authentication, type ReloadedMaterial, type ReloadOutcome } from "./grpc/authentication.js";

/** After a call is interrupted, how long its backend has to stop before its connection is destroyed. */
const CANCEL_GRACE_MILLIS = 2_000;

/**
 * At shutdown, how long calls interrupted at the end of the grace period have
 * to send their answers, and then clients to read their statuses, before the
 * connections are closed regardless.
 */
const SHUTDOWN_ANSWER_MILLIS = 2_000;

/** Notifications a Listen subscriber may leave unread before it is disconnected (SUBSCRIBER_TOO_SLOW). */
const MAX_PENDING_NOTIFICATIONS = 10_000;
/** Once this many queries of one QueryStream are read and not yet answered, the stream is not read until some are answered (a message may take it past). */
const MAX_STREAM_QUERIES = 4_096;
const QUOTA_REFRESH_MILLIS = 5_000;
/** At start, how long the gateway waits for Redis before it serves on its own limits (sharing starts when Redis answers). */
const REDIS_START_MILLIS = 2_000;

/**
 * A tenant role's CONNECTION LIMIT: each gateway instance's pool (its LISTEN
 * connection is one of them), and one more per instance for a connection
 * closing while its replacement opens; and one for an operator. A backstop:
 * PostgreSQL's refusal past it (53300) makes calls wait, not fail.
 */
export function roleConnectionLimit(maxConnectionsPerPool: number, gatewayInstances: number): number {
  return gatewayInstances * (maxConnectionsPerPool + 1) + 1;
}

/**
 * Starts a gateway: loads the database registry and brings existing tenant
 * databases under the role scheme, then serves QueryService, AdminService,
 * health and reflection over mutual TLS.
 */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  if (options.maxStreamQueries !== undefined && !(Number.isInteger(options.maxStreamQueries) && options.maxStreamQueries >= 1)) {
    throw new RangeError("maxStreamQueries must be a whole number of at least 1");
  }
  const log = options.logger;
  const onError = (message: string, err: unknown) => log.error({ err: loggableError(err) }, message);
  const cleanup = new CleanupStack(onError);
  try {
    return await compose(options, onError, cleanup);
  } catch (err) {
    await cleanup.unwind();
    throw err;
  }
}

/** Makes the gateway's parts in order, each registering its cleanup on `cleanup` as it is made. */
async function compose(options: GatewayOptions, onError: (message: string, err: unknown) => void, cleanup: CleanupStack): Promise<Gateway> {
  const log = options.logger;
  const metrics = new GatewayMetrics({ redis: options.redis !== undefined });
  const results = new ResultBudget(options.results ?? DEFAULT_RESULT_LIMITS);

  const clusterSettings = [
    { ...options.primaryCluster, name: options.primaryCluster?.name ?? "primary", url: options.databaseUrl },
    ...(options.clusters ?? []),
  ];
  const handles = clusterSettings.map((c) => administrativeConnections(c, onError, cleanup));
  const { adminConnection, admin } = handles[0]!;
  const registry = new DatabaseRegistry();

  let redis: SharedRedis | undefined;
  if (options.redis !== undefined) {
    redis = new SharedRedis({ ...options.redis, log });
    cleanup.defer("Redis", () => redis!.close());
    // Not required: a gateway that starts while Redis is away serves on its own limits meanwhile.
    await redis.ready(REDIS_START_MILLIS);
  }
  const quotas = new Quotas(
    quotaDefaults({ ...options.pool, rateLimit: options.rateLimit, maxStatementMillis: options.maxStatementMillis }),
    (platform, limit, scope, n) => metrics.quotaRefusals.inc({ platform, limit, scope }, n),
    redis && new SharedRateLimits(redis),
  );
  if (redis !== undefined) {
    const concurrency = new SharedConcurrency(
      redis,
      () => quotas.ownInFlight(),
      (others) => quotas.setOthersInFlight(others),
    );
    concurrency.start();
    cleanup.defer("statements in flight shared", () => concurrency.stop());
  }
  const recentCalls = new RecentCalls();
  // A tenant being switched to another cluster: its new calls wait (see tenancy/tenant-move.ts).
  const pauses = new TenantPauses();
  const roles = new TenantRoles(options.gatewaySecret, roleConnectionLimit(options.pool.maxConnectionsPerPool, options.gatewayInstances ?? 1));
  /** Pools of tenant connections to a server (a cluster's primary, or a replica): each as the database's own role. */
  const poolsOn = (serverOf: (database: string) => pg.ClientConfig, limits: Partial<PoolManagerOptions>) =>
    new PoolManager({
      ...options.pool,
      reapIntervalMillis: Math.min(1_000, options.pool.connectionIdleTimeoutMillis, options.pool.maxLifetimeMillis),
      cancelGraceMillis: CANCEL_GRACE_MILLIS,
      connectionFor: (database) => {
        const role = roles.roleName(database);
        // statement_timeout: PostgreSQL's own backstop for the longest statement, should the gateway's timer not fire.
        return { ...serverOf(database), database, user: role, password: roles.password(role), statement_timeout: options.maxStatementMillis };
      },
      onError: (database, err) => onError(`connection to "${database}" failed`, err),
      onAcquired: (waitMillis, database) => {
        metrics.poolWait.observe(waitMillis / 1000);
        recentCalls.count(database);
      },
      shareOf: (database) => quotas.shareOf(database),
      admit: (database) => quotas.admit(database),
      ...limits,
    });
  const clusterOf = (database: string) => handles.find((h) => h.name === registry.clusterOf(database)) ?? handles[0]!;
  const pools = poolsOn((database) => clusterOf(database).connection, {
    clusterOf: (database) => ({ name: clusterOf(database).name, maxConnections: clusterOf(database).maxConnections ?? Infinity }),
    hold: (database, limits) => pauses.hold(database, limits),
  });
  cleanup.defer("pools", () => pools.closeAll());

  const platforms = new Set(options.platformKeys.keys());
  const catalog = await openCatalog(admin, adminConnection, options.catalogDatabase);
  cleanup.defer("catalog", () => catalog.end());
  const placements = await PlacementStore.open(catalog);
  registry.place(await placements.all());
  // Made with the services below: until then, every cluster counts as answering.
  const health: { monitor?: HealthMonitor } = {};
  const connected = (cluster: string) => health.monitor?.connected(cluster) ?? true;
  const clusters = new Clusters(handles, { roles, registry, pools, platforms, onError, placements, connected });
  // The catalog's cluster must answer at start; another that does not is served once it does (its tenants' calls fail until then).
  await clusters.primary.sync.sync();
  await clusters.sync(onError);
  const replicas = clusterReplicas(handles, {
    poolsOn: (server, maxTotalConnections) => poolsOn(() => server, { maxTotalConnections }),
    maxTotalConnections: options.pool.maxTotalConnections,
    maxLagMillis: options.replicaMaxLagMillis ?? 1_000,
    readAfterWaitMillis: options.readAfterWaitMillis ?? 100,
    checkMillis: Math.min(options.healthCheckMillis, 500),
    clusterOf: (database) => registry.clusterOf(database),
    log,
    onError,
    cleanup,
  });
  await replicas.start();
  cleanup.defer("replicas", () => replicas.stop());
  const following = clusters.follow(options.registryRefreshMillis, onError);
  cleanup.defer("registry refresh", () => following.stop());
  // Tenants created, dropped or moved through another gateway are seen at once, not at the next refresh.
  const stopChanges = followTenantChanges(
    { ...adminConnection, database: options.catalogDatabase },
    () => following.soon(),
    (err) => onError("the catalog's announcements of tenant changes are not heard: the registry refresh sees them", err),
  );
  cleanup.defer("tenant changes", stopChanges);
  // The roles are inspected now; the catalogs reconciled in the background (one connection per database): start is not held up by a server of many tenants.
  const catalogs = new AbortController();
  const reconciliation = await startReconciliation(clusters, registry, log, onError, options.superuserExpected === true, catalogs.signal);
  const reconciling = reconciliation.done.catch((err: unknown) => onError("the catalogs could not be reconciled", err));
  cleanup.defer("catalog reconciliation", () => (catalogs.abort(), reconciling));
  const audit = await AuditLog.open(catalog);
  const quotaStore = await QuotaStore.open(catalog);
  const stopQuotas = await quotaStore.follow(
    quotas,
    options.quotaRefreshMillis ?? QUOTA_REFRESH_MILLIS,
    () => pools.reshare(),
    (err) => onError("the quotas could not be read from the catalog", err),
  );
  cleanup.defer("quota refresh", stopQuotas);
  const backups = await backupAdministration({
    clusters: clusterSettings.map((c, i) => ({
      name: c.name,
      url: c.url,
      user: handles[i]!.connection.user,
      password: handles[i]!.connection.password as string | undefined,
      admin: handles[i]!.admin,
    })),
    backupDir: options.backupDir,
    pgBinDir: options.pgBinDir,
    catalogDatabase: options.catalogDatabase,
    catalog,
    connectTo: (database) => clusters.connectTo(database),
    roles,
    lifecycle: clusters,
    registry,
    pools,
    recentCalls,
  });

  const router = new Router(registry, async (database) => {
    if (!clusters.isManaged(database)) return false;
    // Unrouted (NOT_FOUND to the caller) until it is adopted: say why to the operator.
    return clusters.lookUp(database).catch((err: unknown) => {
      // Its cluster not answering is the health checks' to report, not each call's.
      if (!(err instanceof GatewayError && err.reason === "DATABASE_UNAVAILABLE"))
        onError(`database "${database}" could not be brought under the role scheme`, err);
      throw err;
    });
  });
  const listeners = new ListenerHub(pools, {
    retryMillis: 100,
    maxRetryMillis: 5_000,
    exists: (database) => registry.has(database),
    onError: (database, err) => onError(`listening connection to "${database}" lost`, err),
  });
  cleanup.defer("listeners", () => listeners.close());

  /** Aborted when the gateway begins to shut down: QueryStreams stop reading, answer what they read, and end. */
  const draining = new AbortController();
  // Each QueryStream, and each Transaction stream waiting for its begin, watches it.
  setMaxListeners(0, draining.signal);
  const server = new grpc.Server({
    "grpc.max_receive_message_length": 16 * 1024 * 1024,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.min_ping_interval_without_data_ms": 10_000,
  });
  cleanup.defer("gRPC server", () => server.forceShutdown());
  // grpc-js's server only decompresses: see grpc/grpc-js-internals.ts. With compression off, grpc-js is left as it is.
  if ((options.compression ?? "gzip") === "gzip") {
    exposeRequestEncodings(server);
    frameCompressedMessages();
  }
  const connectionLimits = options.clientConnections ?? DEFAULT_CLIENT_CONNECTION_LIMITS;
  const authentication = new Authentication({
    tls: options.tls,
    tlsHandshakeTimeoutMillis: connectionLimits.tlsHandshakeTimeoutMillis,
    keys: options,
    clientIdentity: options.clientIdentity,
    signingSecrets: options.signingSecrets,
    signatureMaxSkewMillis: options.signatureMaxSkewMillis,
    sharedNonces: redis && new SharedNonces(redis),
    metrics,
    audit,
    log,
    onError,
  });
  const calls = new OpenCalls();
  const hooks: Omit<ServiceHooks, "authorize"> = {
    authenticate: (call, record, defer) => authentication.authenticate(call, record, defer),
    telemetry: new CallTelemetry(log, metrics, options.failedStatementLogLevel),
    onError: (method, err: GatewayError) => {
      if (err.reason === "INTERNAL") onError(`${method.parent.typeName}/${method.name} failed`, err.cause ?? err);
    },
    calls,
    compression: options.compression ?? "gzip",
    // The signing platforms are fixed at start (a reload changes only their secrets): the others pay nothing for signatures.
    keepRequestBytes: (options.signingSecrets?.size ?? 0) > 0,
  };
  // Each call takes a token, and each QueryStream message but the first (which uses its call's).
  const admitPlatform: ServiceHooks["authorize"] = (principal, charge) => {
    if (principal.kind === "platform" && charge) quotas.chargePlatform(principal.platform);
  };
  const policies = new Map<string, StatementPolicy>();
  if ((options.statementClasses?.size ?? 0) > 0) await loadStatementParser();
  for (const [platform, classes] of options.statementClasses ?? []) policies.set(platform, new StatementPolicy(classes));
  const queryService = createQueryService(
    router,
    pools,
    listeners,
    {
      maxStatementMillis: options.maxStatementMillis,
      transactionIdleTimeoutMillis: options.transactionIdleTimeoutMillis,
      maxPendingNotifications: MAX_PENDING_NOTIFICATIONS,
      maxStreamQueries: options.maxStreamQueries ?? MAX_STREAM_QUERIES,
      results,
      policies,
      quotas: {
        statementMillisOf: (database) => quotas.statementMillis(database, options.maxStatementMillis),
        admitSome: (database, wanted) => quotas.admitSome(database, wanted),
      },
      cache: redis !== undefined && options.redis?.resultCache !== undefined ? new ResultCache(redis, options.redis.resultCache) : undefined,
      reads:
        replicas.all().length === 0
          ? undefined
          : {
              replicas,
              onServed: (database, servedBy) => metrics.readOnlyCalls.inc({ cluster: registry.clusterOf(database) ?? handles[0]!.name, served_by: servedBy }),
            },
    },
    draining.signal,
  );
  addService(server, QueryService, queryService, { ...hooks, authorize: admitPlatform });
  const adminService = createAdminService(
    registry,
    clusters,
    pools,
    platforms,
    {
      audit,
      onAuditFailure: (err) => {
        metrics.auditFailures.inc();
        onError("an administrative action could not be recorded in the audit trail", err);
      },
    },
    {
      store: quotaStore,
      quotas,
      onChange: () => pools.reshare(),
      onError,
      ceilings: {
        maxConnectionsPerPool: options.pool.maxConnectionsPerPool,
        maxTotalConnections: options.pool.maxTotalConnections,
        maxStatementMillis: options.maxStatementMillis,
      },
    },
    {
      migrator: new Migrator({
        pools,
        registry,
        refreshRegistry: () => clusters.sync(onError),
        connectTo: (database) => clusters.connectTo(database),
        roleOf: (database) => roles.roleName(database),
      }),
      backups,
      mover: new TenantMover({
        clusters,
        registry,
        placements,
        moves: await MoveStore.open(catalog),
        pauses,
        roles,
        closePool: (database, error) => pools.close(database, error),
        access: (cluster) => {
          const at = clusterSettings.findIndex((c) => c.name === cluster);
          const { user, password } = handles[at]!.connection;
          return { url: clusterSettings[at]!.url, user: user ?? "", password: password as string | undefined };
        },
        pgBinDir: options.pgBinDir,
      }),
    },
  );
  addService(server, AdminService, adminService, { ...hooks, authorize: requireAdmin });
  const setServing = addStandardServices(server, [QueryService, AdminService]);
  const monitor = new HealthMonitor(
    handles,
    options.healthCheckMillis,
    () => pools.stats(),
    redis && (() => redis.available),
    (serving) => {
      setServing(serving ? "SERVING" : "NOT_SERVING");
      if (draining.signal.aborted) return; // not PostgreSQL's doing
      log.warn({ serving }, serving ? "PostgreSQL answers again: serving" : "PostgreSQL does not answer: not serving");
    },
    (cluster, connected) => {
      if (draining.signal.aborted) return;
      log.warn({ cluster, connected }, connected ? `cluster "${cluster}" answers again` : `cluster "${cluster}" does not answer: its tenants' calls fail`);
    },
    () => replicas.all(),
  );
  health.monitor = monitor;
  cleanup.defer("health checks", () => monitor.drain());
  metrics.observe({
    poolTotals: () => pools.stats(),
    pools: () => pools.poolStats(),
    listeners: () => listeners.stats(),
    postgresUp: () => monitor.report().postgres_connected,
    bufferedResultBytes: () => results.usedBytes,
    clientConnections: () => clientConnections.open,
    statementsInFlight: () => quotas.inFlight(),
    replicas: () => replicas.all(),
    clusters: () => {
      const connections = new Map<string, number>();
      for (const p of pools.poolStats()) {
        const cluster = registry.clusterOf(p.database) ?? handles[0]!.name;
        connections.set(cluster, (connections.get(cluster) ?? 0) + p.size);
      }
      return handles.map((h) => ({
        name: h.name,
        up: monitor.connected(h.name),
        connections: connections.get(h.name) ?? 0,
        maxConnections: h.maxConnections ?? Infinity,
      }));
    },
    redisUp: redis && (() => redis.available),
  });

  const address = `${formatHost(options.host)}:${options.port}`;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, authentication.credentials, (err, bound) =>
      // With a code, so that the CLI reports it in one line (grpc-js's error names the cause: EADDRINUSE, EACCES).
      err ? reject(Object.assign(new Error(`cannot listen on ${address}: ${err.message}`), { code: "LISTEN_FAILED" })) : resolve(bound),
    ),
  );
  const clientConnections = limitClientConnections(listeningServers(server), connectionLimits.maxConnections, (reason) =>
    metrics.clientConnectionsRefused.inc({ reason }),
  );
  const http = await startHttpEndpoints({ host: options.metrics.host, port: options.metrics.port, metrics, health: monitor });
  cleanup.defer("HTTP endpoints", () => http.close());
  setServing("SERVING");

  return {
    port,
    metricsPort: http.port,
    reload: (trigger, load) => authentication.reload(trigger, load),
    async close(graceMillis = 5_000) {
      calls.refuse(beforeStatement(new GatewayError("SHUTTING_DOWN", "the gateway is shutting down: the call was not run")));
      draining.abort();
      monitor.drain();
      listeners.close();
      // GOAWAY on every connection (calls sent after it are refused by HTTP/2, unprocessed), and the port closes.
      const closed = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      if (!(await calls.settled(graceMillis))) {
        log.warn({ calls: calls.size }, "the grace period is over: interrupting the calls still running");
        pools.stop();
        // Calls holding no connection (an administrative one, say) are ended here, with a status all the same.
        if (!(await calls.settled(SHUTDOWN_ANSWER_MILLIS))) {
          calls.endAll(
            new GatewayError("SHUTTING_DOWN", "the gateway shut down before the call ended: it may have run", { metadata: { statement_sent: "true" } }),
          );
        }
      }
      // Every call has its status: the connections close as their clients read it (a health Watch keeps one open).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, SHUTDOWN_ANSWER_MILLIS)))]);
      clearTimeout(timer);
      await cleanup.unwind();
    },
  };
}

function formatHost(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}
