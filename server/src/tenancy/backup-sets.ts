// The layout of BACKUP_DIR: a set per take, {platform}/{UTC time}/, with its dumps, manifest.json and SHA256SUMS; files found by their manifest, old sets pruned.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join, normalize, sep } from "node:path";
import { pipeline } from "node:stream/promises";
import { GatewayError } from "../errors.js";
import type { RecordedMigration } from "./migration-record.js";

/** One database's backup, as the manifest records it. */
export interface BackupFile {
  database: string;
  tenantId: string;
  /** Relative to BACKUP_DIR; "" for a download. */
  file: string;
  bytes: number;
  sha256: string;
  takenAt: Date;
  tableRows: Record<string, number>;
  migrations: RecordedMigration[];
}

const MANIFEST = "manifest.json";
const CHECKSUMS = "SHA256SUMS";
/** A set's directory name: its UTC time, sortable and safe in a path. */
const SET_NAME = /^\d{8}T\d{6}\.\d{3}Z$/;

/** Makes a new set's directory for the platform, named by the time; BACKUP_DIR_UNWRITABLE when it cannot be written. Returns "{platform}/{time}". */
export async function createSet(root: string, platform: string): Promise<string> {
  try {
    await mkdir(join(root, platform), { recursive: true, mode: 0o700 });
    // A set of its own: a take begun in the same millisecond waits for the next.
    for (;;) {
      const set = `${platform}/${new Date().toISOString().replace(/[-:]/g, "")}`;
      try {
        await mkdir(join(root, set), { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        await new Promise((resolve) => setTimeout(resolve, 2));
        continue;
      }
      await writeFile(join(root, set, ".writable"), "");
      await rm(join(root, set, ".writable"));
      return set;
    }
  } catch (err) {
    throw new GatewayError(
      "BACKUP_DIR_UNWRITABLE",
      `the backup directory cannot be written (${(err as NodeJS.ErrnoException).code ?? "error"}): check BACKUP_DIR`,
      {
        cause: err,
      },
    );
  }
}

/** Writes a complete set's manifest and checksums. */
export async function indexSet(root: string, set: string, files: readonly BackupFile[]): Promise<void> {
  await writeFile(join(root, set, MANIFEST), JSON.stringify({ set, files }, null, 2) + "\n", { mode: 0o600 });
  await writeFile(join(root, set, CHECKSUMS), files.map((f) => `${f.sha256}  ${f.database}.dump\n`).join(""), { mode: 0o600 });
}

/** The manifest's entry for a file of BACKUP_DIR ("{platform}/{set}/{database}.dump"), the path checked to stay inside it. */
export async function manifestEntry(root: string, file: string): Promise<BackupFile> {
  const parts = file.split("/");
  const clean = normalize(file);
  if (
    parts.length !== 3 ||
    clean !== file ||
    clean.startsWith("..") ||
    clean.includes(`..${sep}`) ||
    !SET_NAME.test(parts[1]!) ||
    !parts[2]!.endsWith(".dump")
  ) {
    throw new GatewayError("INVALID_REQUEST", "file must name a backup as BackupFile.file does: {platform}/{set}/{database}.dump");
  }
  let manifest: { files: BackupFile[] };
  try {
    manifest = JSON.parse(await readFile(join(root, parts[0]!, parts[1]!, MANIFEST), "utf8")) as { files: BackupFile[] };
  } catch (err) {
    throw new GatewayError("BACKUP_NOT_FOUND", `no backup set ${parts[0]}/${parts[1]} in BACKUP_DIR`, { cause: err });
  }
  const entry = manifest.files.find((f) => f.file === file);
  if (entry === undefined) throw new GatewayError("BACKUP_NOT_FOUND", `${file} is not in its set's manifest`);
  try {
    await stat(join(root, file));
  } catch (err) {
    throw new GatewayError("BACKUP_NOT_FOUND", `${file} is missing from BACKUP_DIR`, { cause: err });
  }
  return entry;
}

/** Removes the platform's sets older than `keepDays`, never the one just taken. */
export async function pruneSets(root: string, platform: string, keepDays: number, kept: string): Promise<string[]> {
  const cutoff = Date.now() - keepDays * 86_400_000;
  const removed: string[] = [];
  for (const name of await readdir(join(root, platform))) {
    if (!SET_NAME.test(name) || `${platform}/${name}` === kept) continue;
    const iso = `${name.slice(0, 4)}-${name.slice(4, 6)}-${name.slice(6, 8)}T${name.slice(9, 11)}:${name.slice(11, 13)}:${name.slice(13)}`;
    if (Date.parse(iso) < cutoff) {
      await rm(join(root, platform, name), { recursive: true, force: true });
      removed.push(`${platform}/${name}`);
    }
  }
  return removed;
}

export async function fileSha256(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}
