import { readFileSync } from "node:fs";
import { createClient as createConnectClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { AdminService, DatabaseType, type GetPoolStatsResponse } from "./gen/dbgateway/v1/admin_service_pb.js";
import { QueryService } from "./gen/dbgateway/v1/query_service_pb.js";
import { createDatabase, type CallOptions, type Database } from "./database.js";
import { GatewayError } from "./gateway-error.js";
import { typeParsers, type Int8Mode, type TypeParser } from "./type-parsers.js";

/** A PEM given as its text or bytes, or as the path of a file holding it. */
export type PemSource = string | Uint8Array;

/** Options of `createClient`. */
export interface ClientOptions {
  /** The gateway's address, e.g. "https://db-gateway.internal:9000". */
  url: string;
  /** The API key: a platform's, or the admin key for `admin()`. */
  apiKey: string;
  /** Mutual TLS: the CA that signed the gateway's certificate, and this client's certificate and key. */
  tls: { ca: PemSource; cert: PemSource; key: PemSource };
  /** int8 values as bigint (default, exact) or as strings (as `pg` returns them). */
  int8?: Int8Mode;
  /** Custom parsers by type OID, applied before the built-in ones. */
  typeParsers?: Readonly<Record<number, TypeParser>>;
}

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
}

/** Tenant lifecycle calls; needs the admin key. */
export interface AdminClient {
  createTenant(platform: string, tenantId: string, options?: { template?: string } & CallOptions): Promise<DatabaseInfo>;
  dropTenant(platform: string, tenantId: string, options?: CallOptions): Promise<DatabaseInfo>;
  listDatabases(platform?: string, options?: CallOptions): Promise<DatabaseInfo[]>;
  /** The gateway instance's connection pools, per database (of one platform, or all) and in total. */
  getPoolStats(platform?: string, options?: CallOptions): Promise<GetPoolStatsResponse>;
}

/** A connection to a gateway: one HTTP/2 connection shared by every call. */
export interface GatewayClient {
  platform(platform: string): PlatformDatabase;
  admin(): AdminClient;
  /** The generated Connect clients, for calls this API does not wrap. */
  readonly raw: { query: Client<typeof QueryService>; admin: Client<typeof AdminService> };
  /** Closes the connection; calls in flight fail. */
  close(): void;
}

/** Connects to a gateway over mutual TLS with an API key. */
export function createClient(options: ClientOptions): GatewayClient {
  const url = new URL(options.url);
  if (url.protocol !== "https:") throw new TypeError(`url must be https:// (the gateway requires TLS), got "${options.url}"`);
  if (!options.apiKey) throw new TypeError("apiKey is required");
  const nodeOptions = { ca: pem(options.tls.ca), cert: pem(options.tls.cert), key: pem(options.tls.key) };
  const sessionManager = new Http2SessionManager(url, { pingIntervalMs: 30_000, pingTimeoutMs: 10_000, idleConnectionTimeoutMs: 300_000 }, nodeOptions);
  const apiKey: Interceptor = (next) => (req) => {
    req.header.set("x-api-key", options.apiKey);
    return next(req);
  };
  const transport: Transport = createGrpcTransport({ baseUrl: url.origin, sessionManager, interceptors: [apiKey] });
  const query = createConnectClient(QueryService, transport);
  const admin = createConnectClient(AdminService, transport);
  const parserFor = typeParsers(options.int8 ?? "bigint", options.typeParsers);

  return {
    platform(platform) {
      return { ...createDatabase(query, { platform, tenantId: "" }, parserFor), tenant: (tenantId) => createDatabase(query, { platform, tenantId }, parserFor) };
    },
    admin() {
      const call = async <T>(fn: () => Promise<T>): Promise<T> => {
        try {
          return await fn();
        } catch (err) {
          throw GatewayError.from(err);
        }
      };
      return {
        createTenant: (platform, tenantId, o = {}) =>
          call(async () => describe((await admin.createTenant({ platform, tenantId, template: o.template ?? "" }, o)).database)),
        dropTenant: (platform, tenantId, o = {}) => call(async () => describe((await admin.dropTenant({ platform, tenantId }, o)).database)),
        listDatabases: (platform = "", o = {}) => call(async () => (await admin.listDatabases({ platform }, o)).databases.map(describe)),
        getPoolStats: (platform = "", o = {}) => call(() => admin.getPoolStats({ platform }, o)),
      };
    },
    raw: { query, admin },
    close() {
      sessionManager.abort();
    },
  };
}

function pem(source: PemSource): Buffer {
  if (typeof source !== "string") return Buffer.from(source);
  return source.includes("-----BEGIN") ? Buffer.from(source) : readFileSync(source);
}

function describe(db: { name: string; platform: string; tenantId: string; type: DatabaseType } | undefined): DatabaseInfo {
  if (db === undefined) throw new GatewayError("the gateway sent no database", 13, "INTERNAL", {}, undefined);
  return { name: db.name, platform: db.platform, tenantId: db.tenantId, type: db.type === DatabaseType.MAIN ? "main" : "tenant" };
}
