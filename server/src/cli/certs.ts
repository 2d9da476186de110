/** `db-gateway certs`: a CA (made once, then reused), the server's certificate and client certificates, as PEM files for the TLS settings. */
import { principalNamed, spiffeIdOf } from "../grpc/client-identity.js";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { join, resolve } from "node:path";
import type { CertificateAndKey } from "../pki/certificates.js";
import { EXIT_OK, UsageError, fail, output, parseCommandArgs, type Command } from "./command.js";
import { PRIVATE_FILE, PUBLIC_FILE, ensurePrivateDirectory, existingFiles, platformNames, writeFileSafely } from "./private-files.js";

const DEFAULT_OUT = "certs";
const DEFAULT_SERVER_NAMES = ["localhost", "127.0.0.1", "::1"];
/** 825 days: the longest validity some clients (Apple's) accept for a server certificate. */
const DEFAULT_DAYS = 825;
/** A new CA outlives the certificates it issues, so that more can be issued later with it. */
const CA_DAYS = 3650;
const MAX_DAYS = 36_500;
const DAY_MS = 86_400_000;
/** A DNS name, or a wildcard one (`*.example.com`): labels of letters, digits and hyphens. */
const DNS_NAME = /^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** A certificate and its key, as files. */
interface Pair {
  cert: string;
  key: string;
}

/** What `certs` reports (paths absolute): `--json` prints it. */
export interface CertsReport {
  dir: string;
  /** `created`: false when the CA in the directory was reused. */
  ca: Pair & { created: boolean };
  server: Pair & { names: string[] };
  /** By client name: each platform, and "admin". */
  clients: Record<string, Pair>;
  /** Files written by this run. */
  written: string[];
  /** Files that existed and were left as they were (--keep-existing). */
  kept: string[];
}

export const certsCommand: Command = {
  name: "certs",
  summary: "make a CA, the server certificate and client certificates (PEM files)",
  help: `Usage: db-gateway certs [--out DIR] [--platform NAME]... [--admin]
                      [--server-name NAME]... [--days N] [--force | --keep-existing] [--json]

Writes PEM files to DIR for the gateway's TLS settings and its clients:
  ca.crt, ca.key            a CA, made on the first run and reused after (while
                            ca.crt and ca.key are in DIR); TLS_CLIENT_CA_FILE,
                            and the CA the clients trust
  server.crt, server.key    the gateway's certificate: TLS_CERT_FILE, TLS_KEY_FILE
  client-NAME.crt, .key     a client certificate per --platform, and client-admin
                            with --admin, subject CN=NAME
Keys are RSA 2048, written mode 0600; DIR is made mode 0700 when missing.
No existing file is replaced without --force. Keep ca.key away from the gateway:
only whoever issues certificates needs it.

Each client certificate names its principal twice, as the gateway reads it by
default (TLS_CLIENT_IDENTITY=uri,cn): a SPIFFE ID in its subjectAltName
(URI:spiffe://db-gateway/platform/medstoreapp, spiffe://db-gateway/admin) and
its subject (CN=medstoreapp, CN=admin). The gateway refuses a call whose
certificate is not for the principal of its API key: issue one per platform.

Options:
  --out DIR            where the files go (default ./${DEFAULT_OUT})
  --platform NAME      a client certificate for platform NAME (repeatable)
  --admin              a client certificate for the administrator (client-admin)
  --server-name NAME   a DNS name or IP address the gateway is reached by, for the
                       server certificate's subjectAltName (repeatable; default
                       ${DEFAULT_SERVER_NAMES.join(", ")}); the first is its CN
  --days N             validity of the new certificates (default ${DEFAULT_DAYS}; a new CA: ${CA_DAYS}
                       or N if longer)
  --force              replace existing certificates and keys (not the CA: to make a
                       new one, remove ca.crt and ca.key; certificates it signed
                       stop being trusted once the gateway has the new ca.crt)
  --keep-existing      leave certificates that exist as they are and make only the
                       missing ones (to add a platform later)
  --json               the paths as one JSON object: {dir, ca, server, clients,
                       written, kept}
  -h, --help           this text

Examples:
  db-gateway certs --platform medstoreapp --platform instituteapp --admin \\
    --server-name db-gateway.internal --server-name 10.0.0.12
  db-gateway certs --platform newapp --keep-existing`,
  async run(args) {
    const { values } = parseCommandArgs(args, {
      out: { type: "string" },
      platform: { type: "string", multiple: true },
      admin: { type: "boolean" },
      "server-name": { type: "string", multiple: true },
      days: { type: "string" },
      force: { type: "boolean" },
      "keep-existing": { type: "boolean" },
    });
    if (values.force && values["keep-existing"]) throw new UsageError("--force and --keep-existing exclude each other");
    const clientNames = [...platformNames(values.platform), ...(values.admin ? ["admin"] : [])];
    const serverNames = serverNamesOf(values["server-name"] ?? DEFAULT_SERVER_NAMES);
    const days = daysOf(values.days);
    const dir = resolve(values.out ?? DEFAULT_OUT);
    const pair = (name: string): Pair => ({ cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) });
    const report: CertsReport = {
      dir,
      ca: { ...pair("ca"), created: false },
      server: { ...pair("server"), names: serverNames },
      clients: Object.fromEntries(clientNames.map((n) => [n, pair(`client-${n}`)])),
      written: [],
      kept: [],
    };

    // The CA first: reused when both files are there, and nothing is written when it cannot be.
    let ca: CertificateAndKey | undefined;
    const caFound = existingFiles([report.ca.cert, report.ca.key]);
    if (caFound.length === 1) {
      return fail(
        values.json,
        `${caFound[0]} exists without ${caFound[0] === report.ca.cert ? "ca.key" : "ca.crt"}: put the other beside it to issue with this CA, or remove it to make a new CA`,
      );
    }
    if (caFound.length === 2) {
      const loaded = loadCertificateAuthority(report.ca);
      if (typeof loaded === "string") return fail(values.json, loaded);
      ca = loaded.ca;
      if (loaded.validTo.getTime() < Date.now() + days * DAY_MS) {
        process.stderr.write(
          `db-gateway: warning: the CA expires on ${loaded.validTo.toISOString().slice(0, 10)}, before the certificates it issues now (${days} days): they stop verifying then\n`,
        );
      }
    }

    const leaves: { name: string; files: Pair }[] = [
      { name: "server", files: report.server },
      ...clientNames.map((n) => ({ name: n, files: report.clients[n]! })),
    ];
    const toIssue: typeof leaves = [];
    const conflicts: string[] = [];
    for (const leaf of leaves) {
      const found = existingFiles([leaf.files.cert, leaf.files.key]);
      if (found.length === 0 || values.force) toIssue.push(leaf);
      // Half a pair cannot be kept: a certificate without its key is of no use, and the other way round.
      else if (values["keep-existing"] && found.length === 2) report.kept.push(...found);
      else conflicts.push(...found);
    }
    if (ca === undefined && report.kept.length > 0) {
      return fail(values.json, `${report.kept.join(", ")} exist but the CA does not: a new CA would not have signed them; use --force to replace them`, {
        existing: report.kept,
      });
    }
    if (conflicts.length > 0) {
      return fail(values.json, `not replacing ${conflicts.join(", ")}: use --force to replace them, or --keep-existing to make only what is missing`, {
        existing: conflicts,
      });
    }

    // Loaded only here: node-forge is not needed by the other commands (serve).
    const { createCertificateAuthority, issueCertificate } = await import("../pki/certificates.js");
    await ensurePrivateDirectory(dir);
    if (ca === undefined) {
      ca = createCertificateAuthority("db-gateway CA", Math.max(CA_DAYS, days));
      await writeFileSafely(report.ca.key, ca.key, PRIVATE_FILE, false);
      await writeFileSafely(report.ca.cert, ca.cert, PUBLIC_FILE, false);
      report.ca.created = true;
      report.written.push(report.ca.key, report.ca.cert);
    }
    for (const { name, files } of toIssue) {
      const issued =
        name === "server"
          ? issueCertificate(ca, {
              commonName: serverNames[0]!,
              usage: "server",
              dnsNames: serverNames.filter((n) => isIP(n) === 0),
              ipAddresses: serverNames.filter((n) => isIP(n) !== 0),
              validDays: days,
            })
          : issueCertificate(ca, { commonName: name, usage: "client", uris: [spiffeIdOf(principalNamed(name))], validDays: days });
      // The key first: a certificate without its key is of no use, a key without its certificate is reissued.
      await writeFileSafely(files.key, issued.key, PRIVATE_FILE, values.force === true);
      await writeFileSafely(files.cert, issued.cert, PUBLIC_FILE, values.force === true);
      report.written.push(files.key, files.cert);
    }
    output(values.json, report, () => formatReport(report));
    return EXIT_OK;
  },
};

function serverNamesOf(names: readonly string[]): string[] {
  const unique = [...new Set(names.map((n) => n.toLowerCase()))];
  for (const name of unique) {
    if (isIP(name) === 0 && (!DNS_NAME.test(name) || name.length > 253)) {
      throw new UsageError(`--server-name ${JSON.stringify(name)}: not a DNS name or an IP address`);
    }
  }
  return unique;
}

function daysOf(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_DAYS;
  const days = Number(raw);
  if (!/^\d+$/.test(raw) || days < 1 || days > MAX_DAYS) throw new UsageError(`--days must be a whole number of days from 1 to ${MAX_DAYS} (got "${raw}")`);
  return days;
}

/** The CA in the directory, checked: a CA certificate, its key, in its validity period. A string says what is wrong. */
function loadCertificateAuthority(files: Pair): { ca: CertificateAndKey; validTo: Date } | string {
  const ca = { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8") };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(ca.cert);
  } catch {
    return `${files.cert} holds no PEM certificate`;
  }
  if (!cert.ca) return `${files.cert} is not a CA certificate (basicConstraints CA:FALSE)`;
  const validTo = new Date(cert.validTo);
  if (validTo.getTime() < Date.now()) return `the CA in ${files.cert} expired on ${validTo.toISOString()}: remove ca.crt and ca.key to make a new one`;
  try {
    if (!cert.checkPrivateKey(createPrivateKey(ca.key))) return `${files.key} is not the key of ${files.cert}`;
  } catch {
    return `${files.key} holds no unencrypted PEM private key`;
  }
  // node-forge signs with RSA keys only.
  if (cert.publicKey.asymmetricKeyType !== "rsa")
    return `the CA in ${files.cert} has a ${cert.publicKey.asymmetricKeyType} key: this command issues with RSA CAs only`;
  return { ca, validTo };
}

function formatReport(report: CertsReport): string {
  const lines = [
    ...report.written.map((p) => `wrote    ${p}`),
    ...report.kept.map((p) => `kept     ${p} (exists)`),
    report.ca.created ? "a new CA: give its ca.crt to the gateway and to every client" : `issued with the CA in ${report.ca.cert}`,
  ];
  if (report.written.includes(report.server.cert)) lines.push(`the server certificate names ${report.server.names.join(", ")}`);
  lines.push("", "Gateway settings:", `  TLS_CERT_FILE=${report.server.cert}`, `  TLS_KEY_FILE=${report.server.key}`, `  TLS_CLIENT_CA_FILE=${report.ca.cert}`);
  if (Object.keys(report.clients).length > 0) lines.push("Give each client ca.crt and its client-NAME.crt and client-NAME.key. Keep ca.key offline.");
  return lines.join("\n");
}
