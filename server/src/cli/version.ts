/** The gateway's version, as `--version` prints it and traces report it: the server package's. */
import { readFileSync } from "node:fs";

// server/package.json: two levels up from both server/src/cli and server/dist/cli.
export const VERSION: string = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
