// The soak of the fault suite: SOAK_SECONDS (20 by default, 600 under `npm run test:faults`) of mixed load on a gateway process whose RSS, handles, files and PostgreSQL connections are sampled: nothing lost, nothing leaked, the gateway serving afterwards.
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { readFile } from "node:fs/promises";
import { get } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code, createClient, GatewayError, type AdminClient, type Database, type GatewayClient, type Subscription } from "../client-sdk/src/index.js";
import { asSuperuser, dropPlatformDatabases, metricSample, pgUrl } from "./helpers/gateway.js";
import { startGatewayProcess, type GatewayProcess } from "./helpers/gateway-process.js";
import { mapLimit, waitFor } from "./helpers/wait.js";

const SOAK_MS = Number(process.env.SOAK_SECONDS || 20) * 1000;
/** Tenants under load for the whole run; others are created and dropped meanwhile. */
const TENANTS = 20;
/** SDK clients of each kind (their own HTTP/2 connections), the tenants spread over them. */
const CLIENT_PAIRS = 4;
/** Operations in flight at once, each worker one at a time: moderate, on two cores shared by the gateway, PostgreSQL and this test. */
const WORKERS = 24;
const MAX_CONNECTIONS_PER_POOL = 3;
const MAX_TOTAL_CONNECTIONS = 48;
/** The first tenants, each with a subscription that must receive every NOTIFY the load sends it. */
const LISTENED = 4;
/** A result longer than any reader waits for: in the select list, generate_series yields rows as they are read (in FROM, it would build all ten million first). */
const ENDLESS = "SELECT generate_series(1, 10000000) AS g";
/** Rows of a stream read to its end. */
const STREAM_ROWS = 3_000;
/** Every call's deadline unless it sets a shorter one: a call that reaches it hung, and fails the test as DEADLINE_EXCEEDED of its kind. */
const CALL_DEADLINE_MS = 30_000;
/** A sample every second in a short run, every 5 s in 10 minutes. */
const SAMPLE_MS = Math.min(5_000, Math.max(1_000, SOAK_MS / 40));
/** Whether the run is long enough for its RSS to say anything about a leak (see the check). */
const MEMORY_CHECKED = SOAK_MS >= 120_000;
/** Samples before this share of the run are warm-up (code compiled, pools and buffers grown), not compared. */
const WARM_UP = 0.25;
/** The id of the row every tenant's `items` has from the start: inserting it again fails on the primary key. */
const SEED = 0;
/**
 * How a call whose deadline passes fails: DEADLINE_EXCEEDED, or POOL_EXHAUSTED when the deadline cut its wait for a
 * connection and the gateway's answer came before the SDK's own timer (errors.ts: "within the acquire timeout or the call's deadline").
 */
const DEADLINE = ["DeadlineExceeded", "ResourceExhausted POOL_EXHAUSTED"];
/** How far the gateway's libuv handles may rise above their first-third peak under the same load. */
const HANDLE_SLACK = 8;

type Kind =
  | "query"
  | "multiplexed"
  | "batch"
  | "atomic batch"
  | "transaction"
  | "rolled back"
  | "constraint"
  | "stream"
  | "stream left"
  | "cancelled"
  | "deadline"
  | "notify"
  | "listen"
  | "tenant churn";

/** How often each kind of operation runs, relative to the others (tenant churn has a worker of its own). */
const WEIGHTS: [Kind, number][] = [
  ["query", 6],
  ["multiplexed", 6],
  ["batch", 2],
  ["atomic batch", 1],
  ["transaction", 3],
  ["rolled back", 1],
  ["constraint", 1],
  ["stream", 1],
  ["stream left", 1],
  ["cancelled", 2],
  ["deadline", 2],
  ["notify", 2],
  ["listen", 1],
];

/** A wrong answer that is not an error: a lost row, a result of another call, a notification that never came. */
class Mismatch extends Error {}

/** One tenant under load: its database over the QueryStream client and over unary calls, and what the load wrote there. */
interface Tenant {
  id: string;
  database: string;
  stream: Database;
  unary: Database;
  /** Ids whose insert was acknowledged. */
  committed: Set<number>;
  /** Ids whose insert was certainly rolled back (its transaction or atomic batch failed before any commit). */
  rolledBack: Set<number>;
  /** Payloads of acknowledged NOTIFYs on channel "soak" (listened tenants only). */
  notified: Set<string>;
}

/** What the gateway process holds, and PostgreSQL's count of its backends, at one moment. */
interface Sample {
  at: number;
  rss: number;
  heapUsed: number;
  /** libuv handles (the sum of /metrics' nodejs_active_handles by type): sockets, servers, timers kept alive. */
  handles: number;
  /** Timers keeping the event loop alive (nodejs_active_resources of type Timeout): each call's deadline, the reapers. */
  timers: number;
  fds: number;
  /** Of the fds, TCP connections to PostgreSQL: the pools', the administrative ones, cancel requests. */
  pgSockets: number;
  /** pg_stat_activity: the gateway's backends in this test's databases, and those of its tenant pools (capped by MAX_TOTAL_CONNECTIONS). */
  backends: number;
  poolBackends: number;
}

const MIB = 1024 * 1024;

describe("soak: a gateway process under mixed load", () => {
  let gw: GatewayProcess;
  let direct: pg.Client;
  let admin: AdminClient;
  const clients: GatewayClient[] = [];
  before(async () => {
    gw = await startGatewayProcess({
      databaseUrl: pgUrl(),
      env: {
        MAX_CONNECTIONS_PER_POOL: String(MAX_CONNECTIONS_PER_POOL),
        MAX_TOTAL_CONNECTIONS: String(MAX_TOTAL_CONNECTIONS),
        // Short idle timeouts: connections and pools are closed and opened again throughout the run, and all closed soon after it.
        CONNECTION_IDLE_TIMEOUT_SECS: "2",
        POOL_IDLE_TIMEOUT_SECS: "3",
      },
    });
    admin = gw.adminClient().admin();
    direct = new pg.Client({ connectionString: pgUrl() });
    await direct.connect();
  });
  after(async () => {
    clients.forEach((c) => c.close());
    await direct?.end().catch(() => undefined);
    await gw?.close();
    if (gw) await dropPlatformDatabases([gw.platform]);
  });

  /** An SDK client of the platform with every call's deadline; `coalesce: false` makes each query a Query call of its own. */
  const client = (options: { coalesce?: boolean } = {}) => {
    const c = createClient({ ...gw.clientOptions(gw.platformKey), timeoutMs: CALL_DEADLINE_MS, ...options });
    clients.push(c);
    return c;
  };

  async function sample(): Promise<Sample> {
    const pgPort = Number(new URL(pgUrl()).port || 5432);
    const [rss, files, tcp, activity] = await Promise.all([
      gw.rssBytes(),
      gw.openFiles(),
      Promise.all(["tcp", "tcp6"].map((table) => readFile(`/proc/${gw.pid}/net/${table}`, "utf8").catch(() => ""))),
      direct.query<{ backends: number; pool: number }>(
        `SELECT count(*)::int AS backends, count(*) FILTER (WHERE application_name = 'db-gateway')::int AS pool FROM pg_stat_activity
          WHERE starts_with(application_name, 'db-gateway') AND (starts_with(datname, $1) OR datname = $2)`,
        [`${gw.platform}_`, `catalog_${gw.platform}`],
      ),
    ]);
    // After the files are counted, and on a connection of its own that closes: not one of the files counted.
    const metrics = await metricsOnce();
    // The network namespace's TCP sockets (rem_address "HOST:PORT" in hex, then the inode in field 10) that are the process's own.
    const sockets = new Set(files.flatMap((f) => /^socket:\[(\d+)\]$/.exec(f)?.[1] ?? []));
    const pgSockets = tcp
      .flatMap((text) => text.split("\n").slice(1))
      .map((line) => line.trim().split(/\s+/))
      .filter((f) => f.length > 9 && parseInt(f[2]!.split(":")[1]!, 16) === pgPort && sockets.has(f[9]!)).length;
    const sum = (name: string) =>
      metrics
        .split("\n")
        .filter((line) => line.startsWith(`${name}{`))
        .reduce((total, line) => total + Number(line.split(" ").at(-1)), 0);
    return {
      at: Date.now(),
      rss,
      heapUsed: metricSample(metrics, "nodejs_heap_size_used_bytes"),
      handles: sum("nodejs_active_handles"),
      timers: metricSample(metrics, "nodejs_active_resources", { type: "Timeout" }),
      fds: files.length,
      pgSockets,
      backends: activity.rows[0]!.backends,
      poolBackends: activity.rows[0]!.pool,
    };
  }

  /** GET /metrics on a connection of its own, closed after the answer (fetch would keep it open, one more file of the gateway's). */
  function metricsOnce(): Promise<string> {
    return new Promise((resolve, reject) => {
      get({ host: "127.0.0.1", port: gw.metricsPort, path: "/metrics", agent: false }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("end", () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`GET /metrics: ${res.statusCode}`))));
      }).on("error", reject);
    });
  }

  /** What `idle` found still open when it gave up: reported with the other problems. */
  const stillOpen: string[] = [];

  /** Waits until the gateway holds no tenant connection (its pools closed as idle), and samples it then. */
  async function idle(): Promise<Sample> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const s = await sample();
      if (s.poolBackends === 0) return s;
      if (Date.now() >= deadline) {
        // What they are, on both sides: PostgreSQL's sessions, and the gateway's pools.
        const { rows } = await direct.query(
          `SELECT datname, state, wait_event, left(query, 60) AS query, now() - state_change AS since FROM pg_stat_activity
            WHERE application_name = 'db-gateway' AND starts_with(datname, $1)`,
          [`${gw.platform}_`],
        );
        const pools = (await gw.adminClient().admin().getPoolStats(gw.platform)).pools.filter((p) => p.size > 0);
        const describe = (v: unknown) => JSON.stringify(v, (_, x: unknown) => (typeof x === "bigint" ? Number(x) : x));
        stillOpen.push(`${s.poolBackends} tenant connections still open 30 s after the gateway was left idle: ${describe(rows)}; pools ${describe(pools)}`);
        return s;
      }
      await sleep(100);
    }
  }

  it(
    `${SOAK_MS / 1000} s of mixed load: every acknowledged write is there, RSS, handles, files and PostgreSQL connections stay flat, the gateway serves after`,
    { timeout: SOAK_MS + 300_000 },
    async (t) => {
      const platform = gw.platform;
      // Four clients of each kind, as four backend replicas would be: node's HTTP/2 server closes a connection whose
      // client resets streams faster than its rapid-reset limit (README: Deadlines and cancellation), which this load's
      // cancels would pass on one connection.
      const pairs = Array.from({ length: CLIENT_PAIRS }, () => ({ stream: client(), unary: client({ coalesce: false }) }));
      const streamClient = pairs[0]!.stream;
      const tenants: Tenant[] = await mapLimit(
        Array.from({ length: TENANTS }, (_, i) => `s${i}`),
        4,
        async (id) => {
          await admin.createTenant(platform, id);
          const tenant: Tenant = {
            id,
            database: `${platform}_${id}`,
            stream: pairs[Number(id.slice(1)) % CLIENT_PAIRS]!.stream.platform(platform).tenant(id),
            unary: pairs[Number(id.slice(1)) % CLIENT_PAIRS]!.unary.platform(platform).tenant(id),
            committed: new Set(),
            rolledBack: new Set(),
            notified: new Set(),
          };
          await tenant.stream.query("CREATE TABLE items (id int8 PRIMARY KEY, via text NOT NULL)");
          await tenant.stream.query("INSERT INTO items (id, via) VALUES ($1, 'seed')", [SEED]);
          return tenant;
        },
      );
      // Every client connected before the idle sample (the unary ones have made no call yet): their connections are no growth.
      await Promise.all(tenants.slice(0, CLIENT_PAIRS).map((tenant) => tenant.unary.query("SELECT 1")));
      const idleBefore = await idle();

      let nextId = 1;
      const INSERT = "INSERT INTO items (id, via) VALUES ($1, $2)";
      /** The insert of one row as a batch statement. */
      const insert = (id: number, via: string) => ({ sql: INSERT, params: [id, via] });
      const pickTenant = () => tenants[randomInt(TENANTS)]!;
      const eitherWay = (tenant: Tenant) => (randomInt(2) === 0 ? tenant.stream : tenant.unary);

      /** Awaits a call that must fail as `expected` says ("AlreadyExists", or with its reason: "ResourceExhausted POOL_EXHAUSTED"), and returns which; any other outcome is unexpected. */
      async function failsWith(call: Promise<unknown>, ...expected: string[]): Promise<string> {
        try {
          await call;
        } catch (err) {
          const error = GatewayError.from(err);
          const match = expected.find((e) => e === Code[error.code] || e === `${Code[error.code]} ${error.reason}`);
          if (match !== undefined) return match;
          throw error;
        }
        throw new Mismatch(`succeeded, though it must fail (${expected.join(" or ")})`);
      }
      /** Settles with `promise`, or with undefined after `ms`. */
      async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
        const timer = new AbortController();
        try {
          return await Promise.race([promise, sleep(ms, undefined, { signal: timer.signal }).catch(() => undefined)]);
        } finally {
          timer.abort();
        }
      }
      /** Reads a subscription in the background: its notifications' payloads, and how it ended. */
      function collect(subscription: Subscription) {
        const payloads = new Set<string>();
        let missed = 0;
        const ended = (async () => {
          for await (const event of subscription) {
            if (event.type === "notification") payloads.add(event.payload);
            else missed++;
          }
        })().then(
          () => undefined,
          (err: unknown) => GatewayError.from(err),
        );
        return {
          payloads,
          missed: () => missed,
          ended,
          close: () => (subscription.close(), ended),
        };
      }

      /** Each operation: resolves with the name of its expected outcome ("OK" when it says nothing), throws when anything else happened. */
      const operations: Record<Exclude<Kind, "tenant churn">, (tenant: Tenant) => Promise<string | void>> = {
        // Unary Query calls: a write, then reading it back from the right database.
        async query(tenant) {
          const id = nextId++;
          if ((await tenant.unary.query(INSERT, [id, "query"])).rowCount !== 1) throw new Mismatch("an INSERT affected no row");
          tenant.committed.add(id);
          const { rows } = await tenant.unary.query<{ db: string }>("SELECT current_database() AS db FROM items WHERE id = $1", [id]);
          if (rows[0]?.db !== tenant.database) throw new Mismatch("a write read back from the wrong database, or not at all");
        },
        // Eight queries of several tenants in one turn, over the QueryStream: writes, and reads each checked to be its own answer.
        async multiplexed() {
          const outcomes = await Promise.allSettled(
            Array.from({ length: 8 }, async (_, i) => {
              const tenant = pickTenant();
              if (i % 2 === 0) {
                const id = nextId++;
                await tenant.stream.query(INSERT, [id, "multiplexed"]);
                tenant.committed.add(id);
              } else {
                const n = BigInt(randomInt(2 ** 40));
                const { rows } = await tenant.stream.query<{ n: bigint; db: string }>("SELECT $1::int8 AS n, current_database() AS db", [n]);
                if (rows[0]?.n !== n || rows[0]?.db !== tenant.database) throw new Mismatch("a query got another query's answer");
              }
            }),
          );
          const failed = outcomes.find((o) => o.status === "rejected");
          if (failed !== undefined) throw failed.reason;
        },
        // Independent statements: two commit, the third fails on the primary key, alone.
        async batch(tenant) {
          const ids = [nextId++, nextId++];
          const results = await eitherWay(tenant).batch([insert(ids[0]!, "batch"), insert(ids[1]!, "batch"), insert(SEED, "batch")]);
          for (const [i, id] of ids.entries()) {
            const result = results[i];
            if (result instanceof GatewayError) throw result;
            if (result?.rowCount !== 1) throw new Mismatch("a batch's INSERT affected no row");
            tenant.committed.add(id);
          }
          const duplicate = results[2];
          if (!(duplicate instanceof GatewayError)) throw new Mismatch("a batch's duplicate key did not fail");
          if (duplicate.code !== Code.AlreadyExists) throw duplicate;
          return "duplicate AlreadyExists";
        },
        // One transaction: the failing statement takes the other with it.
        async "atomic batch"(tenant) {
          const id = nextId++;
          const outcome = await failsWith(
            eitherWay(tenant).batch([insert(id, "atomic batch"), insert(SEED, "atomic batch")], { atomic: true }),
            "AlreadyExists",
          );
          tenant.rolledBack.add(id);
          return outcome;
        },
        async transaction(tenant) {
          const ids = [nextId++, nextId++];
          await eitherWay(tenant).transaction(async (tx) => {
            await Promise.all(ids.map((id) => tx.query(INSERT, [id, "transaction"])));
            const { rows } = await tx.query<{ n: bigint }>("SELECT count(*) AS n FROM items WHERE id IN ($1, $2)", ids);
            if (rows[0]?.n !== 2n) throw new Mismatch("a transaction did not see its own writes");
          });
          ids.forEach((id) => tenant.committed.add(id));
        },
        async "rolled back"(tenant) {
          const id = nextId++;
          const rollBack = new Error("roll back");
          const outcome = await eitherWay(tenant)
            .transaction(async (tx) => {
              await tx.query(INSERT, [id, "rolled back"]);
              throw rollBack;
            })
            .catch((err: unknown) => err);
          // The SDK throws the callback's error as a GatewayError whose cause it is.
          if (!(outcome instanceof Error)) throw new Mismatch("a transaction whose callback threw was committed");
          if (outcome.cause !== rollBack) throw outcome;
          tenant.rolledBack.add(id);
        },
        async constraint(tenant) {
          const id = nextId++;
          const outcome = await failsWith(
            eitherWay(tenant).transaction(async (tx) => {
              await tx.query(INSERT, [id, "constraint"]);
              await tx.query(INSERT, [SEED, "constraint"]);
            }),
            "AlreadyExists",
          );
          tenant.rolledBack.add(id);
          return outcome;
        },
        async stream(tenant) {
          const rows = tenant.stream.stream<{ g: number; h: string }>("SELECT g, md5(g::text) AS h FROM generate_series(1, $1::int) g", [STREAM_ROWS]);
          let n = 0;
          for await (const row of rows) if (row.g !== ++n) throw new Mismatch("a stream's rows out of order");
          if (n !== STREAM_ROWS || rows.summary?.rowCount !== STREAM_ROWS) throw new Mismatch(`a stream of ${STREAM_ROWS} rows ended after ${n}`);
        },
        // Leaving the loop early ends the call, and the gateway cancels the statement.
        async "stream left"(tenant) {
          let n = 0;
          for await (const row of tenant.stream.stream(ENDLESS)) {
            void row;
            if (++n === 500) break;
          }
          if (n !== 500) throw new Mismatch("a stream ended early");
        },
        // Aborted mid-flight: a sleeping query, a transaction inside its sleeping statement (its write rolled back), a stream being read.
        async cancelled(tenant) {
          const abort = new AbortController();
          const timer = setTimeout(() => abort.abort(), randomInt(20, 200));
          const { signal } = abort;
          try {
            switch (randomInt(3)) {
              case 0:
                return `query ${await failsWith(eitherWay(tenant).query("SELECT pg_sleep(5)", [], { signal }), "Canceled")}`;
              case 1: {
                const id = nextId++;
                const outcome = await failsWith(
                  eitherWay(tenant).transaction(
                    async (tx) => {
                      await tx.query(INSERT, [id, "cancelled"]);
                      await tx.query("SELECT pg_sleep(5)");
                    },
                    { signal },
                  ),
                  "Canceled",
                );
                tenant.rolledBack.add(id);
                return `transaction ${outcome}`;
              }
              default: {
                const read = (async () => {
                  for await (const row of tenant.stream.stream(ENDLESS, [], { signal })) void row;
                })();
                return `stream ${await failsWith(read, "Canceled")}`;
              }
            }
          } finally {
            clearTimeout(timer);
          }
        },
        // Deadlines that pass mid-statement: a query, a transaction (its write rolled back), a stream.
        async deadline(tenant) {
          const timeoutMs = randomInt(50, 300);
          switch (randomInt(3)) {
            case 0:
              return `query ${await failsWith(eitherWay(tenant).query("SELECT pg_sleep(5)", [], { timeoutMs }), ...DEADLINE)}`;
            case 1: {
              const id = nextId++;
              const outcome = await failsWith(
                eitherWay(tenant).transaction(
                  async (tx) => {
                    await tx.query(INSERT, [id, "deadline"]);
                    await tx.query("SELECT pg_sleep(5)");
                  },
                  { timeoutMs },
                ),
                ...DEADLINE,
              );
              tenant.rolledBack.add(id);
              return `transaction ${outcome}`;
            }
            default: {
              const read = (async () => {
                for await (const row of tenant.stream.stream("SELECT pg_sleep(5)", [], { timeoutMs })) void row;
              })();
              return `stream ${await failsWith(read, ...DEADLINE)}`;
            }
          }
        },
        // A NOTIFY to a listened tenant: its subscription must receive it.
        async notify() {
          const tenant = tenants[randomInt(LISTENED)]!;
          const payload = String(nextId++);
          await tenant.stream.query("SELECT pg_notify('soak', $1)", [payload]);
          tenant.notified.add(payload);
        },
        // A subscription of its own: LISTEN, a NOTIFY received, UNLISTEN.
        async listen(tenant) {
          const channel = `ch${nextId++}`;
          const subscription = await tenant.stream.listen(channel);
          try {
            const events = subscription[Symbol.asyncIterator]();
            await tenant.stream.query("SELECT pg_notify($1, 'ping')", [channel]);
            const event = await within(events.next(), 10_000);
            if (event?.done !== false || event.value.type !== "notification" || event.value.payload !== "ping")
              throw new Mismatch(`a NOTIFY did not reach its new subscriber within 10 s (${event?.done === false ? event.value.type : "nothing"})`);
          } finally {
            subscription.close();
          }
        },
      };

      // A tenant created, used (a table, writes, a subscription) and dropped: its subscription and calls end with NOT_FOUND.
      let churned = 0;
      async function churnTenant(): Promise<string> {
        const id = `churn_${churned++}`;
        let step = "CreateTenant";
        let subscription: ReturnType<typeof collect> | undefined;
        try {
          await admin.createTenant(platform, id);
          const db = streamClient.platform(platform).tenant(id);
          step = "CREATE TABLE";
          await db.query("CREATE TABLE items (id int8 PRIMARY KEY, via text NOT NULL)");
          step = "Listen";
          const listening = collect(await db.listen("churn"));
          subscription = listening;
          step = "writes";
          const results = await db.batch(Array.from({ length: 10 }, (_, i) => insert(i + 1, "churn")));
          const failed = results.find((r) => r instanceof GatewayError);
          if (failed !== undefined) throw failed;
          const { rows } = await db.query<{ n: bigint }>("SELECT count(*) AS n FROM items");
          if (rows[0]?.n !== 10n) throw new Mismatch(`a new tenant holds ${rows[0]?.n} of its 10 rows`);
          step = "NOTIFY";
          await db.query("SELECT pg_notify('churn', 'x')");
          await waitFor(() => listening.payloads.has("x"), 10_000, "a new tenant's NOTIFY");
          step = "DropTenant";
          await admin.dropTenant(platform, id);
          step = "its subscription after DropTenant";
          const ended = await within(listening.ended, 10_000);
          if (ended?.code !== Code.NotFound) throw ended ?? new Mismatch("a dropped tenant's subscription did not end within 10 s");
          step = "a query after DropTenant";
          return `NotFound, then ${await failsWith(db.query("SELECT 1"), "NotFound DATABASE_NOT_FOUND")}`;
        } catch (err) {
          // Its subscription and database go all the same: a failed step leaves nothing for the idle checks to find.
          await subscription?.close();
          if (step !== "CreateTenant" && step !== "a query after DropTenant") await admin.dropTenant(platform, id).catch(() => undefined);
          // Which step failed, in the report.
          if (err instanceof Mismatch) throw new Mismatch(`${step}: ${err.message}`);
          const error = GatewayError.from(err);
          throw new GatewayError(`${step}: ${error.message}`, error.code, error.reason, error.metadata, error.postgres);
        }
      }

      const operationsByKind = new Map<Kind, number>();
      /** Outcomes the load expects ("constraint: AlreadyExists" …), and those it does not, each with its first message. */
      const outcomes = new Map<string, number>();
      const unexpected = new Map<string, { count: number; example: string }>();
      const inFlight = new Map<symbol, Kind>();
      async function run(kind: Kind, operation: () => Promise<string | void>): Promise<void> {
        operationsByKind.set(kind, (operationsByKind.get(kind) ?? 0) + 1);
        const token = Symbol(kind);
        inFlight.set(token, kind);
        try {
          const outcome = `${kind}: ${(await operation()) ?? "OK"}`;
          outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        } catch (err) {
          const error = err instanceof Mismatch ? err : GatewayError.from(err);
          const key = error instanceof GatewayError ? `${kind}: ${Code[error.code]} ${error.reason}` : `${kind}: ${error.message}`;
          const seen = unexpected.get(key) ?? { count: 0, example: error.message };
          seen.count++;
          unexpected.set(key, seen);
        } finally {
          inFlight.delete(token);
        }
      }

      // The listened tenants' subscriptions, for the whole run.
      const listeners = await Promise.all(tenants.slice(0, LISTENED).map(async (tenant) => ({ tenant, ...collect(await tenant.stream.listen("soak")) })));
      const started = Date.now();
      const cpuBefore = await gw.cpuMicros();
      const endAt = started + SOAK_MS;
      // Until the end of the run, or of the test if it fails first (then the gateway and its clients are closed under the workers).
      let stopped = false;
      t.after(() => void (stopped = true));
      const running = () => !stopped && Date.now() < endAt;
      const samples: Sample[] = [await sample()];
      const sampling = (async () => {
        while (running()) {
          await sleep(Math.min(SAMPLE_MS, Math.max(0, endAt - Date.now())));
          samples.push(await sample());
        }
      })();
      const total = WEIGHTS.reduce((sum, [, w]) => sum + w, 0);
      const pick = (): Exclude<Kind, "tenant churn"> => {
        let r = randomInt(total);
        for (const [kind, weight] of WEIGHTS) if ((r -= weight) < 0) return kind as Exclude<Kind, "tenant churn">;
        throw new Error("unreachable");
      };
      const workers = Array.from({ length: WORKERS }, async () => {
        while (running()) {
          const kind = pick();
          const tenant = pickTenant();
          await run(kind, () => operations[kind](tenant));
        }
      });
      const churn = (async () => {
        while (running()) {
          await run("tenant churn", churnTenant);
          await sleep(500);
        }
      })();
      // Every operation has a deadline of CALL_DEADLINE_MS at most per call: one still running well after the end hung.
      const finished = await within(
        Promise.all([...workers, churn, sampling]).then(() => true),
        SOAK_MS + 2 * CALL_DEADLINE_MS + 30_000,
      );
      const loadMs = Date.now() - started;
      const cpu = (await gw.cpuMicros()) - cpuBefore;
      assert.ok(finished, `operations still running ${loadMs - SOAK_MS} ms after the end: ${[...inFlight.values()].join(", ")}`);
      /** What does not hold, all of it reported at the end, after the summary. */
      const problems: string[] = [];

      // Only the outcomes each kind expects: anything else, by count, with its first message.
      for (const [key, { count, example }] of unexpected) problems.push(`unexpected: ${key} ${count}× (first: ${example})`);
      for (const kind of [...WEIGHTS.map(([k]) => k), "tenant churn" as const]) if (!operationsByKind.has(kind)) problems.push(`no ${kind} ran`);

      // Nothing lost: every acknowledged NOTIFY reached the listened tenant's subscription...
      await waitFor(() => listeners.every((l) => [...l.tenant.notified].every((p) => l.payloads.has(p))), 10_000, "every NOTIFY delivered").catch(
        () => undefined,
      );
      for (const l of listeners) {
        const lost = [...l.tenant.notified].filter((p) => !l.payloads.has(p)).length;
        if (l.missed() > 0) problems.push(`${l.tenant.database}: its subscription was told ${l.missed()} times that it missed notifications`);
        if (lost > 0) problems.push(`${l.tenant.database}: ${lost} of ${l.tenant.notified.size} acknowledged NOTIFYs never arrived`);
      }
      await Promise.all(listeners.map((l) => l.close()));
      // ... and every acknowledged write is in its table, none rolled back is, nothing else is.
      for (const tenant of tenants) {
        // Each row with the kind of operation that wrote it, to say which wrote a row it was not told of.
        const ids = await asSuperuser(
          tenant.database,
          async (c) => new Map((await c.query<{ id: string; via: string }>("SELECT id, via FROM items")).rows.map((r) => [Number(r.id), r.via])),
        );
        const lost = [...tenant.committed].filter((id) => !ids.has(id));
        const undone = [...tenant.rolledBack].filter((id) => ids.has(id)).map((id) => `${id} (${ids.get(id)})`);
        const unknown = [...ids.keys()].filter((id) => id !== SEED && !tenant.committed.has(id)).map((id) => `${id} (${ids.get(id)})`);
        if (lost.length + undone.length + unknown.length > 0)
          problems.push(
            `${tenant.database} (${tenant.committed.size} writes acknowledged, ${tenant.rolledBack.size} rolled back): ` +
              `acknowledged but absent ${lost.slice(0, 10).join(" ")}; rolled back but present ${undone.slice(0, 10).join(" ")}; never acknowledged ${unknown.slice(0, 10).join(" ")}`,
          );
      }

      // The dropped tenants' pools went with them.
      for (const pool of (await admin.getPoolStats(platform)).pools.filter((p) => p.database.includes("_churn_")))
        problems.push(`a pool of a dropped tenant: ${JSON.stringify(pool, (_, v) => (typeof v === "bigint" ? Number(v) : v))}`);

      // Back to idle: its pools closed, the gateway holds what it held before the load.
      const idleAfter = await idle();

      // Serving afterwards: a new client's calls succeed, and see each tenant's rows.
      const fresh = client();
      for (const tenant of tenants.slice(0, 3)) {
        const { rows } = await fresh.platform(platform).tenant(tenant.id).query<{ n: bigint }>("SELECT count(*) AS n FROM items");
        // A difference is explained above, row by row: reported with the rest.
        if (rows[0]?.n !== BigInt(tenant.committed.size + 1))
          problems.push(`${tenant.database} after the load: ${rows[0]?.n} rows, ${tenant.committed.size} writes acknowledged`);
      }

      const steady = samples.filter((s) => s.at >= started + WARM_UP * SOAK_MS);
      const third = Math.max(1, Math.floor(steady.length / 3));
      const [first, last] = [steady.slice(0, third), steady.slice(-third)];
      // Files and handles other than the connections to PostgreSQL (which come and go with the load, under the cap): servers, clients' connections, pipes.
      // Timers likewise: pg-pool arms one for each idle connection of the administrative and audit pools, the only ones left when idle.
      const withOthers = (s: Sample) => ({ ...s, otherFds: s.fds - s.pgSockets, otherHandles: s.handles - s.pgSockets, otherTimers: s.timers - s.pgSockets });
      type Measure = keyof ReturnType<typeof withOthers>;
      const median = (of: Sample[], key: Measure) => of.map((s) => withOthers(s)[key]).sort((a, b) => a - b)[Math.floor(of.length / 2)]!;
      const max = (of: Sample[], key: Measure) => Math.max(...of.map((s) => withOthers(s)[key]));
      const mib = (n: number) => (n / MIB).toFixed(0);
      const firstLast = (key: Measure, f: (n: number) => string = String) => `${f(median(first, key))}/${f(median(last, key))}`;
      const before = withOthers(idleBefore);
      const after = withOthers(idleAfter);
      const idleBoth = (key: Measure, f: (n: number) => string = String) => `${f(before[key])}/${f(after[key])}`;
      t.diagnostic(
        `${(loadMs / 1000).toFixed(0)} s, ${TENANTS} tenants and ${churned} created and dropped, ${WORKERS} operations in flight, ` +
          `${[...operationsByKind.values()].reduce((a, b) => a + b, 0)} operations, ${samples.length} samples every ${SAMPLE_MS / 1000} s, ` +
          `gateway CPU ${((100 * cpu) / 1000 / loadMs).toFixed(0)}% of a core. ` +
          `First/last third after warm-up (medians): RSS ${firstLast("rss", mib)} MiB, heap ${firstLast("heapUsed", mib)} MiB, handles ${firstLast("handles")}, ` +
          `timers ${firstLast("timers")}, fds ${firstLast("fds")} (to PostgreSQL ${firstLast("pgSockets")}), ` +
          `PostgreSQL backends ${firstLast("backends")} (pools' peak ${max(samples, "poolBackends")}, cap ${MAX_TOTAL_CONNECTIONS}). ` +
          `Idle before/after: RSS ${idleBoth("rss", mib)} MiB, heap ${idleBoth("heapUsed", mib)} MiB, handles ${idleBoth("handles")}, timers ${idleBoth("timers")}, ` +
          `fds ${idleBoth("fds")} (to PostgreSQL ${idleBoth("pgSockets")}), PostgreSQL backends ${idleBoth("backends")}`,
      );
      t.diagnostic(`operations: ${[...operationsByKind].map(([kind, n]) => `${kind} ${n}`).join(", ")}`);
      t.diagnostic(`outcomes: ${[...outcomes].map(([o, n]) => `${o} ${n}`).join(", ")}`);

      // PostgreSQL connections: never over the cap (nor, waited for above, any tenant connection left once idle).
      const peak = max(samples, "poolBackends");
      if (peak > MAX_TOTAL_CONNECTIONS) problems.push(`${peak} tenant connections at once, over the cap of ${MAX_TOTAL_CONNECTIONS}`);
      // RSS: the last third's median under 130% of the first's: above GC's swings, below 2 kB leaked per operation (BENCHMARKS.md, "Soak").
      // Only in a long run: in 20 s, V8 is still sizing its heap, and RSS rose 30% on a loaded CI machine with nothing leaked.
      if (MEMORY_CHECKED && median(last, "rss") > 1.3 * median(first, "rss"))
        problems.push(`RSS grew from ${mib(median(first, "rss"))} to ${mib(median(last, "rss"))} MiB`);
      // Files and handles besides PostgreSQL's: a fixed set, whatever the load; one left per call, subscription or tenant would pass the slack in seconds.
      for (const [key, slack] of [
        ["otherFds", 4],
        ["otherHandles", HANDLE_SLACK],
      ] as const) {
        if (max(last, key) > max(first, key) + slack) problems.push(`${key} grew from at most ${max(first, key)} to ${max(last, key)}`);
        if (after[key] > before[key] + 2) problems.push(`idle ${key}: ${before[key]} before the load, ${after[key]} after`);
      }
      // Idle, no call's timers left (its deadline, its lease, a QueryStream's idle timer …).
      if (after.otherTimers > before.otherTimers + 2) problems.push(`idle timers: ${before.timers} before the load, ${after.timers} after`);
      // Idle, the gateway's own PostgreSQL connections only: its administrative pool (4 at most) and the audit trail's (2).
      if (after.pgSockets > Math.max(before.pgSockets, 6))
        problems.push(`idle connections to PostgreSQL: ${before.pgSockets} before the load, ${after.pgSockets} after`);
      problems.push(...stillOpen);
      // What the gateway itself warned of, to explain the rest.
      if (problems.length > 0) {
        const warnings = gw
          .output()
          .split("\n")
          .filter((line) => /"level":(40|50|60)/.test(line));
        problems.push(`the gateway's warnings and errors (${warnings.length}, the first 20): ${warnings.slice(0, 20).join("\n")}`);
      }
      assert.deepEqual(problems, []);
    },
  );
});
