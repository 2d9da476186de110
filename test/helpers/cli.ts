/** Runs the operator CLI (`server/src/main.ts`) as a child process, as an operator would, and gives back its exit code and output. */
import { execFile } from "node:child_process";

const MAIN = new URL("../../server/src/main.ts", import.meta.url).pathname;
/** tsx by its resolved URL: the CLI runs in temporary directories, where `--import tsx` would not find it. */
const TSX = import.meta.resolve("tsx");
const SDK_FROM_SOURCE = new URL("./sdk-from-source.ts", import.meta.url).href;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `db-gateway ...args` in `cwd` with only PATH and HOME of this
 * process's environment (no stray GATEWAY_* or API_KEY_* settings) plus `env`;
 * the SDK from its source (sdk-from-source.ts).
 */
export function runCli(args: readonly string[], options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ["--import", TSX, "--import", SDK_FROM_SOURCE, MAIN, ...args],
      { cwd: options.cwd, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...options.env }, timeout: options.timeoutMs ?? 60_000 },
      (err, stdout, stderr) => {
        if (err !== null && typeof err.code !== "number") reject(Object.assign(err, { stdout, stderr }));
        else resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr });
      },
    );
  });
}
