// StreamQuery: rows in bounded messages, columns first and summary last, errors part-way, deadlines, flat memory under a slow consumer.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import pg from "pg";
import { StreamQueryResponseSchema } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { Code, type Database, type GatewayError } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { pgUrl, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { gatewayProcessForSuite } from "./helpers/gateway-process.js";
import { assertNoLeftovers } from "./helpers/leftovers.js";
import { waitFor } from "./helpers/wait.js";

describe("StreamQuery", () => {
  let t: TestGateway;
  let db: Database;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1 } });
    db = t.client().platform(t.platforms[0]!);
  });
  after(() => t.close());

  it("sends the columns first, the rows in bounded messages, and the summary last", async () => {
    const messages = [];
    for await (const m of t.client().raw.query.streamQuery({
      platform: t.platforms[0]!,
      sql: "SELECT g AS n, repeat('x', 100) AS pad FROM generate_series(1, $1::int) g",
      params: [{ kind: { case: "int64Value", value: 2_500n } }],
      maxRowsPerMessage: 1_000,
      maxBytesPerMessage: 50_000,
    })) {
      messages.push(m);
    }
    assert.deepEqual(
      messages[0]!.columns.map((c) => [c.name, c.typeOid]),
      [
        ["n", 23],
        ["pad", 25],
      ],
    );
    for (const m of messages.slice(1)) assert.equal(m.columns.length, 0);
    for (const m of messages) {
      assert.ok(m.rows.length <= 1_000);
      const bytes = m.rows.reduce((sum, r) => sum + r.values.reduce((s, v) => s + String(v.kind.value).length, 0), 0);
      assert.ok(bytes <= 50_000, `a message carried ${bytes} bytes of values`);
    }
    assert.ok(messages.length >= 6, `${messages.length} messages`);
    for (const m of messages.slice(0, -1)) assert.equal(m.summary, undefined);
    const summary = messages.at(-1)!.summary!;
    assert.equal(summary.command, "SELECT");
    assert.equal(summary.rowsAffected, 2_500n);
    const numbers = messages.flatMap((m) => m.rows.map((r) => Number(r.values[0]!.kind.value)));
    assert.deepEqual(
      numbers,
      Array.from({ length: 2_500 }, (_, i) => i + 1),
    );
  });

  it("bounds messages by their encoded bytes, multi-byte characters included", async () => {
    const messages = [];
    for await (const m of t.client().raw.query.streamQuery({
      platform: t.platforms[0]!,
      sql: "SELECT repeat('€', 1000) AS euros FROM generate_series(1, 5000)",
      maxRowsPerMessage: 100_000,
      maxBytesPerMessage: 1_000_000,
    })) {
      messages.push(m);
    }
    assert.equal(
      messages.reduce((n, m) => n + m.rows.length, 0),
      5000,
    );
    for (const m of messages) {
      const rowBytes = toBinary(StreamQueryResponseSchema, create(StreamQueryResponseSchema, { rows: m.rows })).length;
      assert.ok(rowBytes <= 1_000_000, `a message carried ${rowBytes} bytes of rows`);
    }
    assert.ok(messages.length >= 15, `${messages.length} messages for 15 MB of rows`);
  });

  it("decodes rows like query() and reports the summary through the SDK", async () => {
    const stream = db.stream<{ id: number; big: bigint; doc: unknown }>(
      "SELECT g AS id, (g * 10000000000)::int8 AS big, json_build_object('g', g) AS doc FROM generate_series(1, 3) g",
    );
    const rows = [];
    for await (const row of stream) rows.push(row);
    assert.deepEqual(rows, [
      { id: 1, big: 10000000000n, doc: { g: 1 } },
      { id: 2, big: 20000000000n, doc: { g: 2 } },
      { id: 3, big: 30000000000n, doc: { g: 3 } },
    ]);
    assert.deepEqual(
      stream.fields.map((f) => f.name),
      ["id", "big", "doc"],
    );
    assert.equal(stream.summary?.rowCount, 3);
    assert.equal(stream.summary?.command, "SELECT");
  });

  it("batches() hands over the rows in the gateway's messages, and a stream is read only once", async () => {
    const stream = db.stream<{ n: number }>("SELECT g AS n FROM generate_series(1, 2500) g", [], { maxRowsPerMessage: 1_000 });
    const batches = [];
    for await (const rows of stream.batches()) batches.push(rows);
    assert.deepEqual(
      batches.map((rows) => rows.length),
      [64, 1_000, 1_000, 436],
      "the gateway's first read is 64 rows, then up to maxRowsPerMessage",
    );
    assert.deepEqual(
      batches.flat().map((row) => row.n),
      Array.from({ length: 2_500 }, (_, i) => i + 1),
    );
    assert.equal(stream.summary?.rowCount, 2_500);
    await assert.rejects(async () => {
      for await (const row of stream) assert.fail(`read again: ${JSON.stringify(row)}`);
    }, TypeError);
  });

  it("streams an empty result as one message with the columns and the summary", async () => {
    const messages = [];
    for await (const m of t.client().raw.query.streamQuery({ platform: t.platforms[0]!, sql: "SELECT 1 AS one WHERE false" })) messages.push(m);
    assert.equal(messages.length, 1);
    assert.deepEqual(
      messages[0]!.columns.map((c) => c.name),
      ["one"],
    );
    assert.equal(messages[0]!.summary?.rowsAffected, 0n);
  });

  it("streams the rows of a write with RETURNING and reports the rows it affected", async () => {
    await db.query("CREATE TABLE streamed (id int)");
    let n = 0;
    const stream = db.stream("INSERT INTO streamed SELECT generate_series(1, 5000) RETURNING id", [], { maxRowsPerMessage: 100 });
    for await (const row of stream) n += row === undefined ? 0 : 1;
    assert.equal(n, 5000);
    assert.deepEqual(stream.summary && [stream.summary.command, stream.summary.rowCount], ["INSERT", 5000]);
    assert.deepEqual((await db.query("SELECT count(*)::int AS n FROM streamed")).rows, [{ n: 5000 }]);
  });

  it("an error part-way reaches the client as an error after the rows before it, never as a short result", async () => {
    const received: number[] = [];
    const err = await rejectsWith(
      (async () => {
        const stream = db.stream<{ v: number }>(
          "SELECT (CASE WHEN g = $1 THEN 'not a number' ELSE g::text END)::int AS v FROM generate_series(1, 100000) g",
          [60_000],
          {
            maxRowsPerMessage: 500,
          },
        );
        for await (const row of stream) received.push(row.v);
      })(),
      Code.InvalidArgument,
      "QUERY_FAILED",
    );
    assert.equal(err.sqlstate, "22P02");
    assert.ok(received.length > 0 && received.length < 60_000, `${received.length} rows before the error`);
    assert.deepEqual(received.slice(0, 3), [1, 2, 3]);
    // The pool's one connection is usable again.
    assert.deepEqual((await db.query("SELECT 1 AS one")).rows, [{ one: 1 }]);
  });

  it("hands rows over one at a time in order across messages, also to reads made before the last one answered", async () => {
    const stream = db.stream<{ n: number }>("SELECT g AS n FROM generate_series(1, 10) g", [], { maxRowsPerMessage: 3 });
    const iterator = stream[Symbol.asyncIterator]();
    const results = await Promise.all(Array.from({ length: 12 }, () => iterator.next()));
    assert.deepEqual(
      results.map((r) => (r.done ? "done" : r.value.n)),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "done", "done"],
    );
    assert.equal(stream.summary?.rowCount, 10);
  });

  it("leaving the loop early closes the portal and frees the connection", async () => {
    let n = 0;
    for await (const row of db.stream("SELECT g FROM generate_series(1, 1000000) g")) if (row && ++n === 10) break;
    assert.equal(n, 10);
    // A pool of one connection: the next call gets it, outside any transaction.
    await waitFor(async () => (await db.query<{ x: unknown }>("SELECT txid_current_if_assigned() AS x")).rows[0]!.x === null, 5_000, "connection back");
    const direct = await t.pg();
    const { rows } = await direct.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'db-gateway' AND datname = $1 AND state <> 'idle'",
      [`${t.platforms[0]}_main`],
    );
    assert.deepEqual(rows, [{ n: 0 }]);
  });

  it("the call's deadline bounds the whole stream", async () => {
    const started = Date.now();
    // The client's own timer and the gateway's fire together: either may be the one that answers.
    await assert.rejects(
      (async () => {
        for await (const _ of db.stream("SELECT g, pg_sleep(0.01) FROM generate_series(1, 10000) g", [], { timeoutMs: 500 })) void _;
      })(),
      (err: GatewayError) => err.code === Code.DeadlineExceeded,
    );
    assert.ok(Date.now() - started < 3_000);
    assert.deepEqual((await db.query("SELECT 2 AS two")).rows, [{ two: 2 }]);
  });
});

describe("StreamQuery: a million rows through a slow consumer (gateway in its own process)", () => {
  const gatewayProcess = gatewayProcessForSuite();

  it("keeps the gateway's memory flat (RSS grows < 64 MB) and delivers every row", async () => {
    const gateway = gatewayProcess();
    const db = gateway.client().platform(gateway.platform);
    const sql = "SELECT g AS n, repeat(md5(g::text), 3) AS pad FROM generate_series(1, $1::int) g";
    // Warm up: code paths compiled, pools and buffers at their working size.
    for await (const _ of db.stream(sql, [50_000])) void _;
    const baseline = await gateway.rssBytes();
    let peak = baseline;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await gateway.rssBytes());
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    let count = 0;
    let sum = 0;
    let padBytes = 0;
    const stream = db.stream<{ n: number; pad: string }>(sql, [1_000_000]);
    try {
      for await (const row of stream) {
        count++;
        sum += row.n;
        padBytes += row.pad.length;
        // Slower than the gateway can read PostgreSQL: a pause every 20,000 rows.
        if (count % 20_000 === 0) await new Promise((r) => setTimeout(r, 40));
      }
    } finally {
      sampling = false;
      await sampler;
    }
    assert.equal(count, 1_000_000);
    assert.equal(sum, (1_000_000 * 1_000_001) / 2);
    assert.equal(padBytes, 96_000_000);
    assert.equal(stream.summary?.rowCount, 1_000_000);
    const growth = peak - baseline;
    assert.ok(growth < 64 * 1024 * 1024, `gateway RSS grew by ${(growth / 1048576).toFixed(1)} MB (from ${(baseline / 1048576).toFixed(0)} MB)`);
    await assertNoLeftovers(gateway, pgUrl(), `${gateway.platform}_main`);
  });

  it("pauses reading from PostgreSQL while the client does not read", async () => {
    const gateway = gatewayProcess();
    const db = gateway.client().platform(gateway.platform);
    await db.query("CREATE SEQUENCE produced");
    const stream = db.stream<{ n: bigint }>("SELECT nextval('produced') AS n, repeat('y', 200) AS pad FROM generate_series(1, 2000000)");
    const iterator = stream[Symbol.asyncIterator]();
    assert.equal((await iterator.next()).value?.n, 1n);
    // The client stops reading. PostgreSQL computes rows only as the gateway fetches them, so the
    // sequence shows how far ahead everything read: the gateway (two reads and 1 MiB of messages)
    // and the client's own buffers (grpc-js keeps up to 16 messages).
    await new Promise((r) => setTimeout(r, 1_500));
    const url = new URL(pgUrl());
    url.pathname = `/${gateway.platform}_main`;
    const direct = new pg.Client({ connectionString: url.toString() });
    await direct.connect();
    try {
      const { rows } = await direct.query<{ produced: string }>("SELECT last_value::text AS produced FROM produced");
      const produced = Number(rows[0]!.produced);
      assert.ok(produced < 250_000, `PostgreSQL produced ${produced} of 2,000,000 rows while the client read one`);
    } finally {
      await direct.end();
    }
    await iterator.return?.();
    assert.deepEqual((await db.query("SELECT 1 AS one")).rows, [{ one: 1 }]);
    // The abandoned stream's statement stopped, and its connection went back to the pool.
    await assertNoLeftovers(gateway, pgUrl(), `${gateway.platform}_main`);
  });

  it("holds at most about a message's worth for a client that does not read, even with 4 MB messages", async () => {
    const gateway = gatewayProcess();
    const db = gateway.client().platform(gateway.platform);
    const stream = db.stream("SELECT g, repeat('z', 200) AS pad FROM generate_series(1, 2000000) g", [], {
      maxBytesPerMessage: 4_000_000,
      maxRowsPerMessage: 100_000,
    });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    const before = await gateway.rssBytes();
    await new Promise((r) => setTimeout(r, 1_500));
    const during = await gateway.rssBytes();
    await iterator.return?.();
    assert.ok(during - before < 24 * 1024 * 1024, `RSS grew by ${((during - before) / 1048576).toFixed(1)} MB while the client was not reading`);
    await assertNoLeftovers(gateway, pgUrl(), `${gateway.platform}_main`);
    assert.deepEqual((await db.query("SELECT 1 AS one")).rows, [{ one: 1 }]);
  });
});
