/** `db-gateway keys`, run as a process: key lengths and uniqueness, the files and their modes, and that the gateway's *_FILE settings read them. */
import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { MIN_API_KEY_LENGTH, MIN_SECRET_LENGTH, loadSettings } from "../server/src/config.js";
import { UsageError } from "../server/src/cli/command.js";
import { keysCommand } from "../server/src/cli/keys.js";
import { runCli } from "./helpers/cli.js";
import { randomPlatform } from "./helpers/gateway.js";

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const mode = async (path: string) => (await stat(path)).mode & 0o777;

/** `NAME=value` lines as an environment. */
function parseEnvLines(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .trim()
      .split("\n")
      .map((line) => {
        const at = line.indexOf("=");
        return [line.slice(0, at), line.slice(at + 1)];
      }),
  );
}

describe("db-gateway keys", () => {
  let work: string;
  const platforms = [randomPlatform(), randomPlatform()];
  const settings = [...platforms.map((p) => `API_KEY_${p.toUpperCase()}`), "API_KEY_ADMIN", "GATEWAY_SECRET"];
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "db-gateway-keys-"));
  });
  after(() => rm(work, { recursive: true, force: true }));

  it("--help names the *_FILE settings", async () => {
    const { code, stdout } = await runCli(["keys", "--help"]);
    assert.equal(code, 0);
    assert.match(stdout, /^Usage: db-gateway keys/);
    for (const text of ["--platform", "--admin", "--secret", "--out", "--force", "--json", "API_KEY_ADMIN_FILE", "GATEWAY_SECRET_FILE"])
      assert.ok(stdout.includes(text), text);
  });

  it("prints keys as env lines, long enough, all different, different each run, on stdout only", async () => {
    const args = ["keys", ...platforms.flatMap((p) => ["--platform", p]), "--admin", "--secret"];
    const [one, two] = await Promise.all([runCli(args), runCli(args)]);
    const seen = new Set<string>();
    for (const run of [one!, two!]) {
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stderr, "");
      const env = parseEnvLines(run.stdout);
      assert.deepEqual(Object.keys(env), settings);
      for (const [name, value] of Object.entries(env)) {
        assert.match(value, BASE64URL);
        assert.ok(value.length >= (name === "GATEWAY_SECRET" ? MIN_SECRET_LENGTH : MIN_API_KEY_LENGTH), name);
        assert.ok(value.length >= 43, "256 bits");
        seen.add(value);
      }
    }
    assert.equal(seen.size, settings.length * 2);
  });

  it("--json prints {env} with the values", async () => {
    const { code, stdout, stderr } = await runCli(["keys", "--admin", "--json"]);
    assert.equal(code, 0, stderr);
    const { env } = JSON.parse(stdout) as { env: Record<string, string> };
    assert.deepEqual(Object.keys(env), ["API_KEY_ADMIN"]);
    assert.match(env.API_KEY_ADMIN!, BASE64URL);
  });

  it("--out writes a file per key, mode 0600 in a 0700 directory, that the gateway reads through *_FILE settings", async () => {
    const dir = join(work, "secrets");
    const { code, stdout, stderr } = await runCli(["keys", ...platforms.flatMap((p) => ["--platform", p]), "--admin", "--secret", "--out", dir]);
    assert.equal(code, 0, stderr);
    assert.equal(stderr, "");
    const env = parseEnvLines(stdout);
    assert.deepEqual(
      Object.keys(env),
      settings.map((s) => `${s}_FILE`),
    );
    assert.deepEqual(Object.values(env), [...platforms.map((p) => join(dir, `api-key-${p}`)), join(dir, "api-key-admin"), join(dir, "gateway-secret")]);
    assert.equal(await mode(dir), 0o700);
    const values: Record<string, string> = {};
    for (const [name, path] of Object.entries(env)) {
      assert.equal(await mode(path), 0o600, path);
      values[name] = await readFile(path, "utf8");
      assert.match(values[name]!, BASE64URL, "no newline");
      assert.ok(!stdout.includes(values[name]!), "a key was printed");
    }

    // The gateway's settings, as `serve` reads them, with the TLS files made by `db-gateway certs`.
    const certs = join(work, "certs");
    assert.equal((await runCli(["certs", "--out", certs])).code, 0);
    const loaded = loadSettings({
      DATABASE_URL: "postgres://gateway@127.0.0.1:5432/postgres",
      TLS_CERT_FILE: join(certs, "server.crt"),
      TLS_KEY_FILE: join(certs, "server.key"),
      TLS_CLIENT_CA_FILE: join(certs, "ca.crt"),
      ...env,
    });
    assert.deepEqual(Object.fromEntries(loaded.platformKeys), Object.fromEntries(platforms.map((p) => [p, [values[`API_KEY_${p.toUpperCase()}_FILE`]]])));
    assert.deepEqual(loaded.adminKeys, [values.API_KEY_ADMIN_FILE]);
    assert.equal(loaded.gatewaySecret, values.GATEWAY_SECRET_FILE);
  });

  it("--out refuses to replace a key file without --force; --force replaces it, mode 0600 again", async () => {
    const dir = join(work, "again");
    const first = await runCli(["keys", "--admin", "--out", dir, "--json"]);
    assert.equal(first.code, 0, first.stderr);
    const report = JSON.parse(first.stdout) as { dir: string; written: string[]; env: Record<string, string> };
    const file = join(dir, "api-key-admin");
    assert.deepEqual(report, { dir, written: [file], env: { API_KEY_ADMIN_FILE: file } });
    const key = await readFile(file, "utf8");

    const refused = await runCli(["keys", "--admin", "--out", dir]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /not replacing .*api-key-admin: use --force/);
    assert.ok(!refused.stderr.includes(key) && !refused.stdout.includes(key));
    assert.equal(await readFile(file, "utf8"), key);

    await chmod(file, 0o644);
    const forced = await runCli(["keys", "--admin", "--out", dir, "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.notEqual(await readFile(file, "utf8"), key);
    assert.equal(await mode(file), 0o600);
  });

  it("usage errors exit 2 and point to --help", async () => {
    const { code, stdout, stderr } = await runCli(["keys"]);
    assert.equal(code, 2);
    assert.equal(stdout, "");
    assert.match(stderr, /nothing to make: give --platform NAME, --admin or --secret\nSee: db-gateway keys --help/);
    // The others in this process (a CLI start each would cost): all refused before a key is made.
    for (const args of [
      ["--platform", "No-Dash"],
      ["--platform", "dbgateway"],
      ["--platform", "admin"],
      ["--admin", "--force"],
      ["--admin", "--api-key"],
      ["--admin", "extra"],
    ]) {
      await assert.rejects(keysCommand.run(args), UsageError, args.join(" "));
    }
  });
});
