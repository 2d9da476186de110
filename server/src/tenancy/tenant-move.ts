// Moves a tenant's database to another cluster with PostgreSQL's logical replication: copy while serving, then a short pause to catch up and flip the placement.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { escapeIdentifier, escapeLiteral } from "pg";
import { GatewayError, toGatewayError } from "../errors.js";
import type { Cluster, Clusters } from "./clusters.js";
import { busySessions, copySequences, hasDatabase, replicationName, serverVersion, sessions } from "./move-steps.js";
import { ensureRecord, MIGRATIONS_SCHEMA, recordState } from "./migration-record.js";
import type { MoveStore } from "./move-store.js";
import { databaseLockKey, databaseName } from "./naming.js";
import { PgTools, RESTORE_AS_ROLE, settleTogether, toolConnection } from "./pg-tools.js";
import type { PlacementStore } from "./placement-store.js";
import type { DatabaseRegistry } from "./registry.js";
import type { TenantRoles } from "./roles.js";
import type { TenantPauses } from "./tenant-pause.js";

/** How the gateway reaches a cluster as its administrative role, for the tools and for a subscription. */
export interface ClusterAccess {
  /** Its administrative URL (DATABASE_URL, or CLUSTER_<NAME>_URL). */
  url: string;
  user: string;
  password: string | undefined;
}

/** What a mover needs. */
export interface TenantMoverOptions {
  clusters: Clusters;
  registry: DatabaseRegistry;
  placements: PlacementStore;
  moves: MoveStore;
  pauses: TenantPauses;
  roles: TenantRoles;
  /** Closes a database's pool here: its idle connections (to the source) go, waiting calls fail with `error`. */
  closePool(database: string, error: GatewayError): void;
  access(cluster: string): ClusterAccess;
  /** PG_BIN_DIR: where pg_dump and pg_restore are; undefined: the PATH. */
  pgBinDir?: string;
}

/** What one move asks for. */
export interface MoveRequest {
  platform: string;
  tenantId: string;
  /** The target cluster's name. */
  to: string;
  /** The longest the tenant's calls are held at the switch; past it the switch is undone and the move fails (MOVE_PAUSE_EXCEEDED). */
  maxPauseMillis: number;
  /** Drop the source database (and its role there) once moved, instead of keeping it under another name. */
  dropSource: boolean;
  /** Aborted when the call is cancelled or its deadline passes: the move stops where it is, the tenant served from its source. */
  signal: AbortSignal;
}

/** What a move did. */
export interface MoveOutcome {
  database: string;
  source: string;
  target: string;
  /** How long the tenant's new calls were held; 0 when this run only finished a move already switched. */
  pauseMillis: number;
  /** The source's WAL position the target caught up to before the flip. */
  catchUpLsn: string;
  /** Tables copied by the subscription. */
  tables: number;
  /** Sequences set on the target to the source's values. */
  sequences: number;
  /** The source database's name on its cluster now ("" when dropped). */
  keptAs: string;
  /** Whether this run went on from an earlier one (a subscription reused, or a switched move finished). */
  resumed: boolean;
}

/** How often the mover looks at replication progress and at the tenant's sessions. */
const POLL_MILLIS = 20;
/** Of the pause, the share given to statements running on the source to finish before they are cut. */
const DRAIN_SHARE = 0.5;

/**
 * Moves tenant databases between clusters. A move: the target database is
 * made empty with the tenant's role, its schema copied with pg_dump
 * --schema-only and pg_restore (as the tenant's role); a publication for all
 * tables on the source and a subscription on the target copy the rows and
 * then follow every change while the tenant keeps being served from its
 * source. The switch pauses the tenant's new calls on this gateway, makes
 * the source refuse the tenant's role (CONNECTION LIMIT 0, which every
 * gateway's pool waits out, then its sessions terminated once their
 * statements end or half the pause is over), waits for the subscriber to
 * confirm the source's WAL position, copies the sequences, flips the
 * placement (announced to every gateway), closes this gateway's pool and
 * resumes the calls, now served from the target. Then the replication is
 * removed and the source database renamed (`{db}-moved-{UTC time}`, no
 * tenant's name, so never routed) or dropped.
 *
 * Progress is recorded in the catalog (tenant_move): a run that stops
 * before the flip leaves the tenant on its source, and the next run reuses
 * the subscription if there is one (else makes the target again); a run that
 * stops after it is finished by the next.
 */
export class TenantMover {
  constructor(private readonly o: TenantMoverOptions) {}

  /** Moves a tenant to `request.to` (see the class). Only one move of a database runs at a time, across gateways (MOVE_IN_PROGRESS). */
  async move(request: MoveRequest): Promise<MoveOutcome> {
    const { clusters } = this.o;
    clusters.requireConfigured(request.platform);
    const database = databaseName(request.platform, request.tenantId);
    const target = clusters.get(request.to);
    if (!(request.maxPauseMillis > 0)) throw new GatewayError("INVALID_REQUEST", "max_pause must be positive");
    const served = clusters.clusterOf(database) ?? ((await clusters.lookUp(database)) ? clusters.clusterOf(database) : undefined);
    if (served === undefined) throw new GatewayError("DATABASE_NOT_FOUND", `database "${database}" does not exist`, { metadata: { database } });

    return this.#exclusively(database, async () => {
      const record = await this.o.moves.get(database);
      if (served === target) {
        if (record?.phase === "switched" && record.target === target.name) {
          const keptAs = await this.#cleanUp(database, clusters.get(record.source), target, request.dropSource);
          return { database, source: record.source, target: target.name, pauseMillis: 0, catchUpLsn: "", tables: 0, sequences: 0, keptAs, resumed: true };
        }
        throw new GatewayError("MOVE_TO_SAME_CLUSTER", `database "${database}" is on cluster "${target.name}" already`, {
          metadata: { database, cluster: target.name },
        });
      }
      // An earlier run towards another cluster left a copy there: it is removed (the tenant never left its source).
      if (record !== undefined && record.phase === "copying" && record.target !== target.name && record.target !== served.name) {
        const stale = clusters.all().find((c) => c.name === record.target);
        if (stale !== undefined) await this.#discardCopy(database, stale);
      }
      // A run that stopped in its pause (its gateway gone) left the tenant's role refused on the source: it may connect again.
      if (record?.phase === "copying") await this.#allowOn(served, database);
      await this.#checkPossible(database, served, target);
      await this.o.moves.begin(database, served.name, target.name);
      try {
        return await this.#move(database, served, target, request);
      } catch (err) {
        const failure = request.signal.aborted ? stopped(request.signal, database, err) : toGatewayError(err);
        await this.o.moves.failed(database, failure.message).catch(() => undefined);
        throw failure;
      }
    });
  }

  async #move(database: string, source: Cluster, target: Cluster, request: MoveRequest): Promise<MoveOutcome> {
    const { signal } = request;
    const name = replicationName(database);
    // Held until the flip: no Migrate run changes the schema while the copy follows the source.
    const sourceInside = await source.connectTo(database);
    let ended = false;
    const endSource = async () => {
      if (ended) return;
      ended = true;
      await sourceInside.end().catch(() => undefined);
    };
    try {
      const { rows } = await sourceInside.query<{ locked: boolean }>("SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext($1)) AS locked", [
        `db-gateway/migrate/${database}`,
      ]);
      if (!rows[0]!.locked) throw new GatewayError("MOVE_NOT_POSSIBLE", `a migration of "${database}" is running: move the tenant once it is over`);
      const resumed = await this.#prepareTarget(database, source, target, sourceInside, signal);
      const tables = await this.#waitForCopy(database, target, name, signal);
      const switched = await this.#switch(database, source, target, sourceInside, request);
      await endSource();
      const keptAs = await this.#cleanUp(database, source, target, request.dropSource);
      return { database, source: source.name, target: target.name, ...switched, tables, keptAs, resumed };
    } finally {
      await endSource();
    }
  }

  /** Runs `fn` holding the catalog's lock on moving `database`; MOVE_IN_PROGRESS when another run holds it. */
  async #exclusively<T>(database: string, fn: () => Promise<T>): Promise<T> {
    const client = await this.o.clusters.primary.admin.connect();
    let broken: Error | undefined;
    try {
      const key = `db-gateway/move/${database}`;
      const { rows } = await client.query<{ locked: boolean }>("SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext($1)) AS locked", [key]);
      if (!rows[0]!.locked) throw new GatewayError("MOVE_IN_PROGRESS", `a move of "${database}" is under way`, { metadata: { database } });
      try {
        return await fn();
      } finally {
        await client.query("SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtext($1))", [key]).catch((err: Error) => (broken = err));
      }
    } finally {
      client.release(broken);
    }
  }

  /** FAILED_PRECONDITION (MOVE_NOT_POSSIBLE) unless logical replication can copy the database from `source` to `target`. */
  async #checkPossible(database: string, source: Cluster, target: Cluster): Promise<void> {
    for (const cluster of [source, target]) {
      const { rows } = await cluster.admin.query<{ superuser: boolean }>("SELECT rolsuper AS superuser FROM pg_catalog.pg_roles WHERE rolname = current_user");
      if (rows[0]?.superuser !== true) {
        throw new GatewayError(
          "MOVE_NOT_POSSIBLE",
          `the administrative role of cluster "${cluster.name}" is not a superuser: a move publishes all tables on the source and subscribes on the target, which PostgreSQL allows superusers only`,
          { metadata: { cluster: cluster.name } },
        );
      }
    }
    const walLevel = (await source.admin.query<{ wal_level: string }>("SHOW wal_level")).rows[0]!.wal_level;
    if (walLevel !== "logical") {
      throw new GatewayError("MOVE_NOT_POSSIBLE", `cluster "${source.name}" has wal_level ${walLevel}: a move needs wal_level = logical there (a restart)`, {
        metadata: { cluster: source.name },
      });
    }
    const inside = await source.connectTo(database);
    try {
      // Updates and deletes of a published table need a replica identity (a primary key, by default): without it they would fail on the source.
      const { rows } = await inside.query<{ table: string }>(
        `SELECT c.oid::pg_catalog.regclass::text AS table FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'r' AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
            AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
          ORDER BY 1 LIMIT 20`,
      );
      if (rows.length > 0) {
        throw new GatewayError(
          "MOVE_NOT_POSSIBLE",
          `tables without a primary key or replica identity cannot be moved while they are written: ${rows.map((r) => r.table).join(", ")} (add a primary key, or ALTER TABLE … REPLICA IDENTITY FULL)`,
          { metadata: { database } },
        );
      }
    } finally {
      await inside.end();
    }
  }

  /**
   * Makes the target database replicate the source's: reused when an earlier
   * run left it subscribed (returns true), else (re)made empty with the
   * tenant's role, its schema copied, the publication and subscription made.
   */
  async #prepareTarget(database: string, source: Cluster, target: Cluster, sourceInside: pg.Client, signal: AbortSignal): Promise<boolean> {
    const name = replicationName(database);
    if (await hasDatabase(target, database)) {
      if (await this.#subscribed(target, database, name)) return true;
      await this.#discardCopy(database, target);
    }
    signal.throwIfAborted();
    await this.#withNameLock(database, async () => {
      const client = await target.admin.connect();
      try {
        await client.query(`CREATE DATABASE ${escapeIdentifier(database)}`);
        await this.o.roles.provision(client, database, (d) => target.connectTo(d));
      } finally {
        client.release();
      }
    });
    // Known to hold it (the placement still names the source, which serves it).
    this.o.registry.add(database, target.name);
    await this.#copySchema(database, source, target, sourceInside, signal);
    signal.throwIfAborted();
    const published = await sourceInside.query("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", [name]);
    if (published.rowCount === 0) await sourceInside.query(`CREATE PUBLICATION ${escapeIdentifier(name)} FOR ALL TABLES`);
    // A slot left by a subscription that is gone (its target database was dropped) would refuse the new one's.
    await source.admin.query("SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND NOT active", [
      name,
    ]);
    const a = this.o.access(source.name);
    const conninfo = `${toolConnection(a.url, a.user, a.password).conninfo}${a.password !== undefined ? ` password=${libpqQuote(a.password)}` : ""} dbname=${libpqQuote(database)}`;
    const inside = await target.connectTo(database);
    try {
      // synchronous_commit on: the target flushes each change it applies at once, so it confirms the source's position without waiting for its WAL writer (the pause).
      await inside.query(
        `CREATE SUBSCRIPTION ${escapeIdentifier(name)} CONNECTION ${escapeLiteral(conninfo)} PUBLICATION ${escapeIdentifier(name)} WITH (slot_name = ${escapeLiteral(name)}, synchronous_commit = on)`,
      );
    } finally {
      await inside.end();
    }
    return false;
  }

  /** pg_dump --schema-only of the source (the gateway's record apart: made first on the target) into pg_restore as the tenant's role. */
  async #copySchema(database: string, source: Cluster, target: Cluster, sourceInside: pg.Client, signal: AbortSignal): Promise<void> {
    const role = this.o.roles.roleName(database);
    let ours = false;
    try {
      ours = (await recordState(sourceInside, database)) === "ours";
    } catch (err) {
      if (!(err instanceof GatewayError && err.reason === "MIGRATION_SCHEMA_CONFLICT")) throw err;
    }
    const src = this.o.access(source.name);
    const dst = this.o.access(target.name);
    const dumpTools = new PgTools(this.o.pgBinDir, () => serverVersion(source));
    const restoreTools = new PgTools(this.o.pgBinDir, () => serverVersion(target));
    await Promise.all([dumpTools.check("pg_dump"), restoreTools.check("pg_restore")]);
    const targetInside = await target.connectTo(database);
    try {
      if (ours) await ensureRecord(targetInside, database, role);
      const dump = dumpTools.spawn("pg_dump", toolConnection(src.url, src.user, src.password), database, [
        "--format=custom",
        "--schema-only",
        "--no-publications",
        "--no-subscriptions",
        ...(ours ? [`--exclude-schema=${MIGRATIONS_SCHEMA}`] : []),
        "--no-password",
      ]);
      dump.child.stdin.end();
      const restore = restoreTools.spawn("pg_restore", toolConnection(dst.url, role, this.o.roles.password(role)), database, [...RESTORE_AS_ROLE]);
      restore.child.stdout.resume();
      const stop = () => (dump.child.kill("SIGKILL"), restore.child.kill("SIGKILL"));
      signal.addEventListener("abort", stop, { once: true });
      try {
        dump.child.stdout.pipe(restore.child.stdin);
        await settleTogether(dump.exited, restore);
      } finally {
        signal.removeEventListener("abort", stop);
      }
      signal.throwIfAborted();
    } finally {
      await targetInside.end();
    }
  }

  /** Waits until the subscription has copied every table (each synchronised), and returns how many there are. */
  async #waitForCopy(database: string, target: Cluster, name: string, signal: AbortSignal): Promise<number> {
    const inside = await target.connectTo(database);
    try {
      for (;;) {
        const { rows } = await inside.query<{ tables: number; pending: number }>(
          `SELECT count(*)::int AS tables, count(*) FILTER (WHERE r.srsubstate NOT IN ('r', 's'))::int AS pending
             FROM pg_catalog.pg_subscription_rel r JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1`,
          [name],
        );
        if (rows[0]!.pending === 0) return rows[0]!.tables;
        await sleep(POLL_MILLIS * 5, undefined, { signal });
      }
    } finally {
      await inside.end();
    }
  }

  /** The pause: see the class. Undone (the source serving again) if anything fails before the flip. */
  async #switch(
    database: string,
    source: Cluster,
    target: Cluster,
    sourceInside: pg.Client,
    request: MoveRequest,
  ): Promise<{ pauseMillis: number; catchUpLsn: string; sequences: number }> {
    const role = this.o.roles.roleName(database);
    const name = replicationName(database);
    const resume = this.o.pauses.pause(database);
    const started = performance.now();
    const until = started + request.maxPauseMillis;
    let flipped = false;
    try {
      await source.admin.query(`ALTER ROLE ${escapeIdentifier(role)} CONNECTION LIMIT 0`);
      const drainUntil = started + request.maxPauseMillis * DRAIN_SHARE;
      while (performance.now() < drainUntil && (await busySessions(source, database, role)) > 0) await sleep(POLL_MILLIS);
      // Until every session is gone from pg_stat_activity (its transaction ended), so no write of theirs commits after the position read next.
      // Not pg_terminate_backend's own wait: it looks every 100 ms, one session after the other.
      for (;;) {
        await source.admin.query("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE datname = $1 AND usename = $2", [
          database,
          role,
        ]);
        await sleep(POLL_MILLIS / 4);
        if ((await sessions(source, database, role)) === 0) break;
        if (performance.now() > until) throw pauseExceeded(database, request.maxPauseMillis, "the tenant's sessions on the source did not end");
      }
      const catchUpLsn = (await source.admin.query<{ lsn: string }>("SELECT pg_catalog.pg_current_wal_lsn()::text AS lsn")).rows[0]!.lsn;
      for (;;) {
        const { rows } = await source.admin.query<{ caught: boolean | null }>(
          "SELECT confirmed_flush_lsn >= $2::pg_lsn AS caught FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
          [name, catchUpLsn],
        );
        if (rows[0]?.caught === true) break;
        if (performance.now() > until)
          throw pauseExceeded(database, request.maxPauseMillis, `the target did not confirm the source's WAL position ${catchUpLsn}`);
        request.signal.throwIfAborted();
        await sleep(POLL_MILLIS);
      }
      const sequences = await copySequences(sourceInside, target, database);
      request.signal.throwIfAborted();
      if (performance.now() > until) throw pauseExceeded(database, request.maxPauseMillis, "the switch was not over");
      this.o.registry.add(database, target.name);
      await this.o.placements.place(database, target.name);
      flipped = true;
      this.o.registry.place(await this.o.placements.all());
      this.o.closePool(
        database,
        new GatewayError("TENANT_MOVED", `database "${database}" moved to cluster "${target.name}" while the call waited: it was not run`, {
          metadata: { database, statement_sent: "false" },
        }),
      );
      const pauseMillis = performance.now() - started;
      await this.o.moves.reached(database, "switched", Math.round(pauseMillis));
      return { pauseMillis, catchUpLsn, sequences };
    } catch (err) {
      // The tenant stays where it was: its role may connect to the source again.
      if (!flipped) await this.#allowOn(source, database).catch(() => undefined);
      throw err;
    } finally {
      resume();
    }
  }

  /** Gives the tenant's role on `cluster` its connection limit back (from the CONNECTION LIMIT 0 of a switch). */
  async #allowOn(cluster: Cluster, database: string): Promise<void> {
    const client = await cluster.admin.connect();
    try {
      await this.o.roles.syncConnectionLimits(client, [database]);
    } finally {
      client.release();
    }
  }

  /** After the flip: the subscription (and its slot) and the publication removed, the source database renamed or dropped. Returns its kept name. */
  async #cleanUp(database: string, source: Cluster, target: Cluster, dropSource: boolean): Promise<string> {
    const name = replicationName(database);
    const inside = await target.connectTo(database);
    try {
      if ((await inside.query("SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = $1", [name])).rowCount === 1) {
        await inside.query(`DROP SUBSCRIPTION ${escapeIdentifier(name)}`);
      }
    } finally {
      await inside.end();
    }
    let keptAs = "";
    if (await hasDatabase(source, database)) {
      const client = await source.admin.connect();
      try {
        if (dropSource) {
          await client.query(`DROP DATABASE ${escapeIdentifier(database)} WITH (FORCE)`);
          await this.o.roles.dropRole(client, database);
        } else {
          keptAs = `${database.slice(0, 42)}-moved-${new Date().toISOString().replace(/\D/g, "").slice(0, 14)}`;
          // The publication goes with the copy it served; no session may be in the database while it is renamed.
          const publishing = await source.connectTo(database);
          await publishing.query(`DROP PUBLICATION IF EXISTS ${escapeIdentifier(name)}`).finally(() => publishing.end());
          await client.query(
            "SELECT pg_catalog.pg_terminate_backend(pid, 5000) FROM pg_catalog.pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            [database],
          );
          await client.query(`ALTER DATABASE ${escapeIdentifier(database)} RENAME TO ${escapeIdentifier(keptAs)}`);
        }
      } finally {
        client.release();
      }
    }
    await this.o.moves.reached(database, "done");
    return keptAs;
  }

  /** Whether the target's copy has the move's subscription. */
  async #subscribed(target: Cluster, database: string, name: string): Promise<boolean> {
    const inside = await target.connectTo(database);
    try {
      return (await inside.query("SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = $1", [name])).rowCount === 1;
    } finally {
      await inside.end();
    }
  }

  /** Removes a copy a move left on a cluster that does not serve the tenant: its subscription (and slot), database and role. */
  async #discardCopy(database: string, cluster: Cluster): Promise<void> {
    if (this.o.registry.clusterOf(database) === cluster.name) return; // it serves the tenant: never
    if (!(await hasDatabase(cluster, database))) return;
    const name = replicationName(database);
    const inside = await cluster.connectTo(database);
    try {
      if ((await inside.query("SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = $1", [name])).rowCount === 1) {
        await inside.query(`DROP SUBSCRIPTION ${escapeIdentifier(name)}`);
      }
    } finally {
      await inside.end();
    }
    await this.#withNameLock(database, async () => {
      const client = await cluster.admin.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${escapeIdentifier(database)} WITH (FORCE)`);
      } finally {
        client.release();
      }
    });
    this.o.registry.delete(database, cluster.name);
  }

  /** Runs `fn` under the lock that creates and drops take on the name (catalog cluster), so that no create, adopt or drop of it runs meanwhile. */
  async #withNameLock(database: string, fn: () => Promise<void>): Promise<void> {
    const client = await this.o.clusters.primary.admin.connect();
    try {
      await client.query("SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtext($1))", [databaseLockKey(database)]);
      try {
        await fn();
      } finally {
        await client.query("SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtext($1))", [databaseLockKey(database)]);
      }
    } finally {
      client.release();
    }
  }
}

/** A move stopped by its call's deadline or cancellation (the signal's abort surfaces as whatever step was running). */
function stopped(signal: AbortSignal, database: string, cause: unknown): GatewayError {
  const deadline = (signal.reason as { name?: string } | undefined)?.name === "TimeoutError";
  return new GatewayError(
    deadline ? "DEADLINE_EXCEEDED" : "CANCELLED",
    `the move of "${database}" stopped where it was (${deadline ? "the call's deadline passed" : "the call was cancelled"}): run it again to go on`,
    { metadata: { database }, cause },
  );
}

function pauseExceeded(database: string, maxPauseMillis: number, why: string): GatewayError {
  return new GatewayError(
    "MOVE_PAUSE_EXCEEDED",
    `${why} within the longest pause (${maxPauseMillis} ms): the move was undone, "${database}" is served from its source; run it again`,
    { metadata: { database } },
  );
}

/** A libpq keyword's value, quoted. */
function libpqQuote(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}
