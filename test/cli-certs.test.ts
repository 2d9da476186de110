/** `db-gateway certs`, run as a process: the files, their modes, the chain and names, and that no key is replaced unless asked. */
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { certsCommand, type CertsReport } from "../server/src/cli/certs.js";
import { UsageError } from "../server/src/cli/command.js";
import { runCli } from "./helpers/cli.js";
import { randomPlatform } from "./helpers/gateway.js";

const mode = async (path: string) => (await stat(path)).mode & 0o777;
const certificate = async (path: string) => new X509Certificate(await readFile(path));

describe("db-gateway certs", () => {
  let work: string;
  let dir: string;
  let first: CertsReport;
  const platform = randomPlatform();
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "db-gateway-certs-"));
    dir = join(work, "certs");
  });
  after(() => rm(work, { recursive: true, force: true }));

  it("--help describes the options and the client certificates' subject", async () => {
    const { code, stdout } = await runCli(["certs", "--help"]);
    assert.equal(code, 0);
    assert.match(stdout, /^Usage: db-gateway certs/);
    for (const option of ["--out", "--platform", "--admin", "--server-name", "--days", "--force", "--keep-existing", "--json"])
      assert.ok(stdout.includes(option), option);
    assert.match(stdout, /CN=medstoreapp/);
  });

  it("makes a CA, the server's certificate and client certificates in ./certs, keys mode 0600, the directory 0700", async () => {
    const { code, stdout, stderr } = await runCli(
      ["certs", "--platform", platform, "--admin", "--server-name", "gw.example.test", "--server-name", "10.1.2.3", "--server-name", "::1", "--json"],
      { cwd: work },
    );
    assert.equal(code, 0, stderr);
    first = JSON.parse(stdout) as CertsReport;
    assert.equal(first.dir, dir);
    assert.equal(first.ca.created, true);
    assert.deepEqual(first.server.names, ["gw.example.test", "10.1.2.3", "::1"]);
    assert.deepEqual(Object.keys(first.clients).sort(), ["admin", platform].sort());
    const expected = ["ca", "server", `client-${platform}`, "client-admin"].flatMap((n) => [join(dir, `${n}.crt`), join(dir, `${n}.key`)]);
    assert.deepEqual([...first.written].sort(), expected.sort());
    assert.deepEqual(first.kept, []);
    assert.equal(await mode(dir), 0o700);
    for (const file of first.written) {
      if (file.endsWith(".key")) assert.equal(await mode(file), 0o600, file);
      else assert.equal((await mode(file)) & 0o022, 0, file);
    }
  });

  it("the server certificate is the CA's, names every --server-name, and matches its key", async () => {
    const ca = await certificate(first.ca.cert);
    assert.ok(ca.ca);
    assert.ok(ca.checkPrivateKey(createPrivateKey(await readFile(first.ca.key))));
    const server = await certificate(first.server.cert);
    assert.ok(server.checkIssued(ca) && server.verify(ca.publicKey));
    assert.ok(!server.ca);
    assert.ok(server.checkPrivateKey(createPrivateKey(await readFile(first.server.key))));
    assert.equal(server.subject, "CN=gw.example.test");
    assert.equal(server.subjectAltName, "DNS:gw.example.test, IP Address:10.1.2.3, IP Address:0:0:0:0:0:0:0:1");
    assert.equal(server.checkHost("gw.example.test"), "gw.example.test");
    assert.equal(server.checkIP("10.1.2.3"), "10.1.2.3");
    assert.ok(server.keyUsage?.includes("1.3.6.1.5.5.7.3.1"), "serverAuth");
    const days = (new Date(server.validTo).getTime() - Date.now()) / 86_400_000;
    assert.ok(days > 823 && days <= 825, `valid for ${days} days`);
  });

  it("each client certificate is the CA's, names its principal (CN and SPIFFE ID), and matches its key", async () => {
    const ca = await certificate(first.ca.cert);
    for (const [name, files] of Object.entries(first.clients)) {
      const client = await certificate(files.cert);
      assert.equal(client.subject, `CN=${name}`);
      assert.equal(client.subjectAltName, name === "admin" ? "URI:spiffe://db-gateway/admin" : `URI:spiffe://db-gateway/platform/${name}`);
      assert.ok(client.checkIssued(ca) && client.verify(ca.publicKey), name);
      assert.ok(client.checkPrivateKey(createPrivateKey(await readFile(files.key))), name);
      assert.ok(client.keyUsage?.includes("1.3.6.1.5.5.7.3.2"), "clientAuth");
    }
  });

  it("refuses to replace existing certificates and keys without --force, and writes nothing", async () => {
    const before = await readFile(first.server.key, "utf8");
    const other = randomPlatform();
    const { code, stdout, stderr } = await runCli(["certs", "--out", dir, "--platform", platform, "--platform", other, "--json"]);
    assert.equal(code, 1);
    assert.match(stderr, /not replacing .*server\.key.*--force/);
    const answer = JSON.parse(stdout) as { error: string; existing: string[] };
    assert.ok(answer.existing.includes(first.server.key) && answer.existing.includes(first.clients[platform]!.key));
    assert.equal(await readFile(first.server.key, "utf8"), before);
    await assert.rejects(stat(join(dir, `client-${other}.key`)), { code: "ENOENT" });
  });

  it("--keep-existing reuses the CA and makes only what is missing", async () => {
    const caBefore = await readFile(first.ca.cert, "utf8");
    const serverBefore = await readFile(first.server.key, "utf8");
    const other = randomPlatform();
    const { code, stdout, stderr } = await runCli(["certs", "--out", dir, "--platform", other, "--keep-existing", "--json"]);
    assert.equal(code, 0, stderr);
    const report = JSON.parse(stdout) as CertsReport;
    assert.equal(report.ca.created, false);
    assert.deepEqual(report.written.sort(), [join(dir, `client-${other}.crt`), join(dir, `client-${other}.key`)]);
    assert.deepEqual(report.kept.sort(), [first.server.cert, first.server.key]);
    assert.equal(await readFile(first.ca.cert, "utf8"), caBefore);
    assert.equal(await readFile(first.server.key, "utf8"), serverBefore);
    const client = await certificate(report.clients[other]!.cert);
    assert.ok(client.verify((await certificate(first.ca.cert)).publicKey));
  });

  it("--force replaces certificates and keys (a replaced key is 0600 again) and keeps the CA", async () => {
    const caBefore = await readFile(first.ca.key, "utf8");
    const serverBefore = await readFile(first.server.key, "utf8");
    await chmod(first.server.key, 0o644);
    const { code, stdout, stderr } = await runCli(["certs", "--out", dir, "--force"]);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /wrote +.*server\.key/);
    assert.match(stdout, /TLS_CLIENT_CA_FILE=.*ca\.crt/);
    assert.notEqual(await readFile(first.server.key, "utf8"), serverBefore);
    assert.equal(await mode(first.server.key), 0o600);
    assert.equal(await readFile(first.ca.key, "utf8"), caBefore);
    const server = await certificate(first.server.cert);
    assert.ok(server.verify((await certificate(first.ca.cert)).publicKey));
    assert.equal(server.subjectAltName, "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");
  });

  it("fails when ca.crt is there without ca.key", async () => {
    const lone = join(work, "lone");
    await mkdir(lone);
    await copyFile(first.ca.cert, join(lone, "ca.crt"));
    const { code, stderr } = await runCli(["certs", "--out", lone, "--force"]);
    assert.equal(code, 1);
    assert.match(stderr, /ca\.crt exists without ca\.key/);
  });

  it("usage errors exit 2 and point to --help", async () => {
    const { code, stdout, stderr } = await runCli(["certs", "--out", join(work, "never"), "--platform", "Not_Valid"]);
    assert.equal(code, 2);
    assert.equal(stdout, "");
    assert.match(stderr, /--platform "Not_Valid": platform must be .*\nSee: db-gateway certs --help/);
    // The others in this process (a CLI start each would cost): all refused before anything is written.
    for (const args of [
      ["--platform", "admin"],
      ["--platform", "dbgateway"],
      ["--server-name", "not a name"],
      ["--days", "0"],
      ["--days", "1.5"],
      ["--force", "--keep-existing"],
      ["--unknown"],
      ["extra"],
    ]) {
      await assert.rejects(certsCommand.run(["--out", join(work, "never"), ...args]), UsageError, args.join(" "));
    }
    await assert.rejects(stat(join(work, "never")), { code: "ENOENT" });
  });
});
