// A small run of `npm run bench:clusters`, so that the benchmark cannot rot and its two configurations stay what they claim.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { promisify } from "node:util";

const root = new URL("..", import.meta.url).pathname;

interface Summary {
  setup: string;
  calls: number;
  errors: Record<string, number>;
  peakConnections: Record<string, number>;
  postgresCpuMicrosPerCall: Record<string, number>;
}

describe("the clusters benchmark (smoke run)", () => {
  let dir: string | undefined;
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("serves the same tenants from one cluster and, placed half and half, from two, each within its connection cap", async () => {
    dir = await mkdtemp(join(tmpdir(), "db-gateway-bench-clusters-smoke-"));
    const json = join(dir, "bench.json");
    const env = { ...process.env };
    delete env.PG_URL; // the benchmark starts its own two servers
    await promisify(execFile)(
      process.execPath,
      [
        "--import",
        "tsx",
        "scripts/bench-clusters.ts",
        "--tenants",
        "8",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--rounds",
        "2",
        "--concurrency",
        "6",
        "--cluster-cap",
        "3",
        "--json",
        json,
      ],
      { cwd: root, env, timeout: 280_000, maxBuffer: 16 * 1024 * 1024 },
    );
    const report = JSON.parse(await readFile(json, "utf8")) as {
      placement: Record<string, Record<string, number>>;
      runs: { setup: string; round: number }[];
      summary: Summary[];
    };
    assert.deepEqual(report.placement["one cluster"], { primary: 8 });
    // The policy's fewest-first split, give or take the two creations that run at once.
    const split = report.placement["two clusters"]!;
    assert.deepEqual(Object.keys(split).sort(), ["primary", "second"]);
    assert.equal(split.primary! + split.second!, 8);
    assert.ok(Math.abs(split.primary! - split.second!) <= 2, JSON.stringify(split));
    // Alternating: round 1 one then two, round 2 two then one.
    assert.deepEqual(
      report.runs.map((r) => `${r.round} ${r.setup}`),
      ["1 one cluster", "1 two clusters", "2 two clusters", "2 one cluster"],
    );
    const [one, two] = report.summary as [Summary, Summary];
    for (const s of [one, two]) {
      assert.ok(s.calls > 0, `${s.setup}: no call succeeded`);
      assert.deepEqual(s.errors, {}, `${s.setup}: errors`);
    }
    assert.deepEqual(Object.keys(one.peakConnections), ["primary"]);
    assert.deepEqual(Object.keys(two.peakConnections).sort(), ["primary", "second"]);
    // Calls reached both clusters of the second configuration, and no cluster saw more than its cap of 3.
    for (const s of [one, two]) {
      for (const [cluster, peak] of Object.entries(s.peakConnections)) {
        assert.ok(peak >= 1 && peak <= 3, `${s.setup}, ${cluster}: peak ${peak} connections, cap 3`);
        assert.ok(s.postgresCpuMicrosPerCall[cluster]! > 0, `${s.setup}, ${cluster}: no PostgreSQL CPU`);
      }
    }
  });
});
