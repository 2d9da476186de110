// Database names: `{platform}_main` and `{platform}_{tenant_id}`, their parts validated, and split back into them.
import { GatewayError } from "../errors.js";

/** PostgreSQL truncates identifiers longer than this many bytes: a name must fit. */
export const MAX_DATABASE_NAME_BYTES = 63;

/** The non-login role that owns every database of the gateway, and each database's record of its migrations. */
export const OWNER_ROLE = "dbgateway_owner";

/** The tenant id that names a platform's main database; reserved for it. */
export const MAIN = "main";

const PLATFORM = /^[a-z][a-z0-9]*$/;
const TENANT_ID = /^[a-z0-9_]+$/;

/**
 * Checks a platform name: lowercase ASCII letters and digits, starting with a
 * letter. No underscore, so that `{platform}_{tenant_id}` always splits back
 * into one platform and one tenant.
 */
export function validatePlatform(platform: string): string {
  if (!PLATFORM.test(platform) || platform.length > MAX_DATABASE_NAME_BYTES - 1 - MAIN.length) {
    throw new GatewayError("INVALID_PLATFORM", "platform must be lowercase letters and digits, starting with a letter, at most 58 characters");
  }
  return platform;
}

/** The database of a tenant, or "" when the names are not valid: for log lines about calls that may have named anything. */
export function databaseNameOrEmpty(platform: string, tenantId: string): string {
  try {
    return databaseName(platform, tenantId);
  } catch {
    return "";
  }
}

/**
 * The database of `(platform, tenant_id)`: `{platform}_main` for an empty
 * tenant id, `{platform}_{tenant_id}` otherwise. Both parts are validated
 * first; an invalid one is INVALID_ARGUMENT, never a lookup.
 */
export function databaseName(platform: string, tenantId: string): string {
  validatePlatform(platform);
  if (tenantId === "") return `${platform}_${MAIN}`;
  if (!TENANT_ID.test(tenantId)) {
    throw new GatewayError("INVALID_TENANT_ID", "tenant_id must be lowercase letters, digits and underscores");
  }
  if (tenantId === MAIN) {
    throw new GatewayError("INVALID_TENANT_ID", `tenant_id "${MAIN}" is reserved: leave tenant_id empty for the main database`);
  }
  const name = `${platform}_${tenantId}`;
  if (Buffer.byteLength(name) > MAX_DATABASE_NAME_BYTES) {
    throw new GatewayError(
      "INVALID_TENANT_ID",
      `tenant_id is too long: the database name "{platform}_{tenant_id}" must be at most ${MAX_DATABASE_NAME_BYTES} bytes`,
    );
  }
  return name;
}

/** A database name taken apart, or undefined when it is not one of a platform's. */
export interface ParsedDatabaseName {
  platform: string;
  /** Empty for the main database. */
  tenantId: string;
}

/** Splits `{platform}_{tenant_id}` back into its parts. */
export function parseDatabaseName(name: string): ParsedDatabaseName | undefined {
  const at = name.indexOf("_");
  if (at <= 0) return undefined;
  const platform = name.slice(0, at);
  const rest = name.slice(at + 1);
  if (!PLATFORM.test(platform) || !TENANT_ID.test(rest)) return undefined;
  return { platform, tenantId: rest === MAIN ? "" : rest };
}

/** The advisory lock key under which one database name is changed (created, adopted, dropped, its catalogs closed), across gateway instances and the CLI. */
export function databaseLockKey(database: string): string {
  return `db-gateway/database/${database}`;
}
