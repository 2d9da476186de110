#!/usr/bin/env node
// The `db-gateway` command: runs the compiled CLI (kept outside dist so that npm can link it before the first build).
import("../dist/server/src/main.js").catch((err) => {
  if (err?.code === "ERR_MODULE_NOT_FOUND" && String(err.message).includes("dist/server/src/main.js")) {
    console.error("db-gateway: the server is not built: run npm run build");
    process.exit(1);
  }
  throw err;
});
