import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient as createConnectClient } from "@connectrpc/connect";
import { QueryService } from "../client-sdk/src/index.js";
import { rawTransport, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { testPki } from "./helpers/pki.js";

describe("mutual TLS", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    await t.client().platform(platform).query("CREATE TABLE hits (who text)");
  });
  after(() => t.close());

  /** Tries an INSERT with a valid API key: if the handshake let it through, a row would appear. */
  async function tryInsert(tls: { cert?: string; key?: string }, who: string): Promise<unknown> {
    const { transport, close } = rawTransport(t, tls);
    try {
      await createConnectClient(QueryService, transport).query(
        { platform, sql: "INSERT INTO hits VALUES ($1)", params: [{ kind: { case: "textValue", value: who } }] },
        { headers: { "x-api-key": t.keys[platform]! }, timeoutMs: 5_000 },
      );
      return undefined;
    } catch (err) {
      return err;
    } finally {
      close();
    }
  }

  async function hits(who: string): Promise<number> {
    const { rows } = await t.client().platform(platform).query<{ n: number }>("SELECT count(*)::int AS n FROM hits WHERE who = $1", [who]);
    return rows[0]!.n;
  }

  /**
   * The TLS layer refused the connection: the client sees a transport error
   * (the exact code is the client library's choice), never an answer from a
   * handler, which would carry the gateway's ErrorInfo.
   */
  function assertRefused(err: unknown): void {
    assert.ok(err instanceof ConnectError, String(err));
    assert.ok([Code.Unavailable, Code.Internal, Code.Canceled, Code.Unknown].includes(err.code), `unexpected ${Code[err.code]}: ${err.message}`);
    assert.equal(err.details.length, 0);
  }

  it("accepts a client certificate from the configured CA", async () => {
    const pki = testPki();
    assert.equal(await tryInsert({ cert: pki.client.cert, key: pki.client.key }, "trusted"), undefined);
    assert.equal(await hits("trusted"), 1);
  });

  it("refuses a client without a certificate at the handshake", async () => {
    const err = await tryInsert({}, "anonymous");
    assertRefused(err);
    assert.equal(await hits("anonymous"), 0);
  });

  it("refuses a certificate signed by another CA", async () => {
    const pki = testPki();
    const err = await tryInsert({ cert: pki.foreignClient.cert, key: pki.foreignClient.key }, "foreign");
    assertRefused(err);
    assert.equal(await hits("foreign"), 0);
  });

  it("is not fooled by a client that trusts another CA for the server", async () => {
    const pki = testPki();
    const { transport, close } = rawTransport(t, { ca: pki.foreignCa.cert, cert: pki.client.cert, key: pki.client.key });
    try {
      await assert.rejects(
        createConnectClient(QueryService, transport).query({ platform, sql: "SELECT 1" }, { headers: { "x-api-key": t.keys[platform]! } }),
        (err: unknown) => err instanceof ConnectError && /certificate/.test(err.message),
      );
    } finally {
      close();
    }
  });
});
