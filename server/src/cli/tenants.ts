/** `db-gateway tenants create|drop|list|fork|facts|move`: tenant databases through a running gateway's AdminService, with the SDK over mutual TLS. */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { DatabaseInfo, TenantFacts } from "@db-gateway/client";
import { databaseName, validatePlatform } from "../tenancy/naming.js";
import { EXIT_OK, UsageError, jsonSafe, output, parseCommandArgs, subcommandOf, type Command } from "./command.js";
import { checkName, CONNECTION, CONNECTION_OPTIONS, connectionHelp, withAdminClient } from "./gateway-connection.js";

const DEFAULT_TIMEOUT_SECS = 60;

/** The options each subcommand takes; any other is a usage error rather than silently ignored. */
const SUBCOMMANDS: Record<string, readonly string[]> = {
  list: ["platform", ...CONNECTION],
  create: ["platform", "tenant", "main", "template", "cluster", ...CONNECTION],
  drop: ["platform", "tenant", "yes", ...CONNECTION],
  fork: ["platform", "tenant", "from", ...CONNECTION],
  facts: ["platform", ...CONNECTION],
  move: ["platform", "tenant", "main", "to", "max-pause-ms", "drop-source", ...CONNECTION],
};

export const tenantsCommand: Command = {
  name: "tenants",
  summary: "create, drop and list tenant databases (through the gateway's AdminService)",
  help: `Usage: db-gateway tenants list [--platform NAME] [connection options] [--json]
       db-gateway tenants create --platform NAME (--tenant ID | --main) [--template DATABASE] [--cluster NAME] [connection options] [--json]
       db-gateway tenants drop --platform NAME --tenant ID --yes [connection options] [--json]
       db-gateway tenants fork --platform NAME --from ID --tenant NEW_ID [connection options] [--json]
       db-gateway tenants facts --platform NAME [connection options] [--json]
       db-gateway tenants move --platform NAME (--tenant ID | --main) --to CLUSTER [--max-pause-ms N] [--drop-source] [connection options] [--json]

Calls a running gateway's AdminService with the admin API key over mutual TLS:
  list     the databases of a platform (of every configured platform without
           --platform): name, platform, tenant id, type
  create   the database {platform}_{tenant} (--main: the platform's main
           database, {platform}_main), empty or as a copy of --template, a
           database of the same platform (e.g. medstoreapp_template), on
           --cluster or where the gateway's placement policy puts it
  drop     drops {platform}_{tenant} and its role, closing its connections
           first. Its data is gone for good: refused without --yes
  fork     creates {platform}_{NEW_ID} as a copy of {platform}_{ID}, taken
           from a snapshot while ID keeps serving, with its own role
  facts    each database of the platform with its size, schema version, last
           backup, and this gateway instance's connections and calls in the
           last minute
  move     moves {platform}_{tenant} to cluster --to with PostgreSQL's logical
           replication while it serves, then holds its calls at most
           --max-pause-ms (default 5000) while the target catches up, and
           switches. The source is kept renamed {database}-moved-{time}, or
           dropped with --drop-source. Run again to resume a move that stopped

${connectionHelp(DEFAULT_TIMEOUT_SECS)}

Output: a table (list) or a line; --json the database objects
({name, platform, tenantId, type, cluster}: an array for list). A failed call prints its
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
        cluster: { type: "string" },
        yes: { type: "boolean" },
        from: { type: "string" },
        to: { type: "string" },
        "max-pause-ms": { type: "string" },
        "drop-source": { type: "boolean" },
        ...CONNECTION_OPTIONS,
      },
      true,
    );
    const subcommand = subcommandOf("tenants", positionals, values, SUBCOMMANDS);

    const platform = values.platform;
    if (platform !== undefined) checkName(() => validatePlatform(platform));
    let tenant = "";
    if (subcommand === "facts") {
      if (platform === undefined) throw new UsageError("tenants facts needs --platform");
    } else if (subcommand !== "list") {
      if (platform === undefined) throw new UsageError(`tenants ${subcommand} needs --platform`);
      if ((subcommand === "create" || subcommand === "move") && values.main) {
        if (values.tenant !== undefined) throw new UsageError("--main and --tenant exclude each other");
      } else if (values.tenant === undefined || values.tenant === "") {
        throw new UsageError(
          `tenants ${subcommand} needs --tenant${subcommand === "create" || subcommand === "move" ? " (or --main for the platform's main database)" : ""}`,
        );
      } else {
        tenant = values.tenant;
      }
      const database = checkName(() => databaseName(platform, tenant));
      if (subcommand === "drop" && !values.yes) throw new UsageError(`dropping ${database} deletes its data for good: add --yes to drop it`);
      if (subcommand === "fork") {
        if (values.from === undefined) throw new UsageError("tenants fork needs --from, the tenant to copy");
        checkName(() => databaseName(platform, values.from!));
      }
      if (subcommand === "move") {
        if (values.to === undefined || values.to === "") throw new UsageError("tenants move needs --to, the cluster to move the tenant to");
        const pause = values["max-pause-ms"];
        if (pause !== undefined && !/^[1-9]\d{0,6}$/.test(pause)) throw new UsageError("--max-pause-ms must be a whole number of milliseconds, 1 to 9999999");
      }
    }
    return withAdminClient(values, DEFAULT_TIMEOUT_SECS, async (admin) => {
      if (subcommand === "list") {
        const databases = await admin.listDatabases(platform ?? "");
        output(values.json, databases, () => formatTable(databases));
      } else if (subcommand === "create") {
        const database = await admin.createTenant(platform!, tenant, { template: values.template ?? "", cluster: values.cluster ?? "" });
        output(values.json, database, () => `created ${database.name}${values.template ? ` from ${values.template}` : ""} on cluster ${database.cluster}`);
      } else if (subcommand === "drop") {
        const database = await admin.dropTenant(platform!, tenant);
        output(values.json, database, () => `dropped ${database.name}`);
      } else if (subcommand === "fork") {
        const forked = await admin.forkTenant(platform!, values.from!, tenant);
        const seconds = Number(forked.duration?.seconds ?? 0n) + (forked.duration?.nanos ?? 0) / 1e9;
        output(values.json, jsonSafe(forked), () => `forked ${forked.database?.name} from ${databaseName(platform!, values.from!)} in ${seconds.toFixed(1)} s`);
      } else if (subcommand === "move") {
        const pause = values["max-pause-ms"];
        const moved = await admin.moveTenant(platform!, tenant, values.to!, {
          dropSource: values["drop-source"] ?? false,
          ...(pause !== undefined ? { maxPauseMs: Number(pause) } : {}),
        });
        const ms = (d: typeof moved.pause) => Number(d?.seconds ?? 0n) * 1000 + (d?.nanos ?? 0) / 1e6;
        output(
          values.json,
          jsonSafe(moved),
          () =>
            `moved ${moved.database?.name} from cluster ${moved.sourceCluster} to ${moved.database?.cluster}: calls paused ${ms(moved.pause).toFixed(0)} ms, ` +
            `${(ms(moved.duration) / 1000).toFixed(1)} s in all; ${moved.keptSource ? `source kept as ${moved.keptSource}` : "source dropped"}`,
        );
      } else {
        const facts: TenantFacts[] = [];
        let pageToken = "";
        do {
          const page = await admin.listTenants(platform!, { pageSize: 1_000, pageToken });
          facts.push(...page.tenants);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        output(values.json, jsonSafe(facts), () => factsTable(facts));
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

function factsTable(facts: readonly TenantFacts[]): string {
  if (facts.length === 0) return "no databases";
  const rows = [
    ["DATABASE", "SIZE_MB", "VERSION", "LAST_BACKUP", "CONNECTIONS", "CALLS_1M"],
    ...facts.map((f) => [
      f.database?.name ?? "",
      (Number(f.sizeBytes) / 1024 / 1024).toFixed(1),
      String(f.schemaVersion),
      f.lastBackup ? timestampDate(f.lastBackup).toISOString() : "-",
      String(f.connections),
      String(f.callsLastMinute),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ")).join("\n");
}
