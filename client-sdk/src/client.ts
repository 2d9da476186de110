import { readFileSync } from "node:fs";
import { createClient as createConnectClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { AdminService, DatabaseType, type GetPoolStatsResponse } from "./gen/dbgateway/v1/admin_service_pb.js";
import { QueryService } from "./gen/dbgateway/v1/query_service_pb.js";
import type { ResultSet } from "./gen/dbgateway/v1/values_pb.js";
import { GatewayError } from "./gateway-error.js";
import { typeParsers, type Int8Mode, type TypeParser } from "./type-parsers.js";
import { toValue, type Param } from "./values.js";

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

/** A column of a result, named as in `pg`'s `FieldDef`. */
export interface Field {
  name: string;
  dataTypeID: number;
  dataTypeModifier: number;
  tableID: number;
  columnID: number;
}

/** The result of a query, shaped like `pg`'s. */
export interface QueryResult<Row> {
  rows: Row[];
  /** Rows returned or affected. */
  rowCount: number;
  fields: Field[];
  /** SELECT, INSERT, UPDATE … */
  command: string;
  /** Time PostgreSQL took, as measured by the gateway. */
  executionTimeMs: number;
}

/** One database: a platform's main database or a tenant's. */
export interface Database {
  /** Runs one parameterized statement; rows are objects keyed by column name. */
  query<Row extends Record<string, unknown> = Record<string, unknown>>(sql: string, params?: readonly Param[], options?: CallOptions): Promise<QueryResult<Row>>;
}

/** A platform's main database, and the way to its tenants. */
export interface PlatformDatabase extends Database {
  tenant(tenantId: string): Database;
}

/** Per-call options. */
export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
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

  const database = (platform: string, tenantId: string): Database => ({
    async query<Row extends Record<string, unknown>>(sql: string, params: readonly Param[] = [], call: CallOptions = {}) {
      try {
        const response = await query.query({ platform, tenantId, sql, params: params.map(toValue) }, call);
        return decodeResult<Row>(response.result, parserFor);
      } catch (err) {
        throw GatewayError.from(err);
      }
    },
  });

  return {
    platform(platform) {
      return { ...database(platform, ""), tenant: (tenantId) => database(platform, tenantId) };
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

function decodeResult<Row>(result: ResultSet | undefined, parserFor: (oid: number) => TypeParser): QueryResult<Row> {
  if (result === undefined) throw new GatewayError("the gateway sent no result", 13, "INTERNAL", {}, undefined);
  const parsers = result.columns.map((c) => parserFor(c.typeOid));
  const names = result.columns.map((c) => c.name);
  const rows = result.rows.map((row) => {
    const out: Record<string, unknown> = {};
    row.values.forEach((value, i) => {
      out[names[i]!] = value.kind.case === "stringValue" ? parsers[i]!(value.kind.value) : null;
    });
    return out as Row;
  });
  const time = result.executionTime;
  return {
    rows,
    rowCount: Number(result.rowsAffected),
    fields: result.columns.map((c) => ({
      name: c.name,
      dataTypeID: c.typeOid,
      dataTypeModifier: c.typeModifier,
      tableID: c.tableOid,
      columnID: c.columnNumber,
    })),
    command: result.command,
    executionTimeMs: time === undefined ? 0 : Number(time.seconds) * 1000 + time.nanos / 1e6,
  };
}

function describe(db: { name: string; platform: string; tenantId: string; type: DatabaseType } | undefined): DatabaseInfo {
  if (db === undefined) throw new GatewayError("the gateway sent no database", 13, "INTERNAL", {}, undefined);
  return { name: db.name, platform: db.platform, tenantId: db.tenantId, type: db.type === DatabaseType.MAIN ? "main" : "tenant" };
}
