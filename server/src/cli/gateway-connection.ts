/** What the CLI's commands that call a running gateway share: its address, the client's TLS files and the admin key, the SDK loaded on demand, and its errors in operators' terms. */
import { readFileSync } from "node:fs";
import type { AdminClient } from "@db-gateway/client";
import { UsageError, fail } from "./command.js";

const DEFAULT_URL = "https://localhost:9000";
/** Where `db-gateway certs --admin` puts the administrator's client files, relative to the working directory. */
const DEFAULT_TLS = { ca: "certs/ca.crt", cert: "certs/client-admin.crt", key: "certs/client-admin.key" } as const;
/** The environment variable that stands in for each TLS option. */
const TLS_ENV = { ca: "GATEWAY_TLS_CA_FILE", cert: "GATEWAY_TLS_CERT_FILE", key: "GATEWAY_TLS_KEY_FILE" } as const;

/** The options of every such command, for `parseCommandArgs`. */
export const CONNECTION_OPTIONS = {
  url: { type: "string" },
  ca: { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  "api-key-file": { type: "string" },
  timeout: { type: "string" },
} as const;

/** Their names, with those every command takes. */
export const CONNECTION = [...Object.keys(CONNECTION_OPTIONS), "json", "help"];

/** The connection options' part of a command's --help. */
export function connectionHelp(defaultTimeoutSecs: number): string {
  return `Connection options (each falls back to an environment variable):
  --url URL            the gateway (GATEWAY_URL; default ${DEFAULT_URL})
  --ca FILE            the CA of the gateway's certificate (${TLS_ENV.ca};
                       default ${DEFAULT_TLS.ca})
  --cert FILE          the client certificate (${TLS_ENV.cert};
                       default ${DEFAULT_TLS.cert})
  --key FILE           its key (${TLS_ENV.key}; default ${DEFAULT_TLS.key})
  --api-key-file FILE  the admin API key (GATEWAY_API_KEY_FILE, or the key itself in
                       GATEWAY_API_KEY; one trailing newline is ignored). There is no
                       option for the key itself: other users could read it in ps
  --timeout SECS       deadline of the call (default ${defaultTimeoutSecs})`;
}

/**
 * Calls `fn` with the SDK's admin calls on the gateway the options name;
 * resolves to its exit code, or to a failure's (a setting that cannot be
 * read, an SDK that is not built, the call's error with its gRPC status).
 */
export async function withAdminClient(
  values: Record<string, unknown>,
  defaultTimeoutSecs: number,
  fn: (admin: AdminClient, sdk: typeof import("@db-gateway/client")) => Promise<number>,
): Promise<number> {
  const json = values.json as boolean | undefined;
  const connection = connectionSettings(values, process.env, defaultTimeoutSecs);
  if (typeof connection === "string") return fail(json, connection);
  let sdk: typeof import("@db-gateway/client");
  try {
    // Loaded only here: the other commands (serve) do without the SDK.
    sdk = await import("@db-gateway/client");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_MODULE_NOT_FOUND" && /@db-gateway[\\/]client|client-sdk[\\/]dist/.test((err as Error).message)) {
      return fail(json, "the client SDK (@db-gateway/client) is not built: run npm run build -w client-sdk");
    }
    throw err;
  }
  let client;
  try {
    client = sdk.createClient(connection);
  } catch (err) {
    // The SDK's option problems (a certificate that does not parse), in this command's terms; they never quote the key.
    return fail(json, (err as Error).message.replace(/\btls\.(ca|cert|key)\b/g, "--$1"));
  }
  try {
    return await fn(client.admin(), sdk);
  } catch (err) {
    const error = sdk.GatewayError.from(err);
    const status = statusName(sdk.Code[error.code] ?? String(error.code));
    const hint = HINTS[status] ?? "";
    // An error that did not come from the gateway (no connection) has the code's name as its reason.
    const reason = statusName(error.reason);
    const label = reason === status ? status : `${status} (${reason})`;
    const message = error.message.replace(/\s*Resolution note:\s*$/, "");
    return fail(json, `${label}: ${message}${hint}`, { code: status, reason, message });
  } finally {
    client.close();
  }
}

/** What the operator can do about an error, where the gateway's message does not say. */
const HINTS: Record<string, string> = {
  UNAUTHENTICATED: " (the gateway does not know this API key: give the admin key, API_KEY_ADMIN, with --api-key-file, GATEWAY_API_KEY_FILE or GATEWAY_API_KEY)",
  PERMISSION_DENIED: " (AdminService takes the admin key, API_KEY_ADMIN, not a platform's)",
};

/** Connect's code name in gRPC's spelling: InvalidArgument → INVALID_ARGUMENT. */
export function statusName(name: string): string {
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Runs a name check of naming.ts, its error a usage error. */
export function checkName<T>(check: () => T): T {
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
function connectionSettings(values: Record<string, unknown>, env: NodeJS.ProcessEnv, defaultTimeoutSecs: number): ConnectionSettings | string {
  const option = (name: string) => values[name] as string | undefined;
  const url = option("url") ?? (env.GATEWAY_URL || DEFAULT_URL);
  try {
    if (new URL(url).protocol !== "https:") throw new Error();
  } catch {
    throw new UsageError(`--url must be the gateway's https:// address, such as ${DEFAULT_URL} (got "${url}")`);
  }
  const rawTimeout = option("timeout");
  const timeout = rawTimeout === undefined ? defaultTimeoutSecs : Number(rawTimeout);
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
