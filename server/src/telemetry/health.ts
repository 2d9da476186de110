// Whether the gateway is serving: PostgreSQL checked with SELECT 1 at intervals, and draining, for /health and grpc.health.v1.
import type pg from "pg";

/** What /health reports, in the shape of seed 001 §4.4. */
export interface HealthReport {
  status: "healthy" | "unhealthy" | "draining";
  postgres_connected: boolean;
  /** With REDIS_URL only: whether Redis answers (false: rate limits and nonces are per process; the gateway still serves). */
  redis_connected?: boolean;
  active_pools: number;
  total_connections: number;
}

/**
 * Watches whether PostgreSQL answers (`SELECT 1` on the administrative pool,
 * every `intervalMillis`, each check bounded by the interval) and whether the
 * gateway is draining; tells `onChange` whether the gateway is serving, so
 * that grpc.health.v1 reports NOT_SERVING while PostgreSQL is unreachable.
 */
export class HealthMonitor {
  #postgresConnected = true;
  #draining = false;
  #checking = false;
  readonly #timer: NodeJS.Timeout;

  constructor(
    private readonly admin: Pick<pg.Pool, "query">,
    private readonly intervalMillis: number,
    private readonly pools: () => { activePools: number; totalConnections: number },
    /** With REDIS_URL: whether Redis answers, reported but not part of serving. */
    private readonly redisConnected: (() => boolean) | undefined,
    private readonly onChange: (serving: boolean) => void,
  ) {
    this.#timer = setInterval(() => void this.check(), intervalMillis);
    this.#timer.unref();
  }

  get serving(): boolean {
    return this.#postgresConnected && !this.#draining;
  }

  /** Checks PostgreSQL once (single-flight) and reports a change. */
  async check(): Promise<void> {
    if (this.#checking) return;
    this.#checking = true;
    const before = this.serving;
    try {
      await this.admin.query({ text: "SELECT 1", query_timeout: this.intervalMillis } as pg.QueryConfig);
      this.#postgresConnected = true;
    } catch {
      this.#postgresConnected = false;
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
    return {
      status: this.#draining ? "draining" : this.#postgresConnected ? "healthy" : "unhealthy",
      postgres_connected: this.#postgresConnected,
      ...(this.redisConnected === undefined ? {} : { redis_connected: this.redisConnected() }),
      active_pools: activePools,
      total_connections: totalConnections,
    };
  }
}
