// The pure parts of fleet operations: what a database's record makes of a set of migrations, and calls counted over the last minute.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { migrationSet, plan } from "../src/tenancy/migrations.js";
import { RecentCalls } from "../src/tenancy/recent-calls.js";

const set = migrationSet([
  { version: 3n, name: "three", sql: "SELECT 3" },
  { version: 1n, name: "one", sql: "-- db-gateway: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x)" },
  { version: 2n, name: "two", sql: "SELECT 2" },
]);
const recorded = (...versions: bigint[]) =>
  new Map(versions.map((v) => [v, { name: set.find((m) => m.version === v)!.name, checksum: set.find((m) => m.version === v)!.checksum }]));

describe("migrations: a database's plan", () => {
  it("orders by version, marks no-transaction migrations, and plans what is missing above the latest", () => {
    assert.deepEqual(
      set.map((m) => [m.version, m.transactional]),
      [
        [1n, false],
        [2n, true],
        [3n, true],
      ],
    );
    assert.deepEqual(plan(set, new Map()), { pending: set });
    assert.deepEqual(plan(set, recorded(1n)), { pending: set.slice(1) });
    assert.deepEqual(plan(set, recorded(1n, 2n, 3n)), { pending: [] });
  });

  it("calls a changed checksum, an unknown version and a gap below the latest drift", () => {
    assert.deepEqual(plan(set, new Map([[1n, { name: "one", checksum: "x" }]])), {
      drift: "version 1 (one) was recorded with another checksum than its SQL's",
    });
    assert.deepEqual(plan(set, new Map([[9n, { name: "nine", checksum: "x" }]])), {
      drift: "version 9 (nine) is recorded and is not among the migrations given",
    });
    assert.deepEqual(plan(set, recorded(1n, 3n)), { drift: "version 2 (two) is missing below the latest recorded, 3" });
  });
});

describe("recent calls", () => {
  it("counts a database's calls over the last minute, in ten-second buckets, and forgets databases not called for a minute", () => {
    let now = 1_000_000;
    const calls = new RecentCalls(() => now);
    for (let i = 0; i < 5; i++) calls.count("a");
    now += 30_000;
    calls.count("a");
    calls.count("b");
    assert.equal(calls.lastMinute("a"), 6);
    now += 35_000; // the first five are now more than a minute old
    assert.equal(calls.lastMinute("a"), 1);
    assert.equal(calls.lastMinute("b"), 1);
    assert.equal(calls.lastMinute("c"), 0);
    now += 120_000;
    calls.count("c"); // sweeps a and b
    assert.equal(calls.lastMinute("a"), 0);
    assert.equal(calls.lastMinute("c"), 1);
  });
});
