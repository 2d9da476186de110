// Creates, adopts and drops tenant databases with their roles, one change to a name at a time across gateway instances (advisory locks).
import pg from "pg";
import { DatabaseError, escapeIdentifier } from "pg";
import { GatewayError, leavesConnectionUsable, toGatewayError } from "../errors.js";
import type { PoolManager } from "../pool/pool-manager.js";
import { catalogsVisible, hideCatalogs } from "./catalog-visibility.js";
import { databaseLockKey, databaseName, parseDatabaseName, validatePlatform } from "./naming.js";
import type { DatabaseRegistry } from "./registry.js";
import type { TenantRoles } from "./roles.js";

/** What the lifecycle needs besides the registry and the pools. */
export interface TenantLifecycleOptions {
  /** The cluster this lifecycle works on, by name. */
  cluster: string;
  /** The administrative pool (on the cluster's maintenance database). */
  admin: pg.Pool;
  /**
   * Where a change of a name takes its lock: the catalog cluster's
   * administrative pool, so that changes on different clusters of one name
   * also run one after the other. Default: `admin`.
   */
  lock?: pg.Pool;
  /** Another cluster holding a database of this name, if any: a name exists once in the fleet. */
  elsewhere?(database: string, lockConnection: pg.ClientBase): Promise<string | undefined>;
  /** Opens an administrative connection to a given database (for work inside it). */
  connectTo(database: string): Promise<pg.Client>;
  roles: TenantRoles;
  registry: DatabaseRegistry;
  pools: PoolManager;
  /** Platforms with an API key: the only ones whose databases are touched. */
  platforms: ReadonlySet<string>;
  /** Told what went wrong where the work goes on regardless (a role whose connection limit could not be updated). */
  onError?(message: string, err: unknown): void;
}

/**
 * Creates, adopts and drops tenant databases with their roles. Each change
 * holds a PostgreSQL advisory lock on the database name for its whole
 * duration, so concurrent changes of one name (from this gateway or another
 * instance) run one after the other: of 20 simultaneous creates, one creates
 * and 19 find the database there. Identifiers in DDL cannot be bound
 * parameters; they are validated by `databaseName` and quoted with
 * `escapeIdentifier`. Only databases of configured platforms are touched: an
 * operator's `ops_production` is not a tenant of a platform "ops" unless that
 * platform has a key.
 */
export class TenantLifecycle {
  constructor(private readonly o: TenantLifecycleOptions) {}

  /** NOT_FOUND unless the platform is configured (has an API key). */
  requireConfigured(platform: string): void {
    validatePlatform(platform);
    if (!this.o.platforms.has(platform)) {
      throw new GatewayError("PLATFORM_NOT_FOUND", `platform "${platform}" is not configured`, { metadata: { platform } });
    }
  }

  /** Whether a database belongs to a configured platform, by its name. */
  isManaged(database: string): boolean {
    const parsed = parseDatabaseName(database);
    return parsed !== undefined && this.o.platforms.has(parsed.platform);
  }

  /** Creates `{platform}_{tenantId}` (the main database for an empty id) with its role, optionally from a template. */
  async create(platform: string, tenantId: string, template: string): Promise<string> {
    this.requireConfigured(platform);
    const name = databaseName(platform, tenantId);
    if (template !== "") this.#validateTemplate(platform, template, name);
    return this.#locked(name, async (client, lockClient) => {
      const there = (await exists(client, name)) ? this.o.cluster : await this.o.elsewhere?.(name, lockClient);
      if (there !== undefined) {
        this.o.registry.add(name, there);
        throw new GatewayError("DATABASE_EXISTS", `database "${name}" already exists`, { metadata: { database: name } });
      }
      let sql = `CREATE DATABASE ${escapeIdentifier(name)}`;
      if (template !== "") {
        if (!(await exists(client, template))) {
          throw new GatewayError("TEMPLATE_NOT_FOUND", `template database "${template}" does not exist`, { metadata: { template } });
        }
        // Our own idle connections to the template would make PostgreSQL refuse to copy it.
        this.o.pools.close(template);
        sql += ` TEMPLATE ${escapeIdentifier(template)}`;
      }
      try {
        await client.query(sql);
      } catch (err) {
        throw createError(err, name, template);
      }
      try {
        await this.o.roles.provision(client, name, this.o.connectTo);
      } catch (err) {
        // No half-made tenant: without its role the database is unusable.
        await client.query(`DROP DATABASE IF EXISTS ${escapeIdentifier(name)} WITH (FORCE)`).catch(() => undefined);
        await this.o.roles.dropRole(client, name).catch(() => undefined);
        throw err;
      }
      this.o.registry.add(name, this.o.cluster);
      return name;
    });
  }

  /**
   * Brings existing databases of configured platforms under the role scheme
   * (those not there yet), and their roles' connection limits to the current one.
   */
  async adopt(databases: readonly string[]): Promise<void> {
    const managed = databases.filter((d) => this.isManaged(d));
    if (managed.length === 0) return;
    const client = await this.o.admin.connect();
    let pending: string[];
    try {
      pending = await this.o.roles.unprovisioned(client, managed);
      for (const { role, error } of await this.o.roles.syncConnectionLimits(client, managed)) {
        this.o.onError?.(`the connection limit of role "${role}" could not be updated (the administrative role needs ADMIN OPTION on it)`, error);
      }
    } finally {
      client.release();
    }
    for (const name of pending) {
      await this.#locked(name, async (locked) => {
        if ((await this.o.roles.unprovisioned(locked, [name])).length === 0) return;
        if (!(await exists(locked, name))) return;
        await this.o.roles.provision(locked, name, this.o.connectTo);
      });
    }
  }

  /**
   * Goes through `databases` one at a time (each under its name's lock, on
   * one administrative connection to it): with `hide`, closes the catalogs
   * that name other databases and roles where they are still open
   * (`hideCatalogs`: a superuser only); without, only looks. Returns the
   * databases where they were (or still are) open, and those that could not
   * be reached. Stops early when `signal` is aborted.
   */
  async reconcileCatalogs(
    databases: readonly string[],
    hide: boolean,
    signal?: AbortSignal,
  ): Promise<{ open: string[]; failed: { database: string; error: unknown }[] }> {
    const open: string[] = [];
    const failed: { database: string; error: unknown }[] = [];
    for (const name of databases) {
      if (signal?.aborted === true) break;
      try {
        const found = await this.#locked(name, async (locked) => {
          if (!(await exists(locked, name))) return [];
          const inside = await this.o.connectTo(name);
          try {
            return hide ? await hideCatalogs(inside) : await catalogsVisible(inside);
          } finally {
            await inside.end();
          }
        });
        if (found.length > 0) open.push(name);
      } catch (error) {
        failed.push({ database: name, error });
      }
    }
    return { open, failed };
  }

  /** Drops a tenant's database, terminating its open connections, and then its role. */
  async drop(platform: string, tenantId: string): Promise<string> {
    this.requireConfigured(platform);
    if (tenantId === "") throw new GatewayError("INVALID_TENANT_ID", "tenant_id is required: the main database is not dropped through DropTenant");
    const name = databaseName(platform, tenantId);
    return this.#locked(name, async (client) => {
      if (!(await exists(client, name))) {
        this.o.registry.delete(name, this.o.cluster);
        throw new GatewayError("DATABASE_NOT_FOUND", `database "${name}" does not exist`, { metadata: { database: name } });
      }
      // New calls are refused from here on; calls in flight end when their backends are terminated.
      this.o.registry.delete(name, this.o.cluster);
      this.o.pools.close(name);
      try {
        await client.query(`DROP DATABASE IF EXISTS ${escapeIdentifier(name)} WITH (FORCE)`);
      } catch (err) {
        if (await exists(client, name).catch(() => true)) this.o.registry.add(name, this.o.cluster);
        throw err;
      }
      // Gone now. A registry refresh or a call's look-up that read pg_database while the drop ran (before PostgreSQL
      // marked the database invalid) may have put it back, and a call then opened a pool for it: not after this.
      this.o.registry.delete(name, this.o.cluster);
      this.o.pools.close(name);
      await this.o.roles.dropRole(client, name);
      return name;
    });
  }

  #validateTemplate(platform: string, template: string, name: string): void {
    const parsed = parseDatabaseName(template);
    if (parsed === undefined || parsed.platform !== platform || template.length > 63) {
      throw new GatewayError("INVALID_TEMPLATE", `template must be the name of a database of platform "${platform}" ("${platform}_…")`);
    }
    if (template === name) throw new GatewayError("INVALID_TEMPLATE", "a database cannot be its own template");
  }

  /** Runs `fn` holding the name's lock: on a connection of this cluster, and the lock's own (the same one when the lock is taken here). */
  async #locked<T>(name: string, fn: (client: pg.PoolClient, lockClient: pg.PoolClient) => Promise<T>): Promise<T> {
    const lockPool = this.o.lock ?? this.o.admin;
    let lockClient: pg.PoolClient;
    try {
      lockClient = await lockPool.connect();
    } catch (err) {
      throw new GatewayError("DATABASE_UNAVAILABLE", "the database server is unavailable", { cause: err });
    }
    let lockBroken: Error | undefined;
    try {
      await lockClient.query("SELECT pg_advisory_lock(hashtext($1))", [databaseLockKey(name)]);
      try {
        // The lock's connection is lent to `fn`: taking another from the lock's pool while holding this one could wait forever.
        return lockPool === this.o.admin ? await fn(lockClient, lockClient) : await this.#onCluster((client) => fn(client, lockClient));
      } finally {
        await lockClient.query("SELECT pg_advisory_unlock(hashtext($1))", [databaseLockKey(name)]);
      }
    } catch (err) {
      if (!leavesConnectionUsable(err)) lockBroken = err as Error;
      throw err;
    } finally {
      lockClient.release(lockBroken);
    }
  }

  /** Runs `fn` on an administrative connection of this lifecycle's cluster (the lock held elsewhere). */
  async #onCluster<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.o.admin.connect();
    } catch (err) {
      throw new GatewayError("DATABASE_UNAVAILABLE", `cluster "${this.o.cluster}" is unavailable`, { cause: err });
    }
    let broken: Error | undefined;
    try {
      return await fn(client);
    } catch (err) {
      if (!leavesConnectionUsable(err)) broken = err as Error;
      throw err;
    } finally {
      client.release(broken);
    }
  }
}

async function exists(client: pg.ClientBase, name: string): Promise<boolean> {
  const result = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
  return result.rowCount === 1;
}

function createError(err: unknown, name: string, template: string): GatewayError {
  if (err instanceof DatabaseError) {
    if (err.code === "42P04" || err.code === "23505") {
      return new GatewayError("DATABASE_EXISTS", `database "${name}" already exists`, { metadata: { database: name }, cause: err });
    }
    if (err.code === "55006") {
      return new GatewayError("TEMPLATE_IN_USE", `template database "${template}" has open connections; it can be copied only when none are open`, {
        metadata: { template },
        cause: err,
      });
    }
  }
  return toGatewayError(err);
}
