// What a gateway is started with (`startGateway`), every setting resolved: no environment is read below this point.
import type { PoolSettings } from "./config.js";
import type { ResultLimits } from "./execution/result-budget.js";
import type { ApiKeySet } from "./grpc/api-keys.js";
import type { StatementClass } from "./execution/statement-policy.js";
import type { ClientConnectionLimits } from "./grpc/client-connections.js";
import type { ClientIdentityOptions } from "./grpc/client-identity.js";
import type { ResponseCompression } from "./grpc/response-compression.js";
import type { TlsMaterial } from "./grpc/tls-credentials.js";
import type { Logger, LogLevel } from "./telemetry/logger.js";
import type { ClusterSetting } from "./database/cluster-connections.js";
import type { ResultCacheLimits } from "./coordination/result-cache.js";

/** Everything a gateway needs, resolved: no environment is read below this point. */
export interface GatewayOptions extends ApiKeySet {
  host: string;
  /** 0 picks a free port (see `Gateway.port`). */
  port: number;
  /** The administrative PostgreSQL connection: it reads pg_database, creates and drops databases and roles; its server holds the catalog. */
  databaseUrl: string;
  /** DATABASE_URL's cluster: its name (default "primary") and limits. */
  primaryCluster?: ClusterSetting;
  /** Other PostgreSQL clusters tenants are placed on, each with its administrative URL. */
  clusters?: readonly (ClusterSetting & { name: string; url: string })[];
  /** A replica further behind its primary serves no read (default 1,000 ms). */
  replicaMaxLagMillis?: number;
  /** How long a read with a commit token waits for a replica to replay past it before the primary serves it (default 100 ms). */
  readAfterWaitMillis?: number;
  tls: TlsMaterial;
  /** How client certificates are bound to principals (default: a SPIFFE ID, else the CN). */
  clientIdentity?: ClientIdentityOptions;
  /** The gRPC port's TCP connections at once, and the time each has for its TLS handshake (default `DEFAULT_CLIENT_CONNECTION_LIMITS`). */
  clientConnections?: ClientConnectionLimits;
  /** Tenant role passwords are derived from it. */
  gatewaySecret: string;
  pool: PoolSettings;
  registryRefreshMillis: number;
  /** Longest a statement may run when its call has no (shorter) deadline. */
  maxStatementMillis: number;
  /** Longest an interactive transaction may wait for its client's next message. */
  transactionIdleTimeoutMillis: number;
  /** Where the call log and errors worth an operator's attention go. */
  logger: Logger;
  /** The operators' HTTP port (/metrics, /health): host and port (0 picks a free one). */
  metrics: { host: string; port: number };
  /** Calls per second and burst allowed to each platform where no quota says otherwise; undefined: no limit. */
  rateLimit: { perSecond: number; burst: number } | undefined;
  /** The database holding the audit trail and the quotas (created if missing). */
  catalogDatabase: string;
  /** Where Backup writes its sets; undefined: Backup, RestoreTenant and VerifyBackup are refused. */
  backupDir?: string;
  /** The directory of pg_dump and pg_restore; undefined: the PATH. */
  pgBinDir?: string;
  /** How often the quotas are read from the catalog again (default 5 s), for those set through another gateway instance. */
  quotaRefreshMillis?: number;
  /** How often PostgreSQL's availability is checked for the health endpoints. */
  healthCheckMillis: number;
  /** Once this many queries of one QueryStream are read and not yet answered (default 4,096), the stream is not read until some are answered. */
  maxStreamQueries?: number;
  /** Gateways serving the same databases (default 1): each tenant role's connection limit allows for all of their pools. */
  gatewayInstances?: number;
  /** A superuser as the administrative role is expected (development, on the embedded PostgreSQL): no warning about it at start. */
  superuserExpected?: boolean;
  /** Limits of buffered results, per call and for the gateway (default `DEFAULT_RESULT_LIMITS`). */
  results?: ResultLimits;
  /** The signing secret of each platform whose calls must be signed (see `RequestSignatures`). */
  signingSecrets?: ReadonlyMap<string, string>;
  /** How far a signed request's timestamp may be from the gateway's clock (default 300 s). */
  signatureMaxSkewMillis?: number;
  /** The statement classes each platform with a policy may run; others run any statement. */
  statementClasses?: ReadonlyMap<string, readonly StatementClass[]>;
  /** The level at which a failed statement's full error is logged (default off): PostgreSQL's messages may quote data. */
  failedStatementLogLevel?: LogLevel | "off";
  /** gzip (default): the responses of calls whose client compresses its requests with gzip are compressed too; none: no response is. */
  compression?: ResponseCompression;
  /**
   * The Redis shared with the other gateway instances (see `SharedRedis`):
   * rates and signed-request nonces are shared while it answers. Undefined:
   * each process keeps its own.
   */
  redis?: { url: string; keyPrefix: string; commandTimeoutMillis?: number; resultCache?: ResultCacheLimits };
}
