// The SDK as a package: packed with npm, installed outside the workspace, type-checked and run as ESM and as CommonJS.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { testPki } from "./helpers/pki.js";

const run = promisify(execFile);
const root = new URL("..", import.meta.url).pathname;

/** What the consumer does with the SDK, written once for ESM and once for CommonJS. */
const USAGE = `
  const client = createClient({
    url: process.env.GATEWAY_URL!,
    apiKey: process.env.GATEWAY_KEY!,
    tls: { ca: process.env.CA_FILE!, cert: process.env.CERT_FILE!, key: process.env.KEY_FILE! },
  });
  const db = client.platform(process.env.PLATFORM!);
  type Row = { n: bigint; label: string };
  const result: QueryResult<Row> = await db.query<Row>("SELECT $1::int8 AS n, $2::text AS label", [41n, "x"]);
  const asArrays = await db.query<[number]>("SELECT 1", [], { rowMode: "array" });
  let streamed = 0;
  for await (const row of db.stream<{ g: number }>("SELECT g FROM generate_series(1, 100) g")) streamed += row.g;
  const batch = await db.batch(["SELECT 1 AS one", "SELECT 1/0"]);
  const fromTx = await db.transaction(async (tx) => (await tx.query<{ two: number }>("SELECT 2 AS two")).rows[0]!.two);
  let failure: GatewayError | undefined;
  try {
    await db.query("SELECT * FROM missing_table");
  } catch (err) {
    if (err instanceof GatewayError) failure = err;
  }
  // The integrations, each through its subpath export with its ORM installed beside the SDK.
  const pool = createPgPool(db);
  const pgRow = (await pool.query<{ n: string }>("SELECT $1::int8 AS n", [7n])).rows[0]!.n;
  const kysely = createKysely<{ g: { n: bigint } }>(db);
  const kyselyRow = (await ksql<{ n: bigint }>\`SELECT \${8n}::int8 AS n\`.execute(kysely)).rows[0]!.n;
  client.close();
  console.log(JSON.stringify({
    orms: [pgRow, String(kyselyRow)],
    n: String(result.rows[0]!.n + 1n),
    label: result.rows[0]!.label,
    arrays: asArrays.rows,
    streamed,
    batch: batch.map((r) => (r instanceof GatewayError ? r.sqlstate : r.rows)),
    fromTx,
    failure: failure && [Code[failure.code], failure.reason, failure.sqlstate],
  }));
`;

const ORM_IMPORTS = [
  'import { createPgPool } from "@db-gateway/client/pg";',
  'import { createKysely } from "@db-gateway/client/kysely";',
  'import { sql as ksql } from "kysely";',
].join("\n");

/**
 * Drizzle through its subpath export, compiled apart: drizzle-orm's own
 * declarations type-check only with skipLibCheck (as its documentation asks),
 * which the SDK's declarations above must not need.
 */
const DRIZZLE_USAGE = `
  const client = createClient({
    url: process.env.GATEWAY_URL!,
    apiKey: process.env.GATEWAY_KEY!,
    tls: { ca: process.env.CA_FILE!, cert: process.env.CERT_FILE!, key: process.env.KEY_FILE! },
  });
  const orm = drizzle(client.platform(process.env.PLATFORM!));
  const result = await orm.transaction((tx) => tx.execute<{ n: string }>(sql\`SELECT \${9}::int8 AS n\`));
  client.close();
  console.log(JSON.stringify({ drizzle: result.rows[0]!.n }));
`;
const DRIZZLE_IMPORTS =
  'import { createClient } from "@db-gateway/client";\nimport { drizzle } from "@db-gateway/client/drizzle";\nimport { sql } from "drizzle-orm";';

/** Prisma through its subpath export: a Prisma Client generated in the consumer project (ESM), one raw query through it. */
const PRISMA_USAGE = `import { createClient } from "@db-gateway/client";
import { PrismaGateway } from "@db-gateway/client/prisma";
import { PrismaClient } from "./generated/client.js";

const client = createClient({
  url: process.env.GATEWAY_URL!,
  apiKey: process.env.GATEWAY_KEY!,
  tls: { ca: process.env.CA_FILE!, cert: process.env.CERT_FILE!, key: process.env.KEY_FILE! },
});
const prisma = new PrismaClient({ adapter: new PrismaGateway(client.platform(process.env.PLATFORM!)) });
const rows = await prisma.$transaction((tx) => tx.$queryRaw<{ n: bigint }[]>\`SELECT \${10}::int8 AS n\`);
await prisma.$disconnect();
client.close();
console.log(JSON.stringify({ prisma: String(rows[0]!.n) }));
`;
const PRISMA_SCHEMA = 'generator client {\n  provider = "prisma-client"\n  output = "../generated"\n}\ndatasource db {\n  provider = "postgresql"\n}\n';

const EXPECTED = {
  orms: ["7", "8"],
  n: "42",
  label: "x",
  arrays: [[1]],
  streamed: 5050,
  batch: [[{ one: 1 }], "22012"],
  fromTx: 2,
  failure: ["InvalidArgument", "QUERY_FAILED", "42P01"],
};

describe("the SDK as a package: npm pack, installed in a project outside the workspace", () => {
  let t: TestGateway;
  let dir: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    dir = await mkdtemp(join(tmpdir(), "db-gateway-consumer-"));
  });
  after(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("type-checks and runs from TypeScript compiled to ESM and to CommonJS, with each ORM installed beside it", async (ctx) => {
    // The build scripts/test.ts made (ESM, CommonJS and declarations): npm pack's prepack would build again, removing
    // dist/ under test files that run beside this one.
    await run("npm", ["pack", "--ignore-scripts", "--pack-destination", dir], { cwd: join(root, "client-sdk"), timeout: 120_000 });
    const tarball = (await readdir(dir)).find((f) => f.endsWith(".tgz"))!;
    await writeFile(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
    // Each ORM at the version the SDK is tested with (its devDependencies), as a consumer installs an optional peer.
    const sdk = JSON.parse(await readFile(join(root, "client-sdk/package.json"), "utf8")) as { devDependencies: Record<string, string> };
    const orms = ["kysely", "drizzle-orm", "@prisma/driver-adapter-utils"].map((name) => `${name}@${sdk.devDependencies[name]}`);
    await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--ignore-scripts", `./${tarball}`, ...orms], { cwd: dir, timeout: 180_000 });

    await writeFile(join(dir, "esm.mts"), `import { Code, createClient, GatewayError, type QueryResult } from "@db-gateway/client";\n${ORM_IMPORTS}\n${USAGE}`);
    await writeFile(
      join(dir, "cjs.cts"),
      `import { Code, createClient, GatewayError, type QueryResult } from "@db-gateway/client";\n${ORM_IMPORTS}\nasync function main() {${USAGE}}\nvoid main();\n`,
    );
    await writeFile(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          outDir: "out",
          types: ["node"],
          typeRoots: [join(root, "node_modules/@types")],
        },
        files: ["esm.mts", "cjs.cts"],
      }),
    );
    // Prisma's CLI and client, at the workspace's versions, and a client generated as a consumer would (prisma generate
    // runs no engine binary, but its CLI would download the schema engine's, unreachable here: a placeholder stands in).
    const workspace = JSON.parse(await readFile(join(root, "package.json"), "utf8")) as { devDependencies: Record<string, string> };
    const prismaPackages = ["prisma", "@prisma/client"].map((name) => `${name}@${workspace.devDependencies[name]}`);
    await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--ignore-scripts", ...prismaPackages], { cwd: dir, timeout: 180_000 });
    await mkdir(join(dir, "prisma"));
    await writeFile(join(dir, "prisma/schema.prisma"), PRISMA_SCHEMA);
    await writeFile(join(dir, "no-schema-engine"), "");
    await run(process.execPath, [join(dir, "node_modules/prisma/build/index.js"), "generate"], {
      cwd: dir,
      env: { PATH: process.env.PATH, PRISMA_SCHEMA_ENGINE_BINARY: join(dir, "no-schema-engine"), CHECKPOINT_DISABLE: "1" },
      timeout: 120_000,
    });
    await writeFile(join(dir, "prisma-esm.mts"), PRISMA_USAGE);
    await writeFile(
      join(dir, "tsconfig.prisma.json"),
      JSON.stringify({ extends: "./tsconfig.json", compilerOptions: { skipLibCheck: true }, files: ["prisma-esm.mts"] }),
    );

    await writeFile(join(dir, "drizzle-esm.mts"), `${DRIZZLE_IMPORTS}\n${DRIZZLE_USAGE}`);
    await writeFile(join(dir, "drizzle-cjs.cts"), `${DRIZZLE_IMPORTS}\nasync function main() {${DRIZZLE_USAGE}}\nvoid main();\n`);
    await writeFile(
      join(dir, "tsconfig.drizzle.json"),
      JSON.stringify({ extends: "./tsconfig.json", compilerOptions: { skipLibCheck: true }, files: ["drizzle-esm.mts", "drizzle-cjs.cts"] }),
    );
    // Type-check and compile with the workspace's TypeScript: the package's own declarations must be enough.
    for (const project of ["tsconfig.json", "tsconfig.drizzle.json", "tsconfig.prisma.json"]) {
      await run(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", project], { cwd: dir, timeout: 120_000 }).catch(
        (err: { stdout: string }) => {
          assert.fail(`tsc -p ${project} failed:\n${err.stdout}`);
        },
      );
    }

    const pki = testPki();
    for (const [name, text] of [
      ["ca.pem", pki.ca.cert],
      ["cert.pem", pki.clientFor(t.platforms[0]!).cert],
      ["key.pem", pki.clientFor(t.platforms[0]!).key],
    ]) {
      await writeFile(join(dir, name!), text!);
    }
    const env = {
      PATH: process.env.PATH,
      GATEWAY_URL: t.url,
      GATEWAY_KEY: t.keys[t.platforms[0]!]!,
      PLATFORM: t.platforms[0]!,
      CA_FILE: join(dir, "ca.pem"),
      CERT_FILE: join(dir, "cert.pem"),
      KEY_FILE: join(dir, "key.pem"),
    };
    for (const file of ["out/esm.mjs", "out/cjs.cjs"]) {
      const { stdout } = await run(process.execPath, [file], { cwd: dir, env, timeout: 60_000 });
      assert.deepEqual(JSON.parse(stdout), EXPECTED, file);
      ctx.diagnostic(`${file}: ok`);
    }
    const prismaRun = await run(process.execPath, ["out/prisma-esm.mjs"], { cwd: dir, env, timeout: 60_000 });
    assert.deepEqual(JSON.parse(prismaRun.stdout), { prisma: "10" }, "out/prisma-esm.mjs");
    ctx.diagnostic("out/prisma-esm.mjs: ok");
    for (const file of ["out/drizzle-esm.mjs", "out/drizzle-cjs.cjs"]) {
      const { stdout } = await run(process.execPath, [file], { cwd: dir, env, timeout: 60_000 });
      assert.deepEqual(JSON.parse(stdout), { drizzle: "9" }, file);
      ctx.diagnostic(`${file}: ok`);
    }
  });
});
