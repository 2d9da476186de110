// Which principal a client certificate is for (a SPIFFE ID in a URI SAN, or the subject's CN), and the check that it is the API key's.
import type { PeerCertificate } from "node:tls";
import { GatewayError } from "../errors.js";
import type { Principal } from "../principal.js";

/** Where a client certificate names its principal, tried in order: a SPIFFE ID (URI SAN), or the subject's common name. */
export type IdentitySource = "uri" | "cn";

/** How client certificates are bound to principals (settings TLS_CLIENT_IDENTITY and TLS_SPIFFE_TRUST_DOMAIN). */
export interface ClientIdentityOptions {
  /** The sources tried in order, or "any": any certificate the CA signed is accepted with any key (no binding). */
  readonly sources: readonly IdentitySource[] | "any";
  /** The trust domain of the SPIFFE IDs: spiffe://<domain>/platform/<name> and spiffe://<domain>/admin. */
  readonly trustDomain: string;
}

export const DEFAULT_CLIENT_IDENTITY: ClientIdentityOptions = { sources: ["uri", "cn"], trustDomain: "db-gateway" };

/** The SPIFFE ID of a principal's client certificate, as `db-gateway certs` and the development PKI write it. */
export function spiffeIdOf(principal: Principal, trustDomain = DEFAULT_CLIENT_IDENTITY.trustDomain): string {
  return principal.kind === "admin" ? `spiffe://${trustDomain}/admin` : `spiffe://${trustDomain}/platform/${principal.platform}`;
}

/** What a call's peer presented, for the check and for the log line of a refusal. */
export interface Peer {
  /** host:port, as grpc-js gives it. */
  readonly address: string;
  /** The client certificate's subject (CN=…), or undefined without one. */
  readonly subject: string | undefined;
  /** "admin", "platform:<name>", or undefined when the certificate names no principal. */
  readonly identity: string | undefined;
}

/** Reads a peer certificate's identity by the configured sources. */
export function peerOf(address: string, cert: PeerCertificate | undefined, options: ClientIdentityOptions): Peer {
  if (cert === undefined) return { address, subject: undefined, identity: undefined };
  const subject =
    cert.subject === undefined
      ? ""
      : Object.entries(cert.subject)
          .map(([k, v]) => `${k}=${String(v)}`)
          .join(", ");
  if (options.sources === "any") return { address, subject, identity: undefined };
  for (const source of options.sources) {
    const identity = source === "uri" ? fromSpiffeIds(cert.subjectaltname, options.trustDomain) : fromCommonName(cert.subject?.CN);
    if (identity !== undefined) return { address, subject, identity };
  }
  return { address, subject, identity: undefined };
}

/** PERMISSION_DENIED unless the certificate names the principal the API key proved (or binding is off). */
export function checkPeer(principal: Principal, peer: Peer, options: ClientIdentityOptions): void {
  if (options.sources === "any") return;
  const expected = principal.kind === "admin" ? "admin" : `platform:${principal.platform}`;
  if (peer.identity !== expected) {
    throw new GatewayError(
      "PERMISSION_DENIED",
      principal.kind === "admin" ? "the client certificate is not the admin's" : "the client certificate is not for the API key's platform",
    );
  }
}

/** The principal of the SPIFFE IDs in the trust domain among a certificate's URI SANs: one, or none when there are none or several disagree. */
function fromSpiffeIds(altNames: string | undefined, trustDomain: string): string | undefined {
  if (altNames === undefined) return undefined;
  const prefix = `spiffe://${trustDomain}/`;
  let found: string | undefined;
  for (const entry of altNames.split(", ")) {
    if (!entry.startsWith("URI:")) continue;
    const uri = entry.slice(4);
    if (!uri.startsWith(prefix)) continue;
    const path = uri.slice(prefix.length);
    const identity = path === "admin" ? "admin" : /^platform\/[a-z][a-z0-9]*$/.test(path) ? `platform:${path.slice("platform/".length)}` : undefined;
    if (identity === undefined || (found !== undefined && found !== identity)) return undefined;
    found = identity;
  }
  return found;
}

/** The principal a common name names: "admin", or a platform's name. */
function fromCommonName(cn: string | string[] | undefined): string | undefined {
  if (typeof cn !== "string") return undefined;
  if (cn === "admin") return "admin";
  return /^[a-z][a-z0-9]*$/.test(cn) ? `platform:${cn}` : undefined;
}
