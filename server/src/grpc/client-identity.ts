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

/** The principal a client certificate named `name` is for (`db-gateway certs --admin` names it admin). */
export function principalNamed(name: string): Principal {
  return name === "admin" ? { kind: "admin" } : { kind: "platform", platform: name };
}

/** A principal as a peer's `identity` names it: "admin" or "platform:<name>". */
export function identityOf(principal: Principal): string {
  return principal.kind === "admin" ? "admin" : `platform:${principal.platform}`;
}

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

/**
 * Reads a peer certificate's identity by the configured sources. A
 * certificate with any SPIFFE ID is a SPIFFE certificate: with "uri" among
 * the sources its SPIFFE IDs alone decide, and one that names nobody here
 * (another trust domain, another path, two that disagree) is not read from
 * its CN instead.
 */
export function peerOf(address: string, cert: PeerCertificate | undefined, options: ClientIdentityOptions): Peer {
  if (cert === undefined) return { address, subject: undefined, identity: undefined };
  const subject = subjectOf(cert);
  if (options.sources === "any") return { address, subject, identity: undefined };
  for (const source of options.sources) {
    if (source === "uri") {
      const spiffe = fromSpiffeIds(cert.subjectaltname, options.trustDomain);
      if (spiffe.present) return { address, subject, identity: spiffe.identity };
    } else {
      const identity = fromCommonName(cert.subject?.CN);
      if (identity !== undefined) return { address, subject, identity };
    }
  }
  return { address, subject, identity: undefined };
}

/** The subject as "CN=…, O=…", for log lines. */
function subjectOf(cert: PeerCertificate): string {
  if (cert.subject === undefined) return "";
  return Object.entries(cert.subject)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(", ");
}

/** PERMISSION_DENIED unless the certificate names the principal the API key proved (or binding is off). */
export function checkPeer(principal: Principal, peer: Peer, options: ClientIdentityOptions): void {
  if (options.sources === "any") return;
  const expected = identityOf(principal);
  if (peer.identity !== expected) {
    throw new GatewayError(
      "PERMISSION_DENIED",
      principal.kind === "admin" ? "the client certificate is not the admin's" : "the client certificate is not for the API key's platform",
      // The log says whose key it was and what the certificate said; the caller is told neither.
      {
        logFields: {
          event: "certificate_mismatch",
          principal: principal.kind === "admin" ? "admin" : principal.platform,
          identity: peer.identity ?? "none",
          expected,
        },
      },
    );
  }
}

/**
 * A certificate's SPIFFE IDs (URI SANs with the spiffe scheme): whether it has
 * any, and the principal they name, which is one only when every one of them
 * is in the trust domain and names the same principal.
 */
function fromSpiffeIds(altNames: string | undefined, trustDomain: string): { present: boolean; identity: string | undefined } {
  const prefix = `spiffe://${trustDomain}/`;
  let present = false;
  let found: string | undefined;
  for (const entry of altNames?.split(", ") ?? []) {
    // Node quotes a value holding characters that could confuse this split: a quoted one is no plain SPIFFE ID, and counts as one naming nobody.
    if (!/^uri:"?spiffe:/i.test(entry)) continue;
    present = true;
    const uri = entry.slice(4);
    const path = uri.startsWith(prefix) ? uri.slice(prefix.length) : undefined;
    const identity =
      path === "admin" ? "admin" : path !== undefined && /^platform\/[a-z][a-z0-9]*$/.test(path) ? `platform:${path.slice("platform/".length)}` : undefined;
    if (identity === undefined || (found !== undefined && found !== identity)) return { present, identity: undefined };
    found = identity;
  }
  return { present, identity: found };
}

/** The principal a common name names: "admin", or a platform's name. */
function fromCommonName(cn: string | string[] | undefined): string | undefined {
  if (typeof cn !== "string") return undefined;
  if (cn === "admin") return "admin";
  return /^[a-z][a-z0-9]*$/.test(cn) ? `platform:${cn}` : undefined;
}
