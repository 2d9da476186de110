// The audit trail end to end: administrative actions recorded with who, what and how they ended.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code, GatewayError } from "../client-sdk/src/index.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("audit trail", () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
  });
  after(() => t.close());

  it("records every administrative action with who, what, when and the outcome, newest first, append-only", async () => {
    const platform = t.platforms[0]!;
    const admin = t.adminClient().admin();
    const started = Date.now();
    await admin.createTenant(platform, "audited");
    await assert.rejects(admin.createTenant(platform, "audited"));
    await admin.dropTenant(platform, "audited");
    const raw = t.adminClient().raw.admin;
    const { events } = await raw.listAuditEvents({ platform });
    assert.deepEqual(
      events.map((e) => [e.action, e.tenantId, e.database, e.outcome]),
      [
        ["tenant.drop", "audited", `${platform}_audited`, "OK"],
        ["tenant.create", "audited", `${platform}_audited`, "DATABASE_EXISTS"],
        ["tenant.create", "audited", `${platform}_audited`, "OK"],
      ],
    );
    for (const e of events) {
      assert.match(e.actor, /^admin key, client certificate "admin"$/);
      assert.match(e.peer, /127\.0\.0\.1|localhost|::1/);
      assert.ok(e.requestId.length > 0);
      assert.ok(Number(e.time!.seconds) * 1000 >= started - 1_000);
    }
    const page = await raw.listAuditEvents({ platform, pageSize: 2 });
    assert.equal(page.events.length, 2);
    const rest = await raw.listAuditEvents({ platform, pageSize: 2, pageToken: page.nextPageToken });
    assert.deepEqual(
      rest.events.map((e) => e.id),
      [events[2]!.id],
    );
    assert.equal(rest.nextPageToken, "");
    // Newest first past nine events too (ids ordered as numbers, not as their text), page after page.
    for (let i = 0; i < 9; i++) await assert.rejects(admin.createTenant(platform, "Not A Tenant Id"));
    const all = (await raw.listAuditEvents({ platform })).events.map((e) => e.id);
    assert.equal(all.length, 12);
    assert.deepEqual(
      all,
      [...all].sort((a, b) => (a > b ? -1 : 1)),
    );
    const paged: bigint[] = [];
    for (let token = ""; ;) {
      const { events: some, nextPageToken } = await raw.listAuditEvents({ platform, pageSize: 5, pageToken: token });
      paged.push(...some.map((e) => e.id));
      if ((token = nextPageToken) === "") break;
    }
    assert.deepEqual(paged, all);
    // Append-only, even for the administrative role that writes it.
    const url = new URL(t.databaseUrl);
    url.pathname = `/catalog_${platform}`;
    const direct = new pg.Client({ connectionString: url.toString() });
    await direct.connect();
    try {
      for (const sql of ["UPDATE audit_log SET outcome = 'OK'", "DELETE FROM audit_log", "TRUNCATE audit_log"]) {
        await assert.rejects(direct.query(sql), /append-only/, sql);
      }
    } finally {
      await direct.end();
    }
    // A platform key cannot read it.
    await assert.rejects(t.client().raw.admin.listAuditEvents({}), (err: unknown) => GatewayError.from(err).code === Code.PermissionDenied);
  });
});
