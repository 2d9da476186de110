// The opt-in result cache in a real Redis shared by two gateways: hits, misses and TTLs, every kind of write ending a database's cached results before it is answered, and Redis lost and back.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { createClient, GatewayError, type Database, type GatewayClient } from "../client-sdk/src/index.js";
import { keyLists, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { startOwnRedis, type OwnRedis } from "./helpers/own-redis.js";
import { waitFor } from "./helpers/wait.js";

describe("result cache", () => {
  let redis: OwnRedis;
  let a: TestGateway;
  let b: TestGateway;
  let platform: string;
  const prefix = `rc${randomBytes(4).toString("hex")}:`;
  const clients: GatewayClient[] = [];
  const db = (t: TestGateway, options: { coalesce?: boolean } = {}): Database => {
    const client = createClient({ ...t.clientOptions(t.keys[platform] ?? a.keys[platform]!), ...options });
    clients.push(client);
    return client.platform(platform).tenant("shop");
  };
  const cached = async (d: Database, sql = "SELECT count(*)::int AS n FROM item", params: unknown[] = []) => {
    const result = await d.query<{ n: number }>(sql, params as never[], { cacheTtlMs: 30_000 });
    return { n: result.rows[0]?.n, fromCache: result.fromCache === true };
  };

  before(async () => {
    redis = await startOwnRedis();
    a = await startTestGateway({
      platforms: 1,
      overrides: { redis: { url: redis.url, keyPrefix: prefix, resultCache: { maxTtlMillis: 60_000, maxBytes: 4_096 } } },
    });
    platform = a.platforms[0]!;
    b = await startTestGateway({
      platforms: 0,
      createMain: false,
      overrides: {
        platformKeys: keyLists(a.keys),
        adminKeys: [a.adminKey],
        gatewaySecret: a.gatewaySecret,
        catalogDatabase: `catalog_${platform}`,
        redis: { url: redis.url, keyPrefix: prefix, resultCache: { maxTtlMillis: 60_000, maxBytes: 4_096 } },
      },
    });
    await a.adminClient().admin().createTenant(platform, "shop");
    await db(a).query("CREATE TABLE item (id int PRIMARY KEY, name text)");
  });
  after(async () => {
    clients.forEach((c) => c.close());
    await b?.close();
    await a?.close();
    await redis?.stop();
  });

  it("serves a repeated read from the cache, through either gateway, keyed by SQL, parameters and database", async () => {
    assert.deepEqual(await cached(db(a)), { n: 0, fromCache: false });
    assert.deepEqual(await cached(db(a)), { n: 0, fromCache: true });
    assert.deepEqual(await cached(db(b)), { n: 0, fromCache: true }, "the cache is shared");
    assert.deepEqual(await cached(db(a), "SELECT $1::int AS n", [1]), { n: 1, fromCache: false });
    assert.deepEqual(await cached(db(a), "SELECT $1::int AS n", [2]), { n: 2, fromCache: false });
    assert.deepEqual(await cached(db(a), "SELECT $1::int AS n", [1]), { n: 1, fromCache: true });
    const main = createClient(a.clientOptions(a.keys[platform]!));
    clients.push(main);
    const onMain = await main.platform(platform).query("SELECT $1::int AS n", [1], { cacheTtlMs: 30_000 });
    assert.equal(onMain.fromCache, undefined, "another database's results are its own");
    // Without cache_ttl_ms, never from the cache.
    assert.equal((await db(a).query("SELECT count(*)::int AS n FROM item")).fromCache, undefined);
    // Every key expires.
    const inspect = new Redis(redis.url);
    try {
      const keys = await inspect.keys(`${prefix}result*`);
      assert.ok(keys.length >= 4, keys.join(","));
      for (const key of keys) assert.ok((await inspect.pttl(key)) > 0, `${key} expires`);
    } finally {
      inspect.disconnect();
    }
  });

  it("ends a database's cached results with each write, before the write is answered, whichever gateway and call carried it", async () => {
    const writes: [string, (n: number) => Promise<unknown>][] = [
      ["a coalesced query through the other gateway", (n) => db(b).query("INSERT INTO item VALUES ($1, 'x')", [n])],
      ["a Query call", (n) => db(a, { coalesce: false }).query("INSERT INTO item VALUES ($1, 'x')", [n])],
      ["a batch", (n) => db(a).batch([{ sql: "INSERT INTO item VALUES ($1, 'x')", params: [n] }], { atomic: true })],
      ["a transaction", (n) => db(b).transaction((tx) => tx.query("INSERT INTO item VALUES ($1, 'x')", [n]))],
      [
        "a streamed DELETE … RETURNING",
        async (n) => {
          for await (const _ of db(a).stream("DELETE FROM item WHERE id = $1 RETURNING id", [n - 1])) void _;
        },
      ],
    ];
    let expected = (await cached(db(a))).n!;
    for (const [i, [what, write]] of writes.entries()) {
      assert.equal((await cached(db(a))).fromCache, true, `cached before ${what}`);
      await write(100 + i);
      expected += what.startsWith("a streamed") ? -1 : 1;
      assert.deepEqual(await cached(db(a)), { n: expected, fromCache: false }, `after ${what}`);
    }
  });

  it("keeps no result past its TTL or its size, and refuses to cache a write", async () => {
    const short = await db(a).query("SELECT 42 AS n", [], { cacheTtlMs: 150 });
    assert.equal(short.fromCache, undefined);
    assert.equal((await db(a).query("SELECT 42 AS n", [], { cacheTtlMs: 150 })).fromCache, true);
    await new Promise((resolve) => setTimeout(resolve, 250));
    assert.equal((await db(a).query("SELECT 42 AS n", [], { cacheTtlMs: 150 })).fromCache, undefined, "expired");
    const big = "SELECT repeat('x', 10000) AS big";
    await db(a).query(big, [], { cacheTtlMs: 30_000 });
    assert.equal((await db(a).query(big, [], { cacheTtlMs: 30_000 })).fromCache, undefined, "over RESULT_CACHE_MAX_BYTES");
    await assert.rejects(db(a).query("INSERT INTO item VALUES (999, 'x')", [], { cacheTtlMs: 1_000 }), (err: GatewayError) => err.reason === "INVALID_REQUEST");
    assert.deepEqual((await db(a).query("SELECT count(*)::int AS n FROM item WHERE id = 999")).rows, [{ n: 0 }]);
  });

  it("while Redis is lost, reads go to PostgreSQL; once it is back, nothing cached before is served, though writes meanwhile ended nothing", async () => {
    const before = (await cached(db(a))).n!;
    assert.equal((await cached(db(a))).fromCache, true);
    await redis.pause(); // hung: commands time out
    try {
      await db(a).query("INSERT INTO item VALUES (500, 'during')");
      assert.deepEqual(await cached(db(a)), { n: before + 1, fromCache: false });
    } finally {
      redis.resume();
    }
    // Redis kept its data (it only hung): the entry from before the outage is still there, and must not be served.
    await waitFor(
      async () => (await fetch(`${a.httpUrl}/health`).then((r) => r.json() as Promise<{ redis_connected?: boolean }>)).redis_connected === true,
      10_000,
      "Redis back",
    );
    for (let i = 0; i < 3; i++) assert.equal((await cached(db(a))).n, before + 1);
    assert.equal((await cached(db(b))).n, before + 1);
  });
});
