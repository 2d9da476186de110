/** `db-gateway tenants` and `db-gateway migrate`, run as a process against a gateway process over mutual TLS, with certificates and keys made by `certs` and `keys`. */
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { UsageError } from "../server/src/cli/command.js";
import { migrateCommand } from "../server/src/cli/migrate.js";
import { tenantsCommand } from "../server/src/cli/tenants.js";
import { runCli, startCliGateway, type CliGateway, type CliResult } from "./helpers/cli.js";
import { dropPlatformDatabases, pgUrl, randomPlatform } from "./helpers/gateway.js";

interface DatabaseInfo {
  name: string;
  platform: string;
  tenantId: string;
  type: string;
}

describe("db-gateway tenants", () => {
  const platform = randomPlatform();
  let cli: CliGateway | undefined;
  let work: string;
  /** The CLI's environment: the gateway's URL and the admin key's file; the TLS files are the defaults (./certs, as `certs` writes them). */
  let env: Record<string, string>;
  const tenants = (args: string[], extra: Record<string, string> = {}): Promise<CliResult> =>
    runCli(["tenants", ...args], { cwd: work, env: { ...env, ...extra } });

  before(async () => {
    cli = await startCliGateway(platform, pgUrl());
    ({ work, env } = cli);
  });
  after(async () => {
    await cli?.close();
    await dropPlatformDatabases([platform]);
  });

  async function exists(database: string): Promise<boolean> {
    const admin = new pg.Client({ connectionString: pgUrl() });
    await admin.connect();
    try {
      return (await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [database])).rowCount === 1;
    } finally {
      await admin.end();
    }
  }

  it("--help names the subcommands, the connection settings and --yes", async () => {
    const { code, stdout } = await runCli(["tenants", "--help"]);
    assert.equal(code, 0);
    for (const text of ["tenants list", "tenants create", "tenants drop", "--yes", "GATEWAY_URL", "GATEWAY_API_KEY_FILE", "GATEWAY_TLS_CA_FILE", "--json"])
      assert.ok(stdout.includes(text), text);
  });

  it("creates the main database and a tenant, and one from a template", async () => {
    const main = await tenants(["create", "--platform", platform, "--main"]);
    assert.equal(main.code, 0, main.stderr);
    assert.equal(main.stdout, `created ${platform}_main on cluster primary\n`);
    const created = await tenants(["create", "--platform", platform, "--tenant", "clinic_001", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    assert.deepEqual(JSON.parse(created.stdout), { name: `${platform}_clinic_001`, platform, tenantId: "clinic_001", type: "tenant", cluster: "primary" });
    // The key from --api-key-file instead of the environment.
    const copy = await tenants(
      ["create", "--platform", platform, "--tenant", "clinic_002", "--template", `${platform}_clinic_001`, "--api-key-file", env.GATEWAY_API_KEY_FILE!],
      { GATEWAY_API_KEY_FILE: "" },
    );
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(copy.stdout, `created ${platform}_clinic_002 from ${platform}_clinic_001 on cluster primary\n`);
    assert.ok(await exists(`${platform}_clinic_002`));
  });

  it("lists the platform's databases as a table and as JSON", async () => {
    const [text, json] = await Promise.all([tenants(["list", "--platform", platform]), tenants(["list", "--platform", platform, "--json"])]);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trim().split("\n");
    assert.match(lines[0]!, /^DATABASE +PLATFORM +TENANT +TYPE$/);
    assert.match(lines[1]!, new RegExp(`^${platform}_clinic_001 +${platform} +clinic_001 +tenant$`));
    assert.match(lines[3]!, new RegExp(`^${platform}_main +${platform} +- +main$`));
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(
      (JSON.parse(json.stdout) as DatabaseInfo[]).map((d) => [d.name, d.tenantId, d.type]),
      [
        [`${platform}_clinic_001`, "clinic_001", "tenant"],
        [`${platform}_clinic_002`, "clinic_002", "tenant"],
        [`${platform}_main`, "", "main"],
      ],
    );
  });

  it("refuses to drop without --yes (exit 2, nothing dropped), drops with it, and NOT_FOUND after", async () => {
    const refused = await tenants(["drop", "--platform", platform, "--tenant", "clinic_001"]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /add --yes/);
    assert.ok(await exists(`${platform}_clinic_001`));

    const dropped = await tenants(["drop", "--platform", platform, "--tenant", "clinic_001", "--yes", "--json"]);
    assert.equal(dropped.code, 0, dropped.stderr);
    assert.deepEqual(JSON.parse(dropped.stdout), { name: `${platform}_clinic_001`, platform, tenantId: "clinic_001", type: "tenant", cluster: "primary" });
    assert.equal(await exists(`${platform}_clinic_001`), false);

    const [again, list] = await Promise.all([
      tenants(["drop", "--platform", platform, "--tenant", "clinic_001", "--yes", "--json"]),
      tenants(["list", "--platform", platform, "--json"]),
    ]);
    assert.equal(again.code, 1);
    assert.deepEqual(JSON.parse(again.stdout), {
      error: `NOT_FOUND (DATABASE_NOT_FOUND): database "${platform}_clinic_001" does not exist`,
      code: "NOT_FOUND",
      reason: "DATABASE_NOT_FOUND",
      message: `database "${platform}_clinic_001" does not exist`,
    });
    assert.match(again.stderr, /^db-gateway: NOT_FOUND \(DATABASE_NOT_FOUND\)/);
    assert.ok(!(JSON.parse(list.stdout) as DatabaseInfo[]).some((d) => d.tenantId === "clinic_001"));
  });

  it("a wrong API key is UNAUTHENTICATED, a platform's key PERMISSION_DENIED: exit 1, the key never printed", async () => {
    const wrongKey = "wrong-key-0123456789abcdef";
    const [wrong, platformKey] = await Promise.all([
      tenants(["list", "--json"], { GATEWAY_API_KEY_FILE: "", GATEWAY_API_KEY: wrongKey }),
      tenants(["list"], { GATEWAY_API_KEY_FILE: join(work, "secrets", `api-key-${platform}`) }),
    ]);
    assert.equal(wrong.code, 1);
    assert.equal(JSON.parse(wrong.stdout).code, "UNAUTHENTICATED");
    assert.match(wrong.stderr, /^db-gateway: UNAUTHENTICATED: .*admin key/);
    assert.ok(!wrong.stdout.includes(wrongKey) && !wrong.stderr.includes(wrongKey));
    assert.equal(platformKey.code, 1);
    assert.match(platformKey.stderr, /^db-gateway: PERMISSION_DENIED: /);
  });

  it("usage errors exit 2; unreadable files and a gateway that is not there exit 1", async () => {
    const [noKey, noCa, noGateway] = await Promise.all([
      tenants(["list"], { GATEWAY_API_KEY_FILE: "" }),
      tenants(["list", "--ca", "nowhere.crt"]),
      tenants(["list", "--url", "https://localhost:1"]),
    ]);
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /no admin API key: give --api-key-file FILE, or set GATEWAY_API_KEY_FILE or GATEWAY_API_KEY\nSee: db-gateway tenants --help/);
    assert.equal(noCa.code, 1);
    assert.match(noCa.stderr, /--ca: cannot read "nowhere.crt" \(ENOENT\)/);
    assert.equal(noGateway.code, 1);
    assert.match(noGateway.stderr, /^db-gateway: UNAVAILABLE: /);
  });

  it("move reaches MoveTenant and prints its refusal: the only cluster, or one not configured", async () => {
    assert.equal((await tenants(["create", "--platform", platform, "--tenant", "mover"])).code, 0);
    const same = await tenants(["move", "--platform", platform, "--tenant", "mover", "--to", "primary", "--max-pause-ms", "2000"]);
    assert.equal(same.code, 1);
    assert.match(same.stderr, /FAILED_PRECONDITION \(MOVE_TO_SAME_CLUSTER\)/);
    const nowhere = await tenants(["move", "--platform", platform, "--tenant", "mover", "--to", "nowhere"]);
    assert.equal(nowhere.code, 1);
    assert.match(nowhere.stderr, /NOT_FOUND \(CLUSTER_NOT_FOUND\)/);
    // The tests after count the platform's databases.
    assert.equal((await tenants(["drop", "--platform", platform, "--tenant", "mover", "--yes"])).code, 0);
  });

  it("refuses other mistakes before it connects (UsageError: exit 2)", async () => {
    const mistakes = [
      [],
      ["rename"],
      ["list", "extra"],
      ["list", "--tenant", "x"],
      ["list", "--api-key", "x"],
      ["list", "--url", "http://localhost:9000"],
      ["list", "--timeout", "0"],
      ["create", "--platform", platform],
      ["create", "--platform", platform, "--main", "--tenant", "x"],
      ["create", "--platform", platform, "--tenant", "Bad-Id"],
      ["create", "--platform", "Bad", "--main"],
      ["drop", "--tenant", "x", "--yes"],
      ["drop", "--platform", platform, "--tenant", "x"],
      ["move", "--platform", platform, "--tenant", "x"],
      ["move", "--platform", platform, "--to", "west"],
      ["move", "--platform", platform, "--tenant", "x", "--to", "west", "--max-pause-ms", "0"],
      ["move", "--platform", platform, "--tenant", "x", "--to", "west", "--max-pause-ms", "1.5"],
      ["move", "--platform", platform, "--tenant", "x", "--to", "west", "--from", "y"],
    ];
    // In this process: each would cost a CLI start, and none gets as far as reading a file or the environment's key.
    for (const args of mistakes) await assert.rejects(tenantsCommand.run(args), UsageError, args.join(" "));
  });

  it("migrate: a dry run, then the platform's databases brought to the directory's latest version; a failing tenant exits 1, named with its SQLSTATE", async () => {
    const help = await runCli(["migrate", "--help"]);
    assert.equal(help.code, 0);
    for (const text of ["--dry-run", "--concurrency", "-- db-gateway: no-transaction", "GATEWAY_API_KEY_FILE", "migrations/NAME"])
      assert.ok(help.stdout.includes(text), text);

    const migrations = join(work, "migrations", platform);
    await mkdir(migrations, { recursive: true });
    await writeFile(join(migrations, "0001_create_patients.sql"), "CREATE TABLE patients (id bigint PRIMARY KEY, name text);\n");
    await writeFile(join(migrations, "0002_add_born.sql"), "ALTER TABLE patients ADD COLUMN born date;\n");
    const migrate = (args: string[]) => runCli(["migrate", "--platform", platform, ...args], { cwd: work, env });

    const dry = await migrate(["--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`^pending +${platform}_main 1,2 \\(now version 0, \\d+ ms\\)$`, "m"));
    assert.match(dry.stdout, /^2 databases to version 2 in [\d.]+ s: 2 pending$/m);

    const applied = await migrate(["--json", "--concurrency", "2"]);
    assert.equal(applied.code, 0, applied.stderr);
    const lines = applied.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Record<string, Record<string, unknown>>);
    assert.deepEqual(
      lines.slice(0, -1).map((l) => [l.database!.database, l.database!.outcome, l.database!.applied, l.database!.version]),
      [
        [`${platform}_main`, "applied", ["1", "2"], "2"],
        [`${platform}_clinic_002`, "applied", ["1", "2"], "2"],
      ],
    );
    assert.deepEqual(
      { ...lines.at(-1)!.totals, durationMs: 0 },
      { databases: 2, applied: 2, current: 0, pending: 0, failed: 0, drifted: 0, skipped: 0, latestVersion: "2", durationMs: 0 },
    );

    // A table in clinic_002's way: that tenant fails alone, and the command exits 1.
    const url = new URL(pgUrl());
    url.pathname = `/${platform}_clinic_002`;
    const tenant = new pg.Client({ connectionString: url.toString() });
    await tenant.connect();
    try {
      await tenant.query("CREATE TABLE notes (x int)");
    } finally {
      await tenant.end();
    }
    await writeFile(join(migrations, "0003_create_notes.sql"), "CREATE TABLE notes (id bigint PRIMARY KEY);\n");
    const failed = await migrate([]);
    assert.equal(failed.code, 1, failed.stdout + failed.stderr);
    assert.match(failed.stdout, new RegExp(`^applied +${platform}_main 3 `, "m"));
    assert.match(
      failed.stdout,
      new RegExp(`^failed +${platform}_clinic_002 \\(now version 2, \\d+ ms\\) at version 3: QUERY_FAILED \\(SQLSTATE 42P07\\)`, "m"),
    );
    assert.match(failed.stdout, /: 1 applied, 1 failed$/m);
  });

  it("migrate: a directory that is not there exits 1; mistakes exit 2 before it connects", async () => {
    const missing = await runCli(["migrate", "--platform", platform, "--dir", "nowhere"], { cwd: work, env });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read the migrations in "nowhere" \(ENOENT\)/);
    for (const args of [[], ["--platform", "Bad"], ["--platform", platform, "--concurrency", "0"], ["--platform", platform, "--concurrency", "33"]]) {
      await assert.rejects(migrateCommand.run(args), UsageError, args.join(" "));
    }
  });
});
