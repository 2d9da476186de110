// TenantPauses: a paused database's calls wait until it resumes, each within its own deadline and cancellation; others never wait.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GatewayError } from "../src/errors.js";
import { TenantPauses } from "../src/tenancy/tenant-pause.js";

describe("TenantPauses", () => {
  it("holds a paused database's calls until it resumes, and no other's", async () => {
    const pauses = new TenantPauses();
    const resume = pauses.pause("p_a");
    assert.equal(pauses.hold("p_b", { deadline: Infinity }), undefined);
    let released = 0;
    const held = [1, 2].map(() => pauses.hold("p_a", { deadline: Infinity })!.then(() => released++));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(released, 0);
    assert.equal(pauses.waiting("p_a"), 2);
    resume();
    await Promise.all(held);
    assert.equal(released, 2);
    assert.equal(pauses.waiting("p_a"), 0);
    assert.equal(pauses.hold("p_a", { deadline: Infinity }), undefined, "resumed: calls go on at once");
  });

  it("fails a held call at its deadline or its cancellation, before anything was sent", async () => {
    const pauses = new TenantPauses();
    const resume = pauses.pause("p_a");
    const late = await pauses.hold("p_a", { deadline: Date.now() + 20 })!.catch((err: unknown) => err);
    assert.ok(late instanceof GatewayError && late.reason === "DEADLINE_EXCEEDED");
    const cancel = new AbortController();
    const cancelled = pauses.hold("p_a", { deadline: Infinity, signal: cancel.signal })!.catch((err: unknown) => err);
    cancel.abort();
    const err = await cancelled;
    assert.ok(err instanceof GatewayError && err.reason === "CANCELLED");
    assert.equal(pauses.waiting("p_a"), 0);
    resume();
  });

  it("refuses a second pause of one database", () => {
    const pauses = new TenantPauses();
    const resume = pauses.pause("p_a");
    assert.throws(
      () => pauses.pause("p_a"),
      (err: unknown) => err instanceof GatewayError && err.reason === "MOVE_IN_PROGRESS",
    );
    resume();
    pauses.pause("p_a")();
  });
});
