// Authenticates calls by their API key (x-api-key) in constant time: timing reveals neither a key nor the platform it belongs to.
import { createHash, timingSafeEqual } from "node:crypto";
import type { Metadata } from "@grpc/grpc-js";
import { GatewayError } from "../errors.js";
import type { Principal } from "../principal.js";

/** The metadata key that carries the API key. */
export const API_KEY_HEADER = "x-api-key";

/** Every principal's keys: each platform's by name, and the admin's. */
export interface ApiKeySet {
  readonly platformKeys: ReadonlyMap<string, readonly string[]>;
  readonly adminKeys: readonly string[];
}

/** Counts a call made with one key; made once per key, so that counting costs no label lookup. */
export type KeyUseCounter = (principal: string, keyId: string) => () => void;

/**
 * A key's public name: the first 8 hex digits of its SHA-256 digest
 * (`printf %s "$KEY" | sha256sum | cut -c1-8`). It says which key a client
 * uses, for rotations, and is shown where the key never may be.
 */
export function keyId(key: string): string {
  return digest(key).subarray(0, 4).toString("hex");
}

/**
 * Checks API keys in constant time. Only SHA-256 digests of the keys are
 * kept; each call's key is hashed and compared with every known digest with
 * `timingSafeEqual`, without stopping at the first match, so timing reveals
 * neither a key nor which platform it belongs to. A principal may have two
 * keys, both accepted, while its clients move from one to the other.
 */
interface KeyEntry {
  digest: Buffer;
  principal: Principal;
  used: () => void;
}

export class ApiKeys {
  readonly #entries: KeyEntry[] = [];
  /** The keys' identifiers by principal name ("admin" or the platform's): what a reload compares, and what the log may show. */
  readonly keyIds: ReadonlyMap<string, readonly string[]>;

  constructor(keys: ApiKeySet, countUse: KeyUseCounter = () => () => {}) {
    const ids = new Map<string, string[]>();
    const add = (principal: Principal, name: string, key: string) => {
      const id = keyId(key);
      this.#entries.push({ digest: digest(key), principal, used: countUse(name, id) });
      ids.set(name, [...(ids.get(name) ?? []), id]);
    };
    for (const [platform, platformKeys] of keys.platformKeys) for (const key of platformKeys) add({ kind: "platform", platform }, platform, key);
    for (const key of keys.adminKeys) add({ kind: "admin" }, "admin", key);
    this.keyIds = ids;
  }

  /** The principal of the call's key; UNAUTHENTICATED, saying nothing more, when there is none. */
  authenticate(metadata: Metadata): Principal {
    const values = metadata.get(API_KEY_HEADER);
    const given = values.length === 1 && typeof values[0] === "string" ? digest(values[0]) : undefined;
    let found: KeyEntry | undefined;
    if (given !== undefined) {
      for (const entry of this.#entries) {
        if (timingSafeEqual(entry.digest, given)) found = entry;
      }
    }
    if (found === undefined) throw new GatewayError("UNAUTHENTICATED", "unauthenticated");
    found.used();
    return found.principal;
  }
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}
