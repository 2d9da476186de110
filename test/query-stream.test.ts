// QueryStream on the wire: queries over one stream, each answered when done, with rate limits, a client that does not read, and shutdown.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { Code, createClient, GatewayError } from "../client-sdk/src/index.js";
import type { QueryAnswer, QueryStreamRequestSchema, QueryStreamResponse } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { callsOf, metricValue, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { startFaultProxy } from "./helpers/fault-proxy.js";
import { assertNoLeftovers } from "./helpers/leftovers.js";
import { waitFor } from "./helpers/wait.js";

type Request = MessageInitShape<typeof QueryStreamRequestSchema>;

const statements = (t: TestGateway, platform: string, method: string) => callsOf(t, platform, method, "db_gateway_statements_total");

/**
 * A QueryStream over the raw client: `send` writes a message, `answers(n)`
 * reads until n answers have come (by query number), `end()` half-closes and
 * reads to the end, returning the answers that came meanwhile.
 */
function openStream(t: TestGateway, platform: string, key = t.keys[platform]!, url = t.url, maxReceiveMessageBytes?: number) {
  const client = createClient({ ...t.clientOptions(key), url, ...(maxReceiveMessageBytes === undefined ? {} : { maxReceiveMessageBytes }) });
  const requests = createWritableIterable<Request>();
  const responses = client.raw.query.queryStream(requests)[Symbol.asyncIterator]();
  const answers = new Map<number, QueryAnswer>();
  const read = async (): Promise<boolean> => {
    const next = await responses.next();
    if (next.done) return false;
    for (const answer of (next.value as QueryStreamResponse).answers) {
      assert.ok(!answers.has(Number(answer.query)), `query ${answer.query} answered once`);
      answers.set(Number(answer.query), answer);
    }
    return true;
  };
  return {
    answers,
    send: (request: Request) => void requests.write(request).catch(() => undefined),
    async until(count: number) {
      while (answers.size < count) if (!(await read())) assert.fail(`the stream ended after ${answers.size} answers`);
      return answers;
    },
    async end() {
      requests.close();
      while (await read());
      return answers;
    },
    close: () => client.close(),
  };
}

/** The first column of an answer's first row, or its error. */
function cell(answer: QueryAnswer | undefined): unknown {
  assert.ok(answer !== undefined, "answered");
  if (answer.outcome.case === "error") return GatewayError.fromStatus(answer.outcome.value);
  assert.equal(answer.outcome.case, "result");
  return answer.outcome.value.rows[0]?.values[0]?.kind.value;
}

describe("QueryStream: independent queries over one stream, each answered when done", () => {
  let t: TestGateway;
  let platform: string;
  let other: string;
  before(async () => {
    // One connection: every statement runs on the same backend, so session state would show.
    t = await startTestGateway({ platforms: 2, pool: { maxConnectionsPerPool: 1 } });
    [platform, other] = t.platforms as [string, string];
    await t.adminClient().admin().createTenant(platform, "clinic_001");
  });
  after(() => t.close());

  it("numbers queries over the whole stream, answers each in its own database, and ends OK after the client half-closes", async () => {
    const stream = openStream(t, platform);
    try {
      const before = await statements(t, platform, "QueryStream");
      stream.send({
        platform,
        queries: [
          { sql: "SELECT current_database()" },
          { tenantId: "clinic_001", sql: "SELECT current_database()" },
          { sql: "SELECT $1::int * 2", params: [{ kind: { case: "textValue", value: "21" } }] },
        ],
      });
      await stream.until(3);
      stream.send({
        platform,
        queries: [{ tenantId: "clinic_001", sql: "SELECT 'fourth'" }, { tenantId: "nobody", sql: "SELECT 1" }, { sql: "SELECT 1 / 0" }],
      });
      const answers = await stream.end();
      assert.deepEqual([...answers.keys()].sort(), [0, 1, 2, 3, 4, 5]);
      assert.equal(cell(answers.get(0)), `${platform}_main`);
      assert.equal(cell(answers.get(1)), `${platform}_clinic_001`);
      assert.equal(String(cell(answers.get(2))), "42");
      assert.equal(cell(answers.get(3)), "fourth");
      assert.equal((cell(answers.get(4)) as GatewayError).reason, "DATABASE_NOT_FOUND");
      assert.equal((cell(answers.get(5)) as GatewayError).metadata.sqlstate, "22012");
      assert.equal((await statements(t, platform, "QueryStream")) - before, 6, "every query counted as a statement");
    } finally {
      stream.close();
    }
  });

  it("shares no session state between queries, in one message or the next", async () => {
    const stream = openStream(t, platform);
    try {
      stream.send({
        platform,
        queries: [{ sql: "SET work_mem = '7MB'" }, { sql: "CREATE TEMP TABLE leaked (v int)" }, { sql: "SELECT current_setting('work_mem')" }],
      });
      await stream.until(3);
      stream.send({ platform, queries: [{ sql: "SELECT current_setting('work_mem') || ' ' || (to_regclass('pg_temp.leaked') IS NULL)" }] });
      const answers = await stream.end();
      assert.equal(cell(answers.get(2)), "4MB");
      assert.equal(cell(answers.get(3)), "4MB true");
    } finally {
      stream.close();
    }
  });

  it("answers every query of a message for another platform, or of too many queries, with the error, and goes on", async () => {
    const stream = openStream(t, platform);
    try {
      stream.send({ platform: other, queries: [{ sql: "SELECT 1" }, { sql: "SELECT 2" }] });
      stream.send({ platform, queries: Array.from({ length: 1001 }, () => ({ sql: "SELECT 1" })) });
      stream.send({ platform, queries: [{ sql: "SELECT 'after'" }] });
      const answers = await stream.end();
      assert.equal(answers.size, 1004);
      for (const n of [0, 1]) assert.equal((cell(answers.get(n)) as GatewayError).code, Code.PermissionDenied);
      assert.equal((cell(answers.get(2)) as GatewayError).reason, "INVALID_REQUEST");
      assert.equal((cell(answers.get(1002)) as GatewayError).reason, "INVALID_REQUEST");
      assert.equal(cell(answers.get(1003)), "after");
    } finally {
      stream.close();
    }
  });

  it("splits answers that are ready together into responses of about 1 MiB, for clients with a low receive limit", async () => {
    // One connection: the message's 12 results of 200 kB come in pipelines of several (6 here), together.
    const stream = openStream(t, platform, t.keys[platform], t.url, 1_100_000);
    try {
      stream.send({ platform, queries: Array.from({ length: 12 }, (_, i) => ({ sql: `SELECT repeat('x', 200000) || ${i}` })) });
      const answers = await stream.end();
      assert.equal(answers.size, 12);
      for (let i = 0; i < 12; i++) assert.equal(cell(answers.get(i)), `${"x".repeat(200000)}${i}`);
    } finally {
      stream.close();
    }
  });

  it("answers a query past its message's timeout with DEADLINE_EXCEEDED, cancels it, and the connection serves the next message", async () => {
    const stream = openStream(t, platform);
    try {
      const started = Date.now();
      stream.send({ platform, queries: [{ sql: "SELECT pg_sleep(5)" }], timeoutMs: 300 });
      await stream.until(1);
      assert.ok(Date.now() - started < 3_000, "not left to run for its 5 s");
      assert.equal((cell(stream.answers.get(0)) as GatewayError).code, Code.DeadlineExceeded);
      stream.send({ platform, queries: [{ sql: "SELECT 'next'" }] });
      await stream.end();
      assert.equal(cell(stream.answers.get(1)), "next");
    } finally {
      stream.close();
    }
  });

  it("holds nothing of the messages it has answered, however long the stream lives", async () => {
    // In-process gateway: its heap is this process's, measured after full collections.
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const heapAfterGc = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    const stream = openStream(t, platform);
    try {
      // Messages of four queries, each with SQL of its own of about 2 KB: 20 MB if the gateway kept them.
      const padding = "x".repeat(2_000);
      let n = 0;
      const window = async () => {
        for (let m = 0; m < 50; m++) stream.send({ platform, queries: Array.from({ length: 4 }, () => ({ sql: `SELECT ${n++} /* ${padding} */` })) });
        await stream.until(200);
        stream.answers.clear();
      };
      for (let i = 0; i < 10; i++) await window();
      const before = heapAfterGc();
      for (let i = 0; i < 50; i++) await window();
      const grown = heapAfterGc() - before;
      assert.ok(grown < 5 * 2 ** 20, `the heap grew by ${(grown / 2 ** 20).toFixed(1)} MB over 2,500 messages`);
      await stream.end();
    } finally {
      stream.close();
    }
  });

  it("refuses a stream without a valid key", async () => {
    const stream = openStream(t, platform, "not-a-key");
    try {
      stream.send({ platform, queries: [{ sql: "SELECT 1" }] });
      await assert.rejects(stream.end(), (err: unknown) => ConnectError.from(err).code === Code.Unauthenticated);
    } finally {
      stream.close();
    }
  });
});

describe("QueryStream: a platform's rate limit", () => {
  it("takes a token per message: a message over the limit gets RATE_LIMITED as each query's answer, and the stream goes on", async () => {
    const t = await startTestGateway({ platforms: 1, overrides: { rateLimit: { perSecond: 1, burst: 3 } } });
    const platform = t.platforms[0]!;
    const stream = openStream(t, platform);
    try {
      // The call takes a token, which its first message uses, so of four messages at once three pass and one is refused.
      for (let m = 0; m < 4; m++) stream.send({ platform, queries: [{ sql: `SELECT ${m}` }, { sql: `SELECT ${m} + 10` }] });
      await stream.until(8);
      assert.deepEqual(
        [0, 1, 2, 3, 4, 5].map((n) => String(cell(stream.answers.get(n)))),
        ["0", "10", "1", "11", "2", "12"],
      );
      for (const n of [6, 7]) {
        const error = cell(stream.answers.get(n)) as GatewayError;
        assert.equal(error.code, Code.ResourceExhausted);
        assert.equal(error.reason, "RATE_LIMITED");
      }
      // A token later, the same stream runs queries again.
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      stream.send({ platform, queries: [{ sql: "SELECT 'again'" }] });
      const answers = await stream.end();
      assert.equal(cell(answers.get(8)), "again");
      assert.equal(await metricValue(t, `db_gateway_rate_limited_total{platform="${platform}"}`), 1);
      assert.equal(await statements(t, platform, "QueryStream"), 7, "refused queries are not counted as statements");
    } finally {
      stream.close();
      await t.close();
    }
  });
});

describe("QueryStream: a client that does not read its answers", () => {
  it("is not read further while maxStreamQueries of its answers wait for the transport, and gets every answer once it reads", async () => {
    // Below the default (4,096), so that the queries fit in the client's HTTP/2 window: with the gateway's bytes
    // held back, the client gets no WINDOW_UPDATE either, and can send only 64 KiB.
    const limit = 256;
    const t = await startTestGateway({ platforms: 1, overrides: { maxStreamQueries: limit } });
    const platform = t.platforms[0]!;
    // A proxy that stops passing the gateway's bytes on: HTTP/2 flow control then stops the gateway's writes.
    const proxy = await startFaultProxy({ host: "127.0.0.1", port: t.port });
    const stream = openStream(t, platform, t.keys[platform], `https://localhost:${proxy.port}`);
    try {
      stream.send({ platform, queries: [{ sql: "SELECT 'open'" }] });
      await stream.until(1);
      proxy.hold(true);
      const sent = 40 * 16;
      for (let m = 0; m < sent / 16; m++)
        stream.send({ platform, queries: Array.from({ length: 16 }, (_, i) => ({ sql: `SELECT repeat('x', 100000) || ${1 + m * 16 + i}` })) });
      // The queries run level off below what was sent.
      let ran = -1;
      await waitFor(
        async () => {
          await new Promise((resolve) => setTimeout(resolve, 500));
          const now = (await statements(t, platform, "QueryStream")) - 1;
          const steady = now === ran;
          ran = now;
          return steady && now > 0;
        },
        30_000,
        "the gateway stops reading",
      );
      // At most a message beyond the limit (answers of 100 kB: HTTP/2's window, 64 KiB, takes none whole).
      assert.ok(ran >= limit && ran <= limit + 2 * 16, `${ran} of ${sent} queries ran while the client's transport took no answer`);
      proxy.hold(false);
      const answers = await stream.end();
      assert.equal(answers.size, 1 + sent);
      for (const n of [1, limit, sent]) assert.equal(cell(answers.get(n)), `${"x".repeat(100000)}${n}`);
      await assertNoLeftovers(t, t.databaseUrl, `${platform}_main`);
      assert.deepEqual((await t.client().platform(platform).query("SELECT 1 AS one")).rows, [{ one: 1 }]);
    } finally {
      stream.close();
      await proxy.close();
      await t.close();
    }
  });
});

describe("QueryStream: when the gateway shuts down", () => {
  it("answers every query it has read, then ends with SHUTTING_DOWN, statement_sent false", async () => {
    const t = await startTestGateway({ platforms: 1 });
    const platform = t.platforms[0]!;
    const stream = openStream(t, platform);
    let closing: Promise<void> | undefined;
    try {
      stream.send({ platform, queries: [{ sql: "SELECT 'quick'" }] });
      await stream.until(1);
      stream.send({ platform, queries: [{ sql: "SELECT pg_sleep(0.5)::text || 'slept'" }] });
      // The slow query is read (it shows in pg_stat_activity) before the gateway begins to close.
      const check = await t.pg();
      try {
        await waitFor(
          async () => (await check.query("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(0.5)%'")).rowCount === 1,
          5_000,
          "the slow query runs",
        );
      } finally {
        await check.end();
      }
      closing = t.close(); // the gateway, then its databases
      let error: GatewayError | undefined;
      try {
        while (stream.answers.size < 2 || error === undefined) await stream.until(stream.answers.size + 1);
      } catch (err) {
        error = GatewayError.from(err);
      }
      await closing;
      assert.equal(cell(stream.answers.get(1)), "slept", "the query read before the shutdown was answered");
      assert.ok(error !== undefined);
      assert.equal(error.code, Code.Unavailable);
      assert.equal(error.reason, "SHUTTING_DOWN");
      assert.equal(error.metadata.statement_sent, "false");
      assert.ok(error.retryable, "the SDK may send unanswered queries again");
    } finally {
      stream.close();
      await (closing ?? t.close());
    }
  });
});
