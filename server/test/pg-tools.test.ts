// PgTools against this machine's own pg_dump and pg_restore: their versions read, a server newer than them refused before anything runs.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";
import { GatewayError } from "../src/errors.js";
import { PgTools, toolConnection } from "../src/tenancy/pg-tools.js";
import { findBinDir } from "../../test/helpers/postgres-for-tools.js";

const binDir = findBinDir();
const major = Number(/\(PostgreSQL\) (\d+)/.exec(execFileSync(`${binDir}/pg_dump`, ["--version"], { encoding: "utf8" }))![1]);

describe("PgTools", () => {
  it("accepts tools as new as the server, and refuses a newer server or missing tools with FAILED_PRECONDITION saying what to install", async () => {
    await new PgTools(binDir, async () => major * 10_000 + 3).check("pg_dump");
    await new PgTools(binDir, async () => (major - 1) * 10_000).check("pg_restore");
    await assert.rejects(new PgTools(binDir, async () => (major + 3) * 10_000 + 1).check("pg_dump"), (err: GatewayError) => {
      assert.equal(err.reason, "BACKUP_TOOLS_UNAVAILABLE");
      assert.equal(
        err.message,
        `pg_dump ${major} cannot work with PostgreSQL ${major + 3}: install PostgreSQL ${major + 3}'s client tools (postgresql-client-${major + 3}), or set PG_BIN_DIR`,
      );
      return true;
    });
    await assert.rejects(new PgTools("/nowhere", async () => major * 10_000).check("pg_restore"), /pg_restore was not found \(\/nowhere\/pg_restore\)/);
  });

  it("gives the tools every setting as a libpq keyword, the role named apart from the URL's", () => {
    assert.deepEqual(toolConnection("postgres://admin:pw@db.internal:6543/postgres?sslmode=no-verify&user=postgres", "tenant_a", "secret"), {
      conninfo: "host='db.internal' port='6543' user='tenant_a' sslmode='require'",
      password: "secret",
    });
    assert.deepEqual(toolConnection("postgres:///postgres?host=/var/run/postgresql&user=postgres", "o'brien", undefined), {
      conninfo: "host='/var/run/postgresql' user='o\\'brien'",
    });
  });

  it("reports a failing tool's own words, and passes the password in its environment only", async () => {
    const tools = new PgTools(binDir, async () => major * 10_000);
    const run = tools.spawn("pg_dump", toolConnection("postgres://127.0.0.1:1/postgres?user=root", "nobody", "s3cret-pw"), "nowhere", ["--format=custom"]);
    assert.ok(!run.child.spawnargs.join(" ").includes("s3cret-pw"));
    run.child.stdout.resume();
    await assert.rejects(
      run.exited,
      (err: GatewayError) =>
        err.reason === "BACKUP_FAILED" && /pg_dump failed \(exit code 1\): .*127\.0\.0\.1.*1/.test(err.message) && !err.message.includes("s3cret"),
    );
  });
});
