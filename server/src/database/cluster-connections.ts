// A PostgreSQL cluster's administrative connections: its pool, its settings, and connections into its databases, each session resolving names in pg_catalog only.
import pg from "pg";
import type { CleanupStack } from "../cleanup-stack.js";
import type { ClusterHandle } from "../tenancy/clusters.js";
import type { Logger } from "../telemetry/logger.js";
import type { PoolManager } from "../pool/pool-manager.js";
import { parseLsn, Replicas } from "../tenancy/replicas.js";
import { ADMIN_SEARCH_PATH } from "../tenancy/roles.js";
import { connectionConfig } from "./connection-config.js";

/**
 * How long an administrative connection may take to open: a cluster that
 * accepts connections and never answers (a hung server, a half-open network
 * path) must not hold up the start, the registry's refresh or the health
 * checks of every cluster (they wait for each other).
 */
export const ADMIN_CONNECT_TIMEOUT_MILLIS = 5_000;

/** A cluster's name and limits (see cluster-settings.ts). */
export interface ClusterSetting {
  name?: string;
  /** Tenant databases the placement policy puts on it at most. */
  capacity?: number;
  /** The gateway's connections to it at most. */
  maxConnections?: number;
  /** Its streaming replicas' URLs (the administrative role's, as the cluster's): read-only calls may go there. */
  replicas?: readonly string[];
}

/** A cluster's administrative pool and connection settings, its pool ended at cleanup. */
export function administrativeConnections(
  cluster: ClusterSetting & { name: string; url: string },
  onError: (message: string, err: unknown) => void,
  cleanup: CleanupStack,
): ClusterHandle & { connection: pg.ClientConfig; adminConnection: pg.ClientConfig; maxConnections: number | undefined; replicas: readonly string[] } {
  const connection = connectionConfig(cluster.url);
  // Every administrative session, wherever it connects, resolves names in pg_catalog only (see ADMIN_SEARCH_PATH).
  // And row_security off: a tenant's policy on a table the administrator reads (a backup's row counts) fails the read instead of running.
  const adminConnection: pg.ClientConfig = {
    ...connection,
    options: `-c search_path=${ADMIN_SEARCH_PATH.replaceAll(" ", "")} -c row_security=off`,
    connectionTimeoutMillis: ADMIN_CONNECT_TIMEOUT_MILLIS,
  };
  const admin = new pg.Pool({ ...adminConnection, max: 4, application_name: "db-gateway-admin" });
  admin.on("error", (err) => onError(`idle administrative connection to cluster "${cluster.name}" failed`, err));
  cleanup.defer(`administrative pool of cluster "${cluster.name}"`, () => admin.end());
  return {
    name: cluster.name,
    connection,
    adminConnection,
    admin,
    capacity: cluster.capacity,
    maxConnections: cluster.maxConnections,
    replicas: cluster.replicas ?? [],
    async connectTo(database) {
      const client = new pg.Client({ ...adminConnection, database, application_name: "db-gateway-admin" });
      await client.connect();
      return client;
    },
  };
}

/** A streaming replica's administrative pool (to watch its replay) and connection settings, its pool ended at cleanup. */
function replicaConnections(
  cluster: string,
  url: string,
  index: number,
  onError: (message: string, err: unknown) => void,
  cleanup: CleanupStack,
): { name: string; admin: pg.Pool; connection: pg.ClientConfig } {
  const name = `r${index + 1}`;
  const connection = connectionConfig(url);
  const admin = new pg.Pool({
    ...connection,
    options: `-c search_path=${ADMIN_SEARCH_PATH.replaceAll(" ", "")}`,
    connectionTimeoutMillis: ADMIN_CONNECT_TIMEOUT_MILLIS,
    max: 2,
    application_name: "db-gateway-admin",
  });
  admin.on("error", (err) => onError(`idle administrative connection to replica ${name} of cluster "${cluster}" failed`, err));
  cleanup.defer(`administrative pool of replica ${name} of cluster "${cluster}"`, () => admin.end());
  return { name, admin, connection };
}

/** What `clusterReplicas` needs besides the clusters. */
export interface ClusterReplicasOptions {
  /** Pools of tenant connections to one replica, at most `maxTotalConnections` in all. */
  poolsOn(server: pg.ClientConfig, maxTotalConnections: number): PoolManager;
  /** The global cap: a replica's pools' when its cluster has no cap of its own. */
  maxTotalConnections: number;
  maxLagMillis: number;
  readAfterWaitMillis: number;
  checkMillis: number;
  clusterOf(database: string): string | undefined;
  log: Logger;
  onError: (message: string, err: unknown) => void;
  cleanup: CleanupStack;
}

/** The streaming replicas of every cluster (`replicas` of each handle): each with its administrative pool and pools of its own, watched by `Replicas`. */
export function clusterReplicas(
  clusters: readonly (ClusterHandle & { replicas: readonly string[]; maxConnections: number | undefined })[],
  o: ClusterReplicasOptions,
): Replicas {
  return new Replicas(
    clusters.flatMap((cluster) =>
      cluster.replicas.map((url, i) => {
        const replica = replicaConnections(cluster.name, url, i, o.onError, o.cleanup);
        const pools = o.poolsOn(replica.connection, cluster.maxConnections ?? o.maxTotalConnections);
        return { cluster: cluster.name, name: replica.name, admin: replica.admin, pools };
      }),
    ),
    {
      maxLagMillis: o.maxLagMillis,
      readAfterWaitMillis: o.readAfterWaitMillis,
      checkMillis: o.checkMillis,
      clusterOf: o.clusterOf,
      async primaryLsn(name) {
        const { rows } = await clusters.find((c) => c.name === name)!.admin.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn");
        return parseLsn(rows[0]!.lsn);
      },
      onChange: (replica) =>
        o.log.warn(
          { cluster: replica.cluster, replica: replica.name, up: replica.up },
          `replica ${replica.name} of cluster "${replica.cluster}" ${replica.up ? "serves reads" : "is down: its reads go to the primary"}`,
        ),
    },
  );
}
