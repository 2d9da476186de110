// AdminService.MoveTenant: a tenant's database moved to another cluster (tenancy/tenant-move.ts), within the call's deadline, audited.
import { durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
import type { MoveTenantRequest, MoveTenantResponse } from "../../../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import type { MoveOutcome, TenantMover } from "../tenancy/tenant-move.js";
import { databaseMessage as describe } from "./database-message.js";
import type { CallContext } from "./service-contract.js";

/** The pause a move allows when the request sets none. */
export const DEFAULT_MAX_PAUSE_MILLIS = 5_000;

/** Runs an action and records it in the audit trail, whatever its outcome (admin-service.ts's `audited`). */
export type Audited = (
  ctx: CallContext,
  action: string,
  target: { platform: string; tenantId: string; database?: string },
  detail: Record<string, string>,
  run: () => Promise<string>,
) => Promise<string>;

/**
 * MoveTenant's handler: the move stops when the call is cancelled or its
 * deadline passes (the tenant stays on its source; a later call resumes), and
 * is recorded as "tenant.move" with its source, target and pause.
 */
export async function moveTenant(
  request: MoveTenantRequest,
  ctx: CallContext,
  mover: TenantMover,
  audited: Audited,
): Promise<Omit<MoveTenantResponse, "$typeName" | "$unknown">> {
  const started = performance.now();
  const maxPauseMillis = request.maxPause === undefined ? DEFAULT_MAX_PAUSE_MILLIS : durationMs(request.maxPause);
  const signal = Number.isFinite(ctx.deadline) ? AbortSignal.any([ctx.signal, AbortSignal.timeout(Math.max(0, ctx.deadline - Date.now()))]) : ctx.signal;
  const detail: Record<string, string> = { cluster: request.cluster, max_pause_ms: String(maxPauseMillis) };
  let moved: MoveOutcome | undefined;
  await audited(ctx, "tenant.move", request, detail, async () => {
    moved = await mover.move({
      platform: request.platform,
      tenantId: request.tenantId,
      to: request.cluster,
      maxPauseMillis,
      dropSource: request.dropSource,
      signal,
    });
    Object.assign(detail, { source: moved.source, pause_ms: String(Math.round(moved.pauseMillis)), kept_source: moved.keptAs });
    return moved.database;
  });
  const m = moved!;
  return {
    database: describe(m.database, m.target),
    sourceCluster: m.source,
    pause: durationFromMs(Math.round(m.pauseMillis)),
    catchUpLsn: m.catchUpLsn,
    tables: m.tables,
    sequences: m.sequences,
    keptSource: m.keptAs,
    resumed: m.resumed,
    duration: durationFromMs(Math.round(performance.now() - started)),
  };
}
