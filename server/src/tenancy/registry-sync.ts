/** Keeps the database registry in step with one cluster's pg_database: closes the pools of dropped databases and adopts new ones, periodically and on demand. */
import type pg from "pg";
import type { TenantLifecycle } from "./lifecycle.js";
import type { DatabaseRegistry } from "./registry.js";

/** What the sync needs of the pool manager: to close a dropped database's pool. */
interface Pools {
  close(database: string): void;
}

export class RegistrySync {
  #running: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly registry: DatabaseRegistry,
    private readonly admin: Pick<pg.Pool, "query">,
    private readonly pools: Pools,
    private readonly lifecycle: Pick<TenantLifecycle, "adopt">,
    private readonly cluster: string,
    /** Told of the databases found new on the cluster once adopted (`Clusters` records where they are). */
    private readonly onAdded: (databases: string[]) => Promise<void> = async () => undefined,
  ) {}

  /** Reads pg_database again: closes the pools of dropped databases, adopts new ones. Single-flight: callers share a run in progress. */
  sync(): Promise<void> {
    this.#running ??= (async () => {
      try {
        // Only the pools of databases this cluster served: one moved away (its source renamed or dropped) keeps its pool on the target.
        const served = new Set(this.registry.namesOn(this.cluster).filter((d) => this.registry.clusterOf(d) === this.cluster));
        const changes = await this.registry.refresh(this.admin, this.cluster);
        changes.removed.filter((d) => served.has(d)).forEach((d) => this.pools.close(d));
        await this.lifecycle.adopt(changes.added);
        await this.onAdded(changes.added);
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  /** Syncs every `intervalMillis` until `stop`; a failed run is reported and the next one tried. */
  start(intervalMillis: number, onError: (err: unknown) => void): void {
    this.#timer = setInterval(() => this.sync().catch(onError), intervalMillis);
    this.#timer.unref();
  }

  /** Stops the periodic runs and waits for one in progress. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running?.catch(() => undefined);
  }
}
