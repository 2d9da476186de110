// What calls are authenticated with (TLS material, API keys, the certificate binding, signing secrets), and all of it replaced at once on a reload.
import type { AuditLog } from "../audit/audit-log.js";
import type { SharedNonces } from "../coordination/shared-nonces.js";
import type { Principal } from "../principal.js";
import type { CallRecord } from "../telemetry/call-telemetry.js";
import type { Logger } from "../telemetry/logger.js";
import type { GatewayMetrics } from "../telemetry/metrics.js";
import { ApiKeys, type ApiKeySet } from "./api-keys.js";
import { checkPeer, DEFAULT_CLIENT_IDENTITY, peerOf, type ClientIdentityOptions, type Peer } from "./client-identity.js";
import { RequestSignatures } from "./request-signatures.js";
import { requestBytesOf, type AuthenticatedCall } from "./service-adapter.js";
import { serverCredentials, type MutualTlsCredentials, type TlsMaterial } from "./tls-credentials.js";

/** What a reload reads: the API keys and signing secrets, and the TLS material unless it is made once (development). */
export interface ReloadedMaterial {
  tls?: TlsMaterial;
  keys: ApiKeySet;
  signingSecrets?: ReadonlyMap<string, string>;
}

/** What a reload changed: whether the TLS material did, and the principals whose keys did; or why it failed. */
export type ReloadOutcome = { ok: true; tls: boolean; keys: string[] } | { ok: false; error: string };

export interface AuthenticationOptions {
  tls: TlsMaterial;
  /** How long a connection has for its TLS handshake. */
  tlsHandshakeTimeoutMillis: number;
  keys: ApiKeySet;
  clientIdentity?: ClientIdentityOptions;
  signingSecrets?: ReadonlyMap<string, string>;
  signatureMaxSkewMillis?: number;
  /** REDIS_URL: signed requests' nonces claimed in Redis too, so that no gateway sharing it takes a replay. */
  sharedNonces?: SharedNonces;
  metrics: GatewayMetrics;
  /** Where reloads are recorded. */
  audit: AuditLog;
  log: Logger;
  onError: (message: string, err: unknown) => void;
}

/**
 * A call is authenticated by its client certificate (checked at the TLS
 * handshake, against the client CA and CRL), its API key, the binding of the
 * two (`TLS_CLIENT_IDENTITY`), and, for a platform that must sign, its
 * request signature. `reload` replaces the material, all or none.
 */
export class Authentication {
  /** The gRPC server's credentials: the handshakes' TLS material, replaced in place by a reload. */
  readonly credentials: MutualTlsCredentials;
  #tls: TlsMaterial;
  #keys: ApiKeys;
  #signingSecrets: ReadonlyMap<string, string>;
  readonly #signatures: RequestSignatures;
  readonly #clientIdentity: ClientIdentityOptions;
  /** Each call's peer, read once per call (a QueryStream message authenticates again): reading a certificate costs a full X.509 parse. */
  readonly #peers = new WeakMap<object, Peer>();
  /** Calls whose signature has been checked: a QueryStream's opening is signed once, its messages admitted again. */
  readonly #signed = new WeakSet<object>();
  #lastReloadFailure: string | undefined;

  constructor(private readonly o: AuthenticationOptions) {
    this.credentials = serverCredentials(o.tls, o.tlsHandshakeTimeoutMillis);
    this.#tls = o.tls;
    this.#keys = new ApiKeys(o.keys, this.#countKeyUse);
    this.#signingSecrets = o.signingSecrets ?? new Map();
    this.#signatures = new RequestSignatures(this.#signingSecrets, o.signatureMaxSkewMillis ?? 300_000, o.sharedNonces);
    this.#clientIdentity = o.clientIdentity ?? DEFAULT_CLIENT_IDENTITY;
    if (this.#clientIdentity.sources === "any") {
      o.log.warn(
        { component: "auth" },
        "TLS_CLIENT_IDENTITY=any: a client certificate from the CA is accepted with any API key (no certificate is bound to a principal)",
      );
    }
  }

  readonly #countKeyUse = (principal: string, keyId: string) => {
    const counter = this.o.metrics.apiKeyCalls.labels({ principal, key: keyId });
    return () => counter.inc();
  };

  /**
   * The call's principal, or the error that refuses it. Refusals are logged
   * and counted where the call's record ends (CallRecord), with what the
   * call asked for: `record` learns the peer for that. A check that needs
   * Redis (a signed request's nonce, shared) is handed to `defer`: the call
   * may run only once it has resolved, and is refused if it rejects.
   */
  authenticate(call: AuthenticatedCall, record: CallRecord | undefined, defer?: (check: Promise<void>) => void): Principal {
    let peer = this.#peers.get(call);
    if (peer === undefined) this.#peers.set(call, (peer = peerOf(call.getPeer(), call.getAuthContext().sslPeerCertificate, this.#clientIdentity)));
    if (record !== undefined) record.peer = peer;
    const principal = this.#keys.authenticate(call.metadata);
    checkPeer(principal, peer, this.#clientIdentity);
    if (principal.kind === "platform" && this.#signatures.requires(principal.platform) && !this.#signed.has(call)) {
      const shared = this.#signatures.check(principal.platform, call.getPath(), call.metadata, requestBytesOf(call.request));
      this.#signed.add(call);
      if (shared !== undefined) {
        // Without `defer` the call is being refused anyway (an unimplemented method): its check is of no use.
        if (defer !== undefined) defer(shared);
        else shared.catch(() => undefined);
      }
    }
    return principal;
  }

  /**
   * Takes new material, all or none: TLS material for the handshakes from
   * now on (calls in flight keep their connections), API keys and signing
   * secrets for the calls from now on. `load` reads them; if it throws, or
   * node refuses the TLS material, the old stays and the error says why.
   * Logged, and recorded in the audit trail when anything changed or failed,
   * naming keys only by their key ids.
   */
  async reload(trigger: string, load: () => ReloadedMaterial): Promise<ReloadOutcome> {
    const { log } = this.o;
    try {
      const material = load();
      const next = new ApiKeys(material.keys, this.#countKeyUse);
      const current = this.#keys.keyIds;
      if (next.keyIds.size !== current.size || [...next.keyIds.keys()].some((name) => !current.has(name))) {
        // The principals are the environment's API_KEY_ settings, fixed at start: only their keys change.
        throw new Error("the platforms with API keys differ from those at start: adding or removing a platform needs a restart");
      }
      const keysChanged = [...next.keyIds].filter(([name, ids]) => String(ids) !== String(current.get(name))).map(([name]) => name);
      const tlsChanged = material.tls !== undefined && !sameTls(material.tls, this.#tls);
      const signing = material.signingSecrets;
      const before = this.#signingSecrets;
      const signingChanged =
        signing === undefined ? [] : [...new Set([...signing.keys(), ...before.keys()])].filter((p) => signing.get(p) !== before.get(p)).sort();
      // The TLS material first: node may refuse it, and then nothing has changed.
      if (tlsChanged) {
        this.credentials.update(material.tls!);
        this.#tls = material.tls!;
      }
      this.#keys = next;
      if (signing !== undefined) {
        this.#signatures.update(signing);
        this.#signingSecrets = signing;
      }
      this.#lastReloadFailure = undefined;
      if (!tlsChanged && keysChanged.length === 0 && signingChanged.length === 0) {
        // Asked for by an operator (SIGHUP), it is said; seen in a watched folder, where anything may change, only at debug.
        log[trigger === "SIGHUP" ? "info" : "debug"]({ trigger }, "reload: nothing changed");
        return { ok: true, tls: false, keys: [] };
      }
      // Key ids, never keys: the keys each changed principal now has.
      const changes: Record<string, string> = Object.fromEntries(keysChanged.map((name) => [`keys.${name}`, next.keyIds.get(name)!.join(" ")]));
      if (signingChanged.length > 0) changes.signing_secrets = signingChanged.join(" ");
      log.info({ trigger, tls: tlsChanged, ...changes }, "reloaded: new handshakes and calls use the new material");
      await this.#record(trigger, "OK", { tls: String(tlsChanged), ...changes });
      return { ok: true, tls: tlsChanged, keys: keysChanged.sort() };
    } catch (err) {
      const error = (err as Error).message;
      // The same failure again (a watched folder changing while a file stays broken): logged and recorded once.
      if (error === this.#lastReloadFailure && trigger !== "SIGHUP") {
        log.debug({ trigger, err: error }, "reload failed again");
        return { ok: false, error };
      }
      this.#lastReloadFailure = error;
      log.error({ trigger, err: error }, "reload failed: the previous certificates, CA, CRL and API keys stay in use");
      await this.#record(trigger, "RELOAD_FAILED", { error });
      return { ok: false, error };
    }
  }

  #record(trigger: string, outcome: string, detail: Record<string, string>): Promise<void> {
    const entry = { actor: `operator (${trigger})`, peer: "local", requestId: "", action: "gateway.reload", platform: "", tenantId: "", database: "" };
    return this.o.audit.record({ ...entry, outcome, detail }).catch((err: unknown) => {
      this.o.metrics.auditFailures.inc();
      this.o.onError("a reload could not be recorded in the audit trail", err);
    });
  }
}

function sameTls(a: TlsMaterial, b: TlsMaterial): boolean {
  const same = (x: Buffer | undefined, y: Buffer | undefined) => (x === undefined ? y === undefined : y !== undefined && x.equals(y));
  return same(a.cert, b.cert) && same(a.key, b.key) && same(a.clientCa, b.clientCa) && same(a.crl, b.crl);
}
