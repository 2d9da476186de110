// Tells when any of some files may have changed, by watching their folders: secrets are replaced by rename or symlink swap, not rewritten.
import { watch, type FSWatcher } from "node:fs";
import { dirname, resolve } from "node:path";

/**
 * Calls `onChange` once things settle (`settleMillis` after the last event)
 * whenever anything changes in the folders holding `files`. The folders are
 * watched, not the files: editors and `mv` replace a file, and Kubernetes
 * swaps a mounted secret's `..data` symlink, none of which a watch on the old
 * file would see. Events elsewhere in those folders call it too: the caller
 * compares contents. Returns a function that stops watching.
 */
export function watchFiles(files: readonly string[], onChange: () => void, onError: (err: Error) => void, settleMillis = 300): () => void {
  let timer: NodeJS.Timeout | undefined;
  const changed = () => {
    clearTimeout(timer);
    timer = setTimeout(onChange, settleMillis);
  };
  const watchers: FSWatcher[] = [];
  for (const folder of new Set(files.map((file) => dirname(resolve(file))))) {
    try {
      // Not persistent: watching keeps no process alive that has nothing else to do.
      watchers.push(watch(folder, { persistent: false }, changed).on("error", onError));
    } catch (err) {
      onError(err as Error);
    }
  }
  return () => {
    clearTimeout(timer);
    for (const watcher of watchers) watcher.close();
  };
}
