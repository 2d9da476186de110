/** `db-gateway check`: validates settings, TLS material and the PostgreSQL admin role, listing every problem at once. */
import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import { constants, readFileSync } from "node:fs";
import { access, mkdir } from "node:fs/promises";
import pg from "pg";
import { describeFileSetting, readSettings, type Settings } from "../config.js";
import { PgTools } from "../tenancy/pg-tools.js";
import { inspectAdministrativeRole } from "../tenancy/roles.js";
import { EXIT_FAILED, EXIT_OK, output, parseCommandArgs, type Command } from "./command.js";

/** Certificates closer than this to their end are reported as warnings. */
const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 86_400_000;
/** The extended key usage a TLS server certificate needs. */
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";

/** What `check` found: `problems` make it exit non-zero; `warnings` do not. */
export interface CheckReport {
  ok: boolean;
  problems: string[];
  warnings: string[];
  /** What was checked and found good, for the operator's confidence. */
  passed: string[];
}

export const checkCommand: Command = {
  name: "check",
  summary: "validate settings, certificates and the PostgreSQL admin role",
  help: `Usage: db-gateway check [--json]

Validates the settings in the environment as serve would read them, then:
  - reads TLS_CERT_FILE, TLS_KEY_FILE and TLS_CLIENT_CA_FILE: every certificate
    in its validity period (a warning within ${EXPIRY_WARNING_DAYS} days of its end), the key matches
    the server certificate, the chain is signed link by link, the client CA
    bundle holds CA certificates, and whether the server chain ends at that CA;
  - connects to DATABASE_URL and checks the role has CREATEDB and CREATEROLE;
  - checks pg_dump and pg_restore (PG_BIN_DIR, or the PATH) are as new as
    that server (a problem when BACKUP_DIR is set, a warning otherwise), and
    that BACKUP_DIR can be written.
Exits 0 when nothing is wrong, 1 listing every problem. No secret is printed.

Options:
  --json     the report as one JSON object: {ok, problems, warnings, passed}
  -h, --help this text`,
  async run(args) {
    const { values } = parseCommandArgs(args, {});
    const report = await checkConfiguration(process.env);
    output(values.json, report, () => formatReport(report));
    return report.ok ? EXIT_OK : EXIT_FAILED;
  },
};

/** Runs every check against an environment's settings. */
export async function checkConfiguration(env: NodeJS.ProcessEnv, now = new Date()): Promise<CheckReport> {
  const { settings, problems } = readSettings(env);
  const report: CheckReport = { ok: false, problems: [...problems], warnings: [], passed: [] };
  if (problems.length === 0) report.passed.push("settings are valid");
  if (settings.tls !== undefined) checkTls(settings.tls, now, report);
  // Not with a URL that is wrong (it may point anywhere, and would be sent the password).
  if (settings.databaseUrl !== undefined && !problems.some((p) => p.startsWith("DATABASE_"))) await checkDatabase(settings.databaseUrl, settings, report);
  report.ok = report.problems.length === 0;
  return report;
}

function formatReport(report: CheckReport): string {
  const lines = [...report.passed.map((p) => `ok       ${p}`), ...report.warnings.map((w) => `warning  ${w}`), ...report.problems.map((p) => `problem  ${p}`)];
  lines.push(
    report.ok
      ? "configuration is good"
      : `${report.problems.length} problem${report.problems.length === 1 ? "" : "s"}: the gateway would not start or would fail`,
  );
  return lines.join("\n");
}

/** The certificates in a PEM file, in order; a problem when there are none or one does not parse. */
function readCertificates(setting: string, file: string, report: CheckReport): X509Certificate[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    // readSettings has said so already when the file is unreadable.
    if (!report.problems.some((p) => p.startsWith(`${setting}: cannot read`))) {
      report.problems.push(`${setting}: cannot read ${describeFileSetting(file)} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    }
    return [];
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) report.problems.push(`${setting}: ${describeFileSetting(file)} holds no PEM certificate`);
  const certs: X509Certificate[] = [];
  for (const [i, block] of blocks.entries()) {
    try {
      certs.push(new X509Certificate(block));
    } catch (err) {
      report.problems.push(`${setting}: certificate ${i + 1} in ${describeFileSetting(file)} does not parse (${(err as Error).message})`);
    }
  }
  return certs;
}

function checkValidity(setting: string, cert: X509Certificate, now: Date, report: CheckReport): void {
  const from = new Date(cert.validFrom);
  const to = new Date(cert.validTo);
  const name = `${setting}: "${subjectName(cert)}"`;
  if (now < from) report.problems.push(`${name} is not valid before ${from.toISOString()}`);
  else if (now > to) report.problems.push(`${name} expired on ${to.toISOString()}`);
  else if (to.getTime() - now.getTime() < EXPIRY_WARNING_DAYS * DAY_MS) report.warnings.push(`${name} expires on ${to.toISOString()}`);
  else report.passed.push(`${name} is valid until ${to.toISOString().slice(0, 10)}`);
}

function subjectName(cert: X509Certificate): string {
  return /CN=([^\n]+)/.exec(cert.subject)?.[1] ?? cert.subject.replace(/\n/g, ", ");
}

function checkTls(tls: NonNullable<Settings["tls"]>, now: Date, report: CheckReport): void {
  const chain = readCertificates("TLS_CERT_FILE", tls.certFile, report);
  const cas = readCertificates("TLS_CLIENT_CA_FILE", tls.clientCaFile, report);
  for (const cert of chain) checkValidity("TLS_CERT_FILE", cert, now, report);
  for (const ca of cas) {
    checkValidity("TLS_CLIENT_CA_FILE", ca, now, report);
    if (!ca.ca) report.problems.push(`TLS_CLIENT_CA_FILE: "${subjectName(ca)}" is not a CA certificate (basicConstraints CA:FALSE)`);
  }
  let key: KeyObject | undefined;
  try {
    key = createPrivateKey(readFileSync(tls.keyFile));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!report.problems.some((p) => p.startsWith("TLS_KEY_FILE: cannot read"))) {
      const why = code?.startsWith("E") && !code.startsWith("ERR_") ? code : "not an unencrypted PEM or DER key";
      report.problems.push(`TLS_KEY_FILE: cannot read a private key from ${describeFileSetting(tls.keyFile)} (${why})`);
    }
  }
  const leaf = chain[0];
  if (leaf === undefined) return;
  if (leaf.subjectAltName !== undefined) report.passed.push(`TLS_CERT_FILE: the server certificate names ${leaf.subjectAltName}`);
  else report.warnings.push("TLS_CERT_FILE: the server certificate has no subjectAltName: clients that verify host names will refuse it");
  // keyUsage is the extended key usage: absent means any purpose.
  if (leaf.keyUsage !== undefined && !leaf.keyUsage.includes(SERVER_AUTH)) {
    report.problems.push(`TLS_CERT_FILE: "${subjectName(leaf)}" is not for servers (its extended key usage lacks serverAuth): clients refuse it`);
  }
  if (leaf.ca) report.problems.push(`TLS_CERT_FILE: "${subjectName(leaf)}" is a CA certificate, not a server's`);
  if (key !== undefined) {
    if (leaf.checkPrivateKey(key)) report.passed.push("TLS_KEY_FILE matches the server certificate");
    else report.problems.push(`TLS_KEY_FILE: the key is not the server certificate's ("${subjectName(leaf)}")`);
  }

  for (let i = 0; i + 1 < chain.length; i++) {
    const [cert, issuer] = [chain[i]!, chain[i + 1]!];
    if (!cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) {
      report.problems.push(`TLS_CERT_FILE: "${subjectName(cert)}" is not signed by the next certificate in the file ("${subjectName(issuer)}")`);
    }
  }
  // The server's chain and the clients' CA are separate trust decisions; most deployments use one CA for both.
  const top = chain[chain.length - 1]!;
  const anchored = cas.some((ca) => ca.fingerprint256 === top.fingerprint256 || (top.checkIssued(ca) && top.verify(ca.publicKey)));
  if (anchored) report.passed.push("TLS_CERT_FILE chains to the CA in TLS_CLIENT_CA_FILE");
  else if (cas.length > 0)
    report.warnings.push("TLS_CERT_FILE does not chain to TLS_CLIENT_CA_FILE: clients must be given the server certificate's issuer separately");
}

async function checkDatabase(
  databaseUrl: string,
  settings: { backupDir: string | undefined; pgBinDir: string | undefined },
  report: CheckReport,
): Promise<void> {
  let where = "the server";
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 10_000 });
  try {
    const url = new URL(databaseUrl);
    where = `${url.hostname}:${url.port || 5432}${url.pathname}`;
    await client.connect();
    const { rows } = await client.query<{ version: string }>("SELECT pg_catalog.current_setting('server_version') AS version");
    report.passed.push(`DATABASE_URL: connected to PostgreSQL ${rows[0]!.version} at ${where}`);
    const role = await inspectAdministrativeRole(client);
    if (role.problems.length > 0) report.problems.push(...role.problems.map((p) => `DATABASE_URL: ${p}`));
    else report.passed.push(`DATABASE_URL: the role "${role.role}" has CREATEDB and CREATEROLE`);
    if (role.superuser) report.warnings.push(`DATABASE_URL: the role "${role.role}" is a superuser; CREATEDB and CREATEROLE are enough (README: Security)`);
    const version = Number((await client.query<{ v: string }>("SELECT pg_catalog.current_setting('server_version_num') AS v")).rows[0]!.v);
    await checkBackupTools(new PgTools(settings.pgBinDir, async () => version), settings.backupDir, report);
  } catch (err) {
    // pg's messages name the host, user and database, never the password.
    report.problems.push(`DATABASE_URL: cannot use ${where}: ${(err as Error).message}`);
  } finally {
    await client.end().catch(() => {});
  }
}

/** The backup tools against the server, and the backup directory: what Backup, RestoreTenant and ForkTenant need. */
async function checkBackupTools(tools: PgTools, backupDir: string | undefined, report: CheckReport): Promise<void> {
  for (const tool of ["pg_dump", "pg_restore"] as const) {
    try {
      await tools.check(tool);
      report.passed.push(`${tool}: ${tools.path(tool)} is as new as the server`);
    } catch (err) {
      const message = `${(err as Error).message}: backups, restores and forks will fail`;
      if (backupDir !== undefined) report.problems.push(message);
      else report.warnings.push(message);
    }
  }
  if (backupDir === undefined) return;
  try {
    await mkdir(backupDir, { recursive: true, mode: 0o700 });
    await access(backupDir, constants.W_OK);
    report.passed.push(`BACKUP_DIR: ${backupDir} can be written`);
  } catch (err) {
    report.problems.push(`BACKUP_DIR: ${backupDir} cannot be written (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
}
