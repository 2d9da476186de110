// PostgreSQL's client tools (pg_dump, pg_restore) as child processes: found in PG_BIN_DIR or the PATH, checked against the server's major version, given passwords only through their environment.
import { spawn, type ChildProcessByStdio } from "node:child_process";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { GatewayError } from "../errors.js";

export type PgTool = "pg_dump" | "pg_restore";

/**
 * pg_restore's options for a restore run as the tenant's own role: the
 * objects become that role's (nothing of the dump's owners or grants is
 * applied), all or nothing, and no password prompt.
 */
export const RESTORE_AS_ROLE = ["--no-owner", "--no-acl", "--single-transaction", "--exit-on-error", "--no-password"] as const;

/** How the tools reach PostgreSQL: libpq's keywords but the database's name and the password, and the password apart. */
export interface ToolConnection {
  /** `host=… port=… user=… sslmode=…`, each value quoted. */
  conninfo: string;
  password?: string;
}

/**
 * A ToolConnection as `user`, from the gateway's DATABASE_URL: its host
 * (or socket directory), port and TLS settings, every one given as a keyword
 * so that nothing in the URL (a `?user=`) can stand in for `user`.
 */
export function toolConnection(databaseUrl: string, user: string, password: string | undefined): ToolConnection {
  const url = new URL(databaseUrl);
  const given = (name: string) => url.searchParams.get(name) ?? undefined;
  const sslmode = given("sslmode");
  const keywords: Record<string, string | undefined> = {
    host: given("host") ?? (decodeURIComponent(url.hostname.replace(/^\[|\]$/g, "")) || undefined),
    port: given("port") ?? (url.port || undefined),
    user,
    // node-postgres's own spelling for "encrypt, check nothing" is libpq's "require".
    sslmode: sslmode === "no-verify" ? "require" : sslmode,
    sslrootcert: given("sslrootcert"),
    sslcert: given("sslcert"),
    sslkey: given("sslkey"),
  };
  const conninfo = Object.entries(keywords)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([key, value]) => `${key}=${quote(value)}`)
    .join(" ");
  return { conninfo, ...(password !== undefined ? { password } : {}) };
}

/** A libpq keyword's value, quoted. */
function quote(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

/** The most a tool's standard error keeps for its failure's message. */
const MAX_STDERR = 8 * 1024;

/**
 * Runs PostgreSQL's client tools. `binDir` (PG_BIN_DIR) holds them, or else
 * the PATH does. Before first use, each tool's major version is checked
 * against the server's: pg_dump refuses a newer server, and a restore of its
 * output needs a pg_restore at least as new.
 */
export class PgTools {
  readonly #checked = new Map<PgTool, Promise<void>>();

  constructor(
    private readonly binDir: string | undefined,
    private readonly serverVersionNum: () => Promise<number>,
  ) {}

  path(tool: PgTool): string {
    return this.binDir ? join(this.binDir, tool) : tool;
  }

  /** FAILED_PRECONDITION (BACKUP_TOOLS_UNAVAILABLE) unless the tool runs and is as new as the server. */
  check(tool: PgTool): Promise<void> {
    let checked = this.#checked.get(tool);
    if (checked === undefined) {
      checked = this.#check(tool);
      this.#checked.set(tool, checked);
      checked.catch(() => this.#checked.delete(tool)); // installed later: looked at again
    }
    return checked;
  }

  async #check(tool: PgTool): Promise<void> {
    const [version, server] = await Promise.all([toolMajor(this.path(tool)), this.serverVersionNum()]);
    const serverMajor = Math.floor(server / 10_000);
    if (version === undefined) {
      throw new GatewayError(
        "BACKUP_TOOLS_UNAVAILABLE",
        `${tool} was not found (${this.path(tool)}): install PostgreSQL ${serverMajor}'s client tools, or set PG_BIN_DIR`,
      );
    }
    if (version < serverMajor) {
      throw new GatewayError(
        "BACKUP_TOOLS_UNAVAILABLE",
        `${tool} ${version} cannot work with PostgreSQL ${serverMajor}: install PostgreSQL ${serverMajor}'s client tools (postgresql-client-${serverMajor}), or set PG_BIN_DIR`,
      );
    }
  }

  /**
   * Starts a tool on one database: its arguments, then `--dbname` with the
   * connection's URL; the password in PGPASSWORD, never on the command line.
   */
  spawn(tool: PgTool, connection: ToolConnection, database: string, args: readonly string[]): ToolProcess {
    const child = spawn(this.path(tool), [...args, `--dbname=${connection.conninfo} dbname=${quote(database)}`], {
      stdio: ["pipe", "pipe", "pipe"],
      // HOME: libpq's ~/.pgpass and ~/.postgresql/root.crt, where the gateway's own user keeps them.
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        LANG: "C",
        PGAPPNAME: `db-gateway-${tool}`,
        ...(connection.password ? { PGPASSWORD: connection.password } : {}),
      },
    });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text: string) => {
      if (stderr.length < MAX_STDERR) stderr += text;
    });
    const exited = new Promise<void>((resolve, reject) => {
      child.on("error", (err) => reject(new GatewayError("BACKUP_TOOLS_UNAVAILABLE", `${tool} could not be started: ${err.message}`, { cause: err })));
      child.on("close", (code, signal) => {
        if (code === 0) resolve();
        else reject(new GatewayError("BACKUP_FAILED", `${tool} failed (${signal ?? `exit code ${code}`}): ${lastLines(stderr)}`));
      });
    });
    exited.catch(() => undefined); // awaited by the caller; not unhandled meanwhile
    return { child, exited };
  }
}

export interface ToolProcess {
  child: ChildProcessByStdio<Writable, Readable, Readable>;
  /** Resolves when the tool exits 0; rejects with BACKUP_FAILED and the end of its standard error otherwise. */
  exited: Promise<void>;
}

async function toolMajor(path: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const child = spawn(path, ["--version"], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (text: string) => (out += text));
    child.on("error", () => resolve(undefined));
    child.on("close", () => {
      const match = /\(PostgreSQL\) (\d+)/.exec(out);
      resolve(match ? Number(match[1]) : undefined);
    });
  });
}

function lastLines(text: string): string {
  return text.trim().split("\n").slice(-5).join("; ") || "no message";
}

/**
 * Waits for a tool and the stream work around it, and fails with the tool's
 * own error when both fail (a pipe broken because the tool died says less).
 */
export async function settleTogether(work: Promise<unknown>, tool: ToolProcess): Promise<void> {
  let stopped = false;
  const [worked, exited] = await Promise.allSettled([
    work.catch((err: unknown) => {
      // The tool would wait for input or a reader that is gone.
      stopped = true;
      tool.child.kill("SIGKILL");
      throw err;
    }),
    tool.exited,
  ]);
  if (exited.status === "rejected" && !stopped) throw exited.reason;
  if (worked.status === "rejected") throw worked.reason;
}
