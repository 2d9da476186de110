// A gateway process under many concurrent oversized results: bounded memory, other tenants served, nothing leaked.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code, createClient, GatewayError, type GatewayClient } from "../client-sdk/src/index.js";
import { startGatewayProcess, type GatewayProcess } from "./helpers/gateway-process.js";
import { dropPlatformDatabases, pgUrl } from "./helpers/gateway.js";
import { waitFor } from "./helpers/wait.js";

const MIB = 1024 * 1024;
/** Small limits, so that the test takes seconds: each call may buffer 4 MiB, all calls together 24 MiB. */
const MAX_RESULT_BYTES = 4 * MIB;
const MAX_BUFFERED_RESULT_BYTES = 24 * MIB;
/** Oversized results at once: each is 40 MB, ten times the limit. */
const OVERSIZED = 16;
const OVERSIZED_SQL = "SELECT g, repeat('x', 2000) AS pad FROM generate_series(1, 20000) g";
/**
 * How much the gateway's RSS may grow over its idle size meanwhile: the
 * budget, with room for the buffers not yet collected (it grew by 73 and
 * 92 MiB in two runs; without the limits, by 736 MiB).
 */
const RSS_GROWTH_BOUND = 160 * MIB;

describe("buffered results under load: a gateway process", () => {
  let gw: GatewayProcess;
  let admin: pg.Client;
  let unary: GatewayClient;
  let others: GatewayClient;
  before(async () => {
    gw = await startGatewayProcess({
      databaseUrl: pgUrl(),
      env: { MAX_RESULT_BYTES: String(MAX_RESULT_BYTES), MAX_BUFFERED_RESULT_BYTES: String(MAX_BUFFERED_RESULT_BYTES) },
    });
    const tenants = gw.adminClient().admin();
    for (const tenant of ["big_a", "big_b", "clinic_1", "clinic_2"]) await tenants.createTenant(gw.platform, tenant);
    unary = createClient({ ...gw.clientOptions(gw.platformKey), coalesce: false });
    others = createClient(gw.clientOptions(gw.platformKey));
    admin = new pg.Client({ connectionString: pgUrl() });
    await admin.connect();
  });
  after(async () => {
    unary?.close();
    others?.close();
    await admin?.end();
    await gw?.close();
    if (gw) await dropPlatformDatabases([gw.platform]);
  });

  it("stays within its memory bound and keeps serving other tenants; the oversized calls get RESOURCE_EXHAUSTED and leave no connection behind", async () => {
    const platform = gw.client().platform(gw.platform);
    const clinics = ["clinic_1", "clinic_2"].map((tenant) => others.platform(gw.platform).tenant(tenant));
    // Warm: connections open, code loaded; then the idle size.
    for (let i = 0; i < 20; i++) await Promise.all(clinics.map((c) => c.query("SELECT $1::int AS n", [i])));
    await unary.platform(gw.platform).tenant("big_a").query("SELECT 1");
    await platform.tenant("big_b").query("SELECT 1");
    const idleRss = await gw.rssBytes();

    let peakRss = idleRss;
    const notReady: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peakRss = Math.max(peakRss, await gw.rssBytes());
        const ready = await fetch(`http://127.0.0.1:${gw.metricsPort}/health/ready`);
        if (ready.status !== 200) notReady.push(ready.status);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();

    // Other tenants' point queries, checked, for as long as the oversized calls run.
    let loadDone = false;
    let served = 0;
    const failures: string[] = [];
    const otherTenants = Promise.all(
      clinics.map(async (clinic, c) => {
        for (let i = 0; !loadDone; i++) {
          try {
            const { rows } = await clinic.query<{ n: number; db: string }>("SELECT $1::int AS n, current_database() AS db", [i]);
            assert.deepEqual(rows, [{ n: i, db: `${gw.platform}_clinic_${c + 1}` }]);
            served++;
          } catch (err) {
            failures.push(String(err));
          }
        }
      }),
    );

    // Half as Query calls, half over the SDK's QueryStream, each half on a tenant database of its own.
    const oversized = await Promise.allSettled([
      ...Array.from({ length: OVERSIZED / 2 }, () => unary.platform(gw.platform).tenant("big_a").query(OVERSIZED_SQL)),
      ...Array.from({ length: OVERSIZED / 2 }, () => platform.tenant("big_b").query(OVERSIZED_SQL)),
    ]);
    loadDone = true;
    await otherTenants;
    sampling = false;
    await sampler;

    const growth = peakRss - idleRss;
    assert.ok(
      growth < RSS_GROWTH_BOUND,
      `RSS grew by ${(growth / MIB).toFixed(0)} MiB (idle ${(idleRss / MIB).toFixed(0)} MiB), more than ${RSS_GROWTH_BOUND / MIB} MiB`,
    );
    for (const outcome of oversized) {
      assert.equal(outcome.status, "rejected", "an oversized result was served whole");
      const error = GatewayError.from(outcome.reason);
      assert.equal(Code[error.code], Code[Code.ResourceExhausted], error.message);
      assert.ok(["RESULT_TOO_LARGE", "RESULT_MEMORY_EXHAUSTED"].includes(error.reason), error.reason);
    }
    assert.deepEqual(failures, [], "other tenants' calls failed");
    assert.ok(served > 0, "other tenants were served meanwhile");
    assert.deepEqual(notReady, [], "readiness held");

    // Nothing left behind: no statement still running, no connection busy, every byte of the budget back.
    await waitFor(
      async () => {
        const { rows } = await admin.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE starts_with(datname, $1) AND state <> 'idle' AND pid <> pg_backend_pid()",
          [`${gw.platform}_`],
        );
        return rows[0]!.n === 0;
      },
      10_000,
      "every backend of the platform's databases idle",
    );
    await waitFor(
      async () => {
        const stats = await gw.adminClient().admin().getPoolStats(gw.platform);
        return stats.pools.every((p) => p.busy === 0 && p.waiting === 0 && p.connecting === 0);
      },
      10_000,
      "every pool's connections idle",
    );
    const metrics = await (await fetch(`http://127.0.0.1:${gw.metricsPort}/metrics`)).text();
    assert.match(metrics, /^db_gateway_buffered_result_bytes 0$/m);
    // The connections the oversized calls used serve calls again.
    assert.deepEqual((await unary.platform(gw.platform).tenant("big_a").query("SELECT 7 AS n")).rows, [{ n: 7 }]);
    assert.deepEqual((await platform.tenant("big_b").query("SELECT 8 AS n")).rows, [{ n: 8 }]);
  });
});
