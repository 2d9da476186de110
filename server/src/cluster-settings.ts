// The PostgreSQL clusters a gateway places tenants on: DATABASE_URL's (which holds the catalog) and any named CLUSTER_URL_<NAME>, with their capacities and connection caps.
import { MAX_CLUSTER_NAME_LENGTH, validClusterName } from "./tenancy/cluster-name.js";

/** What limits a cluster: tenants placed on it by the policy, and the gateway's connections to it. */
export interface ClusterLimits {
  /** Tenant databases the placement policy puts on it at most; undefined: no limit. */
  readonly capacity: number | undefined;
  /** The gateway's connections to it at most (within MAX_TOTAL_CONNECTIONS); undefined: only the global cap. */
  readonly maxConnections: number | undefined;
  /** Its streaming replicas' URLs (CLUSTER_REPLICAS_<NAME>), for read-only calls. */
  readonly replicas: readonly string[];
}

/** A cluster other than DATABASE_URL's: its name and administrative URL. */
export interface OtherCluster extends ClusterLimits {
  readonly name: string;
  readonly url: string;
}

/** DATABASE_URL's cluster (the catalog's) and the others. */
export interface ClusterSettings {
  readonly primary: ClusterLimits & { readonly name: string };
  readonly others: readonly OtherCluster[];
  /** REPLICA_MAX_LAG_MS: a replica further behind serves no read. */
  readonly replicaMaxLagMillis: number;
  /** READ_AFTER_WAIT_MS: how long a read with a commit token waits for a replica to replay past it before the primary serves it. */
  readonly readAfterWaitMillis: number;
}

/** The name of DATABASE_URL's cluster when CLUSTER_NAME does not give one. */
export const DEFAULT_CLUSTER_NAME = "primary";

type SecretReader = (name: string) => string | undefined;
type IntReader = (name: string, fallback: number, min: number, max: number) => number;

/**
 * Reads the clusters: CLUSTER_NAME names DATABASE_URL's (default "primary");
 * each CLUSTER_URL_<NAME> (or CLUSTER_URL_<NAME>_FILE: it carries a
 * password) adds cluster `<name>`, lowercased; CLUSTER_CAPACITY_<NAME> and
 * CLUSTER_MAX_CONNECTIONS_<NAME> limit any of them, and
 * CLUSTER_REPLICAS_<NAME> lists its streaming replicas. Without CLUSTER_URL_*
 * settings there is one cluster, as before clusters existed.
 */
export function clustersOf(env: NodeJS.ProcessEnv, secret: SecretReader, int: IntReader, problems: string[]): ClusterSettings {
  const primaryName = (env.CLUSTER_NAME || DEFAULT_CLUSTER_NAME).toLowerCase();
  if (!validClusterName(primaryName)) problems.push(clusterNameProblem("CLUSTER_NAME", primaryName));
  const limits = (name: string): ClusterLimits => {
    const suffix = name.toUpperCase();
    const capacity = int(`CLUSTER_CAPACITY_${suffix}`, 0, 0, 10_000_000);
    const maxConnections = int(`CLUSTER_MAX_CONNECTIONS_${suffix}`, 0, 0, 100_000);
    const replicas = (secret(`CLUSTER_REPLICAS_${suffix}`) ?? "")
      .split(",")
      .map((u) => u.trim())
      .filter((u) => u !== "");
    // The values may hold passwords: never printed.
    if (replicas.some((u) => !isPostgresUrl(u))) problems.push(`CLUSTER_REPLICAS_${suffix} must be postgres:// or postgresql:// URLs, comma-separated`);
    return {
      capacity: capacity === 0 ? undefined : capacity,
      maxConnections: maxConnections === 0 ? undefined : maxConnections,
      replicas: replicas.filter(isPostgresUrl),
    };
  };
  const others: OtherCluster[] = [];
  const named = new Set([primaryName]);
  for (const setting of new Set(Object.keys(env).map((n) => n.replace(/_FILE$/, "")))) {
    const match = /^CLUSTER_URL_([A-Za-z0-9_]+)$/.exec(setting);
    if (match === null) continue;
    const name = match[1]!.toLowerCase();
    const url = secret(setting);
    if (url === undefined) continue;
    if (!validClusterName(name)) {
      problems.push(clusterNameProblem(setting, name));
      continue;
    }
    if (named.has(name)) {
      problems.push(`${setting}: cluster "${name}" is ${name === primaryName ? "DATABASE_URL's (CLUSTER_NAME)" : "named twice"}`);
      continue;
    }
    if (!isPostgresUrl(url)) {
      // The value may hold a password: never printed.
      problems.push(`${setting} must be a postgres:// or postgresql:// URL`);
      continue;
    }
    named.add(name);
    others.push({ name, url, ...limits(name) });
  }
  for (const setting of Object.keys(env)) {
    const match = /^CLUSTER_(?:CAPACITY|MAX_CONNECTIONS|REPLICAS)_([A-Za-z0-9_]+?)(?:_FILE)?$/.exec(setting);
    if (match !== null && !named.has(match[1]!.toLowerCase())) problems.push(`${setting}: no cluster "${match[1]!.toLowerCase()}" (CLUSTER_URL_${match[1]})`);
  }
  others.sort((a, b) => (a.name < b.name ? -1 : 1));
  return {
    primary: { name: primaryName, ...limits(primaryName) },
    others,
    replicaMaxLagMillis: int("REPLICA_MAX_LAG_MS", 1_000, 0, 3_600_000),
    readAfterWaitMillis: int("READ_AFTER_WAIT_MS", 100, 0, 60_000),
  };
}

function clusterNameProblem(setting: string, name: string): string {
  return `${setting}: cluster name "${name.slice(0, 80)}" must be lowercase letters, digits and underscores, starting with a letter, at most ${MAX_CLUSTER_NAME_LENGTH} characters`;
}

function isPostgresUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === "postgres:" || url.protocol === "postgresql:";
  } catch {
    return false;
  }
}
