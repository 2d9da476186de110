// The PostgreSQL of one benchmark run (PG_URL's, or an embedded one started for it) and a scratch folder for the run's files.
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEmbeddedPostgres } from "../../server/src/database/embedded-postgres.js";

/** The PostgreSQL server of one benchmark run, and a scratch folder for it. */
export interface RunPostgres {
  /** A superuser's URL. */
  readonly url: string;
  /** True when started for this run; false when PG_URL named one. */
  readonly embedded: boolean;
  /** A folder for the run's files (mode 0755: PostgreSQL and PgBouncer, running as another user, read it). */
  readonly work: string;
  /** Stops the embedded server, if any, and removes the folder. */
  close(): Promise<void>;
}

/** The server in PG_URL when set, or else an embedded PostgreSQL started for this run (max_connections 300 unless given). */
export async function postgresForRun(prefix: string, options: { maxConnections?: number } = {}): Promise<RunPostgres> {
  const work = await mkdtemp(join(tmpdir(), prefix));
  await chmod(work, 0o755);
  const given = process.env.PG_URL;
  const server = given ? undefined : await startEmbeddedPostgres({ dir: join(work, "postgres"), persistent: false, maxConnections: options.maxConnections });
  return {
    url: given ?? server!.url,
    embedded: server !== undefined,
    work,
    async close() {
      await server?.stop();
      await rm(work, { recursive: true, force: true });
    },
  };
}
