// API keys rotated with no call refused: two keys per principal, key files read again when they change, failed reloads kept out, reloads audited.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, createClient, GatewayError, type GatewayClient } from "../client-sdk/src/index.js";
import { dropPlatformDatabases, metricSample, metricValue, pgUrl, startTestGateway } from "./helpers/gateway.js";
import { keptLog } from "./helpers/kept-log.js";
import { startGatewayProcess, type GatewayProcess } from "./helpers/gateway-process.js";
import { waitFor } from "./helpers/wait.js";

const keyId = (key: string) => createHash("sha256").update(key).digest("hex").slice(0, 8);

describe("API key rotation", () => {
  let gw: GatewayProcess;
  /** The platform's key in use: the first test rotates it. */
  let platformKey: string;
  const clients: GatewayClient[] = [];
  /** Replaces a key file as secret managers do: a new file renamed over the old. */
  const replaceKeyFile = async (setting: string, content: string) => {
    const file = join(gw.tlsDir, setting);
    await writeFile(`${file}.new`, content, { mode: 0o600 });
    await rename(`${file}.new`, file);
  };
  const clientWith = (apiKey: string, principal: "admin" | "platform") => {
    const client = createClient({ ...gw.clientOptions(principal === "admin" ? gw.adminKey : gw.platformKey), apiKey, retry: { maxAttempts: 1 } });
    clients.push(client);
    return client;
  };
  const works = async (client: GatewayClient) => {
    try {
      return (await client.platform(gw.platform).query("SELECT 1 AS one")).rows[0]?.one === 1;
    } catch (err) {
      if (err instanceof GatewayError && err.code === Code.Unauthenticated) return false;
      throw err;
    }
  };
  const reloadEvents = async () =>
    (await clientWith(gw.adminKey, "admin").raw.admin.listAuditEvents({})).events.filter((event) => event.action === "gateway.reload");

  before(async () => {
    gw = await startGatewayProcess({ databaseUrl: pgUrl(), secretsInFiles: true });
    platformKey = gw.platformKey;
    await gw.adminClient().admin().createTenant(gw.platform, "");
  });
  after(async () => {
    for (const client of clients) client.close();
    await gw.close();
    await dropPlatformDatabases([gw.platform]);
  });

  it("moves a platform to a new key with no call refused, and retires the old one", async () => {
    const setting = `API_KEY_${gw.platform.toUpperCase()}`;
    const oldKey = platformKey;
    const newKey = `new-${randomBytes(16).toString("hex")}`;
    const oldClient = clientWith(oldKey, "platform");
    const newClient = clientWith(newKey, "platform");
    assert.equal(await works(newClient), false, "the new key is not accepted before the reload");

    // Traffic all along: with the old key until the new one works, then with the new.
    let current = oldClient;
    let calls = 0;
    const failures: unknown[] = [];
    let stop = false;
    const traffic = (async () => {
      while (!stop) {
        await current
          .platform(gw.platform)
          .query("SELECT 1")
          .then(
            () => calls++,
            (err: unknown) => failures.push(err),
          );
      }
    })();

    await replaceKeyFile(setting, `${oldKey}\n${newKey}\n`);
    await waitFor(() => works(newClient), 10_000, "the new key accepted");
    assert.ok(await works(oldClient), "both keys are accepted while clients move");
    current = newClient;
    const metrics = await (await fetch(`http://127.0.0.1:${gw.metricsPort}/metrics`)).text();
    assert.ok(metricSample(metrics, "db_gateway_api_key_calls_total", { principal: gw.platform, key: keyId(oldKey) }) > 0);
    assert.ok(metricSample(metrics, "db_gateway_api_key_calls_total", { principal: gw.platform, key: keyId(newKey) }) > 0);

    await replaceKeyFile(setting, `${newKey}\n`);
    await waitFor(async () => !(await works(oldClient)), 10_000, "the old key refused");
    stop = true;
    await traffic;
    assert.deepEqual(failures, [], "no call failed during the rotation");
    assert.ok(calls > 10, `calls ran throughout (${calls})`);
    assert.ok(await works(newClient));

    // The process's log reaches this one through a pipe: wait for it.
    await waitFor(() => new RegExp(`"keys.${gw.platform}":"${keyId(newKey)}"[^\\n]*"msg":"reloaded`).test(gw.output()), 10_000, "the second reload's log");
    const output = gw.output();
    assert.match(output, new RegExp(`"trigger":"files changed","tls":false,"keys.${gw.platform}":"${keyId(oldKey)} ${keyId(newKey)}"[^\\n]*"msg":"reloaded`));
    for (const key of [oldKey, newKey]) assert.ok(!output.includes(key), "no key in the log");
    const events = await reloadEvents();
    assert.deepEqual(
      events.slice(0, 2).map((event) => [event.outcome, event.actor, event.detail[`keys.${gw.platform}`]]),
      [
        ["OK", "operator (files changed)", keyId(newKey)],
        ["OK", "operator (files changed)", `${keyId(oldKey)} ${keyId(newKey)}`],
      ],
    );
    platformKey = newKey;
  });

  it("keeps every key in use when a key file fails validation, says why, and records the failure", async () => {
    const setting = `API_KEY_${gw.platform.toUpperCase()}`;
    const key = platformKey;
    const client = clientWith(key, "platform");
    const extra = [1, 2].map(() => randomBytes(16).toString("hex"));
    const failedBefore = (gw.output().match(/"msg":"reload failed/g) ?? []).length;
    await replaceKeyFile(setting, [key, ...extra].join("\n"));
    await waitFor(() => (gw.output().match(/"msg":"reload failed/g) ?? []).length > failedBefore, 10_000, "the failed reload");
    assert.match(gw.output(), new RegExp(`${setting} holds 3 keys: at most 2`));
    assert.ok(await works(client), "the key in use still works");
    assert.equal(await works(clientWith(extra[0]!, "platform")), false, "no key of the refused file is taken");
    const [failed] = await reloadEvents();
    assert.equal(failed!.outcome, "RELOAD_FAILED");
    assert.match(failed!.detail.error!, /holds 3 keys/);
    for (const secret of [key, ...extra]) assert.ok(!gw.output().includes(secret) && !failed!.detail.error!.includes(secret), "no key in the log or the trail");
    await replaceKeyFile(setting, `${key}\n`);
  });
});

describe("API key rotation on SIGHUP alone (RELOAD_ON_FILE_CHANGE=false)", () => {
  it("leaves a changed key file alone until SIGHUP, then takes it", async () => {
    const gw = await startGatewayProcess({ databaseUrl: pgUrl(), secretsInFiles: true, env: { RELOAD_ON_FILE_CHANGE: "false" } });
    const clients: GatewayClient[] = [];
    const adminWith = (apiKey: string) => {
      const client = createClient({ ...gw.clientOptions(gw.adminKey), apiKey, retry: { maxAttempts: 1 } });
      clients.push(client);
      return client.admin();
    };
    const accepted = (apiKey: string) =>
      adminWith(apiKey)
        .listDatabases(gw.platform)
        .then(
          () => true,
          (err: unknown) => {
            if (err instanceof GatewayError && err.code === Code.Unauthenticated) return false;
            throw err;
          },
        );
    try {
      const newAdmin = `admin-${randomBytes(16).toString("hex")}`;
      await writeFile(join(gw.tlsDir, "API_KEY_ADMIN"), `${newAdmin}\n`);
      // Past the watch's settling time: with watching on, the file would have been read by now.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      assert.equal(await accepted(newAdmin), false, "not read without SIGHUP");
      assert.equal(await accepted(gw.adminKey), true);
      gw.kill("SIGHUP");
      await waitFor(() => accepted(newAdmin), 10_000, "the new admin key accepted");
      assert.equal(await accepted(gw.adminKey), false, "the old admin key refused");
      await waitFor(() => gw.output().includes(`"trigger":"SIGHUP","tls":false,"keys.admin":"${keyId(newAdmin)}"`), 10_000, "the SIGHUP reload's log");
      gw.kill("SIGHUP");
      await waitFor(() => /"trigger":"SIGHUP"[^\n]*"msg":"reload: nothing changed"/.test(gw.output()), 10_000, "a SIGHUP that changes nothing says so");
    } finally {
      for (const client of clients) client.close();
      await gw.close();
      await dropPlatformDatabases([gw.platform]);
    }
  });
});

describe("a key retired under an open QueryStream", () => {
  it("refuses the stream's next message, logged and counted once", async () => {
    const kept = keptLog("info");
    const t = await startTestGateway({ platforms: 1, overrides: { logger: kept.logger } });
    try {
      const platform = t.platforms[0]!;
      const client = createClient({ ...t.clientOptions(t.keys[platform]!), retry: { maxAttempts: 1 } });
      const db = client.platform(platform);
      await db.query("SELECT 1");
      const outcome = await t.gateway.reload("test", () => ({
        keys: { platformKeys: new Map([[platform, [`new-${randomBytes(16).toString("hex")}`]]]), adminKeys: [t.adminKey] },
      }));
      assert.deepEqual(outcome, { ok: true, tls: false, keys: [platform] });
      const counted = await metricValue(t, `db_gateway_auth_refusals_total{event="unauthenticated"}`).catch(() => 0);
      const before = kept.lines.length;
      await assert.rejects(db.query("SELECT 2"), (err: GatewayError) => err.code === Code.Unauthenticated);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const refusals = kept.lines.slice(before).filter((line) => line.includes('"event":"unauthenticated"'));
      assert.equal(refusals.length, 1, refusals.join("\n"));
      assert.equal(await metricValue(t, `db_gateway_auth_refusals_total{event="unauthenticated"}`), counted + 1);
      client.close();
    } finally {
      await t.close();
    }
  });
});
