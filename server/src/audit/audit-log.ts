// The append-only audit trail of administrative actions, in the gateway's catalog database: who, from where, what, on which database, outcome.
import type pg from "pg";
import { applySchema } from "./catalog.js";

/** An administrative action and its outcome, as recorded. */
export interface AuditEntry {
  actor: string;
  peer: string;
  requestId: string;
  /** "tenant.create", "tenant.drop", "gateway.reload" (new TLS material or API keys; platform, tenant and database empty). */
  action: string;
  platform: string;
  tenantId: string;
  database: string;
  /** "OK", or the reason of the error. */
  outcome: string;
  detail: Record<string, string>;
}

/** A recorded entry. */
export interface AuditEvent extends AuditEntry {
  id: bigint;
  time: Date;
}

/**
 * Sets up the catalog once: the database (no PUBLIC access), and the table
 * under triggers that refuse UPDATE, DELETE and TRUNCATE, so the trail is
 * append-only even for the role that writes it (short of dropping the
 * triggers, which needs DDL the gateway never runs afterwards). Idempotent and
 * safe when several gateway instances start at once.
 */
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS public.audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor text NOT NULL,
    peer text NOT NULL,
    request_id text NOT NULL,
    action text NOT NULL,
    platform text NOT NULL,
    tenant_id text NOT NULL,
    database text NOT NULL,
    outcome text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
  );
  CREATE INDEX IF NOT EXISTS audit_log_platform ON public.audit_log (platform, id);
  CREATE OR REPLACE FUNCTION public.audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
  END
  $$;
  CREATE OR REPLACE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON public.audit_log
    FOR EACH ROW EXECUTE FUNCTION public.audit_log_is_append_only();
  CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON public.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_log_is_append_only();
  REVOKE ALL ON public.audit_log FROM PUBLIC;
`;

/**
 * The audit trail of administrative actions, in the catalog database: who
 * (key and client certificate), from where, what, on which database, when,
 * and the outcome. Written with the gateway's administrative role on the
 * catalog's pool.
 */
export class AuditLog {
  private constructor(private readonly pool: pg.Pool) {}

  /** Sets up the trail's schema in the catalog (see catalog.ts) if needed. */
  static async open(catalog: pg.Pool): Promise<AuditLog> {
    await applySchema(catalog, "audit_log", SCHEMA);
    return new AuditLog(catalog);
  }

  async record(entry: AuditEntry): Promise<void> {
    await this.pool.query(
      `INSERT INTO public.audit_log (actor, peer, request_id, action, platform, tenant_id, database, outcome, detail)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      [entry.actor, entry.peer, entry.requestId, entry.action, entry.platform, entry.tenantId, entry.database, entry.outcome, JSON.stringify(entry.detail)],
    );
  }

  /** Events newest first, of one platform or all, older than `beforeId` when given. */
  async list(options: { platform: string; beforeId: bigint | undefined; limit: number }): Promise<AuditEvent[]> {
    const { rows } = await this.pool.query<{
      id: string;
      time: Date;
      actor: string;
      peer: string;
      request_id: string;
      action: string;
      platform: string;
      tenant_id: string;
      database: string;
      outcome: string;
      detail: Record<string, string>;
    }>(
      `SELECT id::text, time, actor, peer, request_id, action, platform, tenant_id, database, outcome, detail
         FROM public.audit_log
        WHERE ($1 = '' OR platform = $1) AND ($2::bigint IS NULL OR id < $2::bigint)
        ORDER BY audit_log.id DESC
        LIMIT $3`,
      [options.platform, options.beforeId?.toString() ?? null, options.limit],
    );
    return rows.map((r) => ({
      id: BigInt(r.id),
      time: r.time,
      actor: r.actor,
      peer: r.peer,
      requestId: r.request_id,
      action: r.action,
      platform: r.platform,
      tenantId: r.tenant_id,
      database: r.database,
      outcome: r.outcome,
      detail: r.detail,
    }));
  }
}
