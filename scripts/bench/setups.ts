// What `npm run bench`'s setups run on: the pg.Pools of (A) and (B), PgBouncer for (B), and the plain gRPC client of the hop-alone row (C′).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import type { GatewayProcess } from "../../test/helpers/gateway-process.js";

/** `databaseUrl` with another database and, given a port, another server on this host (PgBouncer). */
export function urlFor(databaseUrl: string, database: string, port?: number): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${database}`;
  if (port !== undefined) {
    url.hostname = "127.0.0.1";
    url.port = String(port);
  }
  return url.toString();
}

/** The pg.Pools of setups (A) and (B), ended together once a setup is measured, and at the end of the run. */
export class Pools {
  readonly #pools: pg.Pool[] = [];

  /** A pool of `max` connections; `keepIdle`: its idle connections are never closed (pg's default closes them after 10 s). */
  open(connectionString: string, max: number, keepIdle = false): pg.Pool {
    const pool = new pg.Pool({ connectionString, max, ...(keepIdle ? { idleTimeoutMillis: 0 } : {}) });
    // An idle connection that PostgreSQL ends (its backend terminated) is reported here; it must not end the run.
    pool.on("error", () => undefined);
    this.#pools.push(pool);
    return pool;
  }

  async close(): Promise<void> {
    await Promise.all(this.#pools.splice(0).map((p) => p.end().catch(() => undefined)));
  }
}

/** PgBouncer in transaction mode in front of the same PostgreSQL, run as the postgres system user (it refuses root); undefined when not installed or not started. */
export async function startPgBouncer(dir: string, databaseUrl: string): Promise<{ port: number; process: ChildProcess } | undefined> {
  if (spawnSync("pgbouncer", ["--version"]).status !== 0) return undefined;
  const adminUrl = new URL(databaseUrl);
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const user = decodeURIComponent(adminUrl.username || "postgres");
  const password = decodeURIComponent(adminUrl.password);
  await writeFile(join(dir, "userlist.txt"), `"${user}" "${password}"\n`);
  await writeFile(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `* = host=${adminUrl.hostname} port=${adminUrl.port || 5432}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      `auth_type = ${password ? "scram-sha-256" : "trust"}`,
      `auth_file = ${join(dir, "userlist.txt")}`,
      "pool_mode = transaction",
      "max_client_conn = 2000",
      "default_pool_size = 20",
      "server_idle_timeout = 10",
      `logfile = ${join(dir, "pgbouncer.log")}`,
      "",
    ].join("\n"),
  );
  const asRoot = process.getuid?.() === 0;
  if (asRoot) spawnSync("chown", ["-R", "postgres", dir]);
  const child = asRoot
    ? spawn("runuser", ["-u", "postgres", "--", "pgbouncer", join(dir, "pgbouncer.ini")], { stdio: ["ignore", "ignore", "pipe"] })
    : spawn("pgbouncer", [join(dir, "pgbouncer.ini")], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  for (let i = 0; i < 50; i++) {
    const probe = new pg.Client({ connectionString: urlFor(databaseUrl, "postgres", port) });
    try {
      await probe.connect();
      await probe.end();
      return { port, process: child };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  child.kill("SIGTERM");
  console.log(`PgBouncer did not start:\n${stderr}${await readFile(join(dir, "pgbouncer.log"), "utf8").catch(() => "")}`);
  return undefined;
}

/** A plain grpc-js client of the gateway's grpc.health.v1 Health/Check, over the same mTLS as the SDK. */
export function healthChecker(gateway: GatewayProcess): { check: () => Promise<void>; close: () => void } {
  const { url, tls } = gateway.clientOptions(gateway.platformKey);
  const credentials = grpc.credentials.createSsl(Buffer.from(tls!.ca!), Buffer.from(tls!.key!), Buffer.from(tls!.cert!));
  const client = new grpc.Client(new URL(url).host, credentials);
  const bytes = (b: Buffer) => b;
  const empty = Buffer.alloc(0); // HealthCheckRequest { service: "" }
  return {
    check: () =>
      new Promise<void>((resolve, reject) => {
        client.makeUnaryRequest("/grpc.health.v1.Health/Check", bytes, bytes, empty, (err) => (err ? reject(err) : resolve()));
      }),
    close: () => client.close(),
  };
}
