/** The gateway's version, as `--version` prints it and traces report it: the server package's. */
import { existsSync, readFileSync } from "node:fs";

/** server/package.json: the nearest package.json above this module, from the sources (server/src/cli) and the build (server/dist/server/src/cli) alike. */
function serverPackageJson(): URL {
  for (let dir = new URL(".", import.meta.url); ; dir = new URL("..", dir)) {
    const file = new URL("package.json", dir);
    if (existsSync(file)) return file;
    if (dir.pathname === "/") throw new Error(`no package.json above ${import.meta.url}`);
  }
}

export const VERSION: string = (JSON.parse(readFileSync(serverPackageJson(), "utf8")) as { version: string }).version;
