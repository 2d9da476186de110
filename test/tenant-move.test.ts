// MoveTenant between two real clusters with wal_level = logical: no acknowledged write lost under load, nothing served from the source after the flip, sequences continued, an interrupted move resumed, and clear refusals.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { createClient, GatewayError } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { keyLists, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { postgresForTools, type ToolsPostgres } from "./helpers/postgres-for-tools.js";

const LOGICAL = { wal_level: "logical", max_replication_slots: "10", max_wal_senders: "10" };

/** Runs `fn` on a direct superuser connection to a database of the server at `url`. */
async function direct<T>(url: string, database: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const u = new URL(url);
  u.pathname = `/${database}`;
  const client = new pg.Client({ connectionString: u.toString() });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function databasesOn(url: string, prefix: string): Promise<string[]> {
  return direct(url, "postgres", async (c) =>
    (await c.query<{ datname: string }>("SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1", [prefix])).rows.map((r) => r.datname),
  );
}

const millis = (d: { seconds: bigint; nanos: number } | undefined) => Number(d?.seconds ?? 0n) * 1000 + (d?.nanos ?? 0) / 1e6;

describe("moving a tenant between clusters", () => {
  let east: ToolsPostgres;
  let west: ToolsPostgres;
  let t: TestGateway;
  let platform: string;

  before(async () => {
    [east, west] = await Promise.all([postgresForTools({ settings: LOGICAL }), postgresForTools({ settings: LOGICAL })]);
    t = await startTestGateway({
      platforms: 1,
      overrides: {
        clusters: [
          { name: "east", url: east.url },
          { name: "west", url: west.url },
        ],
        pgBinDir: east.binDir,
      },
    });
    platform = t.platforms[0]!;
  });
  after(async () => {
    await t?.close();
    await Promise.all([east?.close(), west?.close()]);
  });

  it("moves a tenant under steady writes: every acknowledged write is on the target, sequences go on, nothing is served from the source after", async () => {
    const admin = t.adminClient().admin();
    assert.equal((await admin.createTenant(platform, "m1", { cluster: "east" })).cluster, "east");
    const db = t.client().platform(platform).tenant("m1");
    await db.query("CREATE TABLE item (id bigserial PRIMARY KEY, k text UNIQUE NOT NULL, phase text NOT NULL)");
    const acknowledged: { k: string; id: string; phase: string }[] = [];
    const failed: string[] = [];
    let phase = "before";
    let stop = false;
    let n = 0;
    const writer = async () => {
      while (!stop) {
        const k = `w${n++}`;
        const at = phase;
        try {
          const { rows } = await db.query("INSERT INTO item (k, phase) VALUES ($1, $2) RETURNING id::text", [k, at]);
          acknowledged.push({ k, id: (rows[0] as { id: string }).id, phase: at });
        } catch (err) {
          failed.push(`${at} ${k}: ${(err as Error).message}`);
        }
      }
    };
    const writers = Array.from({ length: 4 }, () => writer());
    await new Promise((resolve) => setTimeout(resolve, 500));
    phase = "during";
    const moved = await admin.moveTenant(platform, "m1", "west", { maxPauseMs: 5_000, timeoutMs: 120_000 });
    phase = "after";
    await new Promise((resolve) => setTimeout(resolve, 500));
    stop = true;
    await Promise.all(writers);

    assert.equal(moved.database?.cluster, "west");
    assert.equal(moved.sourceCluster, "east");
    const pause = millis(moved.pause);
    assert.ok(pause > 0 && pause < 5_000, `pause ${pause} ms`);
    assert.match(moved.catchUpLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.ok(moved.tables >= 1);
    assert.ok(moved.sequences >= 1, "the serial column's sequence was copied");
    assert.match(moved.keptSource, new RegExp(`^${platform}_m1-moved-\\d{14}$`));
    assert.equal(moved.resumed, false);
    console.log(
      `# pause ${pause.toFixed(1)} ms, move ${millis(moved.duration).toFixed(0)} ms, ${acknowledged.length} writes acknowledged, ${failed.length} failed`,
    );

    for (const p of ["before", "during", "after"])
      assert.ok(
        acknowledged.some((w) => w.phase === p),
        `writes acknowledged ${p} the move`,
      );
    // Writes after the flip got new ids from the target's sequence: no duplicate key, and above every id of the source.
    assert.deepEqual(
      failed.filter((f) => f.includes("duplicate key")),
      [],
    );
    const onTarget = await direct(west.url, `${platform}_m1`, async (c) => (await c.query<{ k: string; id: string }>("SELECT k, id::text FROM item")).rows);
    const there = new Map(onTarget.map((r) => [r.k, r.id]));
    const missing = acknowledged.filter((w) => there.get(w.k) !== w.id);
    assert.deepEqual(missing, [], "every acknowledged write is on the target, with its id");

    // The source is kept under a name no tenant has, and nothing of the tenant's is served from it.
    assert.deepEqual(await databasesOn(east.url, `${platform}_m1`), [moved.keptSource]);
    await direct(east.url, moved.keptSource, (c) => c.query("INSERT INTO item (k, phase) VALUES ('marker', 'source')"));
    assert.deepEqual((await db.query("SELECT k FROM item WHERE k = 'marker'")).rows, []);
    const sessionsOnEast = await direct(east.url, "postgres", async (c) =>
      Number((await c.query("SELECT count(*) AS n FROM pg_stat_activity WHERE usename = $1", [`${platform}_m1`])).rows[0].n),
    );
    assert.equal(sessionsOnEast, 0);
    // The replication is gone from both sides.
    assert.equal(await direct(east.url, "postgres", async (c) => (await c.query("SELECT 1 FROM pg_replication_slots")).rowCount), 0);
    assert.equal(await direct(west.url, `${platform}_m1`, async (c) => (await c.query("SELECT 1 FROM pg_subscription")).rowCount), 0);
    assert.deepEqual(
      (await admin.listDatabases(platform)).filter((d) => d.tenantId === "m1").map((d) => d.cluster),
      ["west"],
    );
    const { events } = await t.adminClient().raw.admin.listAuditEvents({ platform });
    const event = events.find((e) => e.action === "tenant.move");
    assert.equal(event?.outcome, "OK");
    assert.equal(event?.detail.source, "east");
  });

  it("writes through another gateway of the same catalog are all on the target too, and it serves the target after the flip", async () => {
    const second = await startTestGateway({
      platforms: 0,
      createMain: false,
      overrides: {
        platformKeys: keyLists(t.keys),
        adminKeys: [t.adminKey],
        gatewaySecret: t.gatewaySecret,
        catalogDatabase: `catalog_${platform}`,
        clusters: [
          { name: "east", url: east.url },
          { name: "west", url: west.url },
        ],
        pgBinDir: east.binDir,
      },
    });
    const viaSecond = createClient(second.clientOptions(t.keys[platform]!));
    try {
      const admin = t.adminClient().admin();
      await admin.createTenant(platform, "g1", { cluster: "east" });
      const dbs = [t.client().platform(platform).tenant("g1"), viaSecond.platform(platform).tenant("g1")];
      await dbs[0]!.query("CREATE TABLE item (id bigserial PRIMARY KEY, k text UNIQUE NOT NULL)");
      const acknowledged: string[] = [];
      const failed = new Map<string, number>();
      let stop = false;
      let n = 0;
      const writer = async (which: number) => {
        while (!stop) {
          const k = `g${which}-${n++}`;
          try {
            await dbs[which]!.query("INSERT INTO item (k) VALUES ($1)", [k]);
            acknowledged.push(k);
          } catch (err) {
            const reason = err instanceof GatewayError ? err.reason : String(err);
            failed.set(reason, (failed.get(reason) ?? 0) + 1);
          }
        }
      };
      const writers = [0, 0, 1, 1].map((which) => writer(which));
      await new Promise((resolve) => setTimeout(resolve, 300));
      const moved = await admin.moveTenant(platform, "g1", "west", { timeoutMs: 120_000 });
      await new Promise((resolve) => setTimeout(resolve, 500));
      stop = true;
      await Promise.all(writers);
      console.log(
        `# two gateways: pause ${millis(moved.pause).toFixed(1)} ms, ${acknowledged.length} acknowledged, failed ${JSON.stringify(Object.fromEntries(failed))}`,
      );
      assert.ok(acknowledged.some((k) => k.startsWith("g1-")) && acknowledged.some((k) => k.startsWith("g0-")));
      const onTarget = new Set(
        await direct(west.url, `${platform}_g1`, async (c) => (await c.query<{ k: string }>("SELECT k FROM item")).rows.map((r) => r.k)),
      );
      assert.deepEqual(
        acknowledged.filter((k) => !onTarget.has(k)),
        [],
        "every write acknowledged by either gateway is on the target",
      );
      await direct(east.url, moved.keptSource, (c) => c.query("INSERT INTO item (k) VALUES ('marker')"));
      assert.deepEqual((await dbs[1]!.query("SELECT k FROM item WHERE k = 'marker'")).rows, []);
      assert.equal((await dbs[1]!.query("SELECT count(*)::int AS n FROM item")).rows[0]!.n, onTarget.size);
    } finally {
      viaSecond.close();
      await second.close();
    }
  });

  it("a move that fails or is cut off leaves the tenant on its source, serving; the next run resumes and completes", async () => {
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "m2", { cluster: "east" });
    const db = t.client().platform(platform).tenant("m2");
    await db.query("CREATE TABLE note (id serial PRIMARY KEY, body text)");
    await db.query("INSERT INTO note (body) SELECT 'row ' || g FROM generate_series(1, 100) g");

    // A pause of 1 ms cannot be kept: the switch is undone once the target is made and subscribed.
    await rejectsWith(admin.moveTenant(platform, "m2", "west", { maxPauseMs: 1 }), Code.Aborted, "MOVE_PAUSE_EXCEEDED");
    assert.equal((await admin.listDatabases(platform)).find((d) => d.tenantId === "m2")?.cluster, "east");
    await db.query("INSERT INTO note (body) VALUES ('after the failed switch')");
    assert.equal(
      await direct(east.url, `${platform}_m2`, async (c) => (await c.query("SELECT 1 FROM note WHERE body = 'after the failed switch'")).rowCount),
      1,
    );
    const recorded = await direct(
      t.databaseUrl,
      `catalog_${platform}`,
      async (c) => (await c.query("SELECT phase, target, last_error FROM tenant_move WHERE database = $1", [`${platform}_m2`])).rows[0],
    );
    assert.equal(recorded.phase, "copying");
    assert.match(recorded.last_error, /longest pause/);

    // Cut off by its deadline while it runs: still on the source, serving.
    await assert.rejects(admin.moveTenant(platform, "m2", "west", { timeoutMs: 5 }));
    await db.query("INSERT INTO note (body) VALUES ('after the cut')");
    assert.equal((await admin.listDatabases(platform)).find((d) => d.tenantId === "m2")?.cluster, "east");

    // The cut-off run stops on the gateway soon after its client gave up: until then, MOVE_IN_PROGRESS.
    let moved: Awaited<ReturnType<typeof admin.moveTenant>> | undefined;
    let inProgress = 0;
    while (moved === undefined) {
      try {
        moved = await admin.moveTenant(platform, "m2", "west", { dropSource: true, timeoutMs: 120_000 });
      } catch (err) {
        if (!(err instanceof GatewayError && err.reason === "MOVE_IN_PROGRESS") || ++inProgress > 100) throw err;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    assert.equal(moved.resumed, true, "the subscription left by the first run was reused");
    assert.equal(moved.keptSource, "");
    assert.deepEqual(await databasesOn(east.url, `${platform}_m2`), []);
    const rows = await db.query("SELECT count(*)::int AS n, max(id) AS top FROM note");
    assert.deepEqual(rows.rows, [{ n: 102, top: 102 }]);
    // The serial goes on from the source's value.
    assert.deepEqual((await db.query("INSERT INTO note (body) VALUES ('on west') RETURNING id")).rows, [{ id: 103 }]);
  });

  it("refuses a move to the same cluster, to an unknown one, of an unknown tenant, from a cluster without logical WAL, and of a table without a key", async () => {
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "r1", { cluster: "east" });
    await rejectsWith(admin.moveTenant(platform, "r1", "east"), Code.FailedPrecondition, "MOVE_TO_SAME_CLUSTER");
    await rejectsWith(admin.moveTenant(platform, "r1", "nowhere"), Code.NotFound, "CLUSTER_NOT_FOUND");
    await rejectsWith(admin.moveTenant(platform, "nobody", "west"), Code.NotFound, "DATABASE_NOT_FOUND");
    // The run's own PostgreSQL (the catalog's cluster) has wal_level replica.
    await admin.createTenant(platform, "r2", { cluster: "primary" });
    const refused = await rejectsWith(admin.moveTenant(platform, "r2", "west"), Code.FailedPrecondition, "MOVE_NOT_POSSIBLE");
    assert.match(refused.message, /wal_level/);
    await t.client().platform(platform).tenant("r1").query("CREATE TABLE loose (v int)");
    const loose = await rejectsWith(admin.moveTenant(platform, "r1", "west"), Code.FailedPrecondition, "MOVE_NOT_POSSIBLE");
    assert.match(loose.message, /loose/);
    assert.deepEqual(await databasesOn(west.url, `${platform}_r`), [], "nothing was made on the target");
  });
});
