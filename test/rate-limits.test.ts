// Rate limits end to end: a platform over its limit is refused with RetryInfo, and the refusals show in metrics.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { RetryInfoSchema } from "../wire/src/gen/google/rpc/error_details_pb.js";
import { ConnectError } from "@connectrpc/connect";
import { Code, GatewayError } from "../client-sdk/src/index.js";
import { metricSample, metricsText, startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("rate limits", () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway({ platforms: 2, overrides: { rateLimit: { perSecond: 5, burst: 5 } } });
  });
  after(() => t.close());

  it("refuse calls beyond a platform's rate with RESOURCE_EXHAUSTED, RATE_LIMITED and a RetryInfo, per platform", async () => {
    const [a, b] = t.platforms as [string, string];
    const refusedOf = (results: PromiseSettledResult<unknown>[]) => {
      const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => GatewayError.from(r.reason));
      for (const err of refused) {
        assert.equal(err.code, Code.ResourceExhausted);
        assert.equal(err.reason, "RATE_LIMITED");
        assert.ok(err.retryable === false);
        const retry = ConnectError.from(err.cause).findDetails(RetryInfoSchema)[0];
        assert.ok(retry?.retryDelay !== undefined && retry.retryDelay.nanos + Number(retry.retryDelay.seconds) * 1e9 > 0);
      }
      return refused.length;
    };
    const refill = () => new Promise((resolve) => setTimeout(resolve, 1_100));
    // Twenty clients' QueryStreams opened at once: those over the limit are refused as calls.
    const opened = refusedOf(await Promise.allSettled(Array.from({ length: 20 }, () => t.client(a).platform(a).query("SELECT 1"))));
    assert.ok(opened >= 10, `${opened} streams refused`);
    // Query calls.
    await refill();
    const calls = refusedOf(
      await Promise.allSettled(Array.from({ length: 12 }, () => t.client(a).platform(a).query("SELECT 1", [], { signal: new AbortController().signal }))),
    );
    assert.ok(calls >= 4, `${calls} Query calls refused`);
    // Messages of one open stream, one turn after another: those over the limit get the error as their answer.
    await refill();
    const db = t.client(a).platform(a);
    const messages: PromiseSettledResult<unknown>[] = [];
    for (let i = 0; i < 12; i++) messages.push(...(await Promise.allSettled([db.query("SELECT 1")])));
    const answered = refusedOf(messages);
    assert.ok(answered >= 4, `${answered} messages refused`);
    // Another platform has a bucket of its own.
    await t.client(b).platform(b).query("SELECT 1");
    assert.ok(metricSample(await metricsText(t), "db_gateway_rate_limited_total", { platform: a }) >= 18);
  });
});
