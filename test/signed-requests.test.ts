// Signed requests (SIGNING_SECRET_<PLATFORM>): the SDK signs, and a missing, wrong, tampered, stale or replayed signature is UNAUTHENTICATED.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code as ConnectCode, ConnectError, createClient as createConnectClient } from "@connectrpc/connect";
import { Code, createClient, GatewayError } from "../client-sdk/src/index.js";
import { QueryRequestSchema, QueryService } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { signRequest } from "../wire/src/request-signing.js";
import { dropPlatformDatabases, rawTransport, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { keptLog } from "./helpers/kept-log.js";

describe("signed requests", () => {
  const signing = `sg${randomBytes(4).toString("hex")}`;
  const plain = `pl${randomBytes(4).toString("hex")}`;
  const keys = { [signing]: `key-${randomBytes(16).toString("hex")}`, [plain]: `key-${randomBytes(16).toString("hex")}` };
  const secret = randomBytes(32).toString("base64url");
  const kept = keptLog("info");
  let t: TestGateway;

  before(async () => {
    t = await startTestGateway({
      platforms: 0,
      overrides: {
        platformKeys: new Map(Object.entries(keys).map(([platform, key]) => [platform, [key]])),
        signingSecrets: new Map([[signing, secret]]),
        signatureMaxSkewMillis: 60_000,
        logger: kept.logger,
      },
    });
    const admin = await t.pg();
    for (const platform of [signing, plain]) await admin.query(`CREATE DATABASE ${platform}_main`);
  });
  after(async () => {
    await t.close();
    await dropPlatformDatabases([signing, plain]);
  });

  const sdk = (options: { signingSecret?: string; queryStream?: boolean } = {}) =>
    createClient({ ...t.clientOptions(keys[signing]!), retry: { maxAttempts: 1 }, ...options });

  it("takes every kind of call the SDK signs: unary, QueryStream, streamed rows, batches and transactions", async () => {
    for (const queryStream of [true, false]) {
      const client = sdk({ signingSecret: secret, queryStream });
      try {
        const db = client.platform(signing);
        assert.deepEqual((await db.query("SELECT $1::int AS n", [7])).rows, [{ n: 7 }]);
        const rows = [];
        for await (const row of db.stream("SELECT generate_series(1, 3) AS n")) rows.push(row);
        assert.equal(rows.length, 3);
        assert.equal((await db.batch([{ sql: "SELECT 1" }, { sql: "SELECT 2" }])).length, 2);
        await db.transaction(async (tx) => {
          await tx.query("SELECT 1");
        });
      } finally {
        client.close();
      }
    }
  });

  it("refuses a platform's unsigned calls, and leaves other platforms unsigned", async () => {
    const client = sdk();
    try {
      await assert.rejects(client.platform(signing).query("SELECT 1"), (err: GatewayError) => {
        assert.equal(err.code, Code.Unauthenticated);
        assert.match(err.message, /must be signed/);
        return true;
      });
    } finally {
      client.close();
    }
    const other = createClient(t.clientOptions(keys[plain]!));
    try {
      assert.deepEqual((await other.platform(plain).query("SELECT 1 AS one")).rows, [{ one: 1 }]);
    } finally {
      other.close();
    }
  });

  describe("a signature that does not hold", () => {
    const path = "/dbgateway.v1.QueryService/Query";
    const request = (sql: string) => create(QueryRequestSchema, { platform: signing, sql });
    const call = async (sql: string, headers: Record<string, string>) => {
      const { transport, close } = rawTransport(t, t.tlsFor(keys[signing]!));
      try {
        await createConnectClient(QueryService, transport).query(request(sql), { headers: { "x-api-key": keys[signing]!, ...headers } });
        return undefined;
      } catch (err) {
        return ConnectError.from(err);
      } finally {
        close();
      }
    };
    const signed = (sql: string, now = Date.now()) => signRequest(secret, path, toBinary(QueryRequestSchema, request(sql)), now);

    it("is taken once, when right", async () => {
      assert.equal(await call("SELECT 1", signed("SELECT 1")), undefined);
    });

    it("is refused with the wrong secret, over other bytes, too old, or a second time", async () => {
      const wrongSecret = signRequest(randomBytes(32).toString("base64url"), path, toBinary(QueryRequestSchema, request("SELECT 1")));
      const cases: [string, Record<string, string>, RegExp][] = [
        ["SELECT 1", wrongSecret, /does not match/],
        ["SELECT 2", signed("SELECT 1"), /does not match/],
        ["SELECT 1", signed("SELECT 1", Date.now() - 120_000), /more than 60 s from the gateway's clock/],
        ["SELECT 1", { ...signed("SELECT 1"), "x-dbgw-nonce": "short" }, /malformed/],
      ];
      for (const [sql, headers, message] of cases) {
        const err = await call(sql, headers);
        assert.equal(err?.code, ConnectCode.Unauthenticated, `${sql} ${JSON.stringify(headers)}`);
        assert.match(err.rawMessage, message);
      }
      const once = signed("SELECT 1");
      assert.equal(await call("SELECT 1", once), undefined);
      const replay = await call("SELECT 1", once);
      assert.equal(replay?.code, ConnectCode.Unauthenticated);
      assert.match(replay.rawMessage, /used already: a replay/);
      const events = kept.lines.map((line) => JSON.parse(line) as Record<string, unknown>).map((line) => line.event);
      for (const event of ["bad_signature", "stale_signature", "replayed_signature"]) assert.ok(events.includes(event), event);
      assert.ok(!kept.lines.some((line) => line.includes(secret)), "the secret is in no log line");
    });
  });
});
