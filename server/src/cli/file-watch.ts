// Tells when any of some files may have changed, by watching their folders: secrets are replaced by rename or symlink swap, not rewritten.
import { statSync, watch, type FSWatcher } from "node:fs";
import { dirname, resolve } from "node:path";

/** How often each folder is looked at again: one removed and made anew (or renamed into place) is watched anew. */
const FOLDER_CHECK_MILLIS = 5_000;
/** The longest `onChange` waits for the events to settle: a folder that keeps changing delays it no further. */
const MAX_SETTLE_MILLIS = 2_000;

/**
 * Calls `onChange` once things settle (`settleMillis` after the last event,
 * at most `MAX_SETTLE_MILLIS` after the first) whenever anything changes in
 * the folders holding `files`. The folders are watched, not the files:
 * editors and `mv` replace a file, and Kubernetes swaps a mounted secret's
 * `..data` symlink, none of which a watch on the old file would see. A folder
 * replaced whole is found within `folderCheckMillis` and watched again.
 * Events elsewhere in those folders call it too: the caller compares
 * contents. Returns a function that stops watching.
 */
export function watchFiles(
  files: readonly string[],
  onChange: () => void,
  onError: (err: Error) => void,
  { settleMillis = 300, folderCheckMillis = FOLDER_CHECK_MILLIS } = {},
): () => void {
  let timer: NodeJS.Timeout | undefined;
  let firstEvent: number | undefined;
  const fire = () => {
    firstEvent = undefined;
    timer = undefined;
    onChange();
  };
  const changed = () => {
    const now = Date.now();
    firstEvent ??= now;
    clearTimeout(timer);
    timer = setTimeout(fire, Math.max(0, Math.min(settleMillis, firstEvent + MAX_SETTLE_MILLIS - now)));
  };
  const watched = new Map<string, { watcher: FSWatcher | undefined; identity: string | undefined }>();
  // The inode and the birth time: a folder made anew often gets the removed one's inode back.
  const identityOf = (folder: string) => {
    try {
      const stat = statSync(folder);
      return `${stat.ino}:${stat.birthtimeMs}`;
    } catch {
      return undefined;
    }
  };
  const watchFolder = (folder: string) => {
    watched.get(folder)?.watcher?.close();
    const identity = identityOf(folder);
    let watcher: FSWatcher | undefined;
    if (identity !== undefined) {
      try {
        // Not persistent: watching keeps no process alive that has nothing else to do.
        watcher = watch(folder, { persistent: false }, changed).on("error", (err) => {
          watcher?.close();
          watched.set(folder, { watcher: undefined, identity: undefined });
          onError(err);
        });
      } catch (err) {
        onError(err as Error);
      }
    }
    watched.set(folder, { watcher, identity });
  };
  for (const folder of new Set(files.map((file) => dirname(resolve(file))))) watchFolder(folder);
  const check = setInterval(() => {
    for (const [folder, { identity }] of watched) {
      const now = identityOf(folder);
      if (now !== identity) {
        watchFolder(folder);
        if (now !== undefined) changed();
      }
    }
  }, folderCheckMillis).unref();
  return () => {
    clearTimeout(timer);
    clearInterval(check);
    for (const { watcher } of watched.values()) watcher?.close();
  };
}
