// Who is calling and what that lets them reach: below the transport that proves it (grpc/api-keys.ts) and the layers that check it (tenancy/router.ts).
import { GatewayError } from "./errors.js";

/** Who is calling, as proven by the API key. */
export type Principal = { readonly kind: "admin" } | { readonly kind: "platform"; readonly platform: string };

/** PERMISSION_DENIED unless the principal is the admin. */
export function requireAdmin(principal: Principal): void {
  if (principal.kind !== "admin") throw new GatewayError("PERMISSION_DENIED", "this call needs the admin key", { logFields: { event: "admin_only" } });
}

/** PERMISSION_DENIED unless the principal is the given platform; the refusal names what was asked for (`tenantId`, when known). */
export function requirePlatform(principal: Principal, platform: string, tenantId?: string): void {
  if (principal.kind !== "platform" || principal.platform !== platform) {
    throw new GatewayError("PERMISSION_DENIED", "the API key does not grant access to this platform", {
      metadata: { platform, ...(tenantId === undefined ? {} : { tenant_id: tenantId }) },
      logFields: { event: "other_platform" },
    });
  }
}
