// Development mode's material, made on first use: a CA and certificates, API keys, the gateway secret and the example platforms' databases.
import { principalNamed, spiffeIdOf } from "../grpc/client-identity.js";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import pg from "pg";
import { createCertificateAuthority, issueCertificate } from "../pki/certificates.js";

/** The example platforms that development mode makes keys, certificates and main databases for. */
export const DEVELOPMENT_PLATFORMS = ["medstoreapp", "instituteapp"] as const;

/** Paths of the development PKI. */
export interface DevelopmentPki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  /** Client certificate and key paths, by client name (each platform, and "admin"). */
  clients: Record<string, { cert: string; key: string }>;
}

/**
 * Makes (on first use) a development CA, a server certificate for localhost,
 * 127.0.0.1 and ::1, and a client certificate per example platform and for
 * the admin, under `dir`. Keys are written readable by the owner only.
 */
export async function ensureDevelopmentPki(dir: string): Promise<DevelopmentPki> {
  const names = [...DEVELOPMENT_PLATFORMS, "admin"];
  const pki: DevelopmentPki = {
    dir,
    caCert: join(dir, "ca.crt"),
    serverCert: join(dir, "server.crt"),
    serverKey: join(dir, "server.key"),
    clients: Object.fromEntries(names.map((n) => [n, { cert: join(dir, `client-${n}.crt`), key: join(dir, `client-${n}.key`) }])),
  };
  if (existsSync(pki.caCert) && existsSync(pki.serverKey) && names.every((n) => existsSync(pki.clients[n]!.key))) return pki;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const ca = createCertificateAuthority("db-gateway development CA");
  const server = issueCertificate(ca, { commonName: "localhost", usage: "server", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"] });
  await writeFile(join(dir, "ca.key"), ca.key, { mode: 0o600 });
  await writeFile(pki.caCert, ca.cert);
  await writeFile(pki.serverKey, server.key, { mode: 0o600 });
  await writeFile(pki.serverCert, server.cert);
  for (const name of names) {
    const client = issueCertificate(ca, { commonName: name, usage: "client", uris: [spiffeIdOf(principalNamed(name))] });
    await writeFile(pki.clients[name]!.key, client.key, { mode: 0o600 });
    await writeFile(pki.clients[name]!.cert, client.cert);
  }
  return pki;
}

/** Development API keys: one per example platform, and the admin key. */
export interface DevelopmentKeys {
  platforms: Record<string, string>;
  admin: string;
}

/** Reads the development API keys from `file`, making random ones on first use. */
export async function ensureDevelopmentKeys(file: string): Promise<DevelopmentKeys> {
  if (existsSync(file)) return JSON.parse(await readFile(file, "utf8")) as DevelopmentKeys;
  const key = (prefix: string) => `${prefix}_${randomBytes(24).toString("base64url")}`;
  const keys: DevelopmentKeys = {
    platforms: Object.fromEntries(DEVELOPMENT_PLATFORMS.map((p) => [p, key(p.slice(0, 2))])),
    admin: key("admin"),
  };
  await writeFile(file, JSON.stringify(keys, null, 2) + "\n", { mode: 0o600 });
  return keys;
}

/** Creates the example platforms' main databases if they are missing, so the printed example call works. */
export async function ensureDevelopmentDatabases(databaseUrl: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    for (const platform of DEVELOPMENT_PLATFORMS) {
      const name = `${platform}_main`;
      const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
      if (found.rowCount === 0) await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    }
  } finally {
    await client.end();
  }
}

/** Reads the development gateway secret from `file`, making a random one on first use. */
export async function ensureDevelopmentSecret(file: string): Promise<string> {
  if (existsSync(file)) return (await readFile(file, "utf8")).trim();
  const secret = randomBytes(32).toString("base64url");
  await writeFile(file, secret + "\n", { mode: 0o600 });
  return secret;
}
