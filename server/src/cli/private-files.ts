/** Files of secrets and certificates written by the CLI (certs, keys): a private directory, owner-only keys, nothing replaced unless asked. */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { RESERVED_PLATFORM } from "../config.js";
import { validatePlatform } from "../tenancy/naming.js";
import { UsageError } from "./command.js";

/** Mode of private keys, API keys and the secret: the owner's only. */
export const PRIVATE_FILE = 0o600;
/** Mode of certificates: public. */
export const PUBLIC_FILE = 0o644;

/** Creates `dir` (and its parents) readable by the owner only when it is missing; an existing directory keeps its mode. */
export async function ensurePrivateDirectory(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
}

/** The paths that exist already. */
export function existingFiles(paths: readonly string[]): string[] {
  return paths.filter((p) => existsSync(p));
}

/**
 * Writes a file with `mode`. Without `replace`, an existing file is never
 * touched (O_EXCL: the write fails with EEXIST). With it, the content goes to
 * a new file that is renamed over the old one, so a replaced key gets `mode`
 * too (writeFile's mode applies only to a file it creates) and a reader never
 * sees half a key.
 */
export async function writeFileSafely(path: string, content: string, mode: number, replace: boolean): Promise<void> {
  if (!replace) {
    await writeFile(path, content, { mode, flag: "wx" });
    return;
  }
  const temporary = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    await writeFile(temporary, content, { mode, flag: "wx" });
    await rename(temporary, path);
  } finally {
    await rm(temporary, { force: true });
  }
}

/**
 * Platform names from repeated --platform options: checked as the gateway
 * checks API_KEY_<PLATFORM> names, duplicates dropped. "admin" is refused
 * (API_KEY_ADMIN is the admin key; --admin makes its files), and the name
 * reserved for the gateway's catalog.
 */
export function platformNames(values: readonly string[] | undefined): string[] {
  const names = [...new Set(values ?? [])];
  for (const name of names) {
    if (name === "admin") throw new UsageError('--platform admin: "admin" is the admin key\'s name, not a platform; use --admin');
    if (name === RESERVED_PLATFORM) throw new UsageError(`--platform ${RESERVED_PLATFORM}: the name is reserved for the gateway's own catalog`);
    try {
      validatePlatform(name);
    } catch (err) {
      throw new UsageError(`--platform ${JSON.stringify(name)}: ${(err as Error).message}`);
    }
  }
  return names;
}
