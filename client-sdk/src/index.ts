/**
 * @db-gateway/client: the TypeScript client of db-gateway.
 * The public API is exactly what this file exports.
 */
export { createClient, type AdminClient, type DatabaseInfo, type GatewayClient, type PlatformDatabase, type QuotaLimits, type QuotaTarget } from "./client.js";
export type { ClientOptions, PemSource, RetryOptions } from "./client-options.js";
export type {
  BatchOptions,
  BatchStatement,
  CallOptions,
  Database,
  NotificationEvent,
  QueryConfig,
  QueryOptions,
  ReadOptions,
  RowStream,
  StreamOptions,
  StreamSummary,
  Subscription,
  TransactionCallOptions,
} from "./database.js";
export {
  loadMigrations,
  type DatabaseMigration,
  type MigrateOptions,
  type MigrationFile,
  type MigrationOutcomeName,
  type MigrationProgress,
  type MigrationTotals,
} from "./fleet.js";
export type { Field, QueryResult, RowMode } from "./result.js";
export type { Transaction, TransactionOptions } from "./transaction.js";
export { Code, GatewayError } from "./gateway-error.js";
export type { Int8Mode, TypeParser } from "./type-parsers.js";
export { toValue, type Param } from "./values.js";
export {
  AdminService,
  type BackupFile,
  type BackupResponse,
  type ForkTenantResponse,
  type MoveTenantResponse,
  type GetPoolStatsResponse,
  type ListQuotasResponse,
  type ListTenantsResponse,
  type RestoreTenantResponse,
  type TenantFacts,
  type VerifyBackupResponse,
  type PoolStats,
  type PoolTotals,
  type Quota,
} from "../../wire/src/gen/dbgateway/v1/admin_service_pb.js";
export { QueryService } from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
