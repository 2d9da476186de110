// What a PostgreSQL cluster may be called: the names in settings, placements, metrics labels and CreateTenant requests.

/** Longest cluster name: it becomes a metrics label and a catalog value. */
export const MAX_CLUSTER_NAME_LENGTH = 40;

const CLUSTER_NAME = /^[a-z][a-z0-9_]*$/;

/** Whether `name` can name a cluster: lowercase letters, digits and underscores, starting with a letter. */
export function validClusterName(name: string): boolean {
  return CLUSTER_NAME.test(name) && name.length <= MAX_CLUSTER_NAME_LENGTH;
}
