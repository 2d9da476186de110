// Each cluster's streaming replicas: their replay position and lag, watched at intervals, and the replica that serves a read-only call (its read-your-writes token honoured) or none.
import type pg from "pg";
import { GatewayError } from "../errors.js";
import type { PoolManager } from "../pool/pool-manager.js";

/** A streaming replica of a cluster: its administrative pool (to watch it) and the pools of its tenants' connections. */
export interface ReplicaHandle {
  readonly cluster: string;
  /** Its name within the cluster ("r1", "r2" … in the order the settings list them). */
  readonly name: string;
  readonly admin: Pick<pg.Pool, "query">;
  readonly pools: PoolManager;
}

/** What is known of a replica since its last check. */
export interface ReplicaState extends ReplicaHandle {
  up: boolean;
  /** The WAL position it has replayed (0n: not known). */
  replayLsn: bigint;
  /** How far behind its primary it was, in milliseconds (0 when it had replayed all the primary had written). */
  lagMillis: number;
}

export interface ReplicasOptions {
  /** A replica further behind than this serves no read. */
  maxLagMillis: number;
  /** How long a read with a token waits for a replica to replay past it before the primary serves it. */
  readAfterWaitMillis: number;
  checkMillis: number;
  /** The primary's current WAL position, of a cluster. */
  primaryLsn(cluster: string): Promise<bigint>;
  /** The cluster serving a database. */
  clusterOf(database: string): string | undefined;
  /** Told when a replica goes down or comes back. */
  onChange?(replica: ReplicaState): void;
}

/** How often a read with a token looks again whether its replica has replayed past it. */
const READ_AFTER_POLL_MILLIS = 2;

/** A commit token: an LSN as PostgreSQL writes it ("16/B374D848"), as a number. */
export function parseLsn(text: string): bigint {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (match === null) throw new GatewayError("INVALID_REQUEST", "read_after must be a commit token the gateway gave (an LSN such as 16/B374D848)");
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}

/**
 * The replicas of every cluster that has any, each checked every
 * `checkMillis` (`pg_last_wal_replay_lsn`, the time since the last replayed
 * commit, against the primary's `pg_current_wal_lsn`). A read-only call goes
 * to the next replica in turn that is up and within `maxLagMillis`; with a
 * token, to one that has replayed past it, waiting up to
 * `readAfterWaitMillis`; else (`choose` answers undefined) to the primary.
 */
export class Replicas {
  readonly #byCluster = new Map<string, ReplicaState[]>();
  #turn = 0;
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<void> | undefined;
  /** The reads waiting for each replica to replay past their tokens (see `#replayed`). */
  readonly #waiters = new Map<ReplicaState, Set<{ token: bigint; until: number; resolve: (replayed: boolean) => void }>>();

  constructor(
    handles: readonly ReplicaHandle[],
    private readonly o: ReplicasOptions,
  ) {
    for (const handle of handles) {
      const list = this.#byCluster.get(handle.cluster) ?? [];
      list.push({ ...handle, up: false, replayLsn: 0n, lagMillis: Infinity });
      this.#byCluster.set(handle.cluster, list);
    }
  }

  /** Every replica, as last checked. */
  all(): ReplicaState[] {
    return [...this.#byCluster.values()].flat();
  }

  /** Whether the database's cluster has replicas: its writes then answer with a commit token. */
  hasReplicas(database: string): boolean {
    const cluster = this.o.clusterOf(database);
    return cluster !== undefined && this.#byCluster.has(cluster);
  }

  /** Checks every replica now, then every `checkMillis` until `stop`. */
  async start(): Promise<void> {
    if (this.#byCluster.size === 0) return;
    await this.check();
    this.#timer = setInterval(() => void this.check(), this.o.checkMillis);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#checking;
    await Promise.all(this.all().map((r) => r.pools.closeAll()));
  }

  /** Checks every replica once (single-flight). */
  check(): Promise<void> {
    this.#checking ??= (async () => {
      try {
        await Promise.all([...this.#byCluster].map(([cluster, replicas]) => this.#checkCluster(cluster, replicas)));
      } finally {
        this.#checking = undefined;
      }
    })();
    return this.#checking;
  }

  /**
   * The replica pools that serve a read-only call to `database`, or undefined
   * for the primary: no replica up and within the lag bound, or none that
   * replays past `readAfter` (a commit token) within the wait.
   */
  async choose(database: string, readAfter: string): Promise<ReplicaState | undefined> {
    const token = readAfter === "" ? undefined : parseLsn(readAfter);
    const cluster = this.o.clusterOf(database);
    const replicas = cluster === undefined ? undefined : this.#byCluster.get(cluster);
    if (replicas === undefined) return undefined;
    const eligible = replicas.filter((r) => r.up && r.lagMillis <= this.o.maxLagMillis);
    if (eligible.length === 0) return undefined;
    const ready = token === undefined ? eligible : eligible.filter((r) => r.replayLsn >= token);
    if (ready.length > 0) return ready[this.#turn++ % ready.length];
    const replica = eligible[this.#turn++ % eligible.length]!;
    return (await this.#replayed(replica, token!, performance.now() + this.o.readAfterWaitMillis)) ? replica : undefined;
  }

  /**
   * Whether `replica` replays past `token` before `until`. The reads waiting
   * on a replica share one poll of its position (not one each, on its small
   * administrative pool), every `READ_AFTER_POLL_MILLIS`.
   */
  #replayed(replica: ReplicaState, token: bigint, until: number): Promise<boolean> {
    return new Promise((resolve) => {
      const waiters = this.#waiters.get(replica) ?? new Set();
      this.#waiters.set(replica, waiters);
      waiters.add({ token, until, resolve });
      if (waiters.size === 1) void this.#poll(replica, waiters);
    });
  }

  async #poll(replica: ReplicaState, waiters: Set<{ token: bigint; until: number; resolve: (replayed: boolean) => void }>): Promise<void> {
    while (waiters.size > 0) {
      let failed = false;
      try {
        const { rows } = await replica.admin.query<{ lsn: string | null }>("SELECT pg_last_wal_replay_lsn()::text AS lsn");
        if (rows[0]?.lsn) replica.replayLsn = parseLsn(rows[0].lsn);
      } catch {
        failed = true;
      }
      const now = performance.now();
      for (const waiter of waiters) {
        if (failed || replica.replayLsn >= waiter.token || now >= waiter.until) {
          waiters.delete(waiter);
          waiter.resolve(!failed && replica.replayLsn >= waiter.token);
        }
      }
      if (waiters.size > 0) await new Promise((resolve) => setTimeout(resolve, READ_AFTER_POLL_MILLIS));
    }
    this.#waiters.delete(replica);
  }

  /** A replica that failed a call's connection: down until its next check finds it up. */
  markDown(replica: ReplicaState): void {
    if (!replica.up) return;
    replica.up = false;
    this.o.onChange?.(replica);
  }

  async #checkCluster(cluster: string, replicas: ReplicaState[]): Promise<void> {
    const primary = await this.o.primaryLsn(cluster).catch(() => undefined);
    await Promise.all(
      replicas.map(async (replica) => {
        const wasUp = replica.up;
        try {
          const { rows } = await replica.admin.query<{ recovering: boolean; lsn: string | null; behind: number | null }>({
            text:
              "SELECT pg_is_in_recovery() AS recovering, pg_last_wal_replay_lsn()::text AS lsn, " +
              "(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::float8 AS behind",
            query_timeout: this.o.checkMillis,
          } as pg.QueryConfig);
          const row = rows[0]!;
          // A server promoted out of recovery is no replica of this cluster any more: it serves no read.
          replica.up = row.recovering && row.lsn !== null;
          replica.replayLsn = row.lsn === null ? 0n : parseLsn(row.lsn);
          replica.lagMillis = primary !== undefined && replica.replayLsn >= primary ? 0 : Math.max(0, row.behind ?? Infinity);
        } catch {
          replica.up = false;
        }
        if (replica.up !== wasUp) this.o.onChange?.(replica);
      }),
    );
  }
}
