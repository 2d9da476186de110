// Databases created or dropped out of band or by another gateway instance: routed at once, or NOT_FOUND with their pool closed.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code, GatewayError } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { waitFor } from "./helpers/wait.js";

describe("registry: databases created or dropped elsewhere", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1, overrides: { registryRefreshMillis: 300 } });
    platform = t.platforms[0]!;
  });
  after(() => t.close());

  it("a database created out of band is routed at once, under its own role", async () => {
    const admin = await t.pg();
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(`${platform}_outofband`)}`);
    const { rows } = await t.client().platform(platform).tenant("outofband").query("SELECT current_user AS user");
    assert.deepEqual(rows, [{ user: `${platform}_outofband` }]);
  });

  it("a tenant created by another gateway instance is routed by this one", async () => {
    const second = await startTestGateway({
      platforms: 0,
      overrides: { platformKeys: new Map([[platform, [t.keys[platform]!]]]), adminKeys: [t.adminKey], gatewaySecret: t.gatewaySecret },
    });
    try {
      await second.adminClient().admin().createTenant(platform, "elsewhere");
    } finally {
      await second.close();
    }
    const { rows } = await t.client().platform(platform).tenant("elsewhere").query("SELECT 1 AS one");
    assert.deepEqual(rows, [{ one: 1 }]);
  });

  it("a database dropped out of band is NOT_FOUND and its pool is closed", async () => {
    const tenant = t.client().platform(platform).tenant("outofband");
    await tenant.query("SELECT 1");
    const admin = await t.pg();
    await admin.query(`DROP DATABASE ${pg.escapeIdentifier(`${platform}_outofband`)} WITH (FORCE)`);
    await waitFor(
      async () => {
        const c = t.adminClient();
        try {
          return !(await c.raw.admin.getPoolStats({})).pools.some((p) => p.database === `${platform}_outofband`);
        } finally {
          c.close();
        }
      },
      5_000,
      "pool closed",
    );
    await rejectsWith(tenant.query("SELECT 1"), Code.NotFound, "DATABASE_NOT_FOUND");
  });

  it("a database PostgreSQL marks invalid (datconnlimit -2: a DROP DATABASE under way, or interrupted) is NOT_FOUND, looked up or refreshed", async () => {
    // DROP DATABASE marks the database so before its slow part (a checkpoint), while its row stays visible until it commits:
    // a refresh or look-up that took the row then routed calls to a tenant the gateway had just dropped.
    const name = `${platform}_halfdropped`;
    const admin = await t.pg();
    const mark = (limit: number) => admin.query("UPDATE pg_database SET datconnlimit = $1 WHERE datname = $2", [limit, name]);
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    await mark(-2);
    const tenant = t.client().platform(platform).tenant("halfdropped");
    await rejectsWith(tenant.query("SELECT 1"), Code.NotFound, "DATABASE_NOT_FOUND");
    await mark(-1);
    // Looked up again once the miss is forgotten (a second).
    await waitFor(
      () =>
        tenant.query("SELECT 1").then(
          () => true,
          () => false,
        ),
      5_000,
      "routed once valid",
    );
    await mark(-2);
    await waitFor(
      () =>
        tenant.query("SELECT 1").then(
          () => false,
          (err: unknown) => GatewayError.from(err).code === Code.NotFound,
        ),
      5_000,
      "NOT_FOUND after a refresh",
    );
    await rejectsWith(tenant.query("SELECT 1"), Code.NotFound, "DATABASE_NOT_FOUND");
  });
});
