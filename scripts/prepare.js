// npm's prepare hook: builds the SDK and the server (npm run build) on install, so the workspace SDK resolves as published.
// A production install (npm ci --omit=dev) has no TypeScript and needs no build: it ships the compiled output.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";

try {
  createRequire(import.meta.url).resolve("typescript");
} catch {
  console.log("db-gateway: TypeScript is not installed (a production install): skipping the build");
  process.exit(0);
}
execFileSync("npm", ["run", "build"], { stdio: "inherit" });
