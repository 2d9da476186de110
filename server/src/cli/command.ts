/** What every operator CLI command shares: its shape, argument parsing, --help, --json output and exit codes. */
import { parseArgs, type ParseArgsConfig } from "node:util";

/** One subcommand of `db-gateway`. */
export interface Command {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** The full --help text: usage, options, examples. */
  readonly help: string;
  /** Runs the command with the arguments after its name; resolves to the exit code. */
  run(args: string[]): Promise<number>;
}

/** Exit codes: 0 success, 1 the command failed, 2 it was called wrongly. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** A mistake in the command line: printed with a pointer to --help, exit code 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** Options every command takes. */
const COMMON = {
  help: { type: "boolean", short: "h" },
  json: { type: "boolean" },
} as const;

/**
 * Parses a command's arguments strictly (an unknown option is a UsageError),
 * with --help and --json added to its own options.
 */
export function parseCommandArgs<const O extends Options>(args: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args, options: { ...COMMON, ...options }, allowPositionals, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** Prints a command's result: JSON on one line with --json, else the text form. */
export function output(json: boolean | undefined, value: unknown, text: () => string): void {
  if (json) process.stdout.write(JSON.stringify(value) + "\n");
  else process.stdout.write(text().replace(/\n?$/, "\n"));
}

/** Prints a failure: `{"error": …}` on stdout with --json (machine-readable), always a line on stderr. */
export function fail(json: boolean | undefined, message: string, details?: Record<string, unknown>): number {
  if (json) process.stdout.write(JSON.stringify({ error: message, ...details }) + "\n");
  process.stderr.write(`db-gateway: ${message}\n`);
  return EXIT_FAILED;
}

/** A value as --json prints it: bigints as strings, protobuf messages without their type names. */
export function jsonSafe(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (key, v: unknown) => (key === "$typeName" ? undefined : typeof v === "bigint" ? v.toString() : v)));
}

/**
 * The subcommand named first among `positionals`, checked against
 * `subcommands` (each with the options it takes): no other positional, and
 * no option it does not take. Throws a UsageError saying what is wrong.
 */
export function subcommandOf(command: string, positionals: readonly string[], values: object, subcommands: Record<string, readonly string[]>): string {
  const names = Object.keys(subcommands);
  const choices = `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
  const [subcommand, ...extra] = positionals;
  if (subcommand === undefined) throw new UsageError(`which one: ${command} ${choices}?`);
  const allowed = subcommands[subcommand];
  if (allowed === undefined) throw new UsageError(`unknown subcommand "${subcommand}": ${choices}`);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
  for (const name of Object.keys(values)) if (!allowed.includes(name)) throw new UsageError(`--${name} is not an option of ${command} ${subcommand}`);
  return subcommand;
}
