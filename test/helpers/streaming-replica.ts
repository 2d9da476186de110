// A PostgreSQL primary with a streaming replica of it (pg_basebackup -R), both scratch servers from Debian's binaries run as the postgres user, for tests of replica reads.
import { execFileSync } from "node:child_process";
import { chmod, chown, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { findBinDir, startServer, userIds, type ToolsPostgres } from "./postgres-for-tools.js";

/** A primary and its streaming replica. */
export interface ReplicatedPostgres {
  /** The primary's superuser URL. */
  primaryUrl: string;
  /** The replica's superuser URL (read-only: it is in recovery). */
  replicaUrl: string;
  /** Stops the replica (its data stays). */
  stopReplica(): Promise<void>;
  /** Starts the replica again, on its port. */
  startReplica(): Promise<void>;
  /** Runs a statement on the replica as its superuser (pg_wal_replay_pause(), say). */
  onReplica(sql: string): Promise<pg.QueryResult>;
  close(): Promise<void>;
}

const REPLICATION = ["wal_level=replica", "max_wal_senders=5", "hot_standby=on", "wal_keep_size=64MB"].flatMap((setting) => ["-c", setting]);

/** Starts a primary, takes a base backup of it for a replica (with its standby settings), and starts the replica. */
export async function startReplicatedPostgres(): Promise<ReplicatedPostgres> {
  const binDir = findBinDir();
  const dir = await mkdtemp(join(tmpdir(), "db-gateway-replica-"));
  const servers: ToolsPostgres[] = [];
  try {
    await chmod(dir, 0o755);
    const { uid, gid } = userIds("postgres");
    await chown(dir, uid, gid);
    const asPostgres = { uid, gid, env: { PATH: process.env.PATH, LANG: "C" } };
    const primaryData = join(dir, "primary");
    const replicaData = join(dir, "replica");
    execFileSync(join(binDir, "initdb"), ["-D", primaryData, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"], { ...asPostgres, stdio: "ignore" });
    const primary = await startServer(binDir, primaryData, dir, asPostgres, REPLICATION);
    servers.push(primary);
    const { port } = new URL(primary.url);
    execFileSync(join(binDir, "pg_basebackup"), ["-h", "127.0.0.1", "-p", port, "-U", "postgres", "-D", replicaData, "-R", "-X", "stream", "--no-sync"], {
      ...asPostgres,
      stdio: "ignore",
    });
    let replica: ToolsPostgres | undefined = await startServer(binDir, replicaData, dir, asPostgres, REPLICATION);
    const result: ReplicatedPostgres = {
      primaryUrl: primary.url,
      replicaUrl: replica.url,
      async stopReplica() {
        await replica?.stop();
        replica = undefined;
      },
      async startReplica() {
        replica = await startServer(binDir, replicaData, dir, asPostgres, REPLICATION, Number(new URL(result.replicaUrl).port));
      },
      async onReplica(sql) {
        const client = new pg.Client({ connectionString: result.replicaUrl });
        await client.connect();
        try {
          return await client.query(sql);
        } finally {
          await client.end();
        }
      },
      async close() {
        await replica?.stop().catch(() => undefined);
        await primary.stop().catch(() => undefined);
        await rm(dir, { recursive: true, force: true });
      },
    };
    return result;
  } catch (err) {
    for (const server of servers) await server.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
