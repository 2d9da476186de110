// The SDK's behaviour: options checked up front (one gateway or a list), safe retries, transaction() re-run, one HTTP/2 connection reopened, default deadlines.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code, createClient, GatewayError, type ClientOptions } from "../client-sdk/src/index.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { pgUrl, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { testPki } from "./helpers/pki.js";
import { waitFor } from "./helpers/wait.js";

describe("SDK options are checked up front", () => {
  it("reports every problem at once, precisely", () => {
    const pki = testPki();
    assert.throws(
      () =>
        createClient({
          url: "http://localhost:9000",
          apiKey: " spaced key ",
          tls: { ca: "/nonexistent/ca.pem", cert: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----", key: pki.client.key },
          int8: "number" as "bigint",
          retry: { maxAttempts: 0 },
          timeoutMs: -5,
        }),
      (err: TypeError) => {
        for (const expected of [
          /url must be https:\/\//,
          /apiKey must be printable ASCII/,
          /tls\.ca: cannot read "\/nonexistent\/ca\.pem" \(ENOENT\)/,
          /tls\.cert is not a PEM certificate/,
          /int8 must be "bigint" or "string"/,
          /retry\.maxAttempts must be an integer from 1 to 10/,
          /timeoutMs must be a number of at least 1/,
        ]) {
          assert.match(err.message, expected);
        }
        assert.doesNotMatch(err.message, /tls\.key/);
        return err instanceof TypeError;
      },
    );
    assert.throws(() => createClient({ url: "https://x", apiKey: "", tls: undefined } as unknown as ClientOptions), /apiKey is required[\s\S]*tls is required/);
  });

  it("checks each gateway of a list, naming it by its place", () => {
    const pki = testPki();
    const tls = { ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key };
    assert.throws(() => createClient({ url: [], apiKey: "k", tls }), /url must name at least one gateway/);
    assert.throws(
      () =>
        createClient({ url: ["https://a.internal:9000", "http://b.internal:9000", "https://c.internal:9000/path", 7 as unknown as string], apiKey: "k", tls }),
      (err: TypeError) => {
        assert.match(err.message, /url\[1\] must be https:\/\//);
        assert.match(err.message, /url\[2\] must be the gateway's origin only/);
        assert.match(err.message, /url\[3\] must be a string/);
        assert.doesNotMatch(err.message, /url\[0\]/);
        return true;
      },
    );
  });

  it("with no gateway of a list reachable, a call fails UNAVAILABLE, saying it was not sent", async () => {
    const pki = testPki();
    const ports = await Promise.all([0, 1].map(() => freePort()));
    const client = createClient({
      url: ports.map((p) => `https://127.0.0.1:${p}`),
      apiKey: "k",
      tls: { ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key },
      retry: { maxAttempts: 3, baseDelayMs: 10 },
    });
    try {
      const error = await client
        .platform("nowhere")
        .query("SELECT 1")
        .then(
          () => undefined,
          (err: unknown) => err as GatewayError,
        );
      assert.ok(error instanceof GatewayError);
      assert.equal(error.code, Code.Unavailable, error.message);
      assert.equal(error.notSent, true, error.message);
    } finally {
      client.close();
    }
  });
});

/** A port nothing listens on (taken, then given back). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("SDK connection, retries and limits", () => {
  let t: TestGateway;
  let platform: string;
  let pgProxy: FaultProxy;
  let direct: pg.Client;
  before(async () => {
    const target = new URL(pgUrl());
    pgProxy = await startFaultProxy({ host: target.hostname, port: Number(target.port || 5432) });
    t = await startTestGateway({ platforms: 1, databaseUrl: pgProxy.url(pgUrl()) });
    platform = t.platforms[0]!;
    await t.client().platform(platform).query("CREATE TABLE writes (id int PRIMARY KEY, note text)");
    direct = new pg.Client({ connectionString: Object.assign(new URL(pgUrl()), { pathname: `/${platform}_main` }).toString() });
    await direct.connect();
  });
  after(async () => {
    await direct.end();
    await t.close();
    await pgProxy.close();
  });

  const rows = async (id: number) => (await direct.query("SELECT count(*)::int AS n FROM writes WHERE id = $1", [id])).rows[0].n as number;

  it("reads TLS material from files as well as from PEM text", async () => {
    const dir = await mkdtemp(join(tmpdir(), "db-gateway-pem-"));
    try {
      const pki = testPki();
      await writeFile(join(dir, "ca.pem"), pki.ca.cert);
      await writeFile(join(dir, "cert.pem"), pki.clientFor(platform).cert);
      await writeFile(join(dir, "key.pem"), pki.clientFor(platform).key);
      const client = createClient({
        ...t.clientOptions(t.keys[platform]!),
        tls: { ca: join(dir, "ca.pem"), cert: join(dir, "cert.pem"), key: join(dir, "key.pem") },
      });
      assert.deepEqual((await client.platform(platform).query("SELECT 1 AS one")).rows, [{ one: 1 }]);
      client.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a write whose connection broke after it reached PostgreSQL is UNAVAILABLE and never sent twice", async () => {
    const db = t.client().platform(platform);
    pgProxy.arm("INSERT INTO writes", "forward-then-cut");
    const err = await db.query("INSERT INTO writes VALUES ($1, 'once')", [1]).then(() => undefined, GatewayError.from);
    assert.ok(pgProxy.tripped);
    assert.equal(err?.code, Code.Unavailable);
    assert.equal(err?.retryable, false);
    // The backend runs what reached it after the gateway has already answered (the cut is seen at once): on a
    // busy machine, a moment later.
    await waitFor(async () => (await rows(1)) > 0, 5_000, "the INSERT to be run by PostgreSQL");
    assert.equal(await rows(1), 1, "PostgreSQL ran it exactly once");
  });

  it("the same failure of a call marked idempotent is retried, and the call succeeds", async () => {
    const db = t.client().platform(platform);
    pgProxy.arm("INSERT INTO writes", "forward-then-cut");
    const result = await db.query("INSERT INTO writes VALUES ($1, 'upsert') ON CONFLICT (id) DO NOTHING", [2], { idempotent: true });
    assert.ok(pgProxy.tripped);
    assert.equal(result.command, "INSERT");
    assert.equal(await rows(2), 1);
  });

  it("a call that never reached PostgreSQL (its connection could not be opened) is retried without asking", async () => {
    await t.adminClient().admin().createTenant(platform, "fresh");
    const db = t.client().platform(platform).tenant("fresh");
    pgProxy.arm(`${platform}_fresh`, "cut"); // the startup message of the pool's first connection
    const { rows: result } = await db.query("SELECT current_database() AS db");
    assert.ok(pgProxy.tripped, "the first attempt failed");
    assert.deepEqual(result, [{ db: `${platform}_fresh` }]);
  });

  it("transaction() re-runs on serialization failures and gives up after maxAttempts", async () => {
    const db = t.client().platform(platform);
    await db.query("INSERT INTO writes VALUES (10, 'contended')");
    let attempts = 0;
    const err = await db
      .transaction(
        async (tx) => {
          attempts++;
          await tx.query("SELECT note FROM writes WHERE id = 10");
          // Another session changes the row this transaction read: its own update cannot serialize.
          await direct.query("UPDATE writes SET note = $1 WHERE id = 10", [`outside ${attempts}`]);
          await tx.query("UPDATE writes SET note = 'inside' WHERE id = 10");
        },
        { isolationLevel: "serializable", maxAttempts: 3 },
      )
      .then(() => undefined, GatewayError.from);
    assert.equal(attempts, 3);
    assert.equal(err?.code, Code.Aborted);
    assert.equal(err?.reason, "TRANSACTION_CONFLICT");
    assert.equal(err?.retryable, true);
    assert.deepEqual((await direct.query("SELECT note FROM writes WHERE id = 10")).rows, [{ note: "outside 3" }]);
  });

  it("carries every call over one HTTP/2 connection, and opens it again after it is cut", async () => {
    const gatewayProxy = await startFaultProxy({ host: "127.0.0.1", port: t.port });
    const client = createClient({ ...t.clientOptions(t.keys[platform]!), url: `https://localhost:${gatewayProxy.port}` });
    try {
      const db = client.platform(platform);
      await Promise.all(Array.from({ length: 50 }, (_, i) => db.query("SELECT $1::int AS i", [i])));
      for await (const row of db.stream("SELECT g FROM generate_series(1, 10) g")) void row;
      assert.equal(gatewayProxy.connections, 1);
      gatewayProxy.cutAll();
      // A call made before the client noticed the cut may be written to the dead connection:
      // UNAVAILABLE, outcome unknown. A read says it is idempotent, so it is retried on a new one.
      const { rows: after } = await db.query("SELECT 2 AS two", [], { idempotent: true });
      assert.deepEqual(after, [{ two: 2 }]);
      assert.equal(gatewayProxy.connections, 2);
    } finally {
      client.close();
      await gatewayProxy.close();
    }
  });

  it("a default deadline from the client's options applies to every call", async () => {
    const client = createClient({ ...t.clientOptions(t.keys[platform]!), timeoutMs: 300 });
    try {
      const err = await client
        .platform(platform)
        .query("SELECT pg_sleep(5)")
        .then(() => undefined, GatewayError.from);
      assert.equal(err?.code, Code.DeadlineExceeded);
    } finally {
      client.close();
    }
  });
});
