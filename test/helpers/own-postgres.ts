// An embedded PostgreSQL of one test's own, for tests that stop and start the database.
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEmbeddedPostgres, type EmbeddedServer } from "../../server/src/database/embedded-postgres.js";

/** A PostgreSQL of one test's own, for tests that stop and start it. */
export interface OwnPostgres {
  readonly url: string;
  /** Stops the server (its data stays). */
  stop(): Promise<void>;
  /** Starts it again on the same port, with the same data. */
  start(): Promise<void>;
  /** Stops it if it runs, and removes its data. */
  close(): Promise<void>;
}

export async function startOwnPostgres(): Promise<OwnPostgres> {
  const dir = await mkdtemp(join(tmpdir(), "db-gateway-own-pg-"));
  await chmod(dir, 0o755); // as root, PostgreSQL runs as another user that must reach its data
  let server: EmbeddedServer | undefined = await startEmbeddedPostgres({ dir });
  const url = server.url;
  return {
    url,
    async stop() {
      await server?.stop();
      server = undefined;
    },
    async start() {
      server = await startEmbeddedPostgres({ dir, port: Number(new URL(url).port) });
    },
    async close() {
      await server?.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
