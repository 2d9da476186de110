// A smoke run of `npm run bench` (a second per measurement, small scale), so that the benchmark cannot rot.
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { promisify } from "node:util";
import { pgUrl } from "./helpers/gateway.js";

const root = new URL("..", import.meta.url).pathname;

/** `npm run bench`, a second per measurement and a small scale, so that the benchmark cannot rot. */
describe("the benchmark (smoke run)", () => {
  let dir: string | undefined;
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("measures every scenario for pg directly, PgBouncer (when installed) and the gateway", async () => {
    dir = await mkdtemp(join(tmpdir(), "db-gateway-bench-smoke-"));
    const json = join(dir, "bench.json");
    await promisify(execFile)(
      process.execPath,
      ["--import", "tsx", "scripts/bench.ts", "--duration", "1", "--rows", "2000", "--tenants", "8", "--stream-rows", "20000", "--json", json],
      { cwd: root, env: { ...process.env, PG_URL: pgUrl() }, timeout: 280_000, maxBuffer: 16 * 1024 * 1024 },
    );
    const report = JSON.parse(await readFile(json, "utf8")) as { pgbouncer: boolean; results: { scenario: string; setup: string; opsPerSecond: number }[] };
    const pgbouncerInstalled = spawnSync("pgbouncer", ["--version"]).status === 0;
    assert.equal(report.pgbouncer, pgbouncerInstalled);
    const scenarios = new Set(report.results.map((r) => r.scenario));
    assert.equal(scenarios.size, 7, [...scenarios].join("; "));
    for (const scenario of scenarios) {
      const setups = report.results.filter((r) => r.scenario === scenario);
      // The write-heavy many-tenant scenario has no PgBouncer row.
      const letters = pgbouncerInstalled && !scenario.includes("write transactions, c=64") ? ["A", "B", "C"] : ["A", "C"];
      for (const letter of letters) {
        const row = setups.find((r) => r.setup.startsWith(`${letter} `));
        assert.ok(row, `${scenario}: no ${letter} row`);
        assert.ok(row.opsPerSecond > 0, `${scenario} / ${row.setup}: no operation succeeded`);
      }
    }
    // The references the targets are read against: the latency floor of a gRPC hop at c=1, and
    // PostgreSQL's own figure for many tenants.
    for (const [scenario, prefix] of [
      ["point select, c=1", "C″ "],
      ["8 tenants, random tenant, c=64", "A′ "],
      ["8 tenants, half write transactions, c=64", "A′ "],
    ]) {
      const row = report.results.find((r) => r.scenario === scenario && r.setup.startsWith(prefix!));
      assert.ok(row !== undefined && row.opsPerSecond > 0, `${scenario}: no ${prefix}row with operations`);
    }
  });
});
