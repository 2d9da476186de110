// The gateway's settings, read once from the environment, validated with every problem reported at once, and printed with secrets redacted.
import { DEFAULT_CLIENT_IDENTITY, type ClientIdentityOptions, type IdentitySource } from "./grpc/client-identity.js";
import { accessSync, constants, readFileSync } from "node:fs";
import { DEFAULT_CATALOG_DATABASE } from "./audit/catalog.js";
import type { DatabaseErrorText } from "./client-errors.js";
import type { StatementClass } from "./execution/statement-policy.js";
import { apiKeysOf, MIN_SECRET_LENGTH, signingSecretsOf, statementClassesOf } from "./access-settings.js";

export { MAX_KEYS_PER_PRINCIPAL, MIN_API_KEY_LENGTH, MIN_SECRET_LENGTH, RESERVED_PLATFORM } from "./access-settings.js";
import { DEFAULT_RESULT_LIMITS, type ResultLimits } from "./execution/result-budget.js";
import { DEFAULT_CLIENT_CONNECTION_LIMITS, type ClientConnectionLimits } from "./grpc/client-connections.js";
import type { ResponseCompression } from "./grpc/response-compression.js";
import { LOG_LEVELS, type LogLevel } from "./telemetry/logger.js";
import { parseDatabaseName } from "./tenancy/naming.js";
import { clustersOf, type ClusterSettings } from "./cluster-settings.js";
import { redisOf, type RedisSettings } from "./redis-settings.js";

/**
 * The gateway's settings, read once from the environment (names as in the
 * design notes, seed 001 §8.3), validated with every problem reported at once,
 * and frozen. Secrets (API keys, the database URL's password) are kept here
 * and nowhere else; `describeSettings` prints them redacted.
 */
export interface Settings {
  /** Development mode: an embedded PostgreSQL, development certificates and keys (only when asked for and no production setting is given). */
  readonly development: boolean;
  /** PostgreSQL server URL for the gateway's administrative connection; undefined: run an embedded PostgreSQL. */
  readonly databaseUrl: string | undefined;
  /** DATABASE_URL's cluster, which holds the catalog, and any others tenants are placed on (cluster-settings.ts). */
  readonly clusters: ClusterSettings;
  readonly host: string;
  readonly port: number;
  /** Server certificate chain, its key, and the CA that client certificates must chain to (PEM file paths). */
  readonly tls: { readonly certFile: string; readonly keyFile: string; readonly clientCaFile: string; readonly crlFile?: string } | undefined;
  /** How a client certificate names the principal it is for (TLS_CLIENT_IDENTITY, TLS_SPIFFE_TRUST_DOMAIN). */
  readonly clientIdentity: ClientIdentityOptions;
  /** The gRPC port's TCP connections: how many may be open at once, and how long each has to complete its TLS handshake. */
  readonly clientConnections: ClientConnectionLimits;
  /** The API keys of each platform, by platform name: one, or two while clients move from one to the other. */
  readonly platformKeys: ReadonlyMap<string, readonly string[]>;
  /** The admin's API keys (none: no AdminService), also at most two. */
  readonly adminKeys: readonly string[];
  /** The signing secret of each platform whose calls must be signed (SIGNING_SECRET_<PLATFORM>). */
  readonly signingSecrets: ReadonlyMap<string, string>;
  /** How far a signed request's timestamp may be from the gateway's clock. */
  readonly signatureMaxSkewMillis: number;
  /** The statement classes each platform with a policy may run (STATEMENT_CLASSES_<PLATFORM>); platforms without one run any statement. */
  readonly statementClasses: ReadonlyMap<string, readonly StatementClass[]>;
  /** Secret from which every tenant role's password is derived. */
  readonly gatewaySecret: string | undefined;
  readonly pool: PoolSettings;
  readonly registryRefreshMillis: number;
  /** Longest a statement may run when its call has no (shorter) deadline. */
  readonly maxStatementMillis: number;
  /** Longest an interactive transaction may wait for its client's next message before it is rolled back. */
  readonly transactionIdleTimeoutMillis: number;
  /** At SIGTERM or SIGINT, how long calls in flight have to finish before they are interrupted. */
  readonly shutdownGraceMillis: number;
  /** Limits of buffered results: each call's rows and bytes, and the bytes of all calls' results together. */
  readonly results: Readonly<ResultLimits>;
  readonly logLevel: LogLevel;
  /** Whether the TLS and API key files are read again when they change (besides on SIGHUP). */
  readonly reloadOnFileChange: boolean;
  /** The level of a failed statement's full error in the log (off: never logged); its parameters never are. */
  readonly failedStatementLogLevel: LogLevel | "off";
  /** What clients are told of PostgreSQL's errors: everything it said, or its message, detail and hint withheld (they may quote data). */
  readonly databaseErrorText: DatabaseErrorText;
  /** The operators' HTTP port: /metrics, /health. */
  readonly metrics: { readonly host: string; readonly port: number };
  /** gzip: responses compressed for the clients that compress their requests with gzip; none: never (see `compressesResponses`). */
  readonly compression: ResponseCompression;
  /** Calls per second and burst per platform; undefined: unlimited. */
  readonly rateLimit: { readonly perSecond: number; readonly burst: number } | undefined;
  /** The database of the gateway's audit trail. */
  readonly catalogDatabase: string;
  /** BACKUP_DIR: where Backup writes its sets (development: {GATEWAY_DATA_DIR}/backups); undefined: no backups to files. */
  readonly backupDir: string | undefined;
  /** PG_BIN_DIR: the directory of pg_dump and pg_restore; undefined: the PATH. */
  readonly pgBinDir: string | undefined;
  readonly healthCheckMillis: number;
  /** OpenTelemetry tracing: on when OTEL_* names an exporter or an OTLP endpoint (the SDK reads the rest of OTEL_* itself). */
  readonly tracing: { readonly serviceName: string } | undefined;
  /** Where development material lives: embedded PostgreSQL data, certificates, keys. */
  readonly dataDir: string;
  /** Port of the embedded PostgreSQL; 0 picks a free one. */
  readonly embeddedPostgresPort: number;
  /** Gateway instances serving the same PostgreSQL: tenant roles' connection limits allow for all of their pools. */
  readonly gatewayInstances: number;
  /**
   * REDIS_URL: the Redis through which gateway instances share rate limits and
   * signed-request nonces (keys under REDIS_KEY_PREFIX, each command bounded by
   * REDIS_TIMEOUT_MS); undefined: each process keeps its own.
   */
  readonly redis: RedisSettings | undefined;
}

/** Pool manager settings (see `PoolManagerOptions`), in milliseconds. */
export interface PoolSettings {
  readonly maxConnectionsPerPool: number;
  readonly maxTotalConnections: number;
  readonly maxPools: number;
  readonly maxWaitersPerPool: number;
  readonly acquireTimeoutMillis: number;
  readonly poolIdleTimeoutMillis: number;
  readonly connectionIdleTimeoutMillis: number;
  readonly maxLifetimeMillis: number;
  readonly validateAfterIdleMillis: number;
  /** Not read from the environment: the pool's default unless an embedding program sets it. */
  readonly stealAfterWaitMillis?: number;
}

/** Raised when settings are invalid; `problems` lists every one of them. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly problems: readonly string[]) {
    super(`invalid settings:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/** How the gateway was started: `development` is `npm start`'s --dev (or GATEWAY_MODE=development). */
export interface LoadOptions {
  readonly development?: boolean;
}

/** The settings that make a production gateway: with any of them, a missing DATABASE_URL is a mistake, not development. */
const PRODUCTION_SETTING = /^(API_KEY_[A-Za-z0-9_]+|TLS_(CERT|KEY|CLIENT_CA)_FILE|GATEWAY_SECRET(_FILE)?|DATABASE_PASSWORD(_FILE)?)$/;

/**
 * TLS_CLIENT_IDENTITY: where a client certificate names its principal, tried
 * in order, "uri" (a SPIFFE ID, spiffe://<TLS_SPIFFE_TRUST_DOMAIN>/platform/<name>
 * or …/admin) and "cn" (the subject's common name: the platform's name, or
 * admin); default "uri,cn". "any" binds no certificate to a principal.
 */
function clientIdentityOf(env: NodeJS.ProcessEnv, problems: string[]): ClientIdentityOptions {
  const trustDomain = env.TLS_SPIFFE_TRUST_DOMAIN?.trim() || DEFAULT_CLIENT_IDENTITY.trustDomain;
  if (!/^[a-z0-9._-]+$/.test(trustDomain)) problems.push("TLS_SPIFFE_TRUST_DOMAIN must be lowercase letters, digits, dots, dashes and underscores");
  const value = env.TLS_CLIENT_IDENTITY?.trim().toLowerCase();
  if (!value) return { ...DEFAULT_CLIENT_IDENTITY, trustDomain };
  if (value === "any") return { sources: "any", trustDomain };
  const sources = value.split(",").map((source) => source.trim());
  if (sources.some((source) => source !== "uri" && source !== "cn") || new Set(sources).size !== sources.length) {
    problems.push(`TLS_CLIENT_IDENTITY must be "uri", "cn", "uri,cn", "cn,uri" or "any" (got "${value}")`);
    return DEFAULT_CLIENT_IDENTITY;
  }
  return { sources: sources as IdentitySource[], trustDomain };
}

/** What a `*_FILE` setting or a TLS file setting names, quoted only when it looks like a path: a secret pasted there by mistake is not printed. */
export function describeFileSetting(value: string): string {
  return /^\.{0,2}\/[^\s]{0,4000}$/.test(value) ? `"${value}"` : "the value it holds (not a path: does it hold the secret itself?)";
}

/** The modes GATEWAY_MODE names. */
const MODES = ["production", "development"] as const;

/**
 * Reads and validates the settings from an environment (process.env by
 * default). Every secret may instead come from a file named by the setting
 * with `_FILE` appended (Docker's and Kubernetes' convention); setting both is
 * an error.
 */
export function loadSettings(env: NodeJS.ProcessEnv = process.env, options: LoadOptions = {}): Settings {
  const { settings, problems } = readSettings(env, options);
  if (problems.length > 0) throw new ConfigError(problems);
  return settings;
}

/**
 * Reads the settings and lists every problem instead of throwing: what
 * `db-gateway check` reports. Where a setting has a problem, `settings` holds
 * its default (or nothing).
 */
export function readSettings(env: NodeJS.ProcessEnv = process.env, options: LoadOptions = {}): { settings: Settings; problems: string[] } {
  const problems: string[] = [];
  /** Secrets whose file could not be read: already reported, not "missing" as well. */
  const unreadable = new Set<string>();
  /** A secret from `name` or the file `name_FILE` names, without the file's trailing newline. */
  const secret = (name: string): string | undefined => {
    const direct = env[name] || undefined;
    const file = env[`${name}_FILE`] || undefined;
    if (file === undefined) return direct;
    if (direct !== undefined) {
      problems.push(`${name} and ${name}_FILE are both set: use one`);
      return direct;
    }
    try {
      const value = readFileSync(file, "utf8").replace(/\r?\n$/, "");
      if (value === "") {
        problems.push(`${name}_FILE: ${describeFileSetting(file)} is empty`);
        unreadable.add(name);
      } else if (value.trim() !== value) {
        problems.push(`${name}_FILE: ${describeFileSetting(file)} has spaces or line breaks around its value (only one final newline is dropped)`);
        unreadable.add(name);
        return undefined;
      }
      return value || undefined;
    } catch (err) {
      problems.push(`${name}_FILE: cannot read ${describeFileSetting(file)} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
      unreadable.add(name);
      return undefined;
    }
  };
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name} must be an integer from ${min} to ${max} (got "${raw}")`);
      return fallback;
    }
    return n;
  };

  const modeName = (env.GATEWAY_MODE || "production") as (typeof MODES)[number];
  if (!MODES.includes(modeName)) problems.push(`GATEWAY_MODE must be one of ${MODES.join(", ")} (got "${env.GATEWAY_MODE}")`);
  let databaseUrl = secret("DATABASE_URL");
  const databasePassword = secret("DATABASE_PASSWORD");
  if (databaseUrl !== undefined) {
    try {
      const url = new URL(databaseUrl);
      if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") problems.push("DATABASE_URL must be a postgres:// or postgresql:// URL");
      else if (databasePassword !== undefined) {
        if (url.password || url.searchParams.has("password"))
          problems.push("DATABASE_URL already has a password: set DATABASE_PASSWORD(_FILE) only with a URL without one");
        url.password = encodeURIComponent(databasePassword);
        databaseUrl = url.toString();
      }
    } catch {
      problems.push("DATABASE_URL is not a valid URL");
    }
  } else if (databasePassword !== undefined) {
    problems.push("DATABASE_PASSWORD(_FILE) needs DATABASE_URL (the server's URL without the password)");
  }
  const development = databaseUrl === undefined && (options.development === true || modeName === "development");
  if (databaseUrl === undefined && !unreadable.has("DATABASE_URL")) {
    const production = Object.keys(env).filter((name) => PRODUCTION_SETTING.test(name) && env[name]);
    if (production.length > 0) {
      problems.push(
        `DATABASE_URL is not set, but production settings are (${production.sort().join(", ")}): refusing to start on a throwaway ` +
          `development database. Set DATABASE_URL (or DATABASE_URL_FILE) to your PostgreSQL, or unset those for development mode`,
      );
    } else if (!development) {
      problems.push(
        "DATABASE_URL is required (or DATABASE_URL_FILE). For a development gateway on an embedded PostgreSQL: npm start, or GATEWAY_MODE=development",
      );
    }
  }

  const tlsNames = ["TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"] as const;
  const tlsSet = tlsNames.filter((n) => env[n]);
  let tls: Settings["tls"];
  if (tlsSet.length === tlsNames.length) {
    tls = {
      certFile: env.TLS_CERT_FILE!,
      keyFile: env.TLS_KEY_FILE!,
      clientCaFile: env.TLS_CLIENT_CA_FILE!,
      ...(env.TLS_CRL_FILE ? { crlFile: env.TLS_CRL_FILE } : {}),
    };
    for (const name of [...tlsNames, ...(env.TLS_CRL_FILE ? (["TLS_CRL_FILE"] as const) : [])]) {
      try {
        accessSync(env[name]!, constants.R_OK);
      } catch {
        problems.push(`${name}: cannot read ${describeFileSetting(env[name]!)}`);
      }
    }
  } else if (tlsSet.length > 0) {
    problems.push(`set all of ${tlsNames.join(", ")} or none (missing: ${tlsNames.filter((n) => !env[n]).join(", ")})`);
  } else if (!development) {
    problems.push(`${tlsNames.join(", ")} are required outside development mode (development certificates are only made for the embedded PostgreSQL)`);
  }

  const { platformKeys, adminKeys, keyNames } = apiKeysOf(env, secret, problems);
  const statementClasses = statementClassesOf(env, platformKeys, problems);
  const signingSecrets = signingSecretsOf(env, secret, platformKeys, problems);
  const gatewaySecret = secret("GATEWAY_SECRET");
  if (gatewaySecret !== undefined && gatewaySecret.length < MIN_SECRET_LENGTH) {
    problems.push(`GATEWAY_SECRET must be at least ${MIN_SECRET_LENGTH} characters`);
  } else if (gatewaySecret === undefined && !development && !unreadable.has("GATEWAY_SECRET")) {
    problems.push("GATEWAY_SECRET is required outside development mode: tenant role passwords are derived from it (keep it stable)");
  }
  if (!development && platformKeys.size === 0 && adminKeys.length === 0 && ![...keyNames].some((name) => unreadable.has(name))) {
    problems.push("no API keys: set API_KEY_ADMIN and one API_KEY_<PLATFORM> per platform");
  }

  const logLevel = (env.LOG_LEVEL || "info") as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")} (got "${env.LOG_LEVEL}")`);
  const failedStatementLogLevel = (env.FAILED_STATEMENT_LOG_LEVEL?.trim() || "debug") as LogLevel | "off";
  const statementLevels = ["off", "debug", "info", "warn", "error"];
  if (!statementLevels.includes(failedStatementLogLevel)) {
    problems.push(`FAILED_STATEMENT_LOG_LEVEL must be one of ${statementLevels.join(", ")} (got "${env.FAILED_STATEMENT_LOG_LEVEL}")`);
  }
  const reloadOnFileChange = (env.RELOAD_ON_FILE_CHANGE?.trim().toLowerCase() || "true") !== "false";
  if (!["", "true", "false"].includes(env.RELOAD_ON_FILE_CHANGE?.trim().toLowerCase() ?? "")) {
    problems.push(`RELOAD_ON_FILE_CHANGE must be true or false (got "${env.RELOAD_ON_FILE_CHANGE}")`);
  }
  const databaseErrorText = (env.DATABASE_ERROR_TEXT?.trim() || "send") as DatabaseErrorText;
  if (databaseErrorText !== "send" && databaseErrorText !== "withhold") {
    problems.push(`DATABASE_ERROR_TEXT must be send or withhold (got "${env.DATABASE_ERROR_TEXT}")`);
  }
  const compression = (env.GRPC_COMPRESSION?.trim() || "gzip") as ResponseCompression;
  if (compression !== "gzip" && compression !== "none") problems.push(`GRPC_COMPRESSION must be gzip or none (got "${env.GRPC_COMPRESSION}")`);
  const catalogDatabase = env.CATALOG_DATABASE || DEFAULT_CATALOG_DATABASE;
  const catalogPlatform = parseDatabaseName(catalogDatabase)?.platform;
  if (!/^[a-z][a-z0-9_]{0,62}$/.test(catalogDatabase)) problems.push("CATALOG_DATABASE must be lowercase letters, digits and underscores, at most 63");
  else if (catalogPlatform !== undefined && platformKeys.has(catalogPlatform))
    problems.push(`CATALOG_DATABASE "${catalogDatabase}" would be a database of platform "${catalogPlatform}"`);
  const ratePerSecond = int("RATE_LIMIT_PER_SEC", 0, 0, 1_000_000);
  const rateBurst = int("RATE_LIMIT_BURST", Math.max(1, ratePerSecond), 1, 1_000_000);
  const results: ResultLimits = {
    maxRows: int("MAX_RESULT_ROWS", DEFAULT_RESULT_LIMITS.maxRows, 1, 1_000_000_000),
    maxBytes: int("MAX_RESULT_BYTES", DEFAULT_RESULT_LIMITS.maxBytes, 1, 2_000_000_000),
    maxBufferedBytes: int("MAX_BUFFERED_RESULT_BYTES", DEFAULT_RESULT_LIMITS.maxBufferedBytes, 1, 1_000_000_000_000),
  };
  if (results.maxBytes > results.maxBufferedBytes) {
    problems.push(
      `MAX_RESULT_BYTES (${results.maxBytes}) cannot be more than MAX_BUFFERED_RESULT_BYTES (${results.maxBufferedBytes}): a result at the limit must fit`,
    );
  }
  const clientIdentity = clientIdentityOf(env, problems);
  const host = env.GATEWAY_HOST || "127.0.0.1";
  const tracesExporter = env.OTEL_TRACES_EXPORTER?.trim();
  const tracingOn =
    env.OTEL_SDK_DISABLED?.trim().toLowerCase() !== "true" &&
    (tracesExporter ? tracesExporter !== "none" : Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT));

  const settings: Settings = {
    development,
    databaseUrl,
    clusters: clustersOf(env, secret, int, problems),
    host,
    port: int("GATEWAY_PORT", 9000, 0, 65535),
    tls,
    clientIdentity,
    clientConnections: {
      maxConnections: int("MAX_CLIENT_CONNECTIONS", DEFAULT_CLIENT_CONNECTION_LIMITS.maxConnections, 1, 1_000_000),
      tlsHandshakeTimeoutMillis: int("TLS_HANDSHAKE_TIMEOUT_SECS", DEFAULT_CLIENT_CONNECTION_LIMITS.tlsHandshakeTimeoutMillis / 1000, 1, 600) * 1000,
    },
    platformKeys,
    adminKeys,
    statementClasses,
    signingSecrets,
    signatureMaxSkewMillis: int("SIGNATURE_MAX_SKEW_SECS", 300, 1, 86_400) * 1000,
    gatewaySecret,
    pool: {
      maxConnectionsPerPool: int("MAX_CONNECTIONS_PER_POOL", 10, 1, 10_000),
      maxTotalConnections: int("MAX_TOTAL_CONNECTIONS", 200, 1, 100_000),
      maxPools: int("MAX_POOLS", 50, 1, 100_000),
      maxWaitersPerPool: int("MAX_WAITERS_PER_POOL", 100, 0, 1_000_000),
      acquireTimeoutMillis: int("POOL_ACQUIRE_TIMEOUT_MS", 5_000, 1, 3_600_000),
      poolIdleTimeoutMillis: int("POOL_IDLE_TIMEOUT_SECS", 1800, 1, 86_400 * 7) * 1000,
      connectionIdleTimeoutMillis: int("CONNECTION_IDLE_TIMEOUT_SECS", 300, 1, 86_400 * 7) * 1000,
      maxLifetimeMillis: int("CONNECTION_MAX_LIFETIME_SECS", 3600, 1, 86_400 * 30) * 1000,
      validateAfterIdleMillis: int("CONNECTION_VALIDATE_AFTER_IDLE_SECS", 30, 0, 86_400) * 1000,
    },
    registryRefreshMillis: int("REGISTRY_REFRESH_SECS", 10, 1, 86_400) * 1000,
    maxStatementMillis: int("MAX_STATEMENT_TIME_SECS", 300, 1, 86_400) * 1000,
    transactionIdleTimeoutMillis: int("TRANSACTION_IDLE_TIMEOUT_SECS", 60, 1, 86_400) * 1000,
    shutdownGraceMillis: int("SHUTDOWN_GRACE_SECS", 20, 0, 3_600) * 1000,
    results: Object.freeze(results),
    logLevel,
    failedStatementLogLevel,
    databaseErrorText,
    reloadOnFileChange,
    metrics: { host: env.METRICS_HOST || host, port: int("METRICS_PORT", 9464, 0, 65535) },
    compression,
    rateLimit: ratePerSecond > 0 ? { perSecond: ratePerSecond, burst: rateBurst } : undefined,
    catalogDatabase,
    backupDir: env.BACKUP_DIR || undefined,
    pgBinDir: env.PG_BIN_DIR || undefined,
    healthCheckMillis: int("HEALTH_CHECK_INTERVAL_SECS", 2, 1, 3_600) * 1000,
    tracing: tracingOn ? { serviceName: env.OTEL_SERVICE_NAME || "db-gateway" } : undefined,
    dataDir: env.GATEWAY_DATA_DIR || ".data",
    embeddedPostgresPort: int("EMBEDDED_PG_PORT", 0, 0, 65535),
    gatewayInstances: int("GATEWAY_INSTANCES", 1, 1, 10_000),
    redis: redisOf(env, secret, int, problems),
  };
  return { settings: Object.freeze(settings), problems };
}

/** Settings as a printable object, with every secret redacted. */
export function describeSettings(settings: Settings): Record<string, unknown> {
  let database = "embedded PostgreSQL (development)";
  if (settings.databaseUrl !== undefined) {
    // Only where it goes: the user name is no secret, but the password and query parameters (pg takes ?password=) may be.
    const url = new URL(settings.databaseUrl);
    database = `${url.protocol}//${url.username ? `${url.username}@` : ""}${url.host}${url.pathname}`;
  }
  return {
    database,
    // Names only: their URLs may carry passwords.
    clusters: [settings.clusters.primary.name, ...settings.clusters.others.map((c) => c.name)],
    listen: `${settings.host}:${settings.port}`,
    // How many keys, never which: two say a rotation is under way.
    platforms: Object.fromEntries([...settings.platformKeys].sort(([a], [b]) => a.localeCompare(b)).map(([platform, keys]) => [platform, keys.length])),
    adminKeys: settings.adminKeys.length,
    gatewaySecret: settings.gatewaySecret === undefined ? "not set" : "set",
    signedPlatforms: [...settings.signingSecrets.keys()].sort(),
    statementClasses: Object.fromEntries([...settings.statementClasses].map(([platform, classes]) => [platform, classes.join(",")])),
    maxConnectionsPerPool: settings.pool.maxConnectionsPerPool,
    maxTotalConnections: settings.pool.maxTotalConnections,
    maxPools: settings.pool.maxPools,
    gatewayInstances: settings.gatewayInstances,
    maxClientConnections: settings.clientConnections.maxConnections,
    tlsHandshakeTimeoutSecs: settings.clientConnections.tlsHandshakeTimeoutMillis / 1000,
    maxResultRows: settings.results.maxRows,
    maxResultBytes: settings.results.maxBytes,
    maxBufferedResultBytes: settings.results.maxBufferedBytes,
    metrics: `${settings.metrics.host}:${settings.metrics.port}`,
    compression: settings.compression,
    failedStatementLogLevel: settings.failedStatementLogLevel,
    databaseErrorText: settings.databaseErrorText,
    backupDir: settings.backupDir ?? "not set",
    // Where, never the URL: it may hold a password.
    redis: settings.redis === undefined ? "not set (limits per process)" : `set (keys under ${settings.redis.keyPrefix})`,
    resultCache: settings.redis?.resultCache === undefined ? "off" : `on (at most ${settings.redis.resultCache.maxTtlMillis} ms)`,
    tracing: settings.tracing === undefined ? "off" : "on",
  };
}
