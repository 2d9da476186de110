// CleanupStack: a start's parts undone in reverse order, each once, the rest still undone when one fails.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CleanupStack } from "../src/cleanup-stack.js";

describe("CleanupStack", () => {
  it("undoes the last part made first, reports a failed cleanup and goes on, and undoes each part once", async () => {
    const done: string[] = [];
    const failures: string[] = [];
    const stack = new CleanupStack((message) => failures.push(message));
    stack.defer("pool", () => done.push("pool"));
    stack.defer("audit", async () => {
      await new Promise((resolve) => setImmediate(resolve));
      throw new Error("disk gone");
    });
    stack.defer("server", async () => done.push("server"));
    await stack.unwind();
    assert.deepEqual(done, ["server", "pool"]);
    assert.deepEqual(failures, ["cleanup failed: audit"]);
    await stack.unwind();
    assert.deepEqual(done, ["server", "pool"]);
  });
});
