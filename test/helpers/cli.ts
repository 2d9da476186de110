/** Runs the operator CLI (`server/src/main.ts`) as a child process, as an operator would, and gives back its exit code and output. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startGatewayProcess, type GatewayProcess } from "./gateway-process.js";

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

/** A gateway process set up as an operator would with the CLI, and the CLI's environment to reach it. */
export interface CliGateway {
  /** The private folder the CLI runs in: certs/ and secrets/ as `certs` and `keys` wrote them. */
  work: string;
  gateway: GatewayProcess;
  /** GATEWAY_URL and the admin key's file (GATEWAY_API_KEY_FILE); the TLS files are the defaults under `work`. */
  env: Record<string, string>;
  close(): Promise<void>;
}

/**
 * Makes certificates and keys with the CLI's own `certs` and `keys` in a
 * private folder, and starts a gateway process that reads them (its keys and
 * secret through *_FILE settings), with `env` besides.
 */
export async function startCliGateway(platform: string, databaseUrl: string, env: Record<string, string> = {}): Promise<CliGateway> {
  const work = await mkdtemp(join(tmpdir(), "db-gateway-cli-"));
  await chmod(work, 0o700);
  try {
    const [certs, keys] = await Promise.all([
      runCli(["certs", "--platform", platform, "--admin"], { cwd: work }),
      runCli(["keys", "--platform", platform, "--admin", "--secret", "--out", "secrets"], { cwd: work }),
    ]);
    assert.equal(certs.code, 0, certs.stderr);
    assert.equal(keys.code, 0, keys.stderr);
    const keyFiles = Object.fromEntries(
      keys.stdout
        .trim()
        .split("\n")
        .map((line) => line.split("=") as [string, string]),
    );
    const gateway = await startGatewayProcess({
      databaseUrl,
      platform,
      env: {
        TLS_CERT_FILE: join(work, "certs/server.crt"),
        TLS_KEY_FILE: join(work, "certs/server.key"),
        TLS_CLIENT_CA_FILE: join(work, "certs/ca.crt"),
        [`API_KEY_${platform.toUpperCase()}`]: "",
        API_KEY_ADMIN: "",
        GATEWAY_SECRET: "",
        ...keyFiles,
        ...env,
      },
    });
    return {
      work,
      gateway,
      env: { GATEWAY_URL: gateway.url, GATEWAY_API_KEY_FILE: keyFiles.API_KEY_ADMIN_FILE! },
      async close() {
        try {
          await gateway.close();
        } finally {
          await rm(work, { recursive: true, force: true });
        }
      },
    };
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    throw err;
  }
}
