// Signed requests (HMAC-SHA256 over the method, a timestamp, a nonce and the request's bytes), as the SDK makes them and the gateway checks them.
import { createHash, createHmac, randomBytes } from "node:crypto";

/** The metadata that carries a signature: its time (Unix milliseconds), a nonce, and the HMAC (base64url). */
export const SIGNATURE_TIMESTAMP_HEADER = "x-dbgw-timestamp";
export const SIGNATURE_NONCE_HEADER = "x-dbgw-nonce";
export const SIGNATURE_HEADER = "x-dbgw-signature";

/** A nonce: 16 to 128 characters of base64url, which the SDK makes from 16 random bytes. */
export const NONCE = /^[A-Za-z0-9_-]{16,128}$/;

/**
 * The signed text, version 1: `v1`, the method's path
 * (`/dbgateway.v1.QueryService/Query`), the timestamp, the nonce, and the
 * SHA-256 of the request message's bytes as sent (hex; of nothing for a
 * call whose client sends a stream of messages: only its opening is signed),
 * one per line.
 */
export function signedText(path: string, timestamp: string, nonce: string, body: Uint8Array | undefined): string {
  const digest = createHash("sha256")
    .update(body ?? new Uint8Array())
    .digest("hex");
  return `v1\n${path}\n${timestamp}\n${nonce}\n${digest}`;
}

/** The signature of a request: HMAC-SHA256 of `signedText` under the platform's signing secret, base64url. */
export function signature(secret: string, path: string, timestamp: string, nonce: string, body: Uint8Array | undefined): string {
  return createHmac("sha256", secret)
    .update(signedText(path, timestamp, nonce, body))
    .digest("base64url");
}

/** The three signature headers of a request sent now. */
export function signRequest(secret: string, path: string, body: Uint8Array | undefined, now = Date.now()): Record<string, string> {
  const timestamp = String(now);
  const nonce = randomBytes(16).toString("base64url");
  return {
    [SIGNATURE_TIMESTAMP_HEADER]: timestamp,
    [SIGNATURE_NONCE_HEADER]: nonce,
    [SIGNATURE_HEADER]: signature(secret, path, timestamp, nonce, body),
  };
}
