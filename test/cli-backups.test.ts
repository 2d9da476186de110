/** `db-gateway backups` and `tenants fork|facts`, run as a process against a gateway process that can dump its PostgreSQL: the scheduled job, restores, verification, downloads, forks, and their failures. */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { UsageError } from "../server/src/cli/command.js";
import { backupsCommand } from "../server/src/cli/backups.js";
import { runCli, startCliGateway, type CliGateway, type CliResult } from "./helpers/cli.js";
import { dropPlatformDatabases, randomPlatform } from "./helpers/gateway.js";
import { postgresForTools, type ToolsPostgres } from "./helpers/postgres-for-tools.js";

describe("db-gateway backups", () => {
  const platform = randomPlatform();
  let postgres: ToolsPostgres;
  let backups: string;
  let cli: CliGateway;
  const run = (args: string[]): Promise<CliResult> => runCli(args, { cwd: cli.work, env: cli.env, timeoutMs: 120_000 });

  before(async () => {
    postgres = await postgresForTools();
    backups = await mkdtemp(join(tmpdir(), "db-gateway-cli-backups-"));
    cli = await startCliGateway(platform, postgres.url, { BACKUP_DIR: backups, PG_BIN_DIR: postgres.binDir });
    for (const args of [["--main"], ["--tenant", "clinic"]]) {
      const created = await run(["tenants", "create", "--platform", platform, ...args]);
      assert.equal(created.code, 0, created.stderr);
    }
    // The tenant's table, made directly and handed to its role as if it had made it.
    const url = new URL(postgres.url);
    url.pathname = `/${platform}_clinic`;
    const direct = new pg.Client({ connectionString: url.toString() });
    await direct.connect();
    try {
      await direct.query("CREATE TABLE visits (id int PRIMARY KEY, note text)");
      await direct.query("INSERT INTO visits SELECT g, 'visit ' || g FROM generate_series(1, 300) g");
      await direct.query(`ALTER TABLE visits OWNER TO ${pg.escapeIdentifier(`${platform}_clinic`)}`);
    } finally {
      await direct.end();
    }
  });
  after(async () => {
    try {
      await cli?.close();
      await dropPlatformDatabases([platform], postgres.url);
    } finally {
      await rm(backups, { recursive: true, force: true });
      await postgres?.close();
    }
  });

  it("takes the platform's set with --keep-days --verify (the scheduled job), and restores a file into a new tenant, never over an existing one", async () => {
    const taken = await run(["backups", "take", "--platform", platform, "--keep-days", "30", "--verify", "--json"]);
    assert.equal(taken.code, 0, taken.stderr);
    const set = JSON.parse(taken.stdout) as { backupSet: string; files: { file: string; database: string; sha256: string }[]; verified: { ok: boolean }[] };
    assert.deepEqual(
      set.files.map((f) => f.database),
      [`${platform}_clinic`, `${platform}_main`, `catalog_${platform}`],
    );
    assert.deepEqual(
      set.verified.map((v) => v.ok),
      [true, true],
    );
    const clinic = set.files[0]!;
    assert.equal(
      createHash("sha256")
        .update(await readFile(join(backups, clinic.file)))
        .digest("hex"),
      clinic.sha256,
    );

    const restored = await run(["backups", "restore", "--platform", platform, "--tenant", "clinic_copy", "--file", clinic.file]);
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal(restored.stdout, `restored ${clinic.file} into ${platform}_clinic_copy: public.visits 300 rows\n`);
    const again = await run(["backups", "restore", "--platform", platform, "--tenant", "clinic", "--file", clinic.file]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^db-gateway: ALREADY_EXISTS \(DATABASE_EXISTS\): database ".*_clinic" already exists/);

    const verified = await run(["backups", "verify", "--file", clinic.file]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /checksum and 1 tables' rows match/);
  });

  it("downloads a tenant's backup into a file here; forks a tenant, and a fork of a missing one fails NOT_FOUND; facts list every database", async () => {
    const out = join(cli.work, "clinic.dump");
    const downloaded = await run(["backups", "download", "--platform", platform, "--tenant", "clinic", "--out", out, "--json"]);
    assert.equal(downloaded.code, 0, downloaded.stderr);
    const file = JSON.parse(downloaded.stdout) as { sha256: string };
    assert.equal(
      createHash("sha256")
        .update(await readFile(out))
        .digest("hex"),
      file.sha256,
    );

    const forked = await run(["tenants", "fork", "--platform", platform, "--from", "clinic", "--tenant", "preview"]);
    assert.equal(forked.code, 0, forked.stderr);
    assert.match(forked.stdout, new RegExp(`^forked ${platform}_preview from ${platform}_clinic in [\\d.]+ s\\n$`));
    const missing = await run(["tenants", "fork", "--platform", platform, "--from", "nobody", "--tenant", "other"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^db-gateway: NOT_FOUND \(DATABASE_NOT_FOUND\)/);

    const facts = await run(["tenants", "facts", "--platform", platform]);
    assert.equal(facts.code, 0, facts.stderr);
    const lines = facts.stdout.trim().split("\n");
    assert.match(lines[0]!, /^DATABASE +SIZE_MB +VERSION +LAST_BACKUP +CONNECTIONS +CALLS_1M$/);
    assert.deepEqual(
      lines.slice(1).map((l) => l.split(/ +/)[0]),
      [`${platform}_clinic`, `${platform}_clinic_copy`, `${platform}_main`, `${platform}_preview`],
    );
    assert.match(lines[1]!, /\d{4}-\d\d-\d\dT/, "clinic's last backup");
  });

  it("an unwritable backup directory and a corrupt file fail with exit 1; mistakes exit 2 before connecting", async () => {
    const blocked = join(cli.work, "a-file");
    await writeFile(blocked, "");
    const other = await startCliGateway(platform, postgres.url, { BACKUP_DIR: join(blocked, "backups"), PG_BIN_DIR: postgres.binDir });
    try {
      const refused = await runCli(["backups", "take", "--platform", platform, "--tenant", "clinic"], { cwd: other.work, env: other.env });
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /^db-gateway: FAILED_PRECONDITION \(BACKUP_DIR_UNWRITABLE\): the backup directory cannot be written \(ENOTDIR\)/);
    } finally {
      await other.close();
    }

    const taken = await run(["backups", "take", "--platform", platform, "--tenant", "clinic", "--json"]);
    const file = (JSON.parse(taken.stdout) as { files: { file: string }[] }).files[0]!.file;
    await writeFile(join(backups, file), "not a dump");
    const verified = await run(["backups", "verify", "--file", file]);
    assert.equal(verified.code, 1);
    assert.match(verified.stdout, /does not match its manifest's checksum/);

    for (const args of [
      [],
      ["take"],
      ["take", "--platform", platform, "--file", "x"],
      ["take", "--platform", platform, "--keep-days", "-1"],
      ["restore", "--platform", platform, "--file", "x"],
      ["restore", "--platform", platform, "--tenant", "a"],
      ["verify"],
      ["download", "--platform", platform, "--tenant", "a"],
    ]) {
      await assert.rejects(backupsCommand.run(args), UsageError, args.join(" "));
    }
  });
});
