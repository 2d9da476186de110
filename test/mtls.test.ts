// Mutual TLS: client certificates from the configured CA only, and the SDK connecting to an IP address without a TLS server name.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Code, ConnectError, createClient as createConnectClient } from "@connectrpc/connect";
import { QueryService, createClient } from "../client-sdk/src/index.js";
import { issueCertificate } from "../server/src/pki/certificates.js";
import { rawTransport, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { testPki } from "./helpers/pki.js";

const root = new URL("..", import.meta.url).pathname;

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
    assert.equal(await tryInsert(pki.clientFor(platform), "trusted"), undefined);
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
    const { transport, close } = rawTransport(t, { ca: pki.foreignCa.cert, ...pki.clientFor(platform) });
    try {
      await assert.rejects(
        createConnectClient(QueryService, transport).query({ platform, sql: "SELECT 1" }, { headers: { "x-api-key": t.keys[platform]! } }),
        (err: unknown) => err instanceof ConnectError && /certificate/.test(err.message),
      );
    } finally {
      close();
    }
  });

  it("lets the SDK connect to an IP address without a TLS server name, and without Node's warning", async () => {
    const ca = testPki().ca.cert;
    const { cert, key } = testPki().clientFor(platform);
    const script = `
      import { createClient } from "./client-sdk/src/index.ts";
      const client = createClient({ url: process.env.URL, apiKey: process.env.KEY, tls: { ca: process.env.CA, cert: process.env.CERT, key: process.env.PRIVATE_KEY } });
      const { rows } = await client.platform(process.env.PLATFORM).query("SELECT 41 + 1 AS n");
      console.log(JSON.stringify(rows));
      client.close();`;
    const url = t.url.replace("localhost", "127.0.0.1");
    const env = { PATH: process.env.PATH, URL: url, KEY: t.keys[platform]!, CA: ca, CERT: cert, PRIVATE_KEY: key, PLATFORM: platform };
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      cwd: root,
      env,
      timeout: 30_000,
    });
    assert.deepEqual(JSON.parse(stdout), [{ n: 42 }]);
    assert.doesNotMatch(stderr, /DEP0123|ServerName/);
  });

  it("still checks that the server certificate names the IP address the SDK connects to", async () => {
    const pki = testPki();
    const namesOnly = issueCertificate(pki.ca, { commonName: "localhost", usage: "server", dnsNames: ["localhost"] });
    const other = await startTestGateway({
      platforms: 1,
      overrides: { tls: { cert: Buffer.from(namesOnly.cert), key: Buffer.from(namesOnly.key), clientCa: Buffer.from(pki.ca.cert) } },
    });
    try {
      const p = other.platforms[0]!;
      const byAddress = createClient({
        url: other.url.replace("localhost", "127.0.0.1"),
        apiKey: other.keys[p]!,
        tls: { ca: pki.ca.cert, ...pki.clientFor(p) },
        retry: { maxAttempts: 1 },
        timeoutMs: 10_000,
      });
      await assert.rejects(byAddress.platform(p).query("SELECT 1"), (err: Error) =>
        /IP: 127\.0\.0\.1 is not in the cert's list|ALTNAME/i.test(String(err.message)),
      );
      byAddress.close();
      const { rows } = await other.client().platform(p).query<{ one: number }>("SELECT 1 AS one");
      assert.equal(rows[0]!.one, 1);
    } finally {
      await other.close();
    }
  });
});
