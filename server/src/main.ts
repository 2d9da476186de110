/** `db-gateway`, the operator CLI and the production entry point: dispatches to a command (serve by default). */
import { certsCommand } from "./cli/certs.js";
import { checkCommand } from "./cli/check.js";
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, type Command } from "./cli/command.js";
import { hideCatalogsCommand } from "./cli/hide-catalogs.js";
import { keysCommand } from "./cli/keys.js";
import { serveCommand } from "./cli/serve.js";
import { backupsCommand } from "./cli/backups.js";
import { migrateCommand } from "./cli/migrate.js";
import { tenantsCommand } from "./cli/tenants.js";
import { VERSION } from "./cli/version.js";

const COMMANDS: readonly Command[] = [
  serveCommand,
  checkCommand,
  certsCommand,
  keysCommand,
  tenantsCommand,
  migrateCommand,
  backupsCommand,
  hideCatalogsCommand,
];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `Usage: db-gateway [command] [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n")}

Every command takes --help, and --json for machine-readable output.
Settings come from the environment (see .env.example). db-gateway ${VERSION}`;
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === "--version" || first === "-v") {
    console.log(VERSION);
    return EXIT_OK;
  }
  if (first === "--help" || first === "-h" || first === "help") {
    console.log(usage());
    return EXIT_OK;
  }
  // No command, or options only: serve (the image's and the unit's default).
  const command = first === undefined || first.startsWith("-") ? serveCommand : COMMANDS.find((c) => c.name === first);
  const args = command === serveCommand && first !== "serve" ? argv : rest;
  if (command === undefined) {
    console.error(`db-gateway: unknown command "${first}"\n\n${usage()}`);
    return EXIT_USAGE;
  }
  if (args.includes("--help") || args.includes("-h")) {
    console.log(command.help);
    return EXIT_OK;
  }
  const json = args.includes("--json");
  try {
    return await command.run(args);
  } catch (err) {
    if (err instanceof UsageError) {
      if (json) console.log(JSON.stringify({ error: err.message, usage: true }));
      console.error(`db-gateway ${command.name}: ${err.message}\nSee: db-gateway ${command.name} --help`);
      return EXIT_USAGE;
    }
    // A system or PostgreSQL error (a file, a port, the server): its message says it all, a stack trace would not help.
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string" && err instanceof Error) {
      if (json) console.log(JSON.stringify({ error: err.message, code }));
      console.error(`db-gateway ${command.name}: ${err.message}`);
      return EXIT_FAILED;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // The stack, not the object: some errors carry their input (ERR_INVALID_URL: a URL with its password).
    console.error("db-gateway: failed:", err instanceof Error ? err.stack : String(err));
    process.exit(EXIT_FAILED);
  },
);
