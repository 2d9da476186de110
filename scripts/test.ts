/**
 * `npm test`: runs every test file with node's test runner against a real
 * PostgreSQL: the server in PG_URL when set (e.g. the machine's own), or else
 * an embedded PostgreSQL started for this run and removed after it.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedServer } from "../server/src/database/embedded-postgres.js";

const root = new URL("..", import.meta.url).pathname;

async function testFiles(): Promise<string[]> {
  const only = process.argv.slice(2);
  if (only.length > 0) return only;
  const files: string[] = [];
  for (const dir of ["test", "wire/test", "server/test"]) {
    const entries = await readdir(join(root, dir), { recursive: true }).catch(() => [] as string[]);
    // test/containers/ needs Docker and takes minutes: it is `npm run test:containers`, on its own.
    files.push(...entries.filter((f) => f.endsWith(".test.ts") && !f.startsWith("containers/")).map((f) => join(dir, f)));
  }
  return files.sort();
}

let embedded: EmbeddedServer | undefined;
let tempDir: string | undefined;
const env = { ...process.env };
if (!env.PG_URL) {
  tempDir = await mkdtemp(join(tmpdir(), "db-gateway-test-"));
  embedded = await startEmbeddedPostgres({ dir: tempDir, persistent: false });
  env.PG_URL = embedded.url;
  console.log("# PostgreSQL: embedded, started for this run");
} else {
  console.log("# PostgreSQL: PG_URL");
}

// Tests that run the compiled SDK and server (the production start, npm start's printed example, the
// packed SDK) use this build: made once here, since test files run side by side and a build in one
// would remove dist/ under another.
console.log("# npm run build");
const build = spawn("npm", ["run", "build", "--silent"], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
if ((await new Promise<number | null>((resolve) => build.on("exit", resolve))) !== 0) {
  console.error("npm run build failed");
  process.exit(1);
}

const files = await testFiles();
// Each file's time limit: 5 minutes, and the soak's own length more (test/soak.test.ts runs SOAK_SECONDS of load).
const timeout = 300_000 + Number(process.env.SOAK_SECONDS || 0) * 1000;
const child = spawn(process.execPath, ["--import", "tsx", "--test", `--test-timeout=${timeout}`, ...files], { cwd: root, env, stdio: "inherit" });
const code = await new Promise<number>((resolve) => child.on("exit", (c, signal) => resolve(c ?? (signal ? 1 : 0))));
if (embedded === undefined) {
  // A shared server: the tests dropped their databases and roles; drop the
  // gateway's owner role too unless something real still uses it.
  const admin = new pg.Client({ connectionString: env.PG_URL });
  await admin.connect();
  await admin.query("DROP ROLE IF EXISTS dbgateway_owner").catch(() => undefined);
  await admin.end();
}
await embedded?.stop();
if (tempDir !== undefined) await rm(tempDir, { recursive: true, force: true });
process.exit(code);
