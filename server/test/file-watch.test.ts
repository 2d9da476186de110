// The watch on secret files' folders: a file renamed into place, a stream of changes, and a folder replaced whole all lead to one reload.
import assert from "node:assert/strict";
import { mkdtemp, mkdir, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { watchFiles } from "../src/cli/file-watch.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("watchFiles", () => {
  it("sees a file renamed into place, once things settle", async () => {
    const dir = await mkdtemp(join(tmpdir(), "db-gateway-watch-"));
    let calls = 0;
    const stop = watchFiles([join(dir, "key")], () => calls++, assert.fail, { settleMillis: 100 });
    try {
      await writeFile(join(dir, "key.new"), "a");
      await rename(join(dir, "key.new"), join(dir, "key"));
      await sleep(400);
      assert.equal(calls, 1);
    } finally {
      stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("reloads within its longest wait even while the folder keeps changing", async () => {
    const dir = await mkdtemp(join(tmpdir(), "db-gateway-watch-"));
    let calls = 0;
    const stop = watchFiles([join(dir, "key")], () => calls++, assert.fail, { settleMillis: 300 });
    try {
      const until = Date.now() + 3_000;
      for (let i = 0; Date.now() < until; i++) {
        await writeFile(join(dir, "noise"), String(i));
        await sleep(100);
      }
      assert.ok(calls >= 1, "no reload while events kept coming");
    } finally {
      stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("watches a folder again once it is removed and made anew", async () => {
    const parent = await mkdtemp(join(tmpdir(), "db-gateway-watch-"));
    const dir = join(parent, "secrets");
    await mkdir(dir);
    let calls = 0;
    const stop = watchFiles(
      [join(dir, "key")],
      () => calls++,
      () => undefined,
      { settleMillis: 50, folderCheckMillis: 200 },
    );
    try {
      await rm(dir, { recursive: true });
      await mkdir(dir);
      await sleep(600); // found again by the folder check
      const before = calls;
      await writeFile(join(dir, "key"), "b");
      await sleep(300);
      assert.ok(calls > before, "a change in the new folder is seen");
    } finally {
      stop();
      await rm(parent, { recursive: true, force: true });
    }
  });
});
