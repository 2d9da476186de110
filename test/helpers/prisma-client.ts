// A Prisma Client generated at run time into a temporary directory, with the workspace's prisma CLI, for the Prisma adapter's tests and benchmark.
import { execFile } from "node:child_process";
import { mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const root = new URL("../..", import.meta.url).pathname;

/** A generated client's module, and the removal of its directory. */
export interface GeneratedPrismaClient<Client> {
  PrismaClient: new (options: { adapter: unknown }) => Client;
  /** Prisma's Decimal, as the generated client's runtime exports it. */
  Decimal: new (value: string) => { toFixed(): string };
  remove(): Promise<void>;
}

/**
 * Generates a Prisma Client ("prisma-client" generator) for `models` (the
 * schema's models, without generator and datasource). Generating runs no
 * engine binary, but the CLI insists that the schema engine's be present and
 * would download it from binaries.prisma.sh (unreachable here): a placeholder
 * path stands in for it.
 */
export async function generatePrismaClient<Client>(models: string): Promise<GeneratedPrismaClient<Client>> {
  const dir = await mkdtemp(join(tmpdir(), "prisma-client-"));
  try {
    await symlink(join(root, "node_modules"), join(dir, "node_modules"));
    const schema = `generator client {\n  provider = "prisma-client"\n  output   = "./generated"\n}\ndatasource db {\n  provider = "postgresql"\n}\n${models}`;
    await writeFile(join(dir, "schema.prisma"), schema);
    await writeFile(join(dir, "prisma.config.ts"), 'export default { schema: "schema.prisma" };\n');
    await writeFile(join(dir, "no-schema-engine"), "");
    await run(process.execPath, [join(root, "node_modules/prisma/build/index.js"), "generate"], {
      cwd: dir,
      env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: join(dir, "no-schema-engine"), CHECKPOINT_DISABLE: "1" },
      timeout: 120_000,
    });
    const generated = (await import(join(dir, "generated/client.ts"))) as { PrismaClient: GeneratedPrismaClient<Client>["PrismaClient"] };
    const runtime = (await import("@prisma/client/runtime/client")) as unknown as { Decimal: GeneratedPrismaClient<Client>["Decimal"] };
    return { PrismaClient: generated.PrismaClient, Decimal: runtime.Decimal, remove: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
