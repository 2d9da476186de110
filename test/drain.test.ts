// SIGTERM drains the gateway (its own process, production settings): calls in flight get their answers, or what their clients need to know.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient as createConnectClient } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import pg from "pg";
import { TransactionRequestSchema, type TransactionResponse } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { Code, createClient, GatewayError, QueryService, toValue, type GatewayClient } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { dropPlatformDatabases, metricValue, pgUrl, rawTransport, startTestGateway } from "./helpers/gateway.js";
import { startGatewayProcess, type GatewayProcess } from "./helpers/gateway-process.js";
import { testPki } from "./helpers/pki.js";
import { waitFor } from "./helpers/wait.js";

/** A gateway process with its platform's main database and a `writes` table, SDK clients that never retry, and a direct connection. */
async function startDraining(env: Record<string, string> = {}) {
  const gateway = await startGatewayProcess({ databaseUrl: pgUrl(), env });
  const clients: GatewayClient[] = [];
  const closers: (() => void)[] = [];
  const direct = new pg.Client({ connectionString: databaseUrl(`${gateway.platform}_main`) });
  const admin = new pg.Client({ connectionString: pgUrl() });
  try {
    await gateway.adminClient().admin().createTenant(gateway.platform, "");
    await direct.connect();
    await admin.connect();
  } catch (err) {
    await gateway.close();
    await dropPlatformDatabases([gateway.platform]);
    throw err;
  }
  /** An SDK client with a connection of its own; it does not retry, so each call's own outcome is seen. */
  const client = () => {
    const c = createClient({ ...gateway.clientOptions(gateway.platformKey), retry: { maxAttempts: 1 } });
    clients.push(c);
    return c;
  };
  await client().platform(gateway.platform).query("CREATE TABLE writes (id int8 PRIMARY KEY, via text NOT NULL)");
  return {
    gateway,
    platform: gateway.platform,
    client,
    /** A Connect client (another gRPC implementation than the SDK's grpc-js) with a connection of its own. */
    connectClient() {
      const pki = testPki();
      const { transport, close } = rawTransport(gateway, pki.clientFor(gateway.platform));
      closers.push(close);
      return createConnectClient(QueryService, transport);
    },
    headers: { "x-api-key": gateway.platformKey },
    /** The ids in `writes`, as PostgreSQL has them. */
    async committed(): Promise<Set<number>> {
      const { rows } = await direct.query<{ id: string }>("SELECT id FROM writes");
      return new Set(rows.map((r) => Number(r.id)));
    },
    /** The gateway's backends still on the platform's database (any of its connections: pooled, listening). */
    async backends(): Promise<number> {
      const { rows } = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND starts_with(application_name, 'db-gateway')",
        [`${gateway.platform}_main`],
      );
      return rows[0]!.n;
    },
    /** Backends of the platform's database running a statement whose text contains `text`. */
    async running(text: string): Promise<number> {
      const { rows } = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND strpos(query, $2) > 0",
        [`${gateway.platform}_main`, text],
      );
      return rows[0]!.n;
    },
    async close() {
      clients.forEach((c) => c.close());
      closers.forEach((c) => c());
      await direct.end().catch(() => undefined);
      await admin.end().catch(() => undefined);
      await gateway.close();
      await dropPlatformDatabases([gateway.platform]);
    },
  };
}

function databaseUrl(database: string): string {
  const url = new URL(pgUrl());
  url.pathname = `/${database}`;
  return url.toString();
}

/** The gateway process's exit: code 0, and what it printed if not. */
async function exitsCleanly(gateway: GatewayProcess): Promise<void> {
  const { code, signal } = await gateway.exited;
  assert.equal(code, 0, `the gateway exited with ${code ?? signal}:\n${gateway.output().split("\n").slice(-20).join("\n")}`);
}

/**
 * Whether an error is an answer of the gateway (a status with its ErrorInfo)
 * or a call the gateway never took (its connection refused, or its stream
 * refused by HTTP/2 after GOAWAY): anything else is a bare transport error,
 * which says nothing of whether the statement ran.
 */
function answeredOrNeverTaken(error: GatewayError): boolean {
  if (error.metadata.statement_sent !== undefined || error.reason !== Code[error.code]) return true;
  return /No connection established|ECONNREFUSED|REFUSED_STREAM|GOAWAY/.test(error.message);
}

type Request = MessageInitShape<typeof TransactionRequestSchema>;

/** A Transaction stream driven message by message. */
function transactionStream(client: GatewayClient, platform: string) {
  const requests = createWritableIterable<Request>();
  const responses = client.raw.query.transaction(requests)[Symbol.asyncIterator]();
  const send = (request: Request) => void requests.write(create(TransactionRequestSchema, request)).catch(() => undefined);
  return {
    begin: () => send({ kind: { case: "begin", value: { platform } } }),
    statement: (sql: string) => send({ kind: { case: "statement", value: { sql } } }),
    commit: () => send({ kind: { case: "commit", value: {} } }),
    /** The next answer's kind; throws the call's error. */
    async next(): Promise<TransactionResponse["kind"]["case"] | "end"> {
      const r = await responses.next();
      return r.done ? "end" : r.value.kind.case;
    },
  };
}

describe("Shutdown: SIGTERM drains the gateway process", () => {
  it("16 concurrent writers: every committed INSERT was answered OK or statement_sent true, none answered statement_sent false committed, no bare transport error; no connection left, and a gateway started after it serves every committed write", async () => {
    // A secret of the test's own, so that a gateway started afterwards derives the same tenant role passwords.
    const gatewaySecret = randomBytes(32).toString("hex");
    const d = await startDraining({ GATEWAY_SECRET: gatewaySecret });
    try {
      const sql = "INSERT INTO writes (id, via) SELECT $1, $2 FROM pg_sleep(0.02)";
      type Outcome = { id: number; via: string; error?: GatewayError };
      const outcomes: Outcome[] = [];
      const oks = new Array<number>(16).fill(0);
      // Each writer's calls over its own connection: QueryStream (the SDK's default), Query (a Connect client), Batch (the SDK).
      const writers = Array.from({ length: 16 }, (_, w) => {
        const via = ["QueryStream", "Query", "Batch"][w % 3]!;
        const db = via === "Query" ? undefined : d.client().platform(d.platform);
        const connect = via === "Query" ? d.connectClient() : undefined;
        const write = async (id: number) => {
          if (db === undefined) await connect!.query({ platform: d.platform, sql, params: [toValue(BigInt(id)), toValue(via)] }, { headers: d.headers });
          else if (via === "Batch") {
            const [result] = await db.batch([{ sql, params: [BigInt(id), via] }]);
            if (result instanceof GatewayError) throw result;
          } else await db.query(sql, [BigInt(id), via]);
        };
        return (async () => {
          // Until the first error: from then on the gateway refuses new calls, and then it is gone.
          for (let n = 0; ; n++) {
            const outcome: Outcome = { id: w * 1_000_000 + n, via };
            outcomes.push(outcome);
            try {
              await write(outcome.id);
              oks[w]!++;
            } catch (err) {
              outcome.error = GatewayError.from(err);
              return;
            }
          }
        })();
      });
      await waitFor(() => oks.every((n) => n >= 3), 60_000, "every writer writes");
      d.gateway.kill("SIGTERM");
      await Promise.all(writers);
      await d.gateway.exited;

      const committed = await d.committed();
      const problems: string[] = [];
      for (const { id, via, error } of outcomes) {
        const what = `${via} #${id}: ${error === undefined ? "OK" : `${Code[error.code]} ${error.reason} statement_sent=${error.metadata.statement_sent} "${error.message}"`}`;
        if (error === undefined) {
          if (!committed.has(id)) problems.push(`answered OK but not committed: ${what}`);
          continue;
        }
        if (!answeredOrNeverTaken(error)) problems.push(`a bare transport error: ${what}`);
        if (committed.has(id) && error.metadata.statement_sent !== "true") problems.push(`committed, and its client was not told it may have run: ${what}`);
        if (error.metadata.statement_sent === "false" && committed.has(id)) problems.push(`committed though statement_sent=false: ${what}`);
      }
      assert.deepEqual(problems, [], `${problems.length} of ${outcomes.length} calls (${committed.size} rows committed)`);
      assert.ok(outcomes.filter((o) => o.error === undefined).length >= 48);
      await exitsCleanly(d.gateway);
      // Nothing leaked: the exited gateway left no backend on PostgreSQL.
      await waitFor(async () => (await d.backends()) === 0, 5_000, "no backend of the gateway left");
      // Serving afterwards: another gateway on the same database (same key and secret) serves it, every committed write included.
      const next = await startTestGateway({
        platforms: 0,
        overrides: { platformKeys: new Map([[d.platform, [d.gateway.platformKey]]]), gatewaySecret },
      });
      const client = createClient(next.clientOptions(d.gateway.platformKey));
      try {
        const { rows } = await client.platform(d.platform).query<{ id: string }>("SELECT id FROM writes");
        assert.deepEqual(new Set(rows.map((r) => Number(r.id))), committed);
      } finally {
        client.close();
        await next.close();
      }
    } finally {
      await d.close();
    }
  });

  it("honours the grace period: a slow statement over Query, QueryStream and Batch, and an open transaction, finish and get their answers", async () => {
    const d = await startDraining();
    try {
      const db = d.client().platform(d.platform);
      const slow = (id: number, via: string) => `INSERT INTO writes (id, via) SELECT ${id}, '${via}' FROM pg_sleep(1)`;
      const queryStream = db.query(slow(1, "QueryStream"));
      const query = db.query(slow(2, "Query"), [], { signal: new AbortController().signal }); // with a signal: a Query call of its own
      const batch = db.batch([slow(3, "Batch")]);
      for (const call of [queryStream, query, batch]) call.catch(() => undefined);
      let signalled!: () => void;
      const sigterm = new Promise<void>((resolve) => (signalled = resolve));
      let begun!: () => void;
      const inTransaction = new Promise<void>((resolve) => (begun = resolve));
      const transaction = d
        .client()
        .platform(d.platform)
        .transaction(async (tx) => {
          await tx.query("INSERT INTO writes (id, via) VALUES (4, 'Transaction')");
          begun();
          await sigterm;
          await tx.query("INSERT INTO writes (id, via) SELECT 5, 'Transaction' FROM pg_sleep(0.5)");
        });
      transaction.catch(() => undefined);
      // A transaction stream whose transaction has not begun, and a Listen subscription: both end at once.
      const notBegun = transactionStream(d.client(), d.platform);
      const notBegunEnds = notBegun.next();
      notBegunEnds.catch(() => undefined);
      const subscription = await d.client().platform(d.platform).listen("drain_test");
      const listening = (async () => {
        for await (const event of subscription) void event;
      })();
      listening.catch(() => undefined);

      await inTransaction;
      await waitFor(async () => (await d.running("pg_sleep(1)")) === 3, 30_000, "the three slow statements run");
      await waitFor(
        async () => (await metricValue({ httpUrl: `http://127.0.0.1:${d.gateway.metricsPort}` }, "db_gateway_open_transactions")) === 2,
        30_000,
        "both transaction streams are open",
      );
      d.gateway.kill("SIGTERM");
      signalled();

      assert.equal((await queryStream).rowCount, 1);
      assert.equal((await query).rowCount, 1);
      const [batched] = await batch;
      assert.ok(!(batched instanceof GatewayError), String(batched));
      await transaction;
      const refused = await rejectsWith(notBegunEnds, Code.Unavailable, "SHUTTING_DOWN");
      assert.equal(refused.metadata.statement_sent, "false");
      await rejectsWith(listening, Code.Unavailable, "SHUTTING_DOWN");
      await exitsCleanly(d.gateway);
      assert.deepEqual([...(await d.committed())].sort(), [1, 2, 3, 4, 5]);
      await waitFor(async () => (await d.backends()) === 0, 5_000, "no backend of the gateway left");
    } finally {
      await d.close();
    }
  });

  it("when the grace period ends: a running statement (Query, QueryStream, Batch, atomic Batch, StreamQuery) is cancelled and answered statement_sent true, an open transaction rolled back (ABORTED), a running COMMIT's outcome unknown (a transaction's, an atomic batch's)", async () => {
    const d = await startDraining({ SHUTDOWN_GRACE_SECS: "1" });
    try {
      const setup = d.client().platform(d.platform);
      // A COMMIT that takes 5 s: a deferred constraint trigger that sleeps.
      await setup.query("CREATE FUNCTION sleep_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(5); RETURN NULL; END $$");
      await setup.query(
        "CREATE CONSTRAINT TRIGGER sleep_at_commit AFTER INSERT ON writes DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.via = 'slow commit') EXECUTE FUNCTION sleep_at_commit()",
      );
      const db = d.client().platform(d.platform);
      const stuck = (id: number, via: string) => `INSERT INTO writes (id, via) SELECT ${id}, '${via}' FROM pg_sleep(60)`;
      const queryStream = db.query(stuck(1, "QueryStream"));
      const query = db.query(stuck(2, "Query"), [], { signal: new AbortController().signal });
      const batch = db.batch([stuck(3, "Batch")]);
      // Atomic batches of writes, whose COMMIT is written with their statements: one stuck in a statement, one in its COMMIT.
      const atomic = db.batch([stuck(6, "atomic Batch")], { atomic: true });
      const atomicCommitting = db.batch(["INSERT INTO writes (id, via) VALUES (7, 'slow commit')"], { atomic: true });
      const streamed = (async () => {
        for await (const row of db.stream("SELECT pg_sleep(60)")) void row;
      })();
      for (const call of [queryStream, query, batch, streamed, atomic, atomicCommitting]) call.catch(() => undefined);
      const open = transactionStream(d.client(), d.platform);
      open.begin();
      open.statement("INSERT INTO writes (id, via) VALUES (4, 'open transaction')");
      assert.equal(await open.next(), "begun");
      assert.equal(await open.next(), "result");
      const committing = transactionStream(d.client(), d.platform);
      committing.begin();
      committing.statement("INSERT INTO writes (id, via) VALUES (5, 'slow commit')");
      assert.equal(await committing.next(), "begun");
      assert.equal(await committing.next(), "result");
      committing.commit();
      const commitAnswer = committing.next();
      commitAnswer.catch(() => undefined);

      await waitFor(async () => (await d.running("pg_sleep(60)")) === 5, 30_000, "the five stuck statements run");
      await waitFor(async () => (await d.running("COMMIT")) === 2, 30_000, "the slow COMMITs run");
      d.gateway.kill("SIGTERM");

      for (const call of [queryStream, query, streamed]) {
        const error = await rejectsWith(call, Code.Unavailable, "SHUTTING_DOWN");
        assert.equal(error.metadata.statement_sent, "true", error.message);
      }
      const batchError = await rejectsWith(batch, Code.Unavailable, "SHUTTING_DOWN");
      assert.equal(batchError.metadata.statement_sent, "true", batchError.message);
      await rejectsWith(open.next(), Code.Aborted, "ROLLED_BACK_AT_SHUTDOWN");
      await rejectsWith(commitAnswer, Code.Unavailable, "COMMIT_OUTCOME_UNKNOWN");
      const atomicError = await rejectsWith(atomic, Code.Unavailable, "SHUTTING_DOWN");
      assert.equal(atomicError.metadata.statement_sent, "true", atomicError.message);
      await rejectsWith(atomicCommitting, Code.Unavailable, "COMMIT_OUTCOME_UNKNOWN");
      await exitsCleanly(d.gateway);
      assert.ok(!(await d.committed()).has(4), "the open transaction was rolled back");
      assert.ok(!(await d.committed()).has(6), "the atomic batch stuck in its statement was rolled back");
      // The stuck statements were cancelled, not left to run their minute on PostgreSQL.
      await waitFor(async () => (await d.running("pg_sleep(60)")) === 0, 10_000, "the stuck statements end");
      await waitFor(async () => (await d.backends()) === 0, 5_000, "no backend of the gateway left");
    } finally {
      await d.close();
    }
  });
});
