// A client certificate bound to its API key's principal (a SPIFFE ID, else the CN), refusals logged and counted, a CRL's revoked certificates refused at the handshake, and TLS files reloaded on SIGHUP.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Code, ConnectError, createClient as createConnectClient } from "@connectrpc/connect";
import { AdminService, createClient, GatewayError, QueryService } from "../client-sdk/src/index.js";
import { spiffeIdOf } from "../server/src/grpc/client-identity.js";
import { createCertificateAuthority, issueCertificate, type CertificateAndKey } from "../server/src/pki/certificates.js";
import { dropPlatformDatabases, metricValue, pgUrl, rawTransport, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { startGatewayProcess } from "./helpers/gateway-process.js";
import { waitFor } from "./helpers/wait.js";
import { keptLog } from "./helpers/kept-log.js";
import { testPki } from "./helpers/pki.js";

describe("A client certificate is bound to its API key's principal", () => {
  let t: TestGateway;
  let a: string;
  let b: string;
  const kept = keptLog("info");
  const entries = () => kept.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  before(async () => {
    t = await startTestGateway({ platforms: 2, overrides: { logger: kept.logger } });
    [a, b] = t.platforms as [string, string];
    for (const p of [a, b]) await t.client(p).platform(p).query("CREATE TABLE secrets (v text)");
    await t.client(b).platform(b).query("INSERT INTO secrets VALUES ('b only')");
  });
  after(() => t.close());

  /** A Query with `key` over a connection presenting `cert`: its error, or undefined with the rows. */
  async function query(cert: CertificateAndKey, key: string, platform: string, sql: string): Promise<ConnectError | undefined> {
    const { transport, close } = rawTransport(t, cert);
    try {
      await createConnectClient(QueryService, transport).query({ platform, sql }, { headers: { "x-api-key": key }, timeoutMs: 5_000 });
      return undefined;
    } catch (err) {
      return ConnectError.from(err);
    } finally {
      close();
    }
  }

  it("a platform's certificate with another platform's key reads nothing: PERMISSION_DENIED", async () => {
    const pki = testPki();
    const err = await query(pki.clientFor(a), t.keys[b]!, b, "SELECT v FROM secrets");
    assert.equal(err?.code, Code.PermissionDenied, String(err));
    assert.match(err!.rawMessage, /client certificate is not for the API key's platform/);
    // Its own key still works, and the other platform's certificate with its own key too.
    assert.equal(await query(pki.clientFor(a), t.keys[a]!, a, "SELECT v FROM secrets"), undefined);
    assert.equal(await query(pki.clientFor(b), t.keys[b]!, b, "SELECT v FROM secrets"), undefined);
  });

  it("a platform's certificate with the admin key creates no tenant: PERMISSION_DENIED; the admin's certificate does", async () => {
    const pki = testPki();
    const create = async (cert: CertificateAndKey) => {
      const { transport, close } = rawTransport(t, cert);
      try {
        await createConnectClient(AdminService, transport).createTenant(
          { platform: b, tenantId: "t1" },
          { headers: { "x-api-key": t.adminKey }, timeoutMs: 30_000 },
        );
        return undefined;
      } catch (err) {
        return ConnectError.from(err);
      } finally {
        close();
      }
    };
    const refused = await create(pki.clientFor(a));
    assert.equal(refused?.code, Code.PermissionDenied, String(refused));
    assert.match(refused!.rawMessage, /not the admin's/);
    assert.equal(await create(pki.clientFor("admin")), undefined);
    // The admin's certificate with a platform's key is refused as well.
    assert.equal((await query(pki.clientFor("admin"), t.keys[a]!, a, "SELECT 1"))?.code, Code.PermissionDenied);
  });

  it("over the SDK's QueryStream too: another platform's certificate is refused, its own serves", async () => {
    const pki = testPki();
    const wrong = createClient({ ...t.clientOptions(t.keys[b]!), tls: { ca: pki.ca.cert, ...pki.clientFor(a) }, retry: { maxAttempts: 1 } });
    try {
      const err = await wrong
        .platform(b)
        .query("SELECT v FROM secrets")
        .then(() => undefined, GatewayError.from);
      assert.equal(err?.code, Code.PermissionDenied, String(err));
    } finally {
      wrong.close();
    }
    assert.deepEqual((await t.client(b).platform(b).query("SELECT v FROM secrets")).rows, [{ v: "b only" }]);
  });

  it("a certificate that names no principal is refused with every key", async () => {
    const pki = testPki();
    for (const [key, platform] of [
      [t.keys[a]!, a],
      [t.adminKey, a],
    ] as const) {
      assert.equal((await query(pki.client, key, platform, "SELECT 1"))?.code, Code.PermissionDenied);
    }
  });

  it("reads the SPIFFE ID before the CN, and the CN only of a certificate without one (as `db-gateway certs` made them before)", async () => {
    const pki = testPki();
    const uriForA = issueCertificate(pki.ca, { commonName: b, usage: "client", uris: [spiffeIdOf({ kind: "platform", platform: a })], key: pki.client.key });
    assert.equal(await query(uriForA, t.keys[a]!, a, "SELECT 1"), undefined);
    assert.equal((await query(uriForA, t.keys[b]!, b, "SELECT 1"))?.code, Code.PermissionDenied);
    const cnOnly = issueCertificate(pki.ca, { commonName: a, usage: "client", key: pki.client.key });
    assert.equal(await query(cnOnly, t.keys[a]!, a, "SELECT 1"), undefined);
    // A SPIFFE ID of another trust domain names nobody here, and the CN of a certificate with one is not read instead.
    const foreignDomain = issueCertificate(pki.ca, { commonName: a, usage: "client", uris: [`spiffe://elsewhere/platform/${a}`], key: pki.client.key });
    assert.equal((await query(foreignDomain, t.keys[a]!, a, "SELECT 1"))?.code, Code.PermissionDenied);
  });

  it("logs each refusal with the peer's address, the certificate's subject and identity, the key's principal and what was asked for, never the key", async () => {
    const pki = testPki();
    const before = kept.lines.length;
    await query(pki.clientFor(a), t.keys[b]!, b, "SELECT 1");
    const refusal = entries()
      .slice(before)
      .find((line) => line.event === "certificate_mismatch");
    assert.ok(refusal, JSON.stringify(entries().slice(before)));
    assert.equal(refusal.component, "auth");
    assert.equal(refusal.msg, "refused: the client certificate is not for the API key's platform");
    assert.match(String(refusal.peer), /^(127\.0\.0\.1|\[?::1\]?|::ffff:127\.0\.0\.1):\d+$/);
    assert.equal(refusal.subject, `CN=${a}`);
    assert.equal(refusal.identity, `platform:${a}`);
    assert.equal(refusal.expected, `platform:${b}`);
    assert.equal(refusal.principal, b);
    assert.equal(refusal.platform, b);
    assert.equal(refusal.tenant_id, "");
    assert.equal(refusal.operation, "dbgateway.v1.QueryService/Query");
    assert.ok(!JSON.stringify(kept.lines).includes(t.keys[b]!), "the key is in a log line");
  });

  it("logs a key used for another platform's database with the platform and tenant asked for, and counts it", async () => {
    const count = () => metricValue(t, `db_gateway_auth_refusals_total{event="other_platform"}`);
    const counted = await count();
    const before = kept.lines.length;
    const { transport, close } = rawTransport(t, testPki().clientFor(a));
    try {
      await assert.rejects(
        createConnectClient(QueryService, transport).query({ platform: b, tenantId: "t1", sql: "SELECT 1" }, { headers: { "x-api-key": t.keys[a]! } }),
        (err) => ConnectError.from(err).code === Code.PermissionDenied,
      );
    } finally {
      close();
    }
    const refusal = entries()
      .slice(before)
      .find((line) => line.event === "other_platform");
    assert.ok(refusal, JSON.stringify(entries().slice(before)));
    assert.equal(refusal.principal, a);
    assert.equal(refusal.platform, b);
    assert.equal(refusal.tenant_id, "t1");
    assert.equal(refusal.subject, `CN=${a}`);
    assert.equal(await count(), counted + 1);
  });

  it("counts refusals by event, and logs a call without a valid key with its peer and certificate, never the key it sent", async () => {
    const pki = testPki();
    const count = async (event: string) => metricValue(t, `db_gateway_auth_refusals_total{event="${event}"}`);
    const [mismatches, unauthenticated] = [await count("certificate_mismatch"), await count("unauthenticated")];
    const before = kept.lines.length;
    const wrongKey = `not-a-key-${Math.random()}`;
    assert.equal((await query(pki.clientFor(a), wrongKey, a, "SELECT 1"))?.code, Code.Unauthenticated);
    assert.equal((await query(pki.clientFor(a), t.keys[b]!, b, "SELECT 1"))?.code, Code.PermissionDenied);
    assert.equal(await count("unauthenticated"), unauthenticated + 1);
    assert.equal(await count("certificate_mismatch"), mismatches + 1);
    const refusal = entries()
      .slice(before)
      .find((line) => line.event === "unauthenticated");
    assert.ok(refusal, JSON.stringify(entries().slice(before)));
    assert.equal(refusal.msg, "refused: unauthenticated");
    assert.equal(refusal.subject, `CN=${a}`);
    assert.equal(refusal.platform, a, "the platform asked for");
    assert.equal(refusal.principal, null);
    assert.match(String(refusal.peer), /:\d+$/);
    assert.ok(!JSON.stringify(kept.lines).includes(wrongKey), "the key sent is in a log line");
  });
});

describe("TLS_CLIENT_IDENTITY=any", () => {
  it("accepts any certificate from the CA with any key, as before the binding", async () => {
    const t = await startTestGateway({ platforms: 1, overrides: { clientIdentity: { sources: "any", trustDomain: "db-gateway" } } });
    try {
      const { transport, close } = rawTransport(t, testPki().client);
      try {
        const answer = await createConnectClient(QueryService, transport).query(
          { platform: t.platforms[0]!, sql: "SELECT 1 AS one" },
          { headers: { "x-api-key": t.keys[t.platforms[0]!]! }, timeoutMs: 5_000 },
        );
        assert.ok(answer.result !== undefined);
      } finally {
        close();
      }
    } finally {
      await t.close();
    }
  });
});

describe("A certificate revocation list (TLS_CRL_FILE)", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "db-gateway-crl-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** A CRL from the test CA revoking `revoked` (made by openssl ca, as an operator would). */
  async function crlRevoking(revoked: CertificateAndKey): Promise<Buffer> {
    const pki = testPki();
    await writeFile(join(dir, "ca.crt"), pki.ca.cert);
    await writeFile(join(dir, "ca.key"), pki.ca.key);
    await writeFile(join(dir, "revoked.crt"), revoked.cert);
    await writeFile(join(dir, "index.txt"), "");
    await writeFile(join(dir, "crlnumber"), "01\n");
    const config = `[ca]\ndefault_ca = test\n[test]\ndatabase = ${dir}/index.txt\ncrlnumber = ${dir}/crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n`;
    await writeFile(join(dir, "openssl.cnf"), config);
    const openssl = (...args: string[]) =>
      promisify(execFile)("openssl", ["ca", "-config", join(dir, "openssl.cnf"), "-keyfile", join(dir, "ca.key"), "-cert", join(dir, "ca.crt"), ...args]);
    await openssl("-revoke", join(dir, "revoked.crt"));
    await openssl("-gencrl", "-out", join(dir, "ca.crl"));
    return readFile(join(dir, "ca.crl"));
  }

  it("refuses a revoked client certificate at the handshake, and accepts the others", async () => {
    const pki = testPki();
    const platform =
      "crl" +
      Math.random()
        .toString(36)
        .slice(2, 10)
        .replace(/[^a-z]/g, "x");
    const revoked = issueCertificate(pki.ca, {
      commonName: platform,
      usage: "client",
      uris: [spiffeIdOf({ kind: "platform", platform })],
      key: pki.client.key,
    });
    const crl = await crlRevoking(revoked);
    const tls = { cert: Buffer.from(pki.server.cert), key: Buffer.from(pki.server.key), clientCa: Buffer.from(pki.ca.cert), crl };
    const t = await startTestGateway({ platforms: 1, overrides: { tls } });
    try {
      const p = t.platforms[0]!;
      const ask = async (cert: CertificateAndKey) => {
        const { transport, close } = rawTransport(t, cert);
        try {
          await createConnectClient(QueryService, transport).query(
            { platform: p, sql: "SELECT 1" },
            { headers: { "x-api-key": t.keys[p]! }, timeoutMs: 5_000 },
          );
          return undefined;
        } catch (err) {
          return ConnectError.from(err);
        } finally {
          close();
        }
      };
      const refused = await ask(revoked);
      assert.ok(
        refused !== undefined && refused.code !== Code.PermissionDenied && refused.details.length === 0,
        `not refused at the handshake: ${String(refused)}`,
      );
      assert.equal(await ask(pki.clientFor(p)), undefined);
    } finally {
      await t.close();
    }
  });
});

describe("the TLS files reloaded on SIGHUP", () => {
  it("new handshakes use the new client CA while open connections keep theirs; a reload that fails keeps the material in use and says why", async () => {
    const pki = testPki();
    // SIGHUP alone: with the files watched, a slow SIGHUP could find the reload done already.
    const gw = await startGatewayProcess({ databaseUrl: pgUrl(), env: { RELOAD_ON_FILE_CHANGE: "false" } });
    const clients: ReturnType<typeof createClient>[] = [];
    await gw.adminClient().admin().createTenant(gw.platform, "");
    const open = (cert: CertificateAndKey) => {
      const client = createClient({ ...gw.clientOptions(gw.platformKey), tls: { ca: pki.ca.cert, ...cert }, retry: { maxAttempts: 1 } });
      clients.push(client);
      return client.platform(gw.platform);
    };
    const works = async (db: ReturnType<typeof open>) => (await db.query("SELECT 1 AS one")).rows[0]?.one === 1;
    try {
      const newCa = createCertificateAuthority("db-gateway rotated test CA");
      const newCert = issueCertificate(newCa, {
        commonName: gw.platform,
        usage: "client",
        uris: [spiffeIdOf({ kind: "platform", platform: gw.platform })],
        key: pki.client.key,
      });
      const before = open(pki.clientFor(gw.platform));
      assert.ok(await works(before));
      await assert.rejects(open(newCert).query("SELECT 1"));

      await writeFile(join(gw.tlsDir, "ca.crt"), newCa.cert);
      gw.kill("SIGHUP");
      await waitFor(async () => /"trigger":"SIGHUP","tls":true[^\n]*"msg":"reloaded/.test(gw.output()), 10_000, "the reload");
      assert.ok(await works(before), "a connection made before the reload is kept");
      assert.ok(await works(open(newCert)), "a certificate from the new CA is accepted");
      await assert.rejects(open(pki.clientFor(gw.platform)).query("SELECT 1"), "a new handshake with the old CA's certificate is refused");

      await writeFile(join(gw.tlsDir, "server.key"), "not a key");
      gw.kill("SIGHUP");
      await waitFor(async () => gw.output().includes('"msg":"reload failed'), 10_000, "the failed reload");
      assert.ok(await works(open(newCert)), "the material in use stays");
    } finally {
      for (const client of clients) client.close();
      await gw.close();
      await dropPlatformDatabases([gw.platform]);
    }
  });
});
