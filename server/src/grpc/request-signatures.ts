// Checks signed requests of the platforms that must sign (SIGNING_SECRET_<PLATFORM>): the HMAC, the timestamp's skew, and nonces never seen twice.
import { timingSafeEqual } from "node:crypto";
import type { Metadata } from "@grpc/grpc-js";
import { GatewayError } from "../errors.js";
import type { SharedNonces } from "../coordination/shared-nonces.js";
import { NONCE, SIGNATURE_HEADER, SIGNATURE_NONCE_HEADER, SIGNATURE_TIMESTAMP_HEADER, signature } from "../../../wire/src/request-signing.js";

/** Nonces remembered per platform at most: past it, signed calls are refused until older ones leave the window (a platform's own flood). */
const MAX_NONCES = 200_000;

/**
 * The signing secrets of the platforms that must sign, and the nonces each
 * has used within the window: a nonce is remembered for twice the allowed
 * skew (a timestamp that old is refused anyway), in memory, per gateway
 * process, and with `shared` (REDIS_URL) claimed in Redis too, so that a
 * request replayed to another gateway is refused there; while Redis does not
 * answer, each gateway refuses the replays it sees itself.
 */
export class RequestSignatures {
  readonly #nonces = new Map<string, Map<string, number>>();

  constructor(
    private secrets: ReadonlyMap<string, string>,
    private readonly maxSkewMillis: number,
    private readonly shared?: SharedNonces,
  ) {}

  /** Replaces the secrets (a reload); the nonces seen stay. */
  update(secrets: ReadonlyMap<string, string>): void {
    this.secrets = secrets;
  }

  /** Whether the platform must sign its calls. */
  requires(platform: string): boolean {
    return this.secrets.has(platform);
  }

  /**
   * Checks the signature of a call of `platform` to `path`, whose request
   * message was `body` (undefined for a call whose client streams its
   * messages); UNAUTHENTICATED saying what is wrong otherwise. With shared
   * nonces, what it returns rejects (UNAUTHENTICATED) if another gateway has
   * seen the nonce: the call must wait for it before it runs.
   */
  check(platform: string, path: string, metadata: Metadata, body: Uint8Array | undefined, now = Date.now()): Promise<void> | undefined {
    const secret = this.secrets.get(platform);
    if (secret === undefined) return;
    const [timestamp, nonce, given] = [SIGNATURE_TIMESTAMP_HEADER, SIGNATURE_NONCE_HEADER, SIGNATURE_HEADER].map((name) => {
      const values = metadata.get(name);
      return values.length === 1 && typeof values[0] === "string" ? values[0] : undefined;
    });
    if (timestamp === undefined || nonce === undefined || given === undefined) {
      throw refused(
        "missing_signature",
        `this platform's calls must be signed (${SIGNATURE_TIMESTAMP_HEADER}, ${SIGNATURE_NONCE_HEADER}, ${SIGNATURE_HEADER})`,
      );
    }
    const time = /^\d{1,16}$/.test(timestamp) ? Number(timestamp) : NaN;
    if (!NONCE.test(nonce) || !Number.isFinite(time)) throw refused("bad_signature", "the request signature's timestamp or nonce is malformed");
    const expected = Buffer.from(signature(secret, path, timestamp, nonce, body));
    const sent = Buffer.from(given);
    if (sent.length !== expected.length || !timingSafeEqual(sent, expected)) throw refused("bad_signature", "the request signature does not match");
    // Checked after the HMAC: only the platform itself learns that its clock is off.
    if (Math.abs(now - time) > this.maxSkewMillis) {
      throw refused("stale_signature", `the request signature's timestamp is more than ${this.maxSkewMillis / 1000} s from the gateway's clock`);
    }
    this.#remember(platform, nonce, now);
    if (this.shared === undefined || !this.shared.available) return undefined;
    return this.shared.claim(platform, nonce, 2 * this.maxSkewMillis).then((claimed) => {
      if (claimed === false) throw replayed();
    });
  }

  #remember(platform: string, nonce: string, now: number): void {
    let seen = this.#nonces.get(platform);
    if (seen === undefined) this.#nonces.set(platform, (seen = new Map()));
    const expiry = seen.get(nonce);
    if (expiry !== undefined && expiry > now) throw replayed();
    if (seen.size >= MAX_NONCES) {
      // Insertion order is expiry order: those that have left the window go first.
      for (const [old, until] of seen) {
        if (until > now) break;
        seen.delete(old);
      }
      if (seen.size >= MAX_NONCES) throw new GatewayError("RATE_LIMITED", "too many signed calls within the signature window: try again shortly");
    }
    seen.delete(nonce); // set anew at the end: the map stays in expiry order
    seen.set(nonce, now + 2 * this.maxSkewMillis);
  }
}

function replayed(): GatewayError {
  return refused("replayed_signature", "the request signature's nonce was used already: a replay");
}

function refused(event: string, message: string): GatewayError {
  return new GatewayError("UNAUTHENTICATED", message, { logFields: { event } });
}
