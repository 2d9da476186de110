// Whether the gateway is serving: each PostgreSQL cluster checked with SELECT 1 at intervals, and draining, for /health and grpc.health.v1.
import type pg from "pg";

/** What /health reports, in the shape of seed 001 §4.4. */
export interface HealthReport {
  /** degraded: some clusters answer, not all (their tenants' calls fail; the others' are served). */
  status: "healthy" | "degraded" | "unhealthy" | "draining";
  /** Every cluster answers. */
  postgres_connected: boolean;
  /** With REDIS_URL only: whether Redis answers (false: rate limits and nonces are per process; the gateway still serves). */
  redis_connected?: boolean;
  active_pools: number;
  total_connections: number;
  /** Whether each cluster answers, by name, and its streaming replicas (when it has any). */
  clusters: Record<string, { connected: boolean; replicas?: Record<string, { serving: boolean; lag_seconds: number | null }> }>;
}

/** A cluster the monitor checks: its name and administrative pool. */
export interface CheckedCluster {
  readonly name: string;
  readonly admin: Pick<pg.Pool, "query">;
}

/**
 * Watches whether each PostgreSQL cluster answers (`SELECT 1` on its
 * administrative pool, every `intervalMillis`, each check bounded by the
 * interval) and whether the gateway is draining; tells `onChange` whether the
 * gateway is serving, so that grpc.health.v1 reports NOT_SERVING while no
 * cluster is reachable (with one down, its tenants' calls fail and the
 * others' are served), and `onClusterChange` when a cluster goes or comes back.
 */
export class HealthMonitor {
  readonly #connected = new Map<string, boolean>();
  #draining = false;
  #checking = false;
  readonly #timer: NodeJS.Timeout;

  constructor(
    private readonly clusters: readonly CheckedCluster[],
    private readonly intervalMillis: number,
    private readonly pools: () => { activePools: number; totalConnections: number },
    /** With REDIS_URL: whether Redis answers, reported but not part of serving. */
    private readonly redisConnected: (() => boolean) | undefined,
    private readonly onChange: (serving: boolean) => void,
    private readonly onClusterChange: (cluster: string, connected: boolean) => void = () => undefined,
    private readonly replicas: () => readonly { cluster: string; name: string; up: boolean; lagMillis: number }[] = () => [],
  ) {
    for (const cluster of clusters) this.#connected.set(cluster.name, true);
    this.#timer = setInterval(() => void this.check(), intervalMillis);
    this.#timer.unref();
  }

  get serving(): boolean {
    return !this.#draining && [...this.#connected.values()].some(Boolean);
  }

  /** Whether a cluster answered its last check. */
  connected(cluster: string): boolean {
    return this.#connected.get(cluster) ?? false;
  }

  /** Checks every cluster once (single-flight) and reports changes. */
  async check(): Promise<void> {
    if (this.#checking) return;
    this.#checking = true;
    const before = this.serving;
    try {
      await Promise.all(
        this.clusters.map(async ({ name, admin }) => {
          let connected: boolean;
          try {
            await admin.query({ text: "SELECT 1", query_timeout: this.intervalMillis } as pg.QueryConfig);
            connected = true;
          } catch {
            connected = false;
          }
          if (this.#connected.get(name) !== connected) {
            this.#connected.set(name, connected);
            if (this.clusters.length > 1) this.onClusterChange(name, connected);
          }
        }),
      );
    } finally {
      this.#checking = false;
    }
    if (this.serving !== before) this.onChange(this.serving);
  }

  /** From now on the gateway reports draining (NOT_SERVING). */
  drain(): void {
    const before = this.serving;
    this.#draining = true;
    clearInterval(this.#timer);
    if (before) this.onChange(false);
  }

  report(): HealthReport {
    const { activePools, totalConnections } = this.pools();
    const states = [...this.#connected.values()];
    const all = states.every(Boolean);
    return {
      status: this.#draining ? "draining" : all ? "healthy" : states.some(Boolean) ? "degraded" : "unhealthy",
      postgres_connected: all,
      ...(this.redisConnected === undefined ? {} : { redis_connected: this.redisConnected() }),
      active_pools: activePools,
      total_connections: totalConnections,
      clusters: Object.fromEntries(
        [...this.#connected].map(([name, connected]) => {
          const replicas = this.replicas().filter((r) => r.cluster === name);
          if (replicas.length === 0) return [name, { connected }];
          const states = replicas.map((r) => [r.name, { serving: r.up, lag_seconds: r.up && Number.isFinite(r.lagMillis) ? r.lagMillis / 1000 : null }]);
          return [name, { connected, replicas: Object.fromEntries(states) }];
        }),
      ),
    };
  }
}
