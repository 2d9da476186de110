// @db-gateway/client/pg: a pool shaped like pg's Pool over one gateway database, for code written against pg (query, connect, BEGIN … COMMIT, release, events).
import { EventEmitter } from "node:events";
import types from "pg-types";
import type { Database } from "./database.js";
import { withTypeParsers } from "./database.js";
import { Code, GatewayError } from "./gateway-error.js";
import { openTransaction, type OpenTransaction } from "./open-transaction.js";
import type { Field } from "./result.js";
import { classifySessionStatement, unsupportedByGateway } from "./session-statement.js";
import type { TypeParser } from "./type-parsers.js";
import type { Param } from "./values.js";

/** pg's custom type parsers (`types` of a pool or a query): `getTypeParser(oid, "text")` gives the parser of a type. */
export interface PgTypes {
  getTypeParser(oid: number, format?: string): (text: string) => unknown;
}

/** A column of a result, as pg's `FieldDef` (`dataTypeSize` is not sent by the gateway: always -1). */
export interface PgField extends Field {
  dataTypeSize: number;
  format: "text";
}

/** A result as pg gives it. `rowCount` is null for statements that report none (BEGIN, CREATE …), as pg has it. */
export interface PgQueryResult<Row = Record<string, unknown>> {
  command: string;
  rowCount: number | null;
  oid: null;
  rows: Row[];
  fields: PgField[];
  rowAsArray: boolean;
}

/** pg's query config object. `name` (a prepared statement by name) is refused: see the README. */
export interface PgQueryConfig {
  text: string;
  values?: readonly unknown[];
  rowMode?: "array";
  types?: PgTypes;
  name?: string;
}

/** pg's node-style callback. */
export type PgCallback<Row> = (err: Error | null, result: PgQueryResult<Row>) => void;

/** Options of a GatewayPool. */
export interface GatewayPoolOptions {
  /** Type parsers for every query (pg's `types`); pg's own (pg-types) by default, so rows look as with pg (int8 and numeric as strings). */
  types?: PgTypes;
}

/** What both pool and client queries accept, as pg's overloads. */
interface Queryable {
  query<Row = Record<string, unknown>>(text: string | PgQueryConfig, values?: readonly unknown[]): Promise<PgQueryResult<Row>>;
  query<Row = Record<string, unknown>>(text: string | PgQueryConfig, callback: PgCallback<Row>): void;
  query<Row = Record<string, unknown>>(text: string | PgQueryConfig, values: readonly unknown[] | undefined, callback: PgCallback<Row>): void;
}

const TEXT: (oid: number) => TypeParser = () => (text) => text;
/** Row shapes by parsers object: one map of parsers per `types`. */
const parserCaches = new WeakMap<PgTypes, Map<number, (text: string) => unknown>>();

/**
 * A pool shaped like pg's `Pool` over one gateway database (a platform's main
 * database or a tenant's), for code written against pg. There are no
 * connections to keep: `query` is one gateway call, and `connect()` gives a
 * client at once, cheaply, whose `BEGIN … COMMIT` runs as one interactive
 * transaction on the gateway (its connection held only between them).
 * Session state that would outlive a call (session SET, LISTEN, named
 * prepared statements, cursors) is refused with a GatewayError
 * (UNIMPLEMENTED, NOT_SUPPORTED_BY_GATEWAY). Events: `connect` and `acquire`
 * on `connect()`, `release` and `remove` on `release()`, `error` never (no idle
 * connection can fail).
 */
export class GatewayPool extends EventEmitter implements Queryable {
  readonly #database: Database;
  readonly #types: PgTypes;
  #checkedOut = 0;
  #ended = false;

  constructor(database: Database, options: GatewayPoolOptions = {}) {
    super();
    this.#database = withTypeParsers(database, TEXT);
    this.#types = options.types ?? types;
  }

  /** Clients handed out and not yet released. */
  get totalCount(): number {
    return this.#checkedOut;
  }
  /** Always 0: clients are made on demand, none waits idle. */
  get idleCount(): number {
    return 0;
  }
  /** Always 0: `connect()` never waits (a transaction waits for a connection at the gateway, under its deadline). */
  get waitingCount(): number {
    return 0;
  }
  /** True once `end()` was called. */
  get ended(): boolean {
    return this.#ended;
  }

  query<Row = Record<string, unknown>>(text: string | PgQueryConfig, values?: readonly unknown[]): Promise<PgQueryResult<Row>>;
  query<Row = Record<string, unknown>>(text: string | PgQueryConfig, callback: PgCallback<Row>): void;
  query<Row = Record<string, unknown>>(text: string | PgQueryConfig, values: readonly unknown[] | undefined, callback: PgCallback<Row>): void;
  /** One statement as one gateway call, in pg's forms: a promise, or a callback when one is given. */
  query<Row>(text: string | PgQueryConfig, values?: readonly unknown[] | PgCallback<Row>, callback?: PgCallback<Row>): Promise<PgQueryResult<Row>> | void {
    return withCallback(values, callback, (v) => {
      if (this.#ended) throw new GatewayError("the pool has ended", Code.FailedPrecondition, "POOL_ENDED", {}, undefined);
      const query = normalize(text, v);
      const statement = classifySessionStatement(query.text);
      if (statement.kind === "refused") throw statement.error;
      // BEGIN on the pool would be a transaction of one statement, as with pg (each pool.query may take another connection).
      if (statement.kind === "begin" || statement.kind === "commit" || statement.kind === "rollback") return Promise.resolve(emptyResult<Row>(query.text));
      return this.#run<Row>((sql, params) => this.#database.query(sql, params, { rowMode: "array" }), query);
    });
  }

  connect(): Promise<GatewayPoolClient>;
  connect(callback: (err: Error | undefined, client: GatewayPoolClient, done: (release?: unknown) => void) => void): void;
  /** A client for statements that belong together, above all BEGIN … COMMIT. Release it when done. */
  connect(callback?: (err: Error | undefined, client: GatewayPoolClient, done: (release?: unknown) => void) => void): Promise<GatewayPoolClient> | void {
    const make = () => {
      if (this.#ended) throw new GatewayError("the pool has ended", Code.FailedPrecondition, "POOL_ENDED", {}, undefined);
      this.#checkedOut++;
      const client = new GatewayPoolClient(
        this.#database,
        (q) => this.#run(q.run, q.query),
        () => {
          this.#checkedOut--;
          this.emit("release", undefined, client);
          this.emit("remove", client);
        },
      );
      this.emit("connect", client);
      this.emit("acquire", client);
      return client;
    };
    if (callback === undefined) {
      try {
        return Promise.resolve(make());
      } catch (err) {
        return Promise.reject(err);
      }
    }
    let client: GatewayPoolClient;
    try {
      client = make();
    } catch (err) {
      queueMicrotask(() => callback(err as Error, undefined as unknown as GatewayPoolClient, () => undefined));
      return;
    }
    queueMicrotask(() => callback(undefined, client, (release) => client.release(release)));
  }

  /** Ends the pool: later queries and connects fail. Clients handed out keep working until released. The gateway client is not closed (it is the caller's). */
  end(callback?: () => void): Promise<void> {
    this.#ended = true;
    this.emit("end");
    callback?.();
    return Promise.resolve();
  }

  async #run<Row>(
    run: (sql: string, params: Param[]) => Promise<{ rows: unknown[][]; rowCount: number; fields: Field[]; command: string }>,
    query: NormalQuery,
  ): Promise<PgQueryResult<Row>> {
    const result = await run(query.text, query.values);
    const fields = result.fields.map((f) => ({ ...f, dataTypeSize: -1, format: "text" as const }));
    const parsers = fields.map((f) => parserOf(query.types ?? this.#types, f.dataTypeID));
    const rows =
      query.rowMode === "array"
        ? result.rows.map((row) => row.map((v, i) => (v === null ? null : parsers[i]!(v as string))))
        : result.rows.map((row) => {
            const out: Record<string, unknown> = {};
            for (let i = 0; i < row.length; i++) out[fields[i]!.name] = row[i] === null ? null : parsers[i]!(row[i] as string);
            return out;
          });
    return {
      command: result.command,
      rowCount: ROW_COUNTED.has(result.command) ? result.rowCount : null,
      oid: null,
      rows: rows as Row[],
      fields,
      rowAsArray: query.rowMode === "array",
    };
  }
}

/**
 * A client of a GatewayPool, as pg's `PoolClient`: `query` in pg's forms,
 * `release()`. `BEGIN` (with its isolation level, READ ONLY, DEFERRABLE)
 * opens an interactive transaction on the gateway that the client's next
 * statements run in, up to `COMMIT` or `ROLLBACK`; savepoints work inside it.
 * Outside a transaction each statement is a call of its own. Releasing a
 * client in a transaction rolls it back.
 */
export class GatewayPoolClient extends EventEmitter implements Queryable {
  #transaction: OpenTransaction | undefined;
  #released = false;
  /** Statements run one after another, as on one pg connection. */
  #queue: Promise<unknown> = Promise.resolve();

  /** @internal Made by `GatewayPool.connect()`. */
  constructor(
    private readonly database: Database,
    private readonly run: <Row>(q: {
      run: (sql: string, params: Param[]) => Promise<{ rows: unknown[][]; rowCount: number; fields: Field[]; command: string }>;
      query: NormalQuery;
    }) => Promise<PgQueryResult<Row>>,
    private readonly onRelease: () => void,
  ) {
    super();
  }

  query<Row = Record<string, unknown>>(text: string | PgQueryConfig, values?: readonly unknown[]): Promise<PgQueryResult<Row>>;
  query<Row = Record<string, unknown>>(text: string | PgQueryConfig, callback: PgCallback<Row>): void;
  query<Row = Record<string, unknown>>(text: string | PgQueryConfig, values: readonly unknown[] | undefined, callback: PgCallback<Row>): void;
  /** One statement: in the open transaction if there is one, else as a call of its own. */
  query<Row>(text: string | PgQueryConfig, values?: readonly unknown[] | PgCallback<Row>, callback?: PgCallback<Row>): Promise<PgQueryResult<Row>> | void {
    return withCallback(values, callback, (v) => {
      if (this.#released) throw new GatewayError("the client was released", Code.FailedPrecondition, "CLIENT_RELEASED", {}, undefined);
      const query = normalize(text, v);
      const result = this.#queue.then(() => this.#statement<Row>(query));
      this.#queue = result.catch(() => undefined);
      return result;
    });
  }

  /** Gives the client back. A transaction still open is rolled back (pg would keep it open on a pooled connection). */
  release(_err?: unknown): void {
    if (this.#released) return;
    this.#released = true;
    // Behind the statements already queued, which run in the transaction as they would on pg's connection, not on their own.
    this.#queue = this.#queue.then(() => {
      const open = this.#transaction;
      this.#transaction = undefined;
      return open?.rollback();
    });
    this.#queue.catch(() => undefined);
    this.onRelease();
    this.emit("end");
  }

  async #statement<Row>(query: NormalQuery): Promise<PgQueryResult<Row>> {
    const statement = classifySessionStatement(query.text);
    const tx = this.#transaction;
    switch (statement.kind) {
      case "refused":
        throw statement.error;
      case "begin":
        // BEGIN inside a transaction is only a warning in PostgreSQL.
        if (tx === undefined) this.#transaction = openTransaction(this.database, statement.options);
        return emptyResult(query.text, "BEGIN");
      case "commit":
      case "rollback": {
        if (tx === undefined) return emptyResult(query.text, statement.kind === "commit" ? "COMMIT" : "ROLLBACK"); // a warning in PostgreSQL
        this.#transaction = undefined;
        if (statement.kind === "rollback") {
          await tx.rollback();
          return emptyResult(query.text, "ROLLBACK");
        }
        try {
          await tx.commit();
        } catch (err) {
          // A transaction that had failed is rolled back by its COMMIT, which PostgreSQL reports as ROLLBACK, not as an error.
          if (err instanceof GatewayError && err.reason === "TRANSACTION_ABORTED") return emptyResult(query.text, "ROLLBACK");
          throw err;
        }
        return emptyResult(query.text, "COMMIT");
      }
      case "sql":
        if (tx !== undefined) return this.run<Row>({ run: (sql, params) => tx.query<unknown[]>(sql, params, { rowMode: "array" }), query });
        return this.run<Row>({ run: (sql, params) => this.database.query(sql, params, { rowMode: "array" }), query });
    }
  }
}

/** Commands whose row count pg reports; others (BEGIN, CREATE …) have `rowCount: null`. */
const ROW_COUNTED = new Set(["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "FETCH", "MOVE"]);

interface NormalQuery {
  text: string;
  values: Param[];
  rowMode: "array" | undefined;
  types: PgTypes | undefined;
}

function normalize(text: string | PgQueryConfig, values: readonly unknown[] | undefined): NormalQuery {
  if (typeof text === "string") return { text, values: (values ?? []) as Param[], rowMode: undefined, types: undefined };
  if (text === null || typeof text !== "object") throw new TypeError("query: expected SQL text or a { text, values } config");
  if (typeof (text as { submit?: unknown }).submit === "function") {
    throw unsupportedByGateway(
      "a Submittable (pg-cursor, pg-query-stream)",
      "use database.stream(sql, params) of @db-gateway/client to read rows as they come",
    );
  }
  if (text.name !== undefined) {
    throw unsupportedByGateway("a prepared statement by name (`name`)", "the gateway prepares and caches parameterized statements itself: leave `name` out");
  }
  if (typeof text.text !== "string") throw new TypeError("query: the config's `text` must be a string");
  return { text: text.text, values: (values ?? text.values ?? []) as Param[], rowMode: text.rowMode, types: text.types };
}

function parserOf(types: PgTypes, oid: number): (text: string) => unknown {
  let cache = parserCaches.get(types);
  if (cache === undefined) parserCaches.set(types, (cache = new Map()));
  let parser = cache.get(oid);
  if (parser === undefined) cache.set(oid, (parser = types.getTypeParser(oid, "text")));
  return parser;
}

function emptyResult<Row>(text: string, command = text.trim().split(/\s+/)[0]!.toUpperCase()): PgQueryResult<Row> {
  return { command, rowCount: null, oid: null, rows: [], fields: [], rowAsArray: false };
}

/** pg's calling conventions: `(values?)` → promise, `(callback)` or `(values, callback)` → callback, errors included. */
function withCallback<Row>(
  values: readonly unknown[] | PgCallback<Row> | undefined,
  callback: PgCallback<Row> | undefined,
  run: (values: readonly unknown[] | undefined) => Promise<PgQueryResult<Row>>,
): Promise<PgQueryResult<Row>> | void {
  const cb = typeof values === "function" ? values : callback;
  const v = typeof values === "function" ? undefined : values;
  let result: Promise<PgQueryResult<Row>>;
  try {
    result = run(v);
  } catch (err) {
    result = Promise.reject(err);
  }
  if (cb === undefined) return result;
  result.then(
    (r) => cb(null, r),
    (err: Error) => cb(err, undefined as unknown as PgQueryResult<Row>),
  );
}

/** A pg-compatible pool over one gateway database: `createPgPool(gateway.platform(p).tenant(t))`. Cheap: no connection of its own. */
export function createPgPool(database: Database, options?: GatewayPoolOptions): GatewayPool {
  return new GatewayPool(database, options);
}
