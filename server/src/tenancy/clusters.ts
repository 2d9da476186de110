// The PostgreSQL clusters tenants are placed on: where each database is, which cluster a new tenant goes to, and tenant changes sent to the right cluster.
import type pg from "pg";
import { beforeStatement, GatewayError } from "../errors.js";
import { TenantLifecycle, type TenantLifecycleOptions } from "./lifecycle.js";
import { databaseName } from "./naming.js";
import type { PlacementStore } from "./placement-store.js";
import { RegistrySync } from "./registry-sync.js";
import type { DatabaseRegistry } from "./registry.js";

/** One PostgreSQL cluster: its name, administrative pool and limits. */
export interface ClusterHandle {
  readonly name: string;
  /** Its administrative pool, on its maintenance database. */
  readonly admin: pg.Pool;
  /** An administrative connection to one of its databases. */
  connectTo(database: string): Promise<pg.Client>;
  /** Tenant databases the placement policy puts on it at most; undefined: no limit. */
  readonly capacity: number | undefined;
}

/** A cluster with what works on it: its lifecycle and its registry sync. */
export interface Cluster extends ClusterHandle {
  readonly lifecycle: TenantLifecycle;
  readonly sync: RegistrySync;
}

/** What the fleet needs besides the clusters. */
export interface ClustersOptions extends Omit<TenantLifecycleOptions, "cluster" | "admin" | "connectTo" | "lock" | "elsewhere"> {
  registry: DatabaseRegistry;
  placements: PlacementStore;
  /** Whether a cluster answered its last health check: the policy places no tenant on one that did not. */
  connected(cluster: string): boolean;
}

/**
 * The clusters tenants are placed on, the first being the catalog's (it
 * holds the locks of tenant changes, so that a name is changed by one
 * gateway on one cluster at a time). Routes each database to its cluster
 * through the registry, places new tenants (the cluster named in the request;
 * else a template's cluster; else, of the clusters that answer and are under
 * their capacity, the one with the fewest databases of configured platforms,
 * the first listed on a tie), and keeps the catalog's placements.
 */
export class Clusters {
  readonly #clusters = new Map<string, Cluster>();
  readonly primary: Cluster;

  constructor(
    handles: readonly ClusterHandle[],
    private readonly o: ClustersOptions,
  ) {
    for (const handle of handles) {
      const lifecycle = new TenantLifecycle({
        ...o,
        cluster: handle.name,
        admin: handle.admin,
        connectTo: (database) => handle.connectTo(database),
        lock: handles[0]!.admin,
        elsewhere: (database, lockConnection) => this.#elsewhere(database, handle.name, lockConnection),
      });
      this.#clusters.set(handle.name, {
        ...handle,
        connectTo: (database) => handle.connectTo(database),
        lifecycle,
        sync: new RegistrySync(o.registry, handle.admin, o.pools, lifecycle, handle.name, (added) =>
          o.placements.placeUnplaced(
            added.filter((d) => lifecycle.isManaged(d)),
            handle.name,
          ),
        ),
      });
    }
    this.primary = this.#clusters.get(handles[0]!.name)!;
  }

  /** Every cluster, the catalog's first. */
  all(): Cluster[] {
    return [...this.#clusters.values()];
  }

  /** A cluster by name; CLUSTER_NOT_FOUND when the settings define none of that name. */
  get(name: string): Cluster {
    const cluster = this.#clusters.get(name);
    if (cluster === undefined)
      throw new GatewayError("CLUSTER_NOT_FOUND", `no cluster "${name.slice(0, 64)}" is configured`, { metadata: { cluster: name.slice(0, 64) } });
    return cluster;
  }

  /** The cluster a database is served from, or undefined when none holds it (as far as the registry knows). */
  clusterOf(database: string): Cluster | undefined {
    const name = this.o.registry.clusterOf(database);
    return name === undefined ? undefined : this.#clusters.get(name);
  }

  /** An administrative connection to a database, on its cluster (the catalog's when no cluster is known to hold it). */
  connectTo(database: string): Promise<pg.Client> {
    return (this.clusterOf(database) ?? this.primary).connectTo(database);
  }

  /** Reads every cluster's pg_database and the catalog's placements again; a cluster that does not answer keeps what was known of it. */
  async sync(onError: (message: string, err: unknown) => void = () => undefined): Promise<void> {
    const servedFrom = new Map(this.o.registry.names().map((d) => [d, this.o.registry.clusterOf(d)]));
    await Promise.all([
      this.o.placements.all().then(
        (placements) => this.o.registry.place(placements),
        (err: unknown) => onError("the placements could not be read from the catalog", err),
      ),
      ...this.all().map((c) => c.sync.sync().catch((err: unknown) => onError(`the databases of cluster "${c.name}" could not be read`, err))),
    ]);
    // A database moved (by another gateway): its pool's connections are to the old cluster.
    for (const [database, was] of servedFrom) {
      const now = this.o.registry.clusterOf(database);
      if (was !== undefined && now !== undefined && now !== was) this.o.pools.close(database, movedAway(database, now));
    }
  }

  /**
   * Syncs every `intervalMillis`, and soon after each `soon()` (a change
   * announced by another gateway: changes announced while a sync runs are
   * read by one more), until `stop` is called (and awaited).
   */
  follow(intervalMillis: number, onError: (message: string, err: unknown) => void): { soon(): void; stop(): Promise<void> } {
    let running: Promise<void> | undefined;
    let again = false;
    let stopped = false;
    const run = (): void => {
      if (stopped) return;
      if (running !== undefined) {
        again = true;
        return;
      }
      running = this.sync(onError).finally(() => {
        running = undefined;
        if (again) {
          again = false;
          run();
        }
      });
    };
    const timer = setInterval(run, intervalMillis);
    timer.unref();
    return {
      soon: run,
      stop: async () => {
        stopped = true;
        clearInterval(timer);
        await running;
        await Promise.all(this.all().map((c) => c.sync.stop()));
      },
    };
  }

  /**
   * Finds a database missing from the registry on the clusters themselves
   * (created by another gateway or out of band): registers and adopts it
   * where found, and says whether it was. Found on none of the clusters that
   * answer while the catalog places it on one that does not: DATABASE_UNAVAILABLE
   * (it exists, as far as anyone knows; NOT_FOUND would invite its creation elsewhere).
   */
  async lookUp(database: string): Promise<boolean> {
    const answers = await Promise.allSettled(
      this.all().map(async (c) => {
        const { rowCount } = await c.admin.query("SELECT 1 FROM pg_database WHERE datname = $1 AND datallowconn AND datconnlimit <> -2", [database]);
        return rowCount === 1 ? c : undefined;
      }),
    );
    const cluster = answers.map((a) => (a.status === "fulfilled" ? a.value : undefined)).find((c) => c !== undefined);
    if (cluster === undefined) {
      const silent = this.all().filter((_, i) => answers[i]!.status === "rejected");
      if (silent.length === 0) return false;
      const placed = await this.o.placements.clusterOf(database);
      const down = silent.find((c) => c.name === placed);
      if (down === undefined) return false;
      throw beforeStatement(
        new GatewayError("DATABASE_UNAVAILABLE", `cluster "${down.name}", which holds database "${database}", does not answer`, {
          metadata: { database, cluster: down.name },
        }),
      );
    }
    await cluster.lifecycle.adopt([database]);
    this.o.registry.add(database, cluster.name);
    await this.o.placements.placeUnplaced([database], cluster.name);
    return true;
  }

  requireConfigured(platform: string): void {
    this.primary.lifecycle.requireConfigured(platform);
  }

  isManaged(database: string): boolean {
    return this.primary.lifecycle.isManaged(database);
  }

  /** Creates a tenant's database (the main one for an empty id) on the cluster the placement picks, and records where. */
  async create(platform: string, tenantId: string, template: string, cluster = ""): Promise<string> {
    this.requireConfigured(platform);
    const name = databaseName(platform, tenantId);
    const target = this.#place(name, template, cluster);
    await target.lifecycle.create(platform, tenantId, template);
    await this.o.placements.place(name, target.name);
    return name;
  }

  /** Drops a tenant's database on the cluster that serves it, and forgets its placement. */
  async drop(platform: string, tenantId: string): Promise<string> {
    this.requireConfigured(platform);
    const name = databaseName(platform, tenantId);
    const cluster = this.clusterOf(name) ?? ((await this.lookUp(name)) ? this.clusterOf(name) : undefined) ?? this.primary;
    await cluster.lifecycle.drop(platform, tenantId);
    await this.o.placements.forget(name, cluster.name);
    return name;
  }

  /** Brings existing databases under the role scheme, each on its cluster. */
  async adopt(databases: readonly string[]): Promise<void> {
    for (const [cluster, names] of this.#byCluster(databases)) await cluster.lifecycle.adopt(names);
  }

  #byCluster(databases: readonly string[]): Map<Cluster, string[]> {
    const groups = new Map<Cluster, string[]>();
    for (const database of databases) {
      const cluster = this.clusterOf(database) ?? this.primary;
      groups.set(cluster, [...(groups.get(cluster) ?? []), database]);
    }
    return groups;
  }

  #place(name: string, template: string, requested: string): Cluster {
    const templateCluster = template === "" ? undefined : this.clusterOf(template);
    if (requested !== "") {
      const cluster = this.get(requested);
      if (templateCluster !== undefined && templateCluster !== cluster) {
        throw new GatewayError("TEMPLATE_ON_OTHER_CLUSTER", `template "${template}" is on cluster "${templateCluster.name}", not "${cluster.name}"`, {
          metadata: { template, cluster: cluster.name },
        });
      }
      return cluster;
    }
    // A missing template is the lifecycle's TEMPLATE_NOT_FOUND, on any cluster.
    if (template !== "") return templateCluster ?? this.primary;
    if (this.#clusters.size === 1) return this.primary;
    let best: { cluster: Cluster; tenants: number } | undefined;
    for (const cluster of this.all()) {
      if (!this.o.connected(cluster.name)) continue;
      const tenants = this.o.registry.namesOn(cluster.name).filter((d) => this.isManaged(d)).length;
      if (cluster.capacity !== undefined && tenants >= cluster.capacity) continue;
      if (best === undefined || tenants < best.tenants) best = { cluster, tenants };
    }
    if (best === undefined) {
      throw new GatewayError("CLUSTERS_FULL", `no cluster that answers has room for "${name}": each holds its capacity of tenants or is down`);
    }
    return best.cluster;
  }

  /**
   * Another cluster than `except` whose pg_database has `database` (for one
   * that does not answer: whose last known databases had it). The catalog's
   * cluster is asked on `lockConnection`, the connection holding the name's
   * lock there, not on another of its pool (see `TenantLifecycle`).
   */
  async #elsewhere(database: string, except: string, lockConnection: pg.ClientBase): Promise<string | undefined> {
    for (const cluster of this.all()) {
      if (cluster.name === except) continue;
      const on = cluster === this.primary ? lockConnection : cluster.admin;
      // A cluster that does not answer holds it if it did when last read, or if the catalog places it there
      // (this gateway may never have read that cluster: it was down at start).
      const there = await on.query("SELECT 1 FROM pg_database WHERE datname = $1", [database]).then(
        (result) => result.rowCount === 1,
        async () => this.o.registry.namesOn(cluster.name).includes(database) || (await this.o.placements.clusterOf(database)) === cluster.name,
      );
      if (there) return cluster.name;
    }
    return undefined;
  }
}

/** The error of calls that waited for a connection to a database when it moved: not run, to be tried again. */
function movedAway(database: string, cluster: string): GatewayError {
  return new GatewayError("TENANT_MOVED", `database "${database}" moved to cluster "${cluster}" while the call waited: it was not run`, {
    metadata: { database, statement_sent: "false" },
  });
}
