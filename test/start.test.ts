// `npm start` on a fresh checkout: an embedded PostgreSQL, development certificates and keys, and printed examples that run as printed.
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { promisify } from "node:util";

const root = new URL("..", import.meta.url).pathname;
const BUF = join(root, "node_modules/.bin/buf");

/**
 * What `npm start` does on a fresh checkout: an embedded PostgreSQL, development
 * certificates and keys, and a printed command line that works as printed.
 */
describe("npm start in development mode", () => {
  let dataDir: string | undefined;
  let examplePath: string | undefined;
  after(async () => {
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    if (examplePath) await rm(examplePath, { force: true });
  });

  it("serves on an embedded PostgreSQL and prints a buf curl command and an SDK example that run as printed", async (t) => {
    dataDir = await mkdtemp(join(tmpdir(), "db-gateway-start-"));
    await chmod(dataDir, 0o755); // as root, PostgreSQL runs as another user that must reach its data
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, GATEWAY_DATA_DIR: dataDir, GATEWAY_PORT: "0", METRICS_PORT: "0" };
    const started = Date.now();
    const child = spawn(process.execPath, ["--import", "tsx", "server/src/main.ts", "serve", "--dev"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      await waitFor(() => output.includes("gateway.close();") || child.exitCode !== null, 90_000);
      assert.equal(child.exitCode, null, output);
      t.diagnostic(`serving after ${Date.now() - started} ms`);

      // The printed buf curl command, run as printed (with the project's buf binary).
      const command = output
        .split("or with buf curl")[1]!
        .split("\n\n")[1]!
        .replace(/\\\n\s*/g, " ")
        .trim();
      assert.match(command, /^npx buf curl /);
      const { stdout } = await promisify(execFile)("sh", ["-c", command.replace(/^npx buf/, BUF)], { cwd: root, timeout: 30_000 });
      const response = JSON.parse(stdout);
      assert.deepEqual(response.result.rows[0][1], "42");
      // The banner shows where the keys are, never a key.
      const keys = JSON.parse(await readFile(join(dataDir, "dev-api-keys.json"), "utf8")) as { platforms: Record<string, string>; admin: string };
      for (const key of [...Object.values(keys.platforms), keys.admin]) assert.ok(!output.includes(key), "a key was printed");
      assert.deepEqual(
        response.result.columns.map((c: { name: string }) => c.name),
        ["now", "next"],
      );

      // The printed SDK example, saved where it says and run with plain node. The workspace SDK is built on
      // install (the prepare hook), and again by scripts/test.ts, so that changed sources are what is tested.
      const example = output.split("run node example.mjs")[1]!.split("\n\n")[1]!.replace(/^ {2}/gm, "");
      examplePath = join(root, `example-${process.pid}.mjs`);
      await writeFile(examplePath, example);
      const ran = await promisify(execFile)(process.execPath, [examplePath], { cwd: root, timeout: 30_000 });
      assert.match(ran.stdout, /next: 42n/);
      assert.equal(ran.stderr, "");
    } finally {
      child.kill("SIGTERM");
      assert.equal(await exited, 0, output);
    }
  });
});

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 100));
  }
}
