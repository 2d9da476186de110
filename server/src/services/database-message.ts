// A database as AdminService's messages describe it, from its name.
import { create } from "@bufbuild/protobuf";
import { DatabaseSchema, DatabaseType, type Database } from "../../../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import { databaseName, parseDatabaseName } from "../tenancy/naming.js";

/** The Database message of one of a platform's databases, with the cluster that holds it when known. */
export function databaseMessage(name: string, cluster = ""): Database {
  const parsed = parseDatabaseName(name)!;
  return create(DatabaseSchema, {
    name,
    cluster,
    platform: parsed.platform,
    tenantId: parsed.tenantId,
    type: parsed.tenantId === "" ? DatabaseType.MAIN : DatabaseType.TENANT,
  });
}

/** The database an action was about, when its names are valid; empty otherwise (the error says why). */
export function safeDatabaseName(platform: string, tenantId: string): string {
  try {
    return databaseName(platform, tenantId);
  } catch {
    return "";
  }
}
