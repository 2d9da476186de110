// A gRPC client that is not ours (`buf curl`) over mutual TLS: services found through reflection, health checked, a query run.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { testPki } from "./helpers/pki.js";

const run = promisify(execFile);
const BUF = new URL("../node_modules/.bin/buf", import.meta.url).pathname;

/**
 * A gRPC client that is not ours: `buf curl` (Go, grpc-go's protocol stack)
 * discovers the services through server reflection, with no .proto files.
 */
describe("a foreign gRPC client (buf curl) over mTLS, through reflection", () => {
  let t: TestGateway;
  let dir: string;
  let tlsArgs: string[];
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    dir = await mkdtemp(join(tmpdir(), "db-gateway-certs-"));
    const pki = testPki();
    await writeFile(join(dir, "ca.crt"), pki.ca.cert);
    await writeFile(join(dir, "client.crt"), pki.clientFor(t.platforms[0]!).cert);
    await writeFile(join(dir, "client.key"), pki.clientFor(t.platforms[0]!).key);
    tlsArgs = ["--protocol", "grpc", "--cacert", join(dir, "ca.crt"), "--cert", join(dir, "client.crt"), "--key", join(dir, "client.key")];
  });
  after(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function bufCurl(...args: string[]): Promise<string> {
    const { stdout } = await run(BUF, ["curl", ...tlsArgs, ...args], { timeout: 30_000 });
    return stdout;
  }

  it("lists every service", async () => {
    const services = (await bufCurl("--list-services", t.url)).trim().split("\n").sort();
    assert.deepEqual(services, ["dbgateway.v1.AdminService", "dbgateway.v1.QueryService", "grpc.health.v1.Health"]);
  });

  it("lists them through the older v1alpha reflection protocol too", async () => {
    const services = (await bufCurl("--reflect-protocol", "grpc-v1alpha", "--list-services", t.url)).trim().split("\n").sort();
    assert.deepEqual(services, ["dbgateway.v1.AdminService", "dbgateway.v1.QueryService", "grpc.health.v1.Health"]);
  });

  it("streams the serving status from Health/Watch", async () => {
    const child = spawn(BUF, ["curl", ...tlsArgs, `${t.url}/grpc.health.v1.Health/Watch`], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    try {
      const deadline = Date.now() + 30_000;
      while (!output.includes("}") && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(JSON.parse(output), { status: "SERVING" });
      assert.equal(child.exitCode, null, "the watch stays open");
    } finally {
      child.kill();
    }
  });

  it("passes the health check, for the server and for each service", async () => {
    assert.deepEqual(JSON.parse(await bufCurl(`${t.url}/grpc.health.v1.Health/Check`)), { status: "SERVING" });
    for (const service of ["dbgateway.v1.QueryService", "dbgateway.v1.AdminService"]) {
      const body = JSON.stringify({ service });
      assert.deepEqual(JSON.parse(await bufCurl("-d", body, `${t.url}/grpc.health.v1.Health/Check`)), { status: "SERVING" });
    }
  });

  it("runs a parameterized query, with rows readable as JSON", async () => {
    const platform = t.platforms[0]!;
    const body = JSON.stringify({
      platform,
      sql: "SELECT $1::int8 + 1 AS next, $2::text AS label, NULL::text AS nothing",
      params: [{ int64Value: "9007199254740992" }, { textValue: "hi" }],
    });
    const response = JSON.parse(await bufCurl("-H", `x-api-key: ${t.keys[platform]}`, "-d", body, `${t.url}/dbgateway.v1.QueryService/Query`));
    assert.deepEqual(response.result.rows, [["9007199254740993", "hi", null]]);
    assert.deepEqual(
      response.result.columns.map((c: { name: string; typeOid: number }) => [c.name, c.typeOid]),
      [
        ["next", 20],
        ["label", 25],
        ["nothing", 25],
      ],
    );
    assert.equal(response.result.command, "SELECT");
    assert.equal(response.result.rowsAffected, "1");
  });

  it("is refused without a client certificate", async () => {
    const withoutCert = ["curl", "--protocol", "grpc", "--cacert", join(dir, "ca.crt"), `${t.url}/grpc.health.v1.Health/Check`];
    await assert.rejects(run(BUF, withoutCert, { timeout: 30_000 }));
  });
});
