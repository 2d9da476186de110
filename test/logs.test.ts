// Call logs end to end: one line per call with its fields, and never a secret.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "../client-sdk/src/index.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { keptLog } from "./helpers/kept-log.js";

describe("logs", () => {
  const { logger, lines } = keptLog("info");
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway({ platforms: 1, overrides: { logger } });
  });
  after(() => t.close());

  it("one JSON line per call with the standard fields, the caller's request id sent back, and no secret or parameter", async (ctx) => {
    const platform = t.platforms[0]!;
    const secretValue = "s3cr3t-parameter-value";
    let echoed: string | null = null;
    await t
      .client()
      .raw.query.query(
        { platform, sql: "SELECT $1::text AS v", params: [{ kind: { case: "textValue", value: secretValue } }] },
        { headers: { "x-request-id": "req-abc-123" }, onHeader: (h) => (echoed = h.get("x-request-id")) },
      );
    assert.equal(echoed, "req-abc-123");
    // Query calls (the SDK without coalescing), then the same over a QueryStream (the SDK's default).
    const unaryClient = createClient({ ...t.clientOptions(t.keys[platform]!), coalesce: false });
    ctx.after(() => unaryClient.close());
    const unary = unaryClient.platform(platform);
    await assert.rejects(unary.query("SELECT $1::int", [`${secretValue}-2`])); // PostgreSQL's message quotes it
    await assert.rejects(unary.tenant("nobody").query("SELECT 1"));
    const streamed = t.client().platform(platform);
    await Promise.allSettled([
      streamed.query("SELECT $1::int", [`${secretValue}-3`]),
      streamed.query("SELECT $1::int", [`${secretValue}-4`]),
      streamed.tenant("nobody").query("SELECT 1"),
    ]);
    await new Promise((r) => setTimeout(r, 100));
    const calls = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "call");
    assert.ok(calls.length >= 3, `${calls.length} call lines`);
    for (const line of calls) {
      for (const field of ["time", "request_id", "platform", "operation", "database", "status", "duration_ms"])
        assert.ok(field in line, `${field} in ${JSON.stringify(line)}`);
      assert.ok(!Number.isNaN(Date.parse(String(line.time))));
    }
    const first = calls.find((l) => l.request_id === "req-abc-123")!;
    assert.deepEqual([first.platform, first.operation, first.database, first.status], [platform, "dbgateway.v1.QueryService/Query", `${platform}_main`, "OK"]);
    const failed = calls.find((l) => l.reason === "QUERY_FAILED")!;
    assert.equal(failed.sqlstate, "22P02");
    const notFound = calls.find((l) => l.reason === "DATABASE_NOT_FOUND")!;
    assert.equal(notFound.status, "NOT_FOUND");
    // A message whose queries failed on their own: OK as a message, its queries' failures tallied by reason and SQLSTATE.
    const message = calls.find((l) => l.operation === "dbgateway.v1.QueryService/QueryStream" && l.query_errors !== undefined)!;
    assert.ok(message, JSON.stringify(calls));
    assert.equal(message.status, "OK");
    assert.deepEqual(message.query_errors, [
      { reason: "DATABASE_NOT_FOUND", count: 1 },
      { reason: "QUERY_FAILED", sqlstate: "22P02", count: 2 },
    ]);
    const all = lines.join("\n");
    for (const secret of [secretValue, t.keys[platform]!, t.adminKey, t.gatewaySecret, "BEGIN CERTIFICATE", "PRIVATE KEY"]) {
      assert.ok(!all.includes(secret), `the logs contain "${secret.slice(0, 12)}…"`);
    }
  });
});
