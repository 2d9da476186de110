// createClient, the SDK's entry point: HTTP/2 over mutual TLS to one gateway or several, for a platform's databases, its tenants and the admin calls.
import { createClient as createConnectClient, type Client } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  AdminService,
  DatabaseType,
  QuotaScope,
  type BackupFile,
  type BackupResponse,
  type ForkTenantResponse,
  type GetPoolStatsResponse,
  type ListQuotasResponse,
  type ListTenantsResponse,
  type MoveTenantResponse,
  type RestoreTenantResponse,
  type VerifyBackupResponse,
  type QuotaLimits as QuotaLimitsMessage,
  type QuotaSchema,
} from "../../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import { QueryService } from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { validateClientOptions, type ClientOptions } from "./client-options.js";
import { QueryCoalescer } from "./coalescer.js";
import { CommitTokens } from "./commit-tokens.js";
import { createDatabase, type CallOptions, type Database } from "./database.js";
import { downloadBackup, migrationProgress, type MigrateOptions, type MigrationFile, type MigrationProgress } from "./fleet.js";
import { GatewayError } from "./gateway-error.js";
import { createBalancedTransport } from "./gateway-balancer.js";
import { createGrpcJsTransport, tlsCredentials } from "./grpc-js-transport.js";
import { withRetries } from "./retry.js";
import { injectTraceContext, traceContextReady } from "./trace-context.js";
import { typeParsers } from "./type-parsers.js";
import { signRequest } from "../../wire/src/request-signing.js";

/** A platform's main database, and the way to its tenants. */
export interface PlatformDatabase extends Database {
  tenant(tenantId: string): Database;
}

/** A database entry listed by the admin API. */
export interface DatabaseInfo {
  name: string;
  platform: string;
  /** Empty for the main database. */
  tenantId: string;
  type: "main" | "tenant";
  /** The PostgreSQL cluster that holds it, by the name the gateway's settings give it ("" from a gateway that does not say). */
  cluster: string;
}

/** Tenant lifecycle calls; needs the admin key. */
export interface AdminClient {
  /**
   * Creates `{platform}_{tenantId}` (the main database for an empty tenant id), optionally as a copy of `template`,
   * on `cluster` (a name from the gateway's settings) or where the gateway's placement policy puts it.
   */
  createTenant(platform: string, tenantId: string, options?: { template?: string; cluster?: string } & CallOptions): Promise<DatabaseInfo>;
  dropTenant(platform: string, tenantId: string, options?: CallOptions): Promise<DatabaseInfo>;
  listDatabases(platform?: string, options?: CallOptions): Promise<DatabaseInfo[]>;
  /** The gateway instance's connection pools, per database (of one platform, or all) and in total. */
  getPoolStats(platform?: string, options?: CallOptions): Promise<GetPoolStatsResponse>;
  /**
   * Replaces the limits stored for a platform's calls together (`{ platform }`),
   * for each of its tenants (`{ platform, eachTenant: true }`), or for one tenant
   * (`{ platform, tenantId }`, "" for the main database). Limits left out are
   * inherited; `{}` removes the quota. Returns the limits as stored.
   */
  setQuota(target: QuotaTarget, limits: QuotaLimits, options?: CallOptions): Promise<QuotaLimits>;
  /** The quotas stored for a platform (or every platform), and the limits the gateway applies where none are. */
  listQuotas(platform?: string, options?: CallOptions): Promise<ListQuotasResponse>;
  /**
   * Brings the platform's databases to the latest of `migrations` (every one of
   * them, as `loadMigrations` reads a directory): its main database, then each
   * tenant's. Yields each database's result as it is done, then the totals.
   * Running it again resumes a run that stopped. Never retried.
   */
  migrate(platform: string, migrations: readonly MigrationFile[], options?: MigrateOptions & CallOptions): AsyncIterable<MigrationProgress>;
  /**
   * Takes a backup set into the gateway's BACKUP_DIR: of `tenantIds`, or of
   * every database of the platform and the gateway's catalog; `verify`
   * restores each of the platform's files into a scratch tenant and compares
   * its rows; `keepDays` then removes the platform's older sets (not when a
   * verification failed). Never retried.
   */
  backup(platform: string, options?: { tenantIds?: readonly string[]; keepDays?: number; verify?: boolean } & CallOptions): Promise<BackupResponse>;
  /** Writes a backup of one tenant, taken now, into `output` (pg_dump's custom format); resolves to what it is once written. */
  downloadBackup(platform: string, tenantId: string, output: NodeJS.WritableStream, options?: CallOptions): Promise<BackupFile>;
  /** Restores a backup file of the gateway's BACKUP_DIR (`BackupFile.file`) into a new tenant: never over an existing one. */
  restoreTenant(platform: string, tenantId: string, file: string, options?: CallOptions): Promise<RestoreTenantResponse>;
  /** Restores a backup file into a scratch tenant and compares its rows with those counted when it was taken. */
  verifyBackup(file: string, options?: CallOptions): Promise<VerifyBackupResponse>;
  /** Creates `tenantId` as a copy of `sourceTenantId`, taken while the source keeps serving. */
  forkTenant(platform: string, sourceTenantId: string, tenantId: string, options?: CallOptions): Promise<ForkTenantResponse>;
  /** A page of the platform's databases with their size, schema version, last backup, connections and calls in the last minute. */
  listTenants(platform: string, options?: { pageSize?: number; pageToken?: string } & CallOptions): Promise<ListTenantsResponse>;
  /**
   * Moves a tenant to another cluster (logical replication, then a pause of
   * at most `maxPauseMs`, default 5,000, while the target catches up). Never
   * retried: calling again resumes a move that stopped. `dropSource` drops
   * the source database instead of keeping it renamed.
   */
  moveTenant(
    platform: string,
    tenantId: string,
    cluster: string,
    options?: { maxPauseMs?: number; dropSource?: boolean } & CallOptions,
  ): Promise<MoveTenantResponse>;
}

/** Whose calls a quota limits: see `AdminClient.setQuota`. */
export type QuotaTarget = { platform: string; tenantId?: string; eachTenant?: boolean };

/** Limits against noisy neighbours (see the gateway's README, "Quotas"). */
export interface QuotaLimits {
  callsPerSecond?: number;
  burst?: number;
  maxConcurrentStatements?: number;
  maxConnections?: number;
  maxStatementTimeMs?: number;
}

/** A connection to a gateway (one HTTP/2 connection shared by every call), or to several, each call balanced over them. */
export interface GatewayClient {
  platform(platform: string): PlatformDatabase;
  admin(): AdminClient;
  /** The generated Connect clients, for calls this API does not wrap. */
  readonly raw: { query: Client<typeof QueryService>; admin: Client<typeof AdminService> };
  /** Closes the connections; calls in flight fail. */
  close(): void;
}

/**
 * Connects to a gateway over mutual TLS with an API key. The options are
 * checked (and TLS files read) here, all problems reported in one TypeError.
 * One HTTP/2 connection carries every call, kept alive with pings and opened
 * again with backoff when it is lost. With several gateways (`url` a list, or
 * a host name with several addresses), there is one such connection to each,
 * and each call goes to the next gateway in turn that has its connection up.
 */
export function createClient(options: ClientOptions): GatewayClient {
  const resolved = validateClientOptions(options);
  const gateways = resolved.gateways.map((gateway) =>
    createGrpcJsTransport({
      target: gateway.target,
      credentials: tlsCredentials(gateway.host, resolved.tls),
      maxReceiveMessageBytes: resolved.maxReceiveMessageBytes,
      compression: resolved.compression,
      ready: traceContextReady,
      ...(resolved.signingSecret === undefined
        ? {}
        : { sign: (path: string, body: Uint8Array | undefined) => signRequest(resolved.signingSecret!, path, body) }),
      decorate(metadata) {
        metadata.set("x-api-key", resolved.apiKey);
        injectTraceContext(metadata);
      },
    }),
  );
  const transport = createBalancedTransport(gateways);
  const query = createConnectClient(QueryService, transport);
  const admin = createConnectClient(AdminService, transport);
  // A platform's QueryStreams are one per gateway: the coalescer picks the gateway, not the transport.
  const streamClients = gateways.map((gateway) => createConnectClient(QueryService, gateway));
  const context = {
    client: query,
    parserFor: typeParsers(resolved.int8, resolved.typeParsers),
    retry: resolved.retry,
    timeoutMs: resolved.timeoutMs,
    coalescer: resolved.coalesce ? new QueryCoalescer(query, resolved.queryStream, { clients: streamClients, pick: transport.pick }) : undefined,
    tokens: resolved.readYourWrites ? new CommitTokens() : undefined,
  };

  return {
    platform(platform) {
      return Object.assign(createDatabase(context, { platform, tenantId: "" }), {
        tenant: (tenantId: string) => createDatabase(context, { platform, tenantId }),
      });
    },
    admin() {
      /** Admin calls: reads are idempotent; creating and dropping are retried only when they never reached the gateway's database. */
      const call = <T>(fn: (o: CallOptions) => Promise<T>, o: CallOptions, idempotent: boolean): Promise<T> => {
        const timeoutMs = o.timeoutMs ?? resolved.timeoutMs;
        return withRetries((t) => fn({ ...o, timeoutMs: t }), resolved.retry, { ...o, timeoutMs, idempotent: o.idempotent ?? idempotent });
      };
      return {
        createTenant: (platform, tenantId, o = {}) =>
          call(
            async (c) => describe((await admin.createTenant({ platform, tenantId, template: o.template ?? "", cluster: o.cluster ?? "" }, c)).database),
            o,
            false,
          ),
        dropTenant: (platform, tenantId, o = {}) => call(async (c) => describe((await admin.dropTenant({ platform, tenantId }, c)).database), o, false),
        listDatabases: (platform = "", o = {}) => call(async (c) => (await admin.listDatabases({ platform }, c)).databases.map(describe), o, true),
        getPoolStats: (platform = "", o = {}) => call((c) => admin.getPoolStats({ platform }, c), o, true),
        async setQuota(target, limits, o = {}) {
          const quota = quotaRequest(target, limits); // a TypeError before any call
          return call(async (c) => quotaLimitsOf((await admin.setQuota({ quota }, c)).quota?.limits), o, true);
        },
        listQuotas: (platform = "", o = {}) => call((c) => admin.listQuotas({ platform }, c), o, true),
        migrate: (platform, migrations, o = {}) => migrationProgress(admin, platform, migrations, { ...o, timeoutMs: o.timeoutMs ?? resolved.timeoutMs }),
        backup: (platform, o = {}) =>
          call((c) => admin.backup({ platform, tenantIds: [...(o.tenantIds ?? [])], keepDays: o.keepDays ?? 0, verify: o.verify ?? false }, c), o, false),
        downloadBackup: (platform, tenantId, output, o = {}) =>
          downloadBackup(admin, platform, tenantId, output, { ...o, timeoutMs: o.timeoutMs ?? resolved.timeoutMs }),
        restoreTenant: (platform, tenantId, file, o = {}) => call((c) => admin.restoreTenant({ platform, tenantId, file }, c), o, false),
        verifyBackup: (file, o = {}) => call((c) => admin.verifyBackup({ file }, c), o, true),
        forkTenant: (platform, sourceTenantId, tenantId, o = {}) => call((c) => admin.forkTenant({ platform, sourceTenantId, tenantId }, c), o, false),
        moveTenant: (platform, tenantId, cluster, o = {}) =>
          call(
            (c) =>
              admin.moveTenant(
                {
                  platform,
                  tenantId,
                  cluster,
                  dropSource: o.dropSource ?? false,
                  ...(o.maxPauseMs !== undefined ? { maxPause: { seconds: BigInt(Math.floor(o.maxPauseMs / 1000)), nanos: (o.maxPauseMs % 1000) * 1e6 } } : {}),
                },
                c,
              ),
            o,
            false,
          ),
        listTenants: (platform, o = {}) => call((c) => admin.listTenants({ platform, pageSize: o.pageSize ?? 0, pageToken: o.pageToken ?? "" }, c), o, true),
      };
    },
    raw: { query, admin },
    close() {
      transport.close();
    },
  };
}

function quotaRequest(target: QuotaTarget, limits: QuotaLimits): MessageInitShape<typeof QuotaSchema> {
  if (target.tenantId !== undefined && target.eachTenant === true) {
    throw new TypeError("setQuota: a quota is for one tenant (tenantId) or for each tenant (eachTenant), not both");
  }
  const scope = target.tenantId !== undefined ? QuotaScope.TENANT : target.eachTenant ? QuotaScope.EACH_TENANT : QuotaScope.PLATFORM;
  const { maxStatementTimeMs, ...rest } = limits;
  const nanos = Math.round((maxStatementTimeMs ?? 0) * 1e6);
  const time = maxStatementTimeMs === undefined ? {} : { maxStatementTime: { seconds: BigInt(Math.floor(nanos / 1e9)), nanos: nanos % 1e9 } };
  return { platform: target.platform, tenantId: target.tenantId ?? "", scope, limits: { ...rest, ...time } };
}

function quotaLimitsOf(m: QuotaLimitsMessage | undefined): QuotaLimits {
  const limits: QuotaLimits = {};
  if (m?.callsPerSecond !== undefined) limits.callsPerSecond = m.callsPerSecond;
  if (m?.burst !== undefined) limits.burst = m.burst;
  if (m?.maxConcurrentStatements !== undefined) limits.maxConcurrentStatements = m.maxConcurrentStatements;
  if (m?.maxConnections !== undefined) limits.maxConnections = m.maxConnections;
  if (m?.maxStatementTime !== undefined) limits.maxStatementTimeMs = Number(m.maxStatementTime.seconds) * 1000 + m.maxStatementTime.nanos / 1e6;
  return limits;
}

function describe(db: { name: string; platform: string; tenantId: string; type: DatabaseType; cluster: string } | undefined): DatabaseInfo {
  if (db === undefined) throw new GatewayError("the gateway sent no database", 13, "INTERNAL", {}, undefined);
  return { name: db.name, platform: db.platform, tenantId: db.tenantId, type: db.type === DatabaseType.MAIN ? "main" : "tenant", cluster: db.cluster };
}
