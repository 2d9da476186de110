// What each scenario of `npm run bench` is given: the run's scale, its PostgreSQL and gateway, the three setups and the measuring.
import type pg from "pg";
import type { AdminClient, PlatformDatabase } from "../../client-sdk/src/index.js";
import type { GatewayProcess } from "../../test/helpers/gateway-process.js";
import type { Measure, MeasureStream } from "./measure.js";

/** The point select of the point, batch and tenants scenarios, on the `items` table of the main database and of every tenant's. */
export const POINT_SQL = "SELECT id, qty, note FROM items WHERE id = $1";

export interface Run {
  /** Rows of the main database's `items` (--rows). */
  readonly rows: number;
  /** Tenant databases of the tenants scenario (--tenants). */
  readonly tenants: number;
  /** Rows of each stream of the stream scenario (--stream-rows). */
  readonly streamRows: number;
  /** The run's platform: random, its databases dropped at the end. */
  readonly platform: string;
  /** The platform's main database, with `items` (`rows` rows) and `history`. */
  readonly mainDb: string;
  /** The run's PostgreSQL, as its superuser. */
  readonly databaseUrl: string;
  readonly admin: pg.Client;
  /** The gateway process (C), at default settings, started with `gatewaySecret`. */
  readonly gateway: GatewayProcess;
  /** Shared by any other gateway, which must log in as the same tenant roles. */
  readonly gatewaySecret: string;
  /** The gateway's admin calls, with its admin key. */
  readonly adminSdk: AdminClient;
  /** The platform through the gateway, with the SDK's default options. */
  readonly sdk: PlatformDatabase;
  /** PgBouncer (B), when installed. */
  readonly bouncer: { port: number } | undefined;
  /** The run's PostgreSQL URL for `database`, through PgBouncer given its port. */
  urlFor(database: string, port?: number): string;
  /** A pool of `max` connections to `database` for (A); `keepIdle`: idle connections are never closed (pg closes them after 10 s). */
  direct(database: string, max: number, keepIdle?: boolean): pg.Pool;
  /** A pool of `max` connections to `database` through PgBouncer for (B). */
  bounced(database: string, max: number): pg.Pool;
  /** Ends the pools `direct` and `bounced` opened. */
  closePools(): Promise<void>;
  /** A random id of `items` in the main database. */
  randomId(): number;
  readonly measure: Measure;
  readonly measureStream: MeasureStream;
}
