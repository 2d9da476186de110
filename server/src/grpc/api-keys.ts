// Authenticates calls by their API key (x-api-key) in constant time: timing reveals neither a key nor the platform it belongs to.
import { createHash, timingSafeEqual } from "node:crypto";
import type { Metadata } from "@grpc/grpc-js";
import { GatewayError } from "../errors.js";
import type { Principal } from "../principal.js";

/** The metadata key that carries the API key. */
export const API_KEY_HEADER = "x-api-key";

/**
 * Checks API keys in constant time. Only SHA-256 digests of the keys are
 * kept; each call's key is hashed and compared with every known digest with
 * `timingSafeEqual`, without stopping at the first match, so timing reveals
 * neither a key nor which platform it belongs to.
 */
export class ApiKeys {
  readonly #entries: { digest: Buffer; principal: Principal }[] = [];

  constructor(platformKeys: ReadonlyMap<string, string>, adminKey: string | undefined) {
    for (const [platform, key] of platformKeys) this.#entries.push({ digest: digest(key), principal: { kind: "platform", platform } });
    if (adminKey !== undefined) this.#entries.push({ digest: digest(adminKey), principal: { kind: "admin" } });
  }

  /** The principal of the call's key; UNAUTHENTICATED, saying nothing more, when there is none. */
  authenticate(metadata: Metadata): Principal {
    const values = metadata.get(API_KEY_HEADER);
    const given = values.length === 1 && typeof values[0] === "string" ? digest(values[0]) : undefined;
    let found: Principal | undefined;
    if (given !== undefined) {
      for (const entry of this.#entries) {
        if (timingSafeEqual(entry.digest, given)) found = entry.principal;
      }
    }
    if (found === undefined) throw new GatewayError("UNAUTHENTICATED", "unauthenticated");
    return found;
  }
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}
