// AdminService's SetQuota and ListQuotas: quotas checked against the gateway's own ceilings, stored in the catalog, applied at once.
import { create } from "@bufbuild/protobuf";
import { DurationSchema, timestampFromDate, type Duration } from "@bufbuild/protobuf/wkt";
import { GatewayError } from "../errors.js";
import {
  QuotaLimitsSchema,
  QuotaSchema,
  QuotaScope,
  type Quota,
  type QuotaLimits as QuotaLimitsMessage,
} from "../../../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import { databaseName } from "../tenancy/naming.js";
import type { QuotaStore } from "../tenancy/quota-store.js";
import type { QuotaLimits, QuotaScope as Scope, Quotas, StoredQuota } from "../tenancy/quotas.js";

/** What SetQuota needs: the store, the quotas in force, and the gateway's ceilings no quota may pass. */
export interface QuotaAdministration {
  store: QuotaStore;
  quotas: Quotas;
  /** Told after a quota was stored and applied (the pools read their shares again). */
  onChange(): void;
  /** Told when a dropped tenant's quota could not be removed (a tenant created again with its id would inherit it). */
  onError(message: string, err: unknown): void;
  ceilings: {
    /** MAX_CONNECTIONS_PER_POOL: a database's connections (each tenant role's connection limit allows for it). */
    maxConnectionsPerPool: number;
    /** MAX_TOTAL_CONNECTIONS. */
    maxTotalConnections: number;
    /** MAX_STATEMENT_TIME_SECS, in milliseconds: also each connection's statement_timeout. */
    maxStatementMillis: number;
  };
}

const SCOPE_ENUM: Record<Scope, QuotaScope> = { platform: QuotaScope.PLATFORM, "each-tenant": QuotaScope.EACH_TENANT, tenant: QuotaScope.TENANT };
const SCOPES = new Map(Object.entries(SCOPE_ENUM).map(([scope, value]) => [value, scope as Scope]));

/** A SetQuota request's quota, checked: INVALID_REQUEST says what is wrong. */
export function quotaOfRequest(quota: Quota | undefined, { ceilings }: QuotaAdministration): Omit<StoredQuota, "updatedAt"> {
  if (quota === undefined) throw new GatewayError("INVALID_REQUEST", "quota is required");
  const scope = SCOPES.get(quota.scope);
  if (scope === undefined) throw new GatewayError("INVALID_REQUEST", "quota.scope must be QUOTA_SCOPE_PLATFORM, QUOTA_SCOPE_EACH_TENANT or QUOTA_SCOPE_TENANT");
  if (scope === "tenant")
    databaseName(quota.platform, quota.tenantId); // checks the tenant id
  else if (quota.tenantId !== "") throw new GatewayError("INVALID_REQUEST", "quota.tenant_id is only for QUOTA_SCOPE_TENANT");
  const m = quota.limits;
  const limits: QuotaLimits = {};
  const bad = (field: string, why: string) => new GatewayError("INVALID_REQUEST", `quota.limits.${field} ${why}`);
  if (m?.callsPerSecond !== undefined) {
    if (!(m.callsPerSecond >= 0 && m.callsPerSecond <= 1_000_000)) throw bad("calls_per_second", "must be between 0 and 1000000");
    limits.callsPerSecond = m.callsPerSecond;
  }
  if (m?.burst !== undefined) {
    if (!(m.burst >= 1 && m.burst <= 1_000_000)) throw bad("burst", "must be between 1 and 1000000");
    limits.burst = m.burst;
  }
  if (m?.maxConcurrentStatements !== undefined) {
    if (!(m.maxConcurrentStatements >= 1)) throw bad("max_concurrent_statements", "must be at least 1");
    limits.maxConcurrentStatements = m.maxConcurrentStatements;
  }
  if (m?.maxConnections !== undefined) {
    const [ceiling, setting] =
      scope === "platform" ? [ceilings.maxTotalConnections, "MAX_TOTAL_CONNECTIONS"] : [ceilings.maxConnectionsPerPool, "MAX_CONNECTIONS_PER_POOL"];
    if (!(m.maxConnections >= 1 && m.maxConnections <= ceiling)) throw bad("max_connections", `must be between 1 and ${ceiling} (${setting})`);
    limits.maxConnections = m.maxConnections;
  }
  if (m?.maxStatementTime !== undefined) {
    const millis = Number(m.maxStatementTime.seconds) * 1000 + m.maxStatementTime.nanos / 1e6;
    if (!(millis >= 1 && millis <= ceilings.maxStatementMillis)) {
      throw bad("max_statement_time", `must be between 1 ms and ${ceilings.maxStatementMillis / 1000} s (MAX_STATEMENT_TIME_SECS)`);
    }
    limits.maxStatementMillis = Math.round(millis);
  }
  return { platform: quota.platform, scope, tenantId: quota.tenantId, limits };
}

/** A stored quota as the API sends it. */
export function quotaMessage(q: StoredQuota): Quota {
  return create(QuotaSchema, {
    platform: q.platform,
    scope: SCOPE_ENUM[q.scope],
    tenantId: q.tenantId,
    limits: limitsMessage(q.limits),
    updateTime: timestampFromDate(q.updatedAt),
  });
}

export function limitsMessage(l: QuotaLimits): QuotaLimitsMessage {
  const m = create(QuotaLimitsSchema);
  if (l.callsPerSecond !== undefined) m.callsPerSecond = l.callsPerSecond;
  if (l.burst !== undefined) m.burst = l.burst;
  if (l.maxConcurrentStatements !== undefined) m.maxConcurrentStatements = l.maxConcurrentStatements;
  if (l.maxConnections !== undefined) m.maxConnections = l.maxConnections;
  if (l.maxStatementMillis !== undefined) m.maxStatementTime = duration(l.maxStatementMillis);
  return m;
}

function duration(millis: number): Duration {
  return create(DurationSchema, { seconds: BigInt(Math.floor(millis / 1000)), nanos: (millis % 1000) * 1_000_000 });
}

/** What the audit trail records of a quota set: its limits, as text, each key after `prefix`. */
export function quotaDetail(limits: QuotaLimits, prefix = ""): Record<string, string> {
  return Object.fromEntries(Object.entries(limits).map(([k, v]) => [prefix + k, String(v)]));
}

/** What a SetQuota request asked for, unchecked, as the audit trail records a refused one. */
export function requestedDetail(quota: Quota | undefined): Record<string, string> {
  const detail: Record<string, string> = { scope: SCOPES.get(quota?.scope ?? QuotaScope.UNSPECIFIED) ?? String(quota?.scope ?? "") };
  const m = quota?.limits;
  for (const k of ["callsPerSecond", "burst", "maxConcurrentStatements", "maxConnections"] as const) if (m?.[k] !== undefined) detail[k] = String(m[k]);
  if (m?.maxStatementTime !== undefined) detail.maxStatementTime = `${m.maxStatementTime.seconds}s ${m.maxStatementTime.nanos}ns`;
  return detail;
}

/** Removes a dropped tenant's own quota, here and in the catalog; a failure is reported, not thrown (the tenant is gone). */
export async function forgetTenantQuota(admin: QuotaAdministration, platform: string, tenantId: string): Promise<void> {
  try {
    await admin.store.forget(platform, tenantId);
  } catch (err) {
    admin.onError(`the quota of dropped tenant "${tenantId}" of platform "${platform}" could not be removed`, err);
    return;
  }
  if (admin.quotas.stored({ platform, scope: "tenant", tenantId }) === undefined) return;
  admin.quotas.put({ platform, scope: "tenant", tenantId, limits: {}, updatedAt: new Date() });
  admin.onChange();
}
