// A Query or StreamQuery marked read_only that the primary serves (no replica, or none that can) is read-only there too, as the contract says: a write fails with 25006, and is never run by the SDK's retries of a "read".
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("read_only served by the primary", () => {
  let t: TestGateway;
  let platform: string;

  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    await t.client().platform(platform).query("CREATE TABLE note (id int)");
  });
  after(async () => {
    await t?.close();
  });

  it("refuses a write marked read-only with 25006, and runs none of it", async () => {
    const db = t.client().platform(platform);
    await assert.rejects(db.query("INSERT INTO note VALUES (1)", [], { readOnly: true }), (err: { sqlstate?: string }) => err.sqlstate === "25006");
    await assert.rejects(
      (async () => {
        for await (const row of db.stream("INSERT INTO note VALUES (2) RETURNING id", [], { readOnly: true })) void row;
      })(),
      (err: { sqlstate?: string }) => err.sqlstate === "25006",
    );
    assert.deepEqual((await db.query("SELECT count(*)::int AS n FROM note")).rows, [{ n: 0 }]);
    // Reads marked read-only are served, and the connection is read-write again for the next call.
    assert.deepEqual((await db.query("SELECT 1 AS one", [], { readOnly: true })).rows, [{ one: 1 }]);
    await db.query("INSERT INTO note VALUES (3)");
    assert.deepEqual((await db.query("SELECT count(*)::int AS n FROM note")).rows, [{ n: 1 }]);
  });
});
