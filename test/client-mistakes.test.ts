// A client's mistakes (parameter counts, COPY through the client, undecodable request bytes) on every path: INVALID_ARGUMENT, connection kept, gateway serving on.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { Code, GatewayError, type Database, type GatewayClient, type Param } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { gatewayProcessForSuite } from "./helpers/gateway-process.js";
import { testPki } from "./helpers/pki.js";

/** Long enough for any of these calls, short enough that a connection left waiting fails the test rather than hang it. */
const TIMEOUT_MS = 5_000;

/** A client's mistake: a statement, and the error every path must answer it with. */
interface Mistake {
  name: string;
  sql: string;
  params: Param[];
  reason: string;
  message: RegExp;
  /** Refused before anything is sent: like any invalid request, it fails a whole Batch, naming the statement (see `independentBatch`). */
  checked?: boolean;
}

const MISTAKES: Mistake[] = [
  {
    name: "fewer parameters than the statement's placeholders",
    sql: "SELECT $1::int + $2::int AS sum",
    params: [1],
    reason: "INVALID_PARAMETER",
    message: /number of parameters does not match the statement's placeholders.*supplies 1 parameters.*requires 2/,
  },
  {
    name: "more than 65,535 parameters",
    sql: "SELECT $1::int AS one",
    params: Array.from({ length: 65_536 }, (_, i) => i),
    reason: "INVALID_PARAMETER",
    message: /at most 65535 parameters.*\(got 65536\)/,
    checked: true,
  },
  {
    name: "COPY … FROM STDIN",
    sql: "COPY items FROM STDIN",
    params: [],
    reason: "INVALID_REQUEST",
    message: /COPY … FROM STDIN is not supported through the gateway: insert rows with INSERT/,
  },
  {
    name: "COPY … TO STDOUT",
    sql: "COPY items TO STDOUT",
    params: [],
    reason: "INVALID_REQUEST",
    message: /COPY … TO STDOUT is not supported through the gateway: read rows with SELECT, or with StreamQuery/,
  },
];

/** The platform's main database through the SDK, and QueryService's own client for the calls the SDK does not make. */
interface Target {
  db: Database;
  raw: GatewayClient["raw"]["query"];
  platform: string;
}

/**
 * Each path that runs a client's statement: runs the mistake there with
 * correct statements around it where the path takes several, checks that
 * only the mistake failed, and returns its error.
 */
const PATHS: [string, (target: Target, m: Mistake) => Promise<GatewayError>][] = [
  [
    "Query",
    ({ raw, platform }, m) =>
      rejectsWith(raw.query({ platform, sql: m.sql, params: values(m.params) }, { timeoutMs: TIMEOUT_MS }), Code.InvalidArgument, m.reason),
  ],
  [
    "QueryMany (only that query fails)",
    async ({ raw, platform }, m) => {
      const queries = [{ sql: "SELECT 1" }, { sql: m.sql, params: values(m.params) }, { sql: "SELECT 2" }];
      const { results } = await raw.queryMany({ platform, queries }, { timeoutMs: TIMEOUT_MS });
      assert.deepEqual(
        results.map((r) => r.outcome.case),
        ["result", "error", "result"],
      );
      return GatewayError.fromStatus(results[1]!.outcome.value as Parameters<typeof GatewayError.fromStatus>[0]);
    },
  ],
  [
    "QueryStream, the SDK's query() (only that query of the message fails)",
    async ({ db }, m) => {
      const answers = await Promise.allSettled([db.query("SELECT 1 AS n"), db.query(m.sql, m.params, { timeoutMs: TIMEOUT_MS }), db.query("SELECT 2 AS n")]);
      assert.deepEqual(
        answers.map((a) => a.status),
        ["fulfilled", "rejected", "fulfilled"],
      );
      return rejectsWith(Promise.reject((answers[1] as PromiseRejectedResult).reason), Code.InvalidArgument, m.reason);
    },
  ],
  ["Batch, independent", ({ db }, m) => independentBatch(db, m, "SELECT 1")],
  ["Batch, independent, one statement at a time", ({ db }, m) => independentBatch(db, m, "SHOW server_version")],
  ["Batch, atomic", ({ db }, m) => atomicBatch(db, m, "SELECT 1")],
  ["Batch, atomic, one statement at a time", ({ db }, m) => atomicBatch(db, m, "SHOW server_version")],
  [
    "Transaction, first statement (sent with BEGIN)",
    async ({ db }, m) => {
      let error: GatewayError | undefined;
      await assert.rejects(
        db.transaction(
          async (tx) => {
            error = await rejectsWith(tx.query(m.sql, m.params), Code.InvalidArgument, m.reason);
            throw new Error("rolled back");
          },
          { timeoutMs: TIMEOUT_MS },
        ),
        /rolled back/,
      );
      return error!;
    },
  ],
  [
    "Transaction, later statement (the transaction goes on)",
    async ({ db }, m) => {
      let error: GatewayError | undefined;
      await db.transaction(
        async (tx) => {
          await tx.query("SAVEPOINT before_mistake");
          error = await rejectsWith(tx.query(m.sql, m.params), Code.InvalidArgument, m.reason);
          await tx.query("ROLLBACK TO SAVEPOINT before_mistake");
          assert.deepEqual((await tx.query("SELECT 3 AS n")).rows, [{ n: 3 }]);
        },
        { timeoutMs: TIMEOUT_MS },
      );
      return error!;
    },
  ],
  [
    "StreamQuery",
    ({ db }, m) =>
      rejectsWith(
        (async () => {
          for await (const row of db.stream(m.sql, m.params, { timeoutMs: TIMEOUT_MS })) void row;
        })(),
        Code.InvalidArgument,
        m.reason,
      ),
  ],
];

async function independentBatch(db: Database, m: Mistake, other: string): Promise<GatewayError> {
  if (m.checked) return atomicBatch(db, m, other, false);
  const results = await db.batch([other, { sql: m.sql, params: m.params }, "SELECT 2"], { timeoutMs: TIMEOUT_MS });
  assert.ok(!(results[0] instanceof GatewayError) && !(results[2] instanceof GatewayError), "the other statements ran");
  return rejectsWith(Promise.reject(results[1]), Code.InvalidArgument, m.reason);
}

async function atomicBatch(db: Database, m: Mistake, other: string, atomic = true): Promise<GatewayError> {
  const error = await rejectsWith(db.batch([other, { sql: m.sql, params: m.params }], { atomic, timeoutMs: TIMEOUT_MS }), Code.InvalidArgument, m.reason);
  assert.equal(error.metadata.statement_index, "1");
  return error;
}

/** Integer parameters as QueryService's own values. */
function values(params: Param[]) {
  return params.map((p) => ({ kind: { case: "int64Value" as const, value: BigInt(p as number) } }));
}

describe("client mistakes: INVALID_ARGUMENT, and the connection kept", () => {
  let t: TestGateway;
  let platform: string;
  let db: Database;
  let target: Target;
  before(async () => {
    // One connection: a call that lost it would have the next call served by another backend.
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1 } });
    platform = t.platforms[0]!;
    db = t.client().platform(platform);
    target = { db, raw: t.client().raw.query, platform };
    await db.query("CREATE TABLE items (id int)");
    await db.query("INSERT INTO items VALUES (1), (2)");
  });
  after(() => t.close());

  /** The backend of the database's one connection, and its pool's counters of connections opened and discarded. */
  async function connection(): Promise<{ pid: number; opened: bigint; discarded: bigint }> {
    const { rows } = await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid", [], { timeoutMs: TIMEOUT_MS });
    const stats = (await t.adminClient().raw.admin.getPoolStats({ platform })).pools.find((p) => p.database === `${platform}_main`);
    return { pid: rows[0]!.pid, opened: stats!.connectionsOpened, discarded: stats!.connectionsDiscarded };
  }

  /** Runs `mistake` and checks that the same backend, in the same pool, serves the next call. */
  async function keepsConnection<T>(mistake: () => Promise<T>): Promise<T> {
    const before = await connection();
    const result = await mistake();
    assert.deepEqual(await connection(), before, "the connection was kept");
    return result;
  }

  for (const m of MISTAKES) {
    describe(m.name, () => {
      for (const [path, run] of PATHS) {
        it(`${path}: INVALID_ARGUMENT ${m.reason}`, async () => {
          const error = await keepsConnection(() => run(target, m));
          assert.match(error.message, m.message);
        });
      }
    });
  }

  it("a parameter-count mismatch carries PostgreSQL's error in its details, in both directions", async () => {
    for (const params of [[1], [1, 2, 3]]) {
      const error = await keepsConnection(() => rejectsWith(db.query("SELECT $1::int + $2::int AS sum", params), Code.InvalidArgument, "INVALID_PARAMETER"));
      assert.equal(error.sqlstate, "08P01");
      assert.equal(error.metadata.sqlstate, "08P01");
      assert.equal(error.routine, "exec_bind_message");
      assert.match(error.message, new RegExp(`supplies ${params.length} parameters`));
    }
  });

  it("65,535 parameters, the most there can be, are sent and bound", async () => {
    const params = Array.from({ length: 65_535 }, (_, i) => String(i + 1));
    const sql = `SELECT cardinality(ARRAY[${params.map((_, i) => `$${i + 1}`).join(",")}]::int[]) AS n, $65535::int AS last`;
    const { rows } = await db.query(sql, params, { timeoutMs: 30_000 });
    assert.deepEqual(rows, [{ n: 65_535, last: 65_535 }]);
  });

  it("a COPY is known after comments, empty statements and in any case, and one to STDOUT without rows is refused too", async () => {
    for (const sql of [
      "/* load */ -- rows\n copy items from stdin",
      "Copy (SELECT 1 WHERE false) To Stdout",
      ";COPY items FROM STDIN",
      " ; /* empty statements first */ ;COPY items TO STDOUT",
    ]) {
      await keepsConnection(() => rejectsWith(db.query(sql), Code.InvalidArgument, "INVALID_REQUEST"));
    }
    assert.deepEqual((await db.query("SELECT count(*)::int AS n FROM items")).rows, [{ n: 2 }], "nothing was copied in");
  });

  it("a COPY to or from a server file or program is PostgreSQL's to refuse: PERMISSION_DENIED (42501)", async () => {
    for (const sql of ["COPY items TO '/tmp/items.csv'", "COPY items FROM '/etc/hostname'", "COPY items FROM PROGRAM 'true'"]) {
      const error = await keepsConnection(() => rejectsWith(db.query(sql), Code.PermissionDenied, "QUERY_FAILED"));
      assert.equal(error.sqlstate, "42501", sql);
    }
  });

  it("pg still has the members COPY statements rely on (server/src/execution/copy-statement.ts)", () => {
    const query = pg.Query.prototype as unknown as Record<string, unknown>;
    for (const name of ["submit", "handleError", "handleReadyForQuery", "handleCopyInResponse"]) {
      assert.equal(typeof query[name], "function", `pg.Query.prototype.${name} is gone: pg changed`);
    }
    const connection = (pg as unknown as { Connection: { prototype: Record<string, unknown> } }).Connection.prototype;
    for (const name of ["sendCopyFail", "sync"]) assert.equal(typeof connection[name], "function", `pg's Connection.prototype.${name} is gone: pg changed`);
  });
});

describe("client mistakes: the gateway process survives them (gateway in its own process)", () => {
  const gatewayProcess = gatewayProcessForSuite();

  it("a COPY streamed with StreamQuery is refused, and the gateway goes on serving", async () => {
    const gateway = gatewayProcess();
    const db = gateway.client().platform(gateway.platform);
    await db.query("CREATE TABLE items (id int)");
    await db.query("INSERT INTO items VALUES (1)");
    for (const sql of ["COPY items FROM STDIN", "COPY items TO STDOUT", "; COPY items FROM STDIN", ";COPY items TO STDOUT"]) {
      const stream = (async () => {
        for await (const row of db.stream(sql, [], { timeoutMs: TIMEOUT_MS })) void row;
      })();
      await rejectsWith(stream, Code.InvalidArgument, "INVALID_REQUEST");
      assert.deepEqual((await db.query("SELECT 1 AS n", [], { timeoutMs: TIMEOUT_MS })).rows, [{ n: 1 }], `the gateway still serves after ${sql}`);
    }
  });
});

describe("client mistakes: request bytes that are not the method's message", () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
  });
  after(() => t.close());

  /** Sends `bytes` as the request message of `method` with grpc-js, as they are, and returns the call's status. */
  function sendBytes(method: string, kind: "unary" | "bidi", bytes: Buffer, apiKey: string): Promise<grpc.StatusObject> {
    const tls = t.tlsFor(t.keys[t.platforms[0]!]!);
    const client = new grpc.Client(
      `localhost:${t.port}`,
      grpc.credentials.createSsl(Buffer.from(testPki().ca.cert), Buffer.from(tls.key), Buffer.from(tls.cert)),
    );
    const metadata = new grpc.Metadata();
    metadata.set("x-api-key", apiKey);
    const same = (b: Buffer) => b;
    const options = { deadline: Date.now() + TIMEOUT_MS };
    return new Promise<grpc.StatusObject>((resolve) => {
      const call =
        kind === "unary"
          ? client.makeUnaryRequest(`/dbgateway.v1.QueryService/${method}`, same, same, bytes, metadata, options, () => undefined)
          : client.makeBidiStreamRequest(`/dbgateway.v1.QueryService/${method}`, same, same, metadata, options);
      if (kind === "bidi") {
        const duplex = call as grpc.ClientDuplexStream<Buffer, Buffer>;
        duplex.on("data", () => undefined).on("error", () => undefined);
        duplex.write(bytes);
        duplex.end();
      }
      call.on("status", (status: grpc.StatusObject) => {
        client.close();
        resolve(status);
      });
    });
  }

  it("INVALID_ARGUMENT INVALID_REQUEST, not grpc-js's INTERNAL, once the call is authenticated; UNAUTHENTICATED before", async () => {
    const key = t.keys[t.platforms[0]!]!;
    // A field tag of field number 0: no protobuf message has it.
    const bytes = Buffer.from([0]);
    for (const [method, kind] of [
      ["Query", "unary"],
      ["Transaction", "bidi"],
      ["QueryStream", "bidi"],
    ] as const) {
      const status = await sendBytes(method, kind, bytes, key);
      assert.equal(status.code, grpc.status.INVALID_ARGUMENT, `${method}: ${status.details}`);
      assert.match(status.details, /^the request is not a valid dbgateway\.v1\.\w+ message/);
      assert.equal((await sendBytes(method, kind, bytes, "not-a-key")).code, grpc.status.UNAUTHENTICATED, method);
    }
    assert.deepEqual((await t.client().platform(t.platforms[0]!).query("SELECT 1 AS one")).rows, [{ one: 1 }]);
  });
});
