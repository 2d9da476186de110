// Tenants over two PostgreSQL clusters: placement by policy or by request, routing, a cluster's connection cap, and a cluster that goes down failing only its own tenants' calls.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { createClient } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { asSuperuser, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { startOwnPostgres, type OwnPostgres } from "./helpers/own-postgres.js";
import { postgresForTools } from "./helpers/postgres-for-tools.js";
import { waitFor } from "./helpers/wait.js";

/** Runs `fn` on a direct superuser connection to a database of the server at `url`. */
function direct<T>(url: string, database: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  return asSuperuser(database, fn, url);
}

async function databasesOn(url: string, prefix: string): Promise<string[]> {
  return direct(url, "postgres", async (c) =>
    (await c.query<{ datname: string }>("SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1", [prefix])).rows.map((r) => r.datname),
  );
}

async function health(t: TestGateway): Promise<{ status: string; clusters: Record<string, { connected: boolean }> }> {
  return (await fetch(`${t.httpUrl}/health`)).json() as Promise<{ status: string; clusters: Record<string, { connected: boolean }> }>;
}

describe("several clusters", () => {
  let second: OwnPostgres;
  let t: TestGateway;
  let platform: string;

  before(async () => {
    second = await startOwnPostgres();
    t = await startTestGateway({
      platforms: 1,
      overrides: { clusters: [{ name: "second", url: second.url, maxConnections: 2 }], healthCheckMillis: 200 },
    });
    platform = t.platforms[0]!;
  });
  after(async () => {
    await t?.close();
    await second?.close();
  });

  it("places each new tenant on the cluster with the fewest, serves it there, and says where", async () => {
    const admin = t.adminClient().admin();
    // The primary holds the platform's main database: the first tenant goes to the empty second cluster, then they alternate.
    const made = [];
    for (const id of ["a1", "a2", "a3"]) made.push(await admin.createTenant(platform, id));
    assert.deepEqual(
      made.map((d) => d.cluster),
      ["second", "primary", "second"],
    );
    assert.deepEqual(await databasesOn(second.url, `${platform}_`), [`${platform}_a1`, `${platform}_a3`]);
    assert.deepEqual(await databasesOn(t.databaseUrl, `${platform}_`), [`${platform}_a2`, `${platform}_main`]);
    const listed = await admin.listDatabases(platform);
    assert.deepEqual(
      listed.map((d) => [d.name, d.cluster]),
      [
        [`${platform}_a1`, "second"],
        [`${platform}_a2`, "primary"],
        [`${platform}_a3`, "second"],
        [`${platform}_main`, "primary"],
      ],
    );

    const db = t.client().platform(platform);
    for (const id of ["a1", "a2"]) {
      await db.tenant(id).query("CREATE TABLE note (body text)");
      await db.tenant(id).query("INSERT INTO note VALUES ($1)", [`hello ${id}`]);
      assert.deepEqual((await db.tenant(id).query("SELECT body FROM note")).rows, [{ body: `hello ${id}` }]);
    }
    // The rows are where the placement says, as the tenant's own role.
    const onSecond = await direct(
      second.url,
      `${platform}_a1`,
      async (c) => (await c.query("SELECT body, current_user AS u FROM note, pg_tables LIMIT 1")).rows,
    );
    assert.equal(onSecond[0].body, "hello a1");
    assert.equal(
      await direct(second.url, "postgres", async (c) => (await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [`${platform}_a2`])).rowCount),
      0,
    );

    // The catalog records the placements.
    const placed = await direct(
      t.databaseUrl,
      `catalog_${platform}`,
      async (c) =>
        (
          await c.query<{ database: string; cluster: string }>("SELECT database, cluster FROM tenant_placement WHERE starts_with(database, $1) ORDER BY 1", [
            `${platform}_`,
          ])
        ).rows,
    );
    assert.deepEqual(
      placed.map((r) => [r.database, r.cluster]),
      [
        [`${platform}_a1`, "second"],
        [`${platform}_a2`, "primary"],
        [`${platform}_a3`, "second"],
        [`${platform}_main`, "primary"],
      ],
    );
  });

  it("creates on the cluster a request names, refuses an unknown one and a template on another cluster", async () => {
    const admin = t.adminClient().admin();
    assert.equal((await admin.createTenant(platform, "b1", { cluster: "second" })).cluster, "second");
    assert.equal((await admin.createTenant(platform, "b2", { cluster: "primary" })).cluster, "primary");
    await rejectsWith(admin.createTenant(platform, "b3", { cluster: "nowhere" }), Code.NotFound, "CLUSTER_NOT_FOUND");
    await rejectsWith(
      admin.createTenant(platform, "b4", { template: `${platform}_b1`, cluster: "primary" }),
      Code.FailedPrecondition,
      "TEMPLATE_ON_OTHER_CLUSTER",
    );
    // A copy goes where its template is.
    assert.equal((await admin.createTenant(platform, "b5", { template: `${platform}_b1` })).cluster, "second");
    // A name exists once in the fleet: not again on the other cluster.
    await rejectsWith(admin.createTenant(platform, "b1", { cluster: "primary" }), Code.AlreadyExists, "DATABASE_EXISTS");
    assert.deepEqual(await databasesOn(t.databaseUrl, `${platform}_b1`), []);
    // More creates at once than the catalog cluster's administrative pool has connections (4): each holds one for its lock.
    const many = ["m1", "m2", "m3", "m4", "m5", "m6"];
    const made = await Promise.all(many.map((id) => admin.createTenant(platform, id, { cluster: "second" })));
    assert.deepEqual(
      made.map((d) => d.cluster),
      many.map(() => "second"),
    );
    await Promise.all(many.map((id) => admin.dropTenant(platform, id)));
    for (const id of ["b1", "b2", "b5"]) await admin.dropTenant(platform, id);
    assert.deepEqual(await databasesOn(second.url, `${platform}_b`), []);
    const roles = await direct(
      second.url,
      "postgres",
      async (c) => (await c.query("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", [`${platform}_b`])).rows,
    );
    assert.deepEqual(roles, [], "the dropped tenants' roles are gone from the second cluster too");
  });

  it("holds at most the cluster's connection cap to it, and serves the other cluster meanwhile", async () => {
    const db = t.client().platform(platform);
    const slow = ["a1", "a3"].flatMap((id) => [1, 2, 3].map(() => db.tenant(id).query("SELECT pg_sleep(0.4)")));
    let most = 0;
    const watching = (async () => {
      const started = Date.now();
      while (Date.now() - started < 1_000) {
        const n = await direct(second.url, "postgres", async (c) =>
          Number(
            (await c.query("SELECT count(*) AS n FROM pg_stat_activity WHERE starts_with(datname, $1) AND usename <> current_user", [`${platform}_`])).rows[0]
              .n,
          ),
        );
        most = Math.max(most, n);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const other = await db.tenant("a2").query("SELECT 1 AS one");
    assert.deepEqual(other.rows, [{ one: 1 }]);
    await Promise.all([...slow, watching]);
    assert.ok(most >= 1 && most <= 2, `connections to the second cluster: at most 2, seen ${most}`);
    const metrics = await (await fetch(`${t.httpUrl}/metrics`)).text();
    assert.match(metrics, /db_gateway_cluster_max_connections\{cluster="second"\} 2/);
    assert.match(metrics, /db_gateway_cluster_connections\{cluster="second"\} [12]/);
  });

  it("fails only a stopped cluster's tenants' calls, as not run, places new tenants elsewhere, and serves them again once it is back", async () => {
    const db = t.client().platform(platform);
    const admin = t.adminClient().admin();
    await second.stop();
    try {
      await waitFor(async () => (await health(t)).clusters.second?.connected === false, 5_000, "the second cluster seen down");
      const h = await health(t);
      assert.equal(h.status, "degraded");
      assert.equal(h.clusters.primary?.connected, true);
      const err = await rejectsWith(db.tenant("a1").query("SELECT body FROM note"), Code.Unavailable, "DATABASE_UNAVAILABLE");
      assert.equal(err.metadata.statement_sent, "false");
      assert.deepEqual((await db.tenant("a2").query("SELECT body FROM note")).rows, [{ body: "hello a2" }]);
      assert.equal((await admin.createTenant(platform, "c1")).cluster, "primary", "the policy skips a cluster that does not answer");
      assert.match(await (await fetch(`${t.httpUrl}/metrics`)).text(), /db_gateway_cluster_up\{cluster="second"\} 0/);
    } finally {
      await second.start();
    }
    await waitFor(async () => (await health(t)).status === "healthy", 10_000, "healthy again");
    await waitFor(
      async () =>
        (await db
          .tenant("a1")
          .query("SELECT body FROM note")
          .then(
            (r) => r.rows[0]?.body as string,
            () => undefined,
          )) === "hello a1",
      10_000,
      "the second cluster's tenant served again",
    );
    await admin.dropTenant(platform, "c1");
  });

  it("a second gateway on the same catalog serves every tenant from the cluster its placement names", async () => {
    const other = await startTestGateway({
      platforms: 0,
      createMain: false,
      overrides: {
        clusters: [{ name: "second", url: second.url }],
        platformKeys: new Map([[platform, [t.keys[platform]!]]]),
        adminKeys: [t.adminKey],
        gatewaySecret: t.gatewaySecret,
        catalogDatabase: `catalog_${platform}`,
      },
    });
    try {
      const client = createClient({ ...t.clientOptions(t.keys[platform]!), url: other.url });
      const db = client.platform(platform);
      assert.deepEqual((await db.tenant("a1").query("SELECT body FROM note")).rows, [{ body: "hello a1" }]);
      assert.deepEqual((await db.tenant("a2").query("SELECT body FROM note")).rows, [{ body: "hello a2" }]);
      // Created through the first gateway, on the second cluster: found by the other at once.
      await t.adminClient().admin().createTenant(platform, "d1", { cluster: "second" });
      assert.deepEqual((await db.tenant("d1").query("SELECT 7 AS seven")).rows, [{ seven: 7 }]);
      // Announced on the catalog: the other gateway's list has a tenant created elsewhere within a second, without a call for it
      // (its registry refresh is a minute away), and loses it as soon once dropped.
      const otherAdmin = createClient({ ...t.clientOptions(t.adminKey), url: other.url }).admin();
      const listed = async () => (await otherAdmin.listDatabases(platform)).map((d) => `${d.name}@${d.cluster}`);
      await t.adminClient().admin().createTenant(platform, "d2");
      await waitFor(async () => (await listed()).includes(`${platform}_d2@primary`), 1_000, "d2 listed by the other gateway");
      await t.adminClient().admin().dropTenant(platform, "d2");
      await waitFor(async () => !(await listed()).includes(`${platform}_d2@primary`), 1_000, "d2 gone from the other gateway's list");
      await t.adminClient().admin().dropTenant(platform, "d1");
      client.close();
    } finally {
      await other.close();
    }
  });
});

describe("cluster capacity", () => {
  it("places no tenant on a full cluster, and says so when all are full", async () => {
    const second = await startOwnPostgres();
    const t = await startTestGateway({
      platforms: 1,
      overrides: { primaryCluster: { name: "main1", capacity: 2 }, clusters: [{ name: "spare", url: second.url, capacity: 1 }] },
    });
    try {
      const admin = t.adminClient().admin();
      const platform = t.platforms[0]!;
      // main1 holds the main database (1 of 2), spare none (0 of 1).
      assert.equal((await admin.createTenant(platform, "x1")).cluster, "spare");
      assert.equal((await admin.createTenant(platform, "x2")).cluster, "main1");
      await rejectsWith(admin.createTenant(platform, "x3"), Code.ResourceExhausted, "CLUSTERS_FULL");
      // An explicit cluster is the operator's choice: capacity limits the policy only.
      assert.equal((await admin.createTenant(platform, "x3", { cluster: "spare" })).cluster, "spare");
    } finally {
      await t.close();
      await second.close();
    }
  });
});

describe("backups, restores and forks across clusters", () => {
  it("backs up a tenant of the second cluster from there, restores and forks it onto whichever cluster the placement picks", async () => {
    const first = await postgresForTools({ fresh: true });
    const second = await postgresForTools({ fresh: true });
    const dir = await mkdtemp(join(tmpdir(), "db-gateway-cluster-backups-"));
    const t = await startTestGateway({
      platforms: 1,
      databaseUrl: first.url,
      overrides: { clusters: [{ name: "second", url: second.url }], backupDir: dir, pgBinDir: first.binDir },
    });
    try {
      const platform = t.platforms[0]!;
      const admin = t.adminClient();
      assert.equal((await admin.admin().createTenant(platform, "src", { cluster: "second" })).cluster, "second");
      const tenant = (id: string) => t.client().platform(platform).tenant(id);
      await tenant("src").query("CREATE TABLE visit (id int PRIMARY KEY, note text)");
      await tenant("src").query("INSERT INTO visit SELECT g, 'visit ' || g FROM generate_series(1, 500) g");

      const { files } = await admin.raw.admin.backup({ platform, tenantIds: ["src"] });
      assert.deepEqual(files[0]!.tableRows, { "public.visit": 500n });
      // Restored under a new name: placed by the policy (the first cluster holds only the main database now, as the second holds src).
      const restored = await admin.raw.admin.restoreTenant({ platform, tenantId: "copy", file: files[0]!.file });
      assert.deepEqual(restored.tableRows, { "public.visit": 500n });
      assert.equal(restored.database?.cluster, "primary");
      assert.deepEqual((await tenant("copy").query("SELECT count(*)::int AS n FROM visit")).rows, [{ n: 500 }]);
      assert.deepEqual(await databasesOn(first.url, `${platform}_copy`), [`${platform}_copy`]);
      // A fork from the second cluster to wherever the placement puts it: its rows and its own role there.
      const forked = await admin.raw.admin.forkTenant({ platform, sourceTenantId: "src", tenantId: "fork" });
      assert.deepEqual(forked.tableRows, { "public.visit": 500n });
      assert.deepEqual((await tenant("fork").query("SELECT count(*)::int AS n, current_user AS who FROM visit")).rows, [{ n: 500, who: `${platform}_fork` }]);
      const verified = await admin.raw.admin.verifyBackup({ file: files[0]!.file });
      assert.equal(verified.ok, true);
    } finally {
      await t.close();
      await rm(dir, { recursive: true, force: true });
      await first.close();
      await second.close();
    }
  });
});
