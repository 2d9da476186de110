// A cluster that is down when a gateway starts, and what the gateway then does with its tenants, their names and the other clusters' backups.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { createClient, type GatewayClient } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { postgresForTools, type ToolsPostgres } from "./helpers/postgres-for-tools.js";

async function databasesOn(url: string, name: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])).rowCount ?? 0;
  } finally {
    await client.end();
  }
}

describe("a cluster down when a gateway starts", () => {
  let first: ToolsPostgres;
  let second: ToolsPostgres;
  let dir: string;
  let t: TestGateway;
  let other: TestGateway;
  let platform: string;
  let client: GatewayClient;
  let otherAdmin: GatewayClient;

  before(async () => {
    first = await postgresForTools({ fresh: true });
    second = await postgresForTools({ fresh: true });
    dir = await mkdtemp(join(tmpdir(), "db-gateway-review-"));
    t = await startTestGateway({
      platforms: 1,
      databaseUrl: first.url,
      overrides: { clusters: [{ name: "second", url: second.url }], backupDir: dir, pgBinDir: first.binDir },
    });
    platform = t.platforms[0]!;
    const admin = t.adminClient().admin();
    assert.equal((await admin.createTenant(platform, "kept", { cluster: "second" })).cluster, "second");
    await t.client().platform(platform).tenant("kept").query("CREATE TABLE note AS SELECT 'precious' AS body");
    await admin.createTenant(platform, "here", { cluster: "primary" });
    await second.stop();
    other = await startTestGateway({
      platforms: 0,
      createMain: false,
      databaseUrl: first.url,
      overrides: {
        clusters: [{ name: "second", url: second.url }],
        platformKeys: new Map([[platform, [t.keys[platform]!]]]),
        adminKeys: [t.adminKey],
        gatewaySecret: t.gatewaySecret,
        catalogDatabase: `catalog_${platform}`,
        backupDir: dir,
        pgBinDir: first.binDir,
        healthCheckMillis: 200,
      },
    });
    client = createClient({ ...t.clientOptions(t.keys[platform]!), url: other.url });
    otherAdmin = createClient({ ...t.clientOptions(t.adminKey), url: other.url });
  });
  after(async () => {
    client?.close();
    otherAdmin?.close();
    await other?.close();
    await t?.close();
    await rm(dir, { recursive: true, force: true });
    await first?.close();
    await second?.close();
  });

  it("serves and backs up the tenants of the cluster that answers", async () => {
    assert.deepEqual((await client.platform(platform).tenant("here").query("SELECT 1 AS one")).rows, [{ one: 1 }]);
    const { files } = await otherAdmin.raw.admin.backup({ platform, tenantIds: ["here"] });
    assert.equal(files.length, 1);
  });

  it("answers UNAVAILABLE, not NOT_FOUND, for a tenant placed on the cluster that does not answer", async () => {
    await rejectsWith(client.platform(platform).tenant("kept").query("SELECT body FROM note"), Code.Unavailable, "DATABASE_UNAVAILABLE");
  });

  it("does not create a tenant placed on the stopped cluster a second time on another: a name exists once in the fleet", async () => {
    const made = await otherAdmin
      .admin()
      .createTenant(platform, "kept")
      .then(
        (d) => `created on ${d.cluster}`,
        () => "refused",
      );
    assert.equal(made, "refused");
    assert.equal(await databasesOn(first.url, `${platform}_kept`), 0, "no second, empty copy of the tenant on the primary");
  });
});
