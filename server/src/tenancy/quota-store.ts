// The quotas stored in the gateway's catalog, shared by every instance serving it: read in full, and set one scope at a time.
import type pg from "pg";
import { applySchema } from "../audit/catalog.js";
import { QUOTA_LIMITS, type QuotaLimits, type Quotas, type QuotaScope, type StoredQuota } from "./quotas.js";

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS public.quota (
    platform text NOT NULL,
    scope text NOT NULL CHECK (scope IN ('platform', 'each-tenant', 'tenant')),
    tenant_id text NOT NULL,
    limits jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (platform, scope, tenant_id)
  );
  REVOKE ALL ON public.quota FROM PUBLIC;
`;

interface QuotaRow {
  platform: string;
  scope: QuotaScope;
  tenant_id: string;
  limits: QuotaLimits;
  updated_at: Date;
}

/** The `quota` table of the catalog: one row per scope that has limits. */
export class QuotaStore {
  private constructor(private readonly catalog: pg.Pool) {}

  /** Sets up the table in the catalog (see catalog.ts) if needed. */
  static async open(catalog: pg.Pool): Promise<QuotaStore> {
    await applySchema(catalog, "quota", SCHEMA);
    return new QuotaStore(catalog);
  }

  /**
   * Loads the stored quotas into `quotas` now, and again every `everyMillis`,
   * so that quotas set through another gateway instance apply here too;
   * `onChange` is told when they changed. Returns what stops it.
   */
  async follow(quotas: Quotas, everyMillis: number, onChange: () => void, onError: (err: unknown) => void): Promise<() => void> {
    if (quotas.replace(await this.all())) onChange();
    let reading = false;
    const timer = setInterval(() => {
      if (reading) return; // a slow catalog: one read at a time, applied in order
      reading = true;
      const generation = quotas.generation;
      this.all()
        // A quota set here while the read ran is newer than what it read: the next read has it.
        .then((all) => generation === quotas.generation && quotas.replace(all) && onChange(), onError)
        .finally(() => (reading = false));
    }, everyMillis);
    timer.unref();
    return () => clearInterval(timer);
  }

  async all(): Promise<StoredQuota[]> {
    const { rows } = await this.catalog.query<QuotaRow>("SELECT platform, scope, tenant_id, limits, updated_at FROM public.quota");
    return rows.map(fromRow);
  }

  /** Stores a scope's limits, replacing what it had; limits with nothing set remove the row. Returns what is stored now. */
  /** Removes a tenant's own quota (its database was dropped): a tenant created again with its id starts from its platform's. */
  async forget(platform: string, tenantId: string): Promise<void> {
    await this.catalog.query("DELETE FROM public.quota WHERE platform = $1 AND scope = 'tenant' AND tenant_id = $2", [platform, tenantId]);
  }

  async put(quota: Omit<StoredQuota, "updatedAt">): Promise<StoredQuota> {
    const limits: QuotaLimits = {};
    for (const k of QUOTA_LIMITS) if (quota.limits[k] !== undefined) limits[k] = quota.limits[k];
    if (Object.keys(limits).length === 0) {
      await this.catalog.query("DELETE FROM public.quota WHERE platform = $1 AND scope = $2 AND tenant_id = $3", [quota.platform, quota.scope, quota.tenantId]);
      return { ...quota, limits, updatedAt: new Date() };
    }
    const { rows } = await this.catalog.query<QuotaRow>(
      `INSERT INTO public.quota (platform, scope, tenant_id, limits) VALUES ($1, $2, $3, $4)
       ON CONFLICT (platform, scope, tenant_id) DO UPDATE SET limits = EXCLUDED.limits, updated_at = clock_timestamp()
       RETURNING platform, scope, tenant_id, limits, updated_at`,
      [quota.platform, quota.scope, quota.tenantId, JSON.stringify(limits)],
    );
    return fromRow(rows[0]!);
  }
}

function fromRow(r: QuotaRow): StoredQuota {
  return { platform: r.platform, scope: r.scope, tenantId: r.tenant_id, limits: r.limits, updatedAt: r.updated_at };
}
