// Hostile and malformed platform names and tenant ids are INVALID_ARGUMENT, the 63-byte limit holds, and no database is made for them.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

const HOSTILE_TENANT_IDS = [
  "x; drop database postgres",
  'x"; DROP DATABASE postgres; --',
  "../a",
  "a/b",
  "Clinic_001",
  "clinic-001",
  "a b",
  "é",
  "a\u0000b",
  "main",
];

const HOSTILE_PLATFORMS = ["", "MEDSTOREAPP", "x; drop database", "../a", "a_b", "1abc", "p".repeat(59), "ünï"];

describe("identifiers are validated strictly", () => {
  let t: TestGateway;
  let platform: string;
  let databasesBefore: string[];
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    databasesBefore = await databases();
  });
  after(() => t.close());

  async function databases(): Promise<string[]> {
    const admin = await t.pg();
    // Only this file's platform: other test files may create databases at the same time.
    const { rows } = await admin.query<{ datname: string }>("SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1", [`${platform}_`]);
    await admin.end();
    return rows.map((r) => r.datname);
  }

  for (const tenantId of [...HOSTILE_TENANT_IDS, "a".repeat(64)]) {
    it(`tenant_id ${JSON.stringify(tenantId.length > 20 ? `${tenantId.slice(0, 8)}…(${tenantId.length})` : tenantId)} is INVALID_ARGUMENT for Query and CreateTenant`, async () => {
      await rejectsWith(t.client().platform(platform).tenant(tenantId).query("SELECT 1"), Code.InvalidArgument, "INVALID_TENANT_ID");
      await rejectsWith(t.adminClient().admin().createTenant(platform, tenantId), Code.InvalidArgument, "INVALID_TENANT_ID");
      await rejectsWith(t.adminClient().admin().dropTenant(platform, tenantId), Code.InvalidArgument, "INVALID_TENANT_ID");
    });
  }

  for (const name of HOSTILE_PLATFORMS) {
    it(`platform ${JSON.stringify(name.length > 20 ? `${name.slice(0, 8)}…(${name.length})` : name)} is INVALID_ARGUMENT`, async () => {
      await rejectsWith(t.client().platform(name).query("SELECT 1"), Code.InvalidArgument, "INVALID_PLATFORM");
      await rejectsWith(t.adminClient().admin().createTenant(name, "t1"), Code.InvalidArgument, "INVALID_PLATFORM");
      // An empty platform means "all platforms" to ListDatabases.
      if (name !== "") await rejectsWith(t.adminClient().admin().listDatabases(name), Code.InvalidArgument, "INVALID_PLATFORM");
    });
  }

  it("accepts a tenant id whose database name is exactly 63 bytes, and refuses one byte more", async () => {
    const fits = "t".repeat(63 - platform.length - 1);
    const created = await t.adminClient().admin().createTenant(platform, fits);
    assert.equal(Buffer.byteLength(created.name), 63);
    const { rows } = await t.client().platform(platform).tenant(fits).query("SELECT current_database() AS db");
    assert.deepEqual(rows, [{ db: created.name }]);
    await rejectsWith(t.adminClient().admin().createTenant(platform, `${fits}t`), Code.InvalidArgument, "INVALID_TENANT_ID");
  });

  it("created no database for any hostile identifier", async () => {
    const after = await databases();
    const added = after.filter((d) => !databasesBefore.includes(d));
    assert.deepEqual(added, [`${platform}_${"t".repeat(63 - platform.length - 1)}`]);
  });
});
