// Gateways sharing one Redis (REDIS_URL): one platform rate over all, a signed request's nonce taken once, statements in flight counted over all (a killed gateway's freed), per-process limits while Redis is down or hung.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code as ConnectCode, ConnectError, createClient as createConnectClient } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { Code, createClient, GatewayError, type GatewayClient } from "../client-sdk/src/index.js";
import { RetryInfoSchema } from "../wire/src/gen/google/rpc/error_details_pb.js";
import { QueryRequestSchema, QueryService } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { signRequest } from "../wire/src/request-signing.js";
import {
  asSuperuser,
  dropPlatformDatabases,
  keyLists,
  metricValue,
  randomPlatform,
  rawTransport,
  startTestGateway,
  type TestGateway,
} from "./helpers/gateway.js";
import { keptLog } from "./helpers/kept-log.js";
import { startGatewayProcess, type GatewayProcess } from "./helpers/gateway-process.js";
import { startOwnRedis, type OwnRedis } from "./helpers/own-redis.js";
import { waitFor } from "./helpers/wait.js";

/** The rate every platform has: slow enough that no token comes back while a test spends a burst. */
const RATE = { perSecond: 1, burst: 5 };

describe("limits shared through Redis", () => {
  const prefix = `test${randomBytes(4).toString("hex")}:`;
  const secret = randomBytes(32).toString("base64url");
  const [p, signing] = [randomPlatform("rl"), randomPlatform("sg")];
  const keys = { [p]: `key-${randomBytes(16).toString("hex")}`, [signing]: `key-${randomBytes(16).toString("hex")}` };
  const [adminKey, gatewaySecret] = [`admin-${randomBytes(16).toString("hex")}`, randomBytes(32).toString("hex")];
  const logs = { a: keptLog("info"), b: keptLog("info"), c: keptLog("info") };
  let redis: OwnRedis;
  let a: TestGateway;
  let b: TestGateway;
  const clients: GatewayClient[] = [];
  /** A gateway of the two platforms, on the same PostgreSQL, catalog and Redis as the others. */
  const gateway = (log: ReturnType<typeof keptLog>) =>
    startTestGateway({
      platforms: 0,
      createMain: false,
      overrides: {
        platformKeys: keyLists(keys),
        adminKeys: [adminKey],
        gatewaySecret,
        catalogDatabase: `catalog_${p}`,
        rateLimit: RATE,
        signingSecrets: new Map([[signing, secret]]),
        redis: { url: redis.url, keyPrefix: prefix },
        logger: log.logger,
      },
    });
  const clientOf = (t: TestGateway) => {
    const client = createClient({ ...t.clientOptions(keys[p]!), retry: { maxAttempts: 1 } });
    clients.push(client);
    return client.platform(p);
  };
  /** Makes calls through `t` one after another, `count` of them or until one is refused: the number admitted, and the refusal. */
  const spend = async (t: TestGateway, count: number): Promise<{ admitted: number; refusal: GatewayError | undefined }> => {
    const db = clientOf(t);
    for (let admitted = 0; admitted < count; admitted++) {
      const refusal = await db.query("SELECT 1").then(
        () => undefined,
        (err: unknown) => GatewayError.from(err),
      );
      if (refusal !== undefined) return { admitted, refusal };
    }
    return { admitted: count, refusal: undefined };
  };
  const assertRateLimited = (err: GatewayError | undefined) => {
    assert.ok(err !== undefined, "a call was refused");
    assert.equal(err.code, Code.ResourceExhausted);
    assert.equal(err.reason, "RATE_LIMITED");
    const delay = ConnectError.from(err.cause).findDetails(RetryInfoSchema)[0]?.retryDelay;
    assert.ok(delay !== undefined && Number(delay.seconds) * 1e9 + delay.nanos > 0, "a RetryInfo with a delay");
  };
  const health = async (t: TestGateway) => (await (await fetch(`${t.httpUrl}/health`)).json()) as { status: string; redis_connected?: boolean };
  const warnings = (log: ReturnType<typeof keptLog>, text: string) =>
    log.lines.filter((line) => (JSON.parse(line) as { msg: string }).msg.startsWith(text)).length;

  before(async () => {
    redis = await startOwnRedis();
    await asSuperuser("postgres", async (c) => {
      for (const platform of [p, signing]) await c.query(`CREATE DATABASE ${platform}_main`);
    });
    a = await gateway(logs.a);
    b = await gateway(logs.b);
  });
  after(async () => {
    clients.forEach((c) => c.close());
    await b?.close();
    await a?.close();
    await dropPlatformDatabases([p, signing]);
    await redis?.stop();
  });

  it("holds a platform to one rate over both gateways: its burst spent through one, the other refuses", async () => {
    const throughA = await spend(a, 10);
    // The burst, and at most a token come back meanwhile.
    assert.ok(throughA.admitted >= RATE.burst && throughA.admitted <= RATE.burst + 1, `${throughA.admitted} admitted through a`);
    assertRateLimited(throughA.refusal);
    const throughB = await spend(b, 10);
    // b's first call may run on credit (paid from the bucket's next token); per process, it would have had a burst of its own.
    assert.ok(throughB.admitted <= 1, `${throughB.admitted} admitted through b after a spent the burst`);
    assertRateLimited(throughB.refusal);
    assert.equal(await metricValue(a, "db_gateway_redis_up"), 1);
    assert.equal((await health(b)).redis_connected, true);
  });

  it("keeps its keys under the prefix, each expiring", async () => {
    const check = new Redis(redis.url, { lazyConnect: true });
    try {
      await check.connect();
      const keys = await check.keys("*");
      assert.ok(keys.length > 0, "keys in Redis");
      for (const key of keys) {
        assert.ok(key.startsWith(prefix), key);
        assert.ok((await check.pttl(key)) > 0, `${key} expires`);
      }
    } finally {
      check.disconnect();
    }
  });

  it("refuses a signed request replayed to the other gateway", async () => {
    const path = "/dbgateway.v1.QueryService/Query";
    const request = create(QueryRequestSchema, { platform: signing, sql: "SELECT 1" });
    const headers = signRequest(secret, path, toBinary(QueryRequestSchema, request));
    const call = async (t: TestGateway) => {
      const { transport, close } = rawTransport(t, t.tlsFor(keys[signing]!));
      try {
        await createConnectClient(QueryService, transport).query(request, { headers: { "x-api-key": keys[signing]!, ...headers } });
        return undefined;
      } catch (err) {
        return ConnectError.from(err);
      } finally {
        close();
      }
    };
    assert.equal(await call(a), undefined);
    const replay = await call(b);
    assert.equal(replay?.code, ConnectCode.Unauthenticated);
    assert.match(replay.rawMessage, /used already: a replay/);
  });

  it("serves on per-process limits while Redis is down, warning once, and shares again when it is back", async () => {
    await redis.kill();
    // Each gateway's own bucket, untouched while Redis answered, has a full burst: together they admit twice the shared one.
    const throughA = await spend(a, 10);
    const throughB = await spend(b, 10);
    assert.ok(throughA.admitted >= RATE.burst && throughA.admitted <= RATE.burst + 1, `${throughA.admitted} admitted through a`);
    assert.ok(throughB.admitted >= RATE.burst && throughB.admitted <= RATE.burst + 1, `${throughB.admitted} admitted through b`);
    assertRateLimited(throughA.refusal);
    assertRateLimited(throughB.refusal);
    for (const [t, log] of [
      [a, logs.a],
      [b, logs.b],
    ] as const) {
      assert.equal(warnings(log, "Redis is unreachable"), 1, "one warning for the outage");
      assert.deepEqual([(await health(t)).status, (await health(t)).redis_connected], ["healthy", false]);
      assert.equal(await metricValue(t, "db_gateway_redis_up"), 0);
    }
    // A gateway started while Redis is down serves too (its signed calls checked against its own nonces).
    const c = await gateway(logs.c);
    try {
      assert.equal((await spend(c, 1)).admitted, 1);
      assert.equal(warnings(logs.c, "Redis is unreachable"), 1);

      await redis.restart();
      for (const t of [a, b, c]) await waitFor(async () => (await health(t)).redis_connected === true, 10_000, "Redis connected again");
      assert.equal(warnings(logs.a, "Redis answers again"), 1);
      assert.equal(await metricValue(a, "db_gateway_redis_up"), 1);
      // The new Redis's bucket is full: one burst over the three gateways.
      const again = [await spend(a, 10), await spend(b, 10), await spend(c, 10)];
      const admitted = again.map((s) => s.admitted);
      assert.ok(admitted[0]! >= RATE.burst - 1, `admitted ${admitted.join(", ")}`);
      assert.ok(
        admitted.reduce((x, y) => x + y) <= RATE.burst + 3,
        `admitted ${admitted.join(", ")} through a, b, c: one burst (and at most a call on credit each)`,
      );
      for (const s of again) assertRateLimited(s.refusal);
    } finally {
      await c.close();
    }
  });

  it("serves calls, signed ones too, while Redis hangs without closing its connection, and shares again when it answers", async () => {
    redis.pause();
    try {
      const client = createClient({ ...a.clientOptions(keys[signing]!), signingSecret: secret, coalesce: false, retry: { maxAttempts: 1 } });
      clients.push(client);
      // Bounded here so that a call waiting on Redis fails the test instead of holding it: each nonce claim gives up after REDIS_TIMEOUT_MS.
      for (let i = 0; i < 3; i++)
        assert.deepEqual((await client.platform(signing).query("SELECT 1 AS one", [], { signal: AbortSignal.timeout(5_000) })).rows, [{ one: 1 }]);
      assert.equal((await health(a)).redis_connected, false);
      assert.equal(warnings(logs.a, "Redis is unreachable"), 2, "one more warning, for this outage");
    } finally {
      redis.resume();
    }
    await waitFor(async () => (await health(a)).redis_connected === true, 10_000, "Redis answering again");
    assert.equal(warnings(logs.a, "Redis answers again"), 2);
  });
});

describe("statements in flight counted through Redis", () => {
  const prefix = `test${randomBytes(4).toString("hex")}:`;
  const p = randomPlatform("cs");
  const key = `key-${randomBytes(16).toString("hex")}`;
  const gatewaySecret = randomBytes(32).toString("hex");
  let redis: OwnRedis;
  let a: TestGateway;
  let killed: GatewayProcess | undefined;
  const clients: GatewayClient[] = [];

  before(async () => {
    redis = await startOwnRedis();
    await asSuperuser("postgres", (c) => c.query(`CREATE DATABASE ${p}_main`));
    a = await startTestGateway({
      platforms: 0,
      createMain: false,
      overrides: {
        platformKeys: keyLists({ [p]: key }),
        gatewaySecret,
        catalogDatabase: `catalog_${p}`,
        redis: { url: redis.url, keyPrefix: prefix },
        quotaRefreshMillis: 200,
      },
    });
  });
  after(async () => {
    clients.forEach((c) => c.close());
    await killed?.close();
    await a?.close();
    await dropPlatformDatabases([p]);
    await redis?.stop();
  });

  it("holds a platform's max_concurrent_statements over both gateways, and a gateway killed mid-statement frees its slots", async () => {
    const admin = createClient(a.clientOptions(a.adminKey));
    clients.push(admin);
    await admin.admin().setQuota({ platform: p }, { maxConcurrentStatements: 2 });
    // A gateway process of the same platform (its own key), killed below as a crash would.
    killed = await startGatewayProcess({
      databaseUrl: a.databaseUrl,
      platform: p,
      env: { GATEWAY_SECRET: gatewaySecret, CATALOG_DATABASE: `catalog_${p}`, REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix },
    });
    const other = createClient({ ...killed.clientOptions(killed.platformKey), retry: { maxAttempts: 1 } });
    clients.push(other);
    const sleeping = [1, 2].map(() =>
      other
        .platform(p)
        .query("SELECT pg_sleep(60)")
        .catch(() => undefined),
    );
    const db = createClient({ ...a.clientOptions(key), retry: { maxAttempts: 1 } });
    clients.push(db);
    const refusal = async () =>
      db
        .platform(p)
        .query("SELECT 1")
        .then(
          () => undefined,
          (err: unknown) => GatewayError.from(err),
        );
    let refused: GatewayError | undefined;
    await waitFor(async () => (refused = await refusal()) !== undefined, 5_000, "the other gateway's statements counted here");
    assert.equal(refused!.code, Code.ResourceExhausted);
    assert.equal(refused!.reason, "QUOTA_EXCEEDED");
    assert.match(refused!.message, /has 2 statements running or waiting/);
    killed.kill("SIGKILL");
    await killed.exited;
    await Promise.all(sleeping);
    // Its counts expire with its heartbeat: no slot is held forever.
    await waitFor(async () => (await refusal()) === undefined, 5_000, "the killed gateway's slots freed");
  });
});
