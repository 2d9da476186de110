// What the log keeps of an error: a PostgreSQL error's SQLSTATE, never its message, client or cancel key; a network error's code and cause.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pg from "pg";
import { loggableError } from "../src/telemetry/logger.js";
import { pgUrl } from "../../test/helpers/gateway.js";

describe("errors in the gateway's log", () => {
  it("keep a PostgreSQL error's SQLSTATE, not its message, its client or the backend's cancel key", async () => {
    const client = new pg.Client({ connectionString: pgUrl() });
    await client.connect();
    try {
      const err = await client.query("SELECT $1::int", ["secret-parameter-value"]).then(
        () => assert.fail("the query should fail"),
        (e: unknown) => e,
      );
      const logged = JSON.stringify(loggableError(Object.assign(err as Error, { client })));
      assert.deepEqual(JSON.parse(logged).sqlstate, "22P02");
      for (const leak of ["secret-parameter-value", "secretKey", "processID", "password", "connectionParameters"])
        assert.ok(!logged.includes(leak), `${leak} in ${logged}`);
    } finally {
      await client.end();
    }
  });

  it("keep a network error's code and message, and follow its cause", () => {
    const err = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" });
    const logged = loggableError(new Error("database unavailable", { cause: err }));
    assert.equal(logged.message, "database unavailable");
    assert.deepEqual((logged.cause as Record<string, unknown>).code, "ECONNREFUSED");
  });
});
