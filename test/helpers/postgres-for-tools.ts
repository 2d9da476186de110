// A PostgreSQL that this machine's pg_dump can dump: PG_URL's when its version allows, else a scratch server from the same Debian binaries as pg_dump, run as the postgres user.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { chmod, chown, mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";

export interface ToolsPostgres {
  /** A superuser's URL. */
  url: string;
  /** Where pg_dump and pg_restore are (PG_BIN_DIR). */
  binDir: string;
  /** Stops the server, its data kept. */
  stop(): Promise<void>;
  /** Stops the server and removes its folder. */
  close(): Promise<void>;
}

/** The major version of the tools in `binDir`. */
function toolMajor(binDir: string): number {
  const out = execFileSync(join(binDir, "pg_dump"), ["--version"], { encoding: "utf8" });
  return Number(/\(PostgreSQL\) (\d+)/.exec(out)![1]);
}

/**
 * With `fresh`, always a scratch server of its own (a second cluster, say).
 * The client tools are PostgreSQL 15's from Debian (postgresql-15, which
 * .ci/run installs when missing); the suite's own
 * server may be newer (the embedded PostgreSQL 18), which pg_dump 15 refuses.
 */
export async function postgresForTools(options: { fresh?: boolean; settings?: Record<string, string> } = {}): Promise<ToolsPostgres> {
  const binDir = findBinDir();
  const major = toolMajor(binDir);
  const given = options.fresh === true ? undefined : process.env.PG_URL;
  // Settings of its own (wal_level = logical, say): always a scratch server.
  const settings = Object.entries(options.settings ?? {}).flatMap(([name, value]) => ["-c", `${name}=${value}`]);
  if (given && settings.length === 0) {
    const client = new pg.Client({ connectionString: given });
    await client.connect();
    const server = Number((await client.query<{ v: string }>("SHOW server_version_num")).rows[0]!.v);
    await client.end();
    if (Math.floor(server / 10_000) <= major) return { url: given, binDir, stop: async () => undefined, close: async () => undefined };
  }
  // A scratch server: PostgreSQL refuses to run as root, so as the postgres user, in a folder of its own.
  const dir = await mkdtemp(join(tmpdir(), "db-gateway-pg-tools-"));
  try {
    await chmod(dir, 0o755);
    const data = join(dir, "data");
    const { uid, gid } = userIds("postgres");
    await chown(dir, uid, gid);
    const asPostgres = { uid, gid, env: { PATH: process.env.PATH, LANG: "C" } };
    execFileSync(join(binDir, "initdb"), ["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"], { ...asPostgres, stdio: "ignore" });
    // A port taken between choosing it and the server binding it: another try on another port.
    for (let attempt = 1; ; attempt++) {
      try {
        return await startServer(binDir, data, dir, asPostgres, settings);
      } catch (err) {
        if (attempt === 3) throw err;
      }
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Starts a scratch server on `data` on `port` or a free one (with `settings`, `-c` pairs) and waits until it takes connections; stops it if it does not. */
export async function startServer(
  binDir: string,
  data: string,
  dir: string,
  asPostgres: { uid: number; gid: number; env: NodeJS.ProcessEnv },
  settings: readonly string[] = [],
  givenPort?: number,
): Promise<ToolsPostgres> {
  const port = givenPort ?? (await freePort());
  const server = spawn(
    join(binDir, "postgres"),
    [
      "-D",
      data,
      "-p",
      String(port),
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      `unix_socket_directories=${dir}`,
      "-c",
      "fsync=off",
      "-c",
      "max_connections=200",
      ...settings,
    ],
    { ...asPostgres, stdio: "ignore" },
  );
  const exited = new Promise<void>((resolve) => server.once("exit", () => resolve()));
  server.on("error", () => undefined); // seen as its exit
  const stop = async () => {
    if (server.exitCode === null && server.signalCode === null) server.kill("SIGINT"); // fast shutdown
    await exited;
  };
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  try {
    for (let i = 0; ; i++) {
      const client = new pg.Client({ connectionString: url });
      try {
        await client.connect();
        await client.end();
        break;
      } catch (err) {
        if (i > 150 || server.exitCode !== null) throw err;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    binDir,
    stop,
    async close() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Where initdb, postgres, pg_dump and pg_restore are: `pg_config --bindir` when it has them, else Debian's newest /usr/lib/postgresql/N/bin. */
export function findBinDir(): string {
  const complete = (dir: string) => ["initdb", "postgres", "pg_dump", "pg_restore"].every((tool) => existsSync(join(dir, tool)));
  try {
    const dir = execFileSync("pg_config", ["--bindir"], { encoding: "utf8" }).trim();
    if (complete(dir)) return dir;
  } catch {
    // no pg_config: look where Debian puts them
  }
  const versions = existsSync("/usr/lib/postgresql") ? readdirSync("/usr/lib/postgresql").filter((v) => /^\d+$/.test(v)) : [];
  const found = versions
    .sort((a, b) => Number(b) - Number(a))
    .map((v) => `/usr/lib/postgresql/${v}/bin`)
    .find(complete);
  if (found === undefined) throw new Error("PostgreSQL's server binaries and client tools are not installed: apt-get install postgresql-15");
  return found;
}

export function userIds(name: string): { uid: number; gid: number } {
  return { uid: Number(execFileSync("id", ["-u", name], { encoding: "utf8" })), gid: Number(execFileSync("id", ["-g", name], { encoding: "utf8" })) };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
