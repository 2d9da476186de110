/** `db-gateway tenants create|drop|list`: tenant databases through a running gateway's AdminService, with the SDK over mutual TLS. */
import type { DatabaseInfo } from "@db-gateway/client";
import { databaseName, validatePlatform } from "../tenancy/naming.js";
import { EXIT_OK, UsageError, output, parseCommandArgs, type Command } from "./command.js";
import { checkName, CONNECTION, CONNECTION_OPTIONS, connectionHelp, withAdminClient } from "./gateway-connection.js";

const DEFAULT_TIMEOUT_SECS = 60;

/** The options each subcommand takes; any other is a usage error rather than silently ignored. */
const SUBCOMMANDS: Record<string, readonly string[]> = {
  list: ["platform", ...CONNECTION],
  create: ["platform", "tenant", "main", "template", ...CONNECTION],
  drop: ["platform", "tenant", "yes", ...CONNECTION],
};

export const tenantsCommand: Command = {
  name: "tenants",
  summary: "create, drop and list tenant databases (through the gateway's AdminService)",
  help: `Usage: db-gateway tenants list [--platform NAME] [connection options] [--json]
       db-gateway tenants create --platform NAME (--tenant ID | --main) [--template DATABASE] [connection options] [--json]
       db-gateway tenants drop --platform NAME --tenant ID --yes [connection options] [--json]

Calls a running gateway's AdminService with the admin API key over mutual TLS:
  list     the databases of a platform (of every configured platform without
           --platform): name, platform, tenant id, type
  create   the database {platform}_{tenant} (--main: the platform's main
           database, {platform}_main), empty or as a copy of --template, a
           database of the same platform (e.g. medstoreapp_template)
  drop     drops {platform}_{tenant} and its role, closing its connections
           first. Its data is gone for good: refused without --yes

${connectionHelp(DEFAULT_TIMEOUT_SECS)}

Output: a table (list) or a line; --json the database objects
({name, platform, tenantId, type}: an array for list). A failed call prints its
gRPC status and message (NOT_FOUND (DATABASE_NOT_FOUND): …) and exits 1.

Examples:
  export GATEWAY_URL=https://db-gateway.internal:9000 GATEWAY_API_KEY_FILE=/run/secrets/api-key-admin
  db-gateway tenants create --platform medstoreapp --tenant clinic_001 --template medstoreapp_template
  db-gateway tenants list --platform medstoreapp --json
  db-gateway tenants drop --platform medstoreapp --tenant clinic_001 --yes`,
  async run(args) {
    const { values, positionals } = parseCommandArgs(
      args,
      {
        platform: { type: "string" },
        tenant: { type: "string" },
        main: { type: "boolean" },
        template: { type: "string" },
        yes: { type: "boolean" },
        ...CONNECTION_OPTIONS,
      },
      true,
    );
    const [subcommand, ...extra] = positionals;
    if (subcommand === undefined) throw new UsageError("which one: tenants list, tenants create or tenants drop?");
    const allowed = SUBCOMMANDS[subcommand];
    if (allowed === undefined) throw new UsageError(`unknown subcommand "${subcommand}": list, create or drop`);
    if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
    for (const name of Object.keys(values)) if (!allowed.includes(name)) throw new UsageError(`--${name} is not an option of tenants ${subcommand}`);

    const platform = values.platform;
    if (platform !== undefined) checkName(() => validatePlatform(platform));
    let tenant = "";
    if (subcommand !== "list") {
      if (platform === undefined) throw new UsageError(`tenants ${subcommand} needs --platform`);
      if (subcommand === "create" && values.main) {
        if (values.tenant !== undefined) throw new UsageError("--main and --tenant exclude each other");
      } else if (values.tenant === undefined || values.tenant === "") {
        throw new UsageError(`tenants ${subcommand} needs --tenant${subcommand === "create" ? " (or --main for the platform's main database)" : ""}`);
      } else {
        tenant = values.tenant;
      }
      const database = checkName(() => databaseName(platform, tenant));
      if (subcommand === "drop" && !values.yes) throw new UsageError(`dropping ${database} deletes its data for good: add --yes to drop it`);
    }
    return withAdminClient(values, DEFAULT_TIMEOUT_SECS, async (admin) => {
      if (subcommand === "list") {
        const databases = await admin.listDatabases(platform ?? "");
        output(values.json, databases, () => formatTable(databases));
      } else if (subcommand === "create") {
        const database = await admin.createTenant(platform!, tenant, { template: values.template ?? "" });
        output(values.json, database, () => `created ${database.name}${values.template ? ` from ${values.template}` : ""}`);
      } else {
        const database = await admin.dropTenant(platform!, tenant);
        output(values.json, database, () => `dropped ${database.name}`);
      }
      return EXIT_OK;
    });
  },
};

function formatTable(databases: readonly DatabaseInfo[]): string {
  if (databases.length === 0) return "no databases";
  const rows = [["DATABASE", "PLATFORM", "TENANT", "TYPE"], ...databases.map((d) => [d.name, d.platform, d.tenantId || "-", d.type])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ")).join("\n");
}
