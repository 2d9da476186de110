// createClient's options: checked once, TLS files read, every problem reported together in one TypeError, defaults filled in.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Int8Mode, TypeParser } from "./type-parsers.js";

/** A PEM given as its text or bytes, or as the path of a file holding it. */
export type PemSource = string | Uint8Array;

/** How calls that failed with UNAVAILABLE are retried, where that is safe (see `CallOptions.idempotent`). */
export interface RetryOptions {
  /** Attempts in all, the first included; 1 turns retries off. Default 3. */
  maxAttempts?: number;
  /** The first backoff; each next one doubles, with full jitter. Default 50. */
  baseDelayMs?: number;
  /** The longest backoff. Default 1000. */
  maxDelayMs?: number;
}

/** Options of `createClient`. */
export interface ClientOptions {
  /**
   * The gateway's address, e.g. "https://db-gateway.internal:9000", or the
   * addresses of several gateways serving the same clusters: calls are
   * balanced over them round-robin, skipping one that cannot be reached (see
   * the README, "Several gateways"). A host name that resolves to several
   * addresses is balanced over them too.
   */
  url: string | readonly string[];
  /** The API key: a platform's, or the admin key for `admin()`. */
  apiKey: string;
  /** Mutual TLS: the CA that signed the gateway's certificate, and this client's certificate and key (PEM text, bytes, or file paths). */
  tls: { ca: PemSource; cert: PemSource; key: PemSource };
  /** int8 values as bigint (default, exact) or as strings (as `pg` returns them). */
  int8?: Int8Mode;
  /** Custom parsers by type OID, applied before the built-in ones. */
  typeParsers?: Readonly<Record<number, TypeParser>>;
  /** Deadline of every call that sets none of its own, in milliseconds. Default: none. */
  timeoutMs?: number;
  retry?: RetryOptions;
  /** The largest response message accepted, in bytes. Default 256 MiB. */
  maxReceiveMessageBytes?: number;
  /**
   * `query` calls of one platform (same timeout, no AbortSignal) made in the
   * same turn of the event loop go to the gateway together, as one message or
   * call, and the gateway runs each exactly as its own Query; false: each is
   * a Query call of its own. Default true.
   */
  coalesce?: boolean;
  /**
   * Read-your-writes for the whole client: the commit token of each write
   * (on a cluster with streaming replicas) is kept per database, and every
   * read-only read or transaction of that database carries the latest, so a
   * replica serves it only once it shows the client's writes. Every query
   * then goes as a Query call of its own (writes must answer with their
   * tokens), not coalesced. For one flow of work only, use `session()`
   * instead. Default false.
   */
  readYourWrites?: boolean;
  /**
   * Queries travel over one long-lived QueryStream per platform, a message
   * per turn (a lone query too), each answered as soon as it is done
   * (BENCHMARKS.md); false: one QueryMany call per turn (a lone query as a
   * Query call), answered whole, for a proxy between client and gateway that
   * cuts long streams. Default true.
   */
  queryStream?: boolean;
  /**
   * "gzip": every request is gzip-compressed, and the gateway compresses its
   * responses to this client (unless its GRPC_COMPRESSION is none): fewer
   * bytes on the network for more CPU at both ends, worth it across a slow or
   * paid link, not on the same host or a fast LAN (BENCHMARKS.md). Default "none".
   */
  compression?: "gzip" | "none";
  /**
   * The platform's signing secret, when the gateway requires its calls to be
   * signed (SIGNING_SECRET_<PLATFORM>): every call carries an HMAC-SHA256 of
   * its method, a timestamp, a nonce and its request message (the opening of
   * a streaming call: QueryStream's and Transaction's messages are not each
   * signed). Never sent.
   */
  signingSecret?: string;
}

/** One gateway of a client's: its address, and the host its certificate must name. */
export interface GatewayAddress {
  url: URL;
  /** host:port, as grpc-js takes it. */
  target: string;
  /** The host name or IP address (without brackets) the gateway's certificate is checked for. */
  host: string;
}

/** Options after validation: files read, defaults filled in. */
export interface ResolvedClientOptions {
  /** In the order given, without repeats. */
  gateways: GatewayAddress[];
  apiKey: string;
  tls: { ca: Buffer; cert: Buffer; key: Buffer };
  int8: Int8Mode;
  typeParsers: Readonly<Record<number, TypeParser>>;
  timeoutMs: number | undefined;
  retry: Required<RetryOptions>;
  maxReceiveMessageBytes: number;
  coalesce: boolean;
  readYourWrites: boolean;
  queryStream: boolean;
  compression: "gzip" | "none";
  signingSecret: string | undefined;
}

/** HTTP header values: visible ASCII and spaces inside, as an API key must be to travel as metadata. */
const HEADER_VALUE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

/**
 * Checks `createClient`'s options once, reading the TLS files, and reports
 * every problem at once in one TypeError, so a misconfigured client fails at
 * start rather than at its first call.
 */
export function validateClientOptions(options: ClientOptions): ResolvedClientOptions {
  const problems: string[] = [];
  if (typeof options !== "object" || options === null) throw new TypeError("createClient: options must be an object");

  const gateways = new Map<string, GatewayAddress>();
  const urls: unknown[] = Array.isArray(options.url) ? [...(options.url as unknown[])] : [options.url];
  if (urls.length === 0) problems.push("url must name at least one gateway");
  for (const [i, given] of urls.entries()) {
    const name = Array.isArray(options.url) ? `url[${i}]` : "url";
    if (typeof given !== "string") {
      problems.push(`${name} must be a string such as https://db-gateway.internal:9000`);
      continue;
    }
    try {
      const url = new URL(given);
      if (url.protocol !== "https:") problems.push(`${name} must be https:// (the gateway requires TLS), got "${given}"`);
      else if (url.pathname !== "/" || url.search !== "" || url.username !== "") problems.push(`${name} must be the gateway's origin only, got "${given}"`);
      else gateways.set(url.host, { url, target: `${url.hostname}:${url.port || 443}`, host: url.hostname.replace(/^\[(.*)\]$/, "$1") });
    } catch {
      problems.push(`${name} is not a valid URL: "${given}"`);
    }
  }

  if (typeof options.apiKey !== "string" || options.apiKey === "") problems.push("apiKey is required");
  else if (!HEADER_VALUE.test(options.apiKey)) problems.push("apiKey must be printable ASCII without leading or trailing spaces");

  const tls: ResolvedClientOptions["tls"] = { ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) };
  if (typeof options.tls !== "object" || options.tls === null) problems.push("tls is required: { ca, cert, key } as PEM text, bytes or file paths");
  else {
    for (const name of ["ca", "cert", "key"] as const) {
      const pem = readPem(options.tls[name], `tls.${name}`, problems);
      if (pem === undefined) continue;
      tls[name] = pem;
      try {
        if (name === "key") createPrivateKey(pem);
        else new X509Certificate(pem);
      } catch {
        problems.push(`tls.${name} is not a PEM ${name === "key" ? "private key" : "certificate"}`);
      }
    }
  }

  if (options.int8 !== undefined && options.int8 !== "bigint" && options.int8 !== "string")
    problems.push(`int8 must be "bigint" or "string", got ${JSON.stringify(options.int8)}`);
  for (const [oid, parser] of Object.entries(options.typeParsers ?? {})) {
    if (!/^[1-9]\d*$/.test(oid)) problems.push(`typeParsers: "${oid}" is not a type OID`);
    if (typeof parser !== "function") problems.push(`typeParsers[${oid}] must be a function`);
  }
  const positive = (value: unknown, name: string, min = 1) => {
    if (value !== undefined && (typeof value !== "number" || !Number.isFinite(value) || value < min))
      problems.push(`${name} must be a number of at least ${min}`);
  };
  positive(options.timeoutMs, "timeoutMs");
  if (options.coalesce !== undefined && typeof options.coalesce !== "boolean") problems.push("coalesce must be a boolean");
  if (options.readYourWrites !== undefined && typeof options.readYourWrites !== "boolean") problems.push("readYourWrites must be a boolean");
  if (options.queryStream !== undefined && typeof options.queryStream !== "boolean") problems.push("queryStream must be a boolean");
  positive(options.maxReceiveMessageBytes, "maxReceiveMessageBytes");
  if (options.compression !== undefined && options.compression !== "gzip" && options.compression !== "none")
    problems.push(`compression must be "gzip" or "none", got ${JSON.stringify(options.compression)}`);
  const retry = { maxAttempts: 3, baseDelayMs: 50, maxDelayMs: 1_000, ...options.retry };
  if (!Number.isInteger(retry.maxAttempts) || retry.maxAttempts < 1 || retry.maxAttempts > 10)
    problems.push("retry.maxAttempts must be an integer from 1 to 10");
  positive(retry.baseDelayMs, "retry.baseDelayMs", 0);
  positive(retry.maxDelayMs, "retry.maxDelayMs", 0);

  if (options.signingSecret !== undefined && (typeof options.signingSecret !== "string" || options.signingSecret.length < 32))
    problems.push("signingSecret must be the platform's signing secret (at least 32 characters)");
  if (problems.length > 0) throw new TypeError(`createClient: invalid options:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  return {
    gateways: [...gateways.values()],
    apiKey: options.apiKey,
    tls,
    int8: options.int8 ?? "bigint",
    typeParsers: options.typeParsers ?? {},
    timeoutMs: options.timeoutMs,
    retry,
    maxReceiveMessageBytes: options.maxReceiveMessageBytes ?? 256 * 1024 * 1024,
    coalesce: options.coalesce ?? true,
    readYourWrites: options.readYourWrites ?? false,
    queryStream: options.queryStream ?? true,
    compression: options.compression ?? "none",
    signingSecret: options.signingSecret,
  };
}

function readPem(source: PemSource | undefined, name: string, problems: string[]): Buffer | undefined {
  if (source instanceof Uint8Array) return Buffer.from(source);
  if (typeof source !== "string" || source === "") {
    problems.push(`${name} is required: PEM text, bytes or a file path`);
    return undefined;
  }
  if (source.includes("-----BEGIN")) return Buffer.from(source);
  try {
    return readFileSync(source);
  } catch (err) {
    problems.push(`${name}: cannot read "${source}" (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    return undefined;
  }
}
