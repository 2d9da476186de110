/** The gateway's version, as `--version` prints it and traces report it: the server package's. */
import { existsSync, readFileSync } from "node:fs";

/** server/package.json: the nearest package.json above this module, from the sources (server/src/cli) and the build (server/dist/server/src/cli) alike. */
function serverPackageJson(): URL {
  for (let dir = new URL(".", import.meta.url); ;) {
    const file = new URL("package.json", dir);
    if (existsSync(file)) return file;
    const parent = new URL("..", dir);
    if (parent.href === dir.href) throw new Error(`no package.json above ${import.meta.url}`); // the root, on any system
    dir = parent;
  }
}

export const VERSION: string = (JSON.parse(readFileSync(serverPackageJson(), "utf8")) as { version: string }).version;
