/** `db-gateway tenants create|drop|list`: tenant databases through a running gateway's AdminService, with the SDK over mutual TLS. */
import { readFileSync } from "node:fs";
import type { DatabaseInfo } from "@db-gateway/client";
import { databaseName, validatePlatform } from "../tenancy/naming.js";
import { EXIT_OK, UsageError, fail, output, parseCommandArgs, type Command } from "./command.js";

const DEFAULT_URL = "https://localhost:9000";
const DEFAULT_TIMEOUT_SECS = 60;
/** Where `db-gateway certs --admin` puts the administrator's client files, relative to the working directory. */
const DEFAULT_TLS = { ca: "certs/ca.crt", cert: "certs/client-admin.crt", key: "certs/client-admin.key" } as const;
/** The environment variable that stands in for each TLS option. */
const TLS_ENV = { ca: "GATEWAY_TLS_CA_FILE", cert: "GATEWAY_TLS_CERT_FILE", key: "GATEWAY_TLS_KEY_FILE" } as const;

const CONNECTION = ["url", "ca", "cert", "key", "api-key-file", "timeout", "json", "help"];
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

Connection options (each falls back to an environment variable):
  --url URL            the gateway (GATEWAY_URL; default ${DEFAULT_URL})
  --ca FILE            the CA of the gateway's certificate (${TLS_ENV.ca};
                       default ${DEFAULT_TLS.ca})
  --cert FILE          the client certificate (${TLS_ENV.cert};
                       default ${DEFAULT_TLS.cert})
  --key FILE           its key (${TLS_ENV.key}; default ${DEFAULT_TLS.key})
  --api-key-file FILE  the admin API key (GATEWAY_API_KEY_FILE, or the key itself in
                       GATEWAY_API_KEY; one trailing newline is ignored). There is no
                       option for the key itself: other users could read it in ps
  --timeout SECS       deadline of the call (default ${DEFAULT_TIMEOUT_SECS})

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
        url: { type: "string" },
        ca: { type: "string" },
        cert: { type: "string" },
        key: { type: "string" },
        "api-key-file": { type: "string" },
        timeout: { type: "string" },
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
    const connection = connectionSettings(values, process.env);
    if (typeof connection === "string") return fail(values.json, connection);

    let sdk: typeof import("@db-gateway/client");
    try {
      // Loaded only here: the other commands (serve) do without the SDK.
      sdk = await import("@db-gateway/client");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ERR_MODULE_NOT_FOUND" && /@db-gateway[\\/]client|client-sdk[\\/]dist/.test((err as Error).message)) {
        return fail(values.json, "the client SDK (@db-gateway/client) is not built: run npm run build -w client-sdk");
      }
      throw err;
    }
    let client;
    try {
      client = sdk.createClient(connection);
    } catch (err) {
      // The SDK's option problems (a certificate that does not parse), in this command's terms; they never quote the key.
      return fail(values.json, (err as Error).message.replace(/\btls\.(ca|cert|key)\b/g, "--$1"));
    }
    try {
      const admin = client.admin();
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
    } catch (err) {
      const error = sdk.GatewayError.from(err);
      const status = statusName(sdk.Code[error.code] ?? String(error.code));
      const hint = HINTS[status] ?? "";
      // An error that did not come from the gateway (no connection) has the code's name as its reason.
      const reason = statusName(error.reason);
      const label = reason === status ? status : `${status} (${reason})`;
      const message = error.message.replace(/\s*Resolution note:\s*$/, "");
      return fail(values.json, `${label}: ${message}${hint}`, { code: status, reason, message });
    } finally {
      client.close();
    }
  },
};

/** What the operator can do about an error, where the gateway's message does not say. */
const HINTS: Record<string, string> = {
  UNAUTHENTICATED: " (the gateway does not know this API key: give the admin key, API_KEY_ADMIN, with --api-key-file, GATEWAY_API_KEY_FILE or GATEWAY_API_KEY)",
  PERMISSION_DENIED: " (AdminService takes the admin key, API_KEY_ADMIN, not a platform's)",
};

/** Connect's code name in gRPC's spelling: InvalidArgument → INVALID_ARGUMENT. */
function statusName(name: string): string {
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Runs a name check of naming.ts, its error a usage error. */
function checkName<T>(check: () => T): T {
  try {
    return check();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

interface ConnectionSettings {
  url: string;
  apiKey: string;
  tls: { ca: Buffer; cert: Buffer; key: Buffer };
  timeoutMs: number;
}

/**
 * The gateway's address, the client's TLS files and the admin key, from the
 * options or the environment. A missing setting is a usage error; a file that
 * cannot be read is returned as the failure's message (never with the key).
 */
function connectionSettings(values: Record<string, string | boolean | undefined>, env: NodeJS.ProcessEnv): ConnectionSettings | string {
  const option = (name: string) => values[name] as string | undefined;
  const url = option("url") ?? (env.GATEWAY_URL || DEFAULT_URL);
  try {
    if (new URL(url).protocol !== "https:") throw new Error();
  } catch {
    throw new UsageError(`--url must be the gateway's https:// address, such as ${DEFAULT_URL} (got "${url}")`);
  }
  const rawTimeout = option("timeout");
  const timeout = rawTimeout === undefined ? DEFAULT_TIMEOUT_SECS : Number(rawTimeout);
  if (!Number.isInteger(timeout) || timeout < 1 || timeout > 3600) throw new UsageError(`--timeout must be whole seconds from 1 to 3600 (got "${rawTimeout}")`);

  const fileOption = values["api-key-file"] as string | undefined;
  if (fileOption === undefined && env.GATEWAY_API_KEY && env.GATEWAY_API_KEY_FILE)
    throw new UsageError("GATEWAY_API_KEY and GATEWAY_API_KEY_FILE are both set: use one");
  const keyFile = fileOption ?? (env.GATEWAY_API_KEY_FILE || undefined);
  let apiKey = keyFile === undefined ? env.GATEWAY_API_KEY || undefined : undefined;
  if (keyFile === undefined && apiKey === undefined)
    throw new UsageError("no admin API key: give --api-key-file FILE, or set GATEWAY_API_KEY_FILE or GATEWAY_API_KEY");
  if (keyFile !== undefined) {
    try {
      apiKey = readFileSync(keyFile, "utf8").replace(/\r?\n$/, "");
    } catch (err) {
      return `cannot read the API key file "${keyFile}" (${(err as NodeJS.ErrnoException).code ?? "error"})`;
    }
    if (apiKey === "") return `the API key file "${keyFile}" is empty`;
  }

  const tls = { ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) };
  for (const name of ["ca", "cert", "key"] as const) {
    const file = option(name) ?? (env[TLS_ENV[name]] || DEFAULT_TLS[name]);
    try {
      tls[name] = readFileSync(file);
    } catch (err) {
      return `--${name}: cannot read "${file}" (${(err as NodeJS.ErrnoException).code ?? "error"}): give --${name} FILE or set ${TLS_ENV[name]}`;
    }
  }
  return { url, apiKey: apiKey!, tls, timeoutMs: timeout * 1000 };
}

function formatTable(databases: readonly DatabaseInfo[]): string {
  if (databases.length === 0) return "no databases";
  const rows = [["DATABASE", "PLATFORM", "TENANT", "TYPE"], ...databases.map((d) => [d.name, d.platform, d.tenantId || "-", d.type])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ")).join("\n");
}
