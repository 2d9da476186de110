// A cluster that accepts connections and never answers (a hung server, a half-open network) holds up neither the gateway's start nor the other clusters' tenants and health.
import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { waitFor } from "./helpers/wait.js";

describe("a cluster that never answers", () => {
  let silent: Server;
  const sockets: Socket[] = [];
  let url: string;

  before(async () => {
    silent = createServer((socket) => {
      sockets.push(socket);
      socket.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as { port: number };
    url = `postgres://admin:secret@127.0.0.1:${port}/postgres`;
  });
  after(async () => {
    for (const socket of sockets) socket.destroy();
    if (silent.listening) await new Promise((resolve) => silent.close(resolve));
  });

  it("lets the gateway start and serve the catalog cluster's tenants, and reports the silent one down", async () => {
    let t: TestGateway | undefined;
    const starting = startTestGateway({ platforms: 1, overrides: { clusters: [{ name: "silent", url }], healthCheckMillis: 300 } }).then((g) => (t = g));
    const outcome = await Promise.race([
      starting.then(() => "started"),
      new Promise((resolve) => setTimeout(() => resolve("still starting after 30 s"), 30_000)),
    ]);
    try {
      assert.equal(outcome, "started");
      const platform = t!.platforms[0]!;
      assert.deepEqual((await t!.client().platform(platform).query("SELECT 1 AS one")).rows, [{ one: 1 }]);
      const silentConnected = async () =>
        ((await (await fetch(`${t!.httpUrl}/health`)).json()) as { clusters: Record<string, { connected: boolean }> }).clusters.silent?.connected;
      await waitFor(async () => (await silentConnected()) === false, 15_000, "the silent cluster reported down");
    } finally {
      // Refused from now on, and the hung connections cut: whatever waited on them ends.
      const closed = new Promise((resolve) => silent.close(resolve));
      for (const socket of sockets) socket.destroy();
      await closed;
      await starting.then((g) => g.close()).catch(() => undefined);
    }
  });
});
