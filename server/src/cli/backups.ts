/** `db-gateway backups take|restore|verify|download`: tenant backups through a running gateway's AdminService; `take --keep-days N --verify` is the scheduled job for cron or a systemd timer. */
import { createWriteStream } from "node:fs";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { validatePlatform } from "../tenancy/naming.js";
import { EXIT_FAILED, EXIT_OK, UsageError, fail, jsonSafe, output, parseCommandArgs, subcommandOf, type Command } from "./command.js";
import { checkName, CONNECTION, CONNECTION_OPTIONS, connectionHelp, withAdminClient } from "./gateway-connection.js";

/** A platform's set takes as long as its databases' dumps: an hour unless --timeout says otherwise. */
const DEFAULT_TIMEOUT_SECS = 3600;

const SUBCOMMANDS: Record<string, readonly string[]> = {
  take: ["platform", "tenant", "keep-days", "verify", ...CONNECTION],
  restore: ["platform", "tenant", "file", ...CONNECTION],
  verify: ["file", ...CONNECTION],
  download: ["platform", "tenant", "out", ...CONNECTION],
};

export const backupsCommand: Command = {
  name: "backups",
  summary: "take, restore, verify and download tenant backups (through the gateway's AdminService)",
  help: `Usage: db-gateway backups take --platform NAME [--tenant ID]... [--keep-days N] [--verify] [connection options] [--json]
       db-gateway backups restore --platform NAME --tenant NEW_ID --file FILE [connection options] [--json]
       db-gateway backups verify --file FILE [connection options] [--json]
       db-gateway backups download --platform NAME --tenant ID --out FILE [connection options] [--json]

Backups are taken by the gateway with pg_dump (custom format) into its
BACKUP_DIR, one snapshot per database, its tables' rows counted in it:
  take      a set of the tenants named (--tenant, "" for the main database), or
            of every database of the platform and the gateway's catalog, with
            manifest.json and SHA256SUMS. --verify restores each of the
            platform's files into a scratch tenant, one at a time, and compares
            its rows; --keep-days N then removes the platform's sets older than
            N days (kept when a verification failed). The scheduled job:
              0 */6 * * * db-gateway backups take --platform medstoreapp --keep-days 30 --verify
  restore   FILE (as take prints it: {platform}/{set}/{database}.dump) into a
            new tenant NEW_ID, with its own role; never over an existing one
  verify    FILE's checksum, then a restore into a scratch tenant, its rows
            compared with those counted when it was taken
  download  a backup of one tenant, taken now, streamed into FILE here

${connectionHelp(DEFAULT_TIMEOUT_SECS)}

Output: a line per file (take, verify) or one line; --json the response.
Exits 1 when a call fails or a verification finds a difference.`,
  async run(args) {
    const { values, positionals } = parseCommandArgs(
      args,
      {
        platform: { type: "string" },
        tenant: { type: "string", multiple: true },
        "keep-days": { type: "string" },
        verify: { type: "boolean" },
        file: { type: "string" },
        out: { type: "string" },
        ...CONNECTION_OPTIONS,
      },
      true,
    );
    const subcommand = subcommandOf("backups", positionals, values, SUBCOMMANDS);
    const platform = values.platform;
    if (SUBCOMMANDS[subcommand]!.includes("platform")) {
      if (platform === undefined) throw new UsageError(`backups ${subcommand} needs --platform`);
      checkName(() => validatePlatform(platform));
    }
    const tenants = values.tenant ?? [];
    if ((subcommand === "restore" || subcommand === "download") && tenants.length !== 1) throw new UsageError(`backups ${subcommand} needs one --tenant`);
    if ((subcommand === "restore" || subcommand === "verify") && !values.file) throw new UsageError(`backups ${subcommand} needs --file`);
    if (subcommand === "download" && !values.out) throw new UsageError("backups download needs --out FILE");
    const keepDays = values["keep-days"] === undefined ? 0 : Number(values["keep-days"]);
    if (!Number.isInteger(keepDays) || keepDays < 0 || keepDays > 36_500)
      throw new UsageError(`--keep-days must be a whole number of days (got "${values["keep-days"]}")`);

    return withAdminClient(values, DEFAULT_TIMEOUT_SECS, async (admin) => {
      if (subcommand === "take") {
        const taken = await admin.backup(platform!, { tenantIds: tenants, keepDays, verify: values.verify ?? false });
        const problems = taken.verified.flatMap((v) => v.problems.map((p) => `${v.file}: ${p}`));
        output(values.json, jsonSafe(taken), () =>
          [
            `backup set ${taken.backupSet}:`,
            ...taken.files.map((f) => `  ${f.file}  ${f.bytes} bytes  sha256 ${f.sha256}`),
            ...taken.removedSets.map((s) => `removed ${s} (older than ${keepDays} days)`),
            ...(values.verify ? [problems.length === 0 ? `verified ${taken.verified.length} files` : `${problems.join("\n")}\nolder sets kept`] : []),
          ].join("\n"),
        );
        if (problems.length > 0) return fail(values.json, `${problems.length} verification problems`);
        return EXIT_OK;
      }
      if (subcommand === "restore") {
        const restored = await admin.restoreTenant(platform!, tenants[0]!, values.file!);
        output(values.json, jsonSafe(restored), () => `restored ${values.file} into ${restored.database?.name}: ${rowsText(restored.tableRows)}`);
        return EXIT_OK;
      }
      if (subcommand === "verify") {
        const verified = await admin.verifyBackup(values.file!);
        output(values.json, jsonSafe(verified), () =>
          verified.ok
            ? `${values.file}: checksum and ${verified.tables.length} tables' rows match`
            : verified.problems.map((p) => `${values.file}: ${p}`).join("\n"),
        );
        return verified.ok ? EXIT_OK : EXIT_FAILED;
      }
      const out = createWriteStream(values.out!, { mode: 0o600 });
      const file = await admin.downloadBackup(platform!, tenants[0]!, out);
      await new Promise((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve(undefined))));
      output(
        values.json,
        jsonSafe(file),
        () => `${values.out}: ${file.database} at ${timestampDate(file.takenAt!).toISOString()}, ${file.bytes} bytes, sha256 ${file.sha256}`,
      );
      return EXIT_OK;
    });
  },
};

function rowsText(rows: Record<string, bigint>): string {
  const entries = Object.entries(rows);
  return entries.length === 0 ? "no tables" : entries.map(([table, n]) => `${table} ${n} rows`).join(", ");
}
