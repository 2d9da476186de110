// A gateway started in the test process with random platforms and keys, and helpers for its PostgreSQL, metrics and cleanup.
import { randomBytes } from "node:crypto";
import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import pg from "pg";
import { createClient, type ClientOptions, type GatewayClient } from "../../client-sdk/src/index.js";
import type { PoolSettings } from "../../server/src/config.js";
import { startGateway, type Gateway, type GatewayOptions } from "../../server/src/gateway.js";
import { createLogger } from "../../server/src/telemetry/logger.js";
import { OWNER_ROLE } from "../../server/src/tenancy/roles.js";
import { testPki } from "./pki.js";

/** The PostgreSQL server of this test run (see scripts/test.ts). */
export function pgUrl(): string {
  const url = process.env.PG_URL;
  if (!url) throw new Error("PG_URL is not set: run the tests with `npm test`");
  return url;
}

/** Runs `fn` on a direct connection to one database of the test server (or the server at `server`), as its URL's user (a superuser), closed afterwards. */
export async function asSuperuser<T>(database: string, fn: (client: pg.Client) => Promise<T>, server = pgUrl()): Promise<T> {
  const url = new URL(server);
  url.pathname = `/${database}`;
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A random platform name, so that test files can share one PostgreSQL server. */
export function randomPlatform(prefix = "t"): string {
  return `${prefix}${randomBytes(5).toString("hex").replace(/^\d/, "x")}`;
}

/** Pool settings for tests: small, with the production defaults' shape. */
export const TEST_POOL: PoolSettings = {
  maxConnectionsPerPool: 5,
  maxTotalConnections: 50,
  maxPools: 50,
  maxWaitersPerPool: 100,
  acquireTimeoutMillis: 5_000,
  poolIdleTimeoutMillis: 60_000,
  connectionIdleTimeoutMillis: 30_000,
  maxLifetimeMillis: 3_600_000,
  validateAfterIdleMillis: 30_000,
};

/** A gateway started for a test, with its own platforms and keys. */
export interface TestGateway {
  gateway: Gateway;
  port: number;
  url: string;
  /** Platform names (random), each with an API key. */
  platforms: string[];
  keys: Record<string, string>;
  adminKey: string;
  /** The secret tenant role passwords derive from. */
  gatewaySecret: string;
  /** The PostgreSQL server behind this gateway. */
  databaseUrl: string;
  /** http://127.0.0.1:{port} of /metrics and /health. */
  httpUrl: string;
  /** SDK client options for a key (a platform's, or the admin's), with the client certificate of its principal. */
  clientOptions(apiKey: string): ClientOptions;
  /** The client certificate and key (PEM) for a key's principal. */
  tlsFor(apiKey: string): { cert: string; key: string };
  /** An SDK client with the given platform's key (the first platform's by default). */
  client(platform?: string): GatewayClient;
  adminClient(): GatewayClient;
  /** A direct PostgreSQL connection as the administrative user, to check what the gateway did. */
  pg(database?: string): Promise<pg.Client>;
  /** Stops the gateway and drops every database of its platforms. */
  close(): Promise<void>;
}

/** Each platform's one key as GatewayOptions takes keys: a list per platform. */
export function keyLists(keys: Record<string, string>): Map<string, string[]> {
  return new Map(Object.entries(keys).map(([platform, key]) => [platform, [key]]));
}

/**
 * Starts a gateway on port 0 against the run's PostgreSQL, with `platforms`
 * random platforms whose main databases are created unless `createMain` is false.
 */
export async function startTestGateway(
  options: { platforms?: number; createMain?: boolean; overrides?: Partial<GatewayOptions>; pool?: Partial<PoolSettings>; databaseUrl?: string } = {},
): Promise<TestGateway> {
  const databaseUrl = options.databaseUrl ?? pgUrl();
  const gatewaySecret = options.overrides?.gatewaySecret ?? randomBytes(32).toString("hex");
  const pki = testPki();
  const platforms = Array.from({ length: options.platforms ?? 2 }, () => randomPlatform());
  const keys = Object.fromEntries(platforms.map((p) => [p, `key-${p}-${randomBytes(16).toString("hex")}`]));
  const adminKey = options.overrides?.adminKeys?.[0] ?? `admin-${randomBytes(16).toString("hex")}`;
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  try {
    if (options.createMain !== false) {
      for (const p of platforms) await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(`${p}_main`)}`);
    }
  } finally {
    await admin.end();
  }
  const catalog = `catalog_${platforms[0] ?? randomPlatform()}`;
  const gateway = await startGateway({
    host: "127.0.0.1",
    port: 0,
    databaseUrl,
    tls: { cert: Buffer.from(pki.server.cert), key: Buffer.from(pki.server.key), clientCa: Buffer.from(pki.ca.cert) },
    platformKeys: keyLists(keys),
    adminKeys: [adminKey],
    gatewaySecret,
    registryRefreshMillis: 60_000,
    maxStatementMillis: 60_000,
    transactionIdleTimeoutMillis: 60_000,
    logger: createLogger("silent"),
    metrics: { host: "127.0.0.1", port: 0 },
    rateLimit: undefined,
    catalogDatabase: catalog,
    healthCheckMillis: 1_000,
    ...options.overrides,
    pool: { ...TEST_POOL, ...options.pool },
  });
  const url = `https://localhost:${gateway.port}`;
  const clients: GatewayClient[] = [];
  const clientOptions = (apiKey: string): ClientOptions => ({ url, apiKey, tls: { ca: pki.ca.cert, ...tlsFor(apiKey) } });
  /** The client certificate of the key's principal (one for no principal, for a key the gateway does not know). */
  const tlsFor = (apiKey: string) => {
    // The gateway's own keys: its overrides' when it was given another's (a second gateway of the same platforms).
    const platformKeys = options.overrides?.platformKeys ?? keyLists(keys);
    const platform = [...platformKeys].find(([, k]) => k.includes(apiKey))?.[0];
    const { cert, key } = platform !== undefined ? pki.clientFor(platform) : apiKey === adminKey ? pki.clientFor("admin") : pki.client;
    return { cert, key };
  };
  const track = (c: GatewayClient) => (clients.push(c), c);
  const connections: pg.Client[] = [];
  return {
    gateway,
    port: gateway.port,
    url,
    platforms,
    keys,
    adminKey,
    gatewaySecret,
    databaseUrl,
    httpUrl: `http://127.0.0.1:${gateway.metricsPort}`,
    clientOptions,
    tlsFor,
    client: (platform = platforms[0]!) => track(createClient(clientOptions(keys[platform]!))),
    adminClient: () => track(createClient(clientOptions(adminKey))),
    async pg(database) {
      const url = new URL(databaseUrl);
      if (database) url.pathname = `/${database}`;
      const client = new pg.Client({ connectionString: url.toString() });
      await client.connect();
      connections.push(client);
      return client;
    },
    async close() {
      clients.forEach((c) => c.close());
      await Promise.all(connections.map((c) => c.end().catch(() => undefined)));
      try {
        await gateway.close(1_000);
      } finally {
        // Even when the gateway was closed already (a test that closes it itself): nothing may be left behind.
        await dropPlatformDatabases(platforms, databaseUrl, [catalog]);
      }
    },
  };
}

/**
 * Drops every database and role whose name starts with one of the platforms'
 * prefixes, their audit catalogs (`catalog_{platform}`), and `also`.
 */
export async function dropPlatformDatabases(platforms: readonly string[], databaseUrl = pgUrl(), also: readonly string[] = []): Promise<void> {
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  try {
    for (const database of [...also, ...platforms.map((p) => `catalog_${p}`)]) {
      await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(database)} WITH (FORCE)`);
    }
    for (const p of platforms) {
      const { rows } = await admin.query<{ datname: string }>("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", [`${p}_`]);
      for (const { datname } of rows) await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)} WITH (FORCE)`);
      const roles = await admin.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", [`${p}_`]);
      for (const { rolname } of roles.rows) await admin.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(rolname)}`);
    }
  } finally {
    await admin.end();
  }
}

/**
 * Drops the gateway's owner role (`dbgateway_owner`) unless something still
 * uses it (then DROP ROLE fails, and that is left alone). For scripts that
 * run alone against a shared server, at their end: never while tests run,
 * which create and use it concurrently.
 */
export async function dropOwnerRole(databaseUrl = pgUrl()): Promise<void> {
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  try {
    await admin.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(OWNER_ROLE)}`).catch(() => undefined);
  } finally {
    await admin.end();
  }
}

/**
 * A Connect transport to the gateway with explicit TLS material and no API
 * key interceptor: for calls the SDK would refuse to make (no key, no client
 * certificate, a certificate from another CA). Close it with `close()`.
 */
export function rawTransport(t: Pick<TestGateway, "url">, tls: { cert?: string; key?: string; ca?: string } = {}): { transport: Transport; close: () => void } {
  const pki = testPki();
  const nodeOptions = { ca: tls.ca ?? pki.ca.cert, ...(tls.cert ? { cert: tls.cert, key: tls.key } : {}) };
  const sessionManager = new Http2SessionManager(t.url, {}, nodeOptions);
  return { transport: createGrpcTransport({ baseUrl: t.url, sessionManager }), close: () => sessionManager.abort() };
}

/** The value of one series (name and labels, as /metrics writes them) on the gateway's /metrics; 0 when absent. */
/** GET /metrics: the exposition text, after checking the status and content type. */
export async function metricsText(t: Pick<TestGateway, "httpUrl">): Promise<string> {
  const res = await fetch(`${t.httpUrl}/metrics`);
  if (res.status !== 200 || !/^text\/plain/.test(res.headers.get("content-type") ?? ""))
    throw new Error(`GET /metrics: ${res.status} ${res.headers.get("content-type")}`);
  return res.text();
}

export async function metricValue(t: Pick<TestGateway, "httpUrl">, series: string): Promise<number> {
  const text = await metricsText(t);
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
}

/** Calls (or, with `statements`, their statements) of a method counted by the gateway's metrics, for one platform. */
export function callsOf(t: Pick<TestGateway, "httpUrl">, platform: string, method: string, counter = "db_gateway_queries_total"): Promise<number> {
  return metricValue(t, `${counter}{platform="${platform}",method="${method}"}`);
}

/** The value of one series in Prometheus text, or 0 when absent. */
export function metricSample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (match?.[1] !== name) continue;
    const set = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => set[k] === v)) return Number(match[3]);
  }
  return 0;
}
