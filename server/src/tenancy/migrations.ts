// A platform's migrations as a Migrate call gives them (validated, checksummed), and what a database needs of them given its record.
import { createHash } from "node:crypto";
import { GatewayError } from "../errors.js";

/** A migration's first line that says it cannot run in a transaction (CREATE INDEX CONCURRENTLY): its statements run one by one. */
const NO_TRANSACTION = /^--\s*db-gateway:\s*no-transaction\s*$/;
const NAME = /^[A-Za-z0-9_]{1,100}$/;
/** Every migration's SQL together, at most: a request is held whole in memory. */
const MAX_TOTAL_SQL_BYTES = 16 * 1024 * 1024;

/** One migration, validated. */
export interface Migration {
  version: bigint;
  name: string;
  sql: string;
  /** SHA-256 of the SQL, hex: what a database records and is checked against. */
  checksum: string;
  /** False when its first line is the no-transaction marker. */
  transactional: boolean;
}

/** Validates a call's migrations and orders them by version; INVALID_MIGRATION says what is wrong. */
export function migrationSet(given: readonly { version: bigint; name: string; sql: string }[]): Migration[] {
  if (given.length === 0) throw new GatewayError("INVALID_MIGRATION", "no migrations were given");
  let bytes = 0;
  const seen = new Set<bigint>();
  const set = given.map(({ version, name, sql }) => {
    if (version <= 0n) throw new GatewayError("INVALID_MIGRATION", `migration version ${version} is not positive`);
    if (seen.has(version)) throw new GatewayError("INVALID_MIGRATION", `migration version ${version} is given twice`);
    seen.add(version);
    if (!NAME.test(name)) throw new GatewayError("INVALID_MIGRATION", `migration ${version}: the name must be 1 to 100 letters, digits or underscores`);
    if (sql.trim() === "") throw new GatewayError("INVALID_MIGRATION", `migration ${version} (${name}) has no SQL`);
    bytes += Buffer.byteLength(sql);
    const firstLine = sql.split("\n", 1)[0]!.trim();
    return { version, name, sql, checksum: createHash("sha256").update(sql).digest("hex"), transactional: !NO_TRANSACTION.test(firstLine) };
  });
  if (bytes > MAX_TOTAL_SQL_BYTES) throw new GatewayError("INVALID_MIGRATION", `the migrations' SQL is over ${MAX_TOTAL_SQL_BYTES / 1024 / 1024} MiB`);
  return set.sort((a, b) => (a.version < b.version ? -1 : 1));
}

/** What a database has recorded, by version. */
export type Recorded = ReadonlyMap<bigint, { name: string; checksum: string }>;

/** What a database needs: the migrations to apply, in order, or why it has drifted (nothing applied then). */
export function plan(set: readonly Migration[], recorded: Recorded): { pending: Migration[] } | { drift: string } {
  const byVersion = new Map(set.map((m) => [m.version, m]));
  for (const [version, record] of recorded) {
    const migration = byVersion.get(version);
    if (migration === undefined) return { drift: `version ${version} (${record.name}) is recorded and is not among the migrations given` };
    if (migration.checksum !== record.checksum) return { drift: `version ${version} (${record.name}) was recorded with another checksum than its SQL's` };
  }
  const latest = [...recorded.keys()].reduce((a, b) => (b > a ? b : a), 0n);
  const pending = set.filter((m) => !recorded.has(m.version));
  const below = pending.find((m) => m.version < latest);
  if (below !== undefined) return { drift: `version ${below.version} (${below.name}) is missing below the latest recorded, ${latest}` };
  return { pending };
}
