// The gRPC port's connection limits: handshakes that never finish are cut at TLS_HANDSHAKE_TIMEOUT_SECS, connections beyond MAX_CLIENT_CONNECTIONS are closed as accepted.
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, afterEach, before, describe, it } from "node:test";
import { metricSample, metricsText, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { clientHelloBytes, closesWithin, openTcp } from "./helpers/raw-connections.js";
import { waitFor } from "./helpers/wait.js";

/** Short, so that the tests wait it out; long enough to tell apart from a connection closed at once. */
const HANDSHAKE_TIMEOUT_MS = 1_500;
const MAX_CONNECTIONS = 6;

describe("client connection limits", () => {
  let t: TestGateway;
  let platform: string;
  const sockets: Socket[] = [];
  before(async () => {
    t = await startTestGateway({
      platforms: 1,
      overrides: { clientConnections: { maxConnections: MAX_CONNECTIONS, tlsHandshakeTimeoutMillis: HANDSHAKE_TIMEOUT_MS } },
    });
    platform = t.platforms[0]!;
  });
  afterEach(() => {
    for (const s of sockets.splice(0)) s.destroy();
  });
  after(() => t.close());

  const open = async () => {
    const socket = await openTcp(t.port);
    sockets.push(socket);
    return socket;
  };
  const refused = async (reason: string) => metricSample(await metricsText(t), "db_gateway_client_connections_refused_total", { reason });
  const openConnections = async () => metricSample(await metricsText(t), "db_gateway_client_connections");

  /** A query from a new SDK client, which opens its own connection; the client is closed after. */
  async function query(): Promise<void> {
    const client = t.client();
    try {
      const { rows } = await client.platform(platform).query<{ n: number }>("SELECT 41 + 1 AS n");
      assert.deepEqual(rows, [{ n: 42 }]);
    } finally {
      client.close();
    }
  }

  it("closes a TCP connection that never sends a ClientHello once the handshake timeout is over", async () => {
    const before = await refused("tls_handshake_timeout");
    const socket = await open();
    const closedAfter = await closesWithin(socket, HANDSHAKE_TIMEOUT_MS * 3);
    assert.ok(closedAfter !== undefined, `still open ${HANDSHAKE_TIMEOUT_MS * 3} ms after it connected`);
    assert.ok(closedAfter >= HANDSHAKE_TIMEOUT_MS - 200, `closed after ${Math.round(closedAfter)} ms: before the timeout`);
    assert.equal(await refused("tls_handshake_timeout"), before + 1);
    await query();
  });

  it("closes a connection that sent half a ClientHello, and one that sent a whole one and then nothing, at the same timeout", async () => {
    const before = await refused("tls_handshake_timeout");
    const hello = await clientHelloBytes();
    const half = await open();
    half.write(hello.subarray(0, Math.floor(hello.length / 2)));
    // A whole ClientHello: the gateway answers (ServerHello, its certificate, a CertificateRequest) and waits for the client's certificate.
    const whole = await open();
    let answered = 0;
    whole.on("data", (data: Buffer) => (answered += data.length));
    whole.write(hello);
    const [halfClosed, wholeClosed] = await Promise.all([closesWithin(half, HANDSHAKE_TIMEOUT_MS * 3), closesWithin(whole, HANDSHAKE_TIMEOUT_MS * 3)]);
    assert.ok(answered > 0, "the gateway never answered the ClientHello");
    for (const closedAfter of [halfClosed, wholeClosed]) {
      assert.ok(closedAfter !== undefined, `still open ${HANDSHAKE_TIMEOUT_MS * 3} ms after the ClientHello`);
      assert.ok(closedAfter >= HANDSHAKE_TIMEOUT_MS - 200, `closed after ${Math.round(closedAfter)} ms: before the timeout`);
    }
    assert.equal(await refused("tls_handshake_timeout"), before + 2);
    await query();
  });

  it("does not cut a connection that completed its handshake, however long it stays idle", async () => {
    const client = t.client();
    try {
      const tenant = client.platform(platform);
      await tenant.query("SELECT 1");
      assert.equal(await openConnections(), 1);
      const timeouts = await refused("tls_handshake_timeout");
      await new Promise((resolve) => setTimeout(resolve, HANDSHAKE_TIMEOUT_MS * 1.5));
      await tenant.query("SELECT 2");
      assert.equal(await openConnections(), 1, "the client had to connect again");
      assert.equal(await refused("tls_handshake_timeout"), timeouts);
    } finally {
      client.close();
    }
  });

  it("closes connections beyond MAX_CLIENT_CONNECTIONS as they are accepted, and serves again once some close", async () => {
    await waitFor(async () => (await openConnections()) === 0, 5_000, "no connection open");
    const before = await refused("max_connections");
    const held = [];
    for (let i = 0; i < MAX_CONNECTIONS; i++) held.push(await open());
    await waitFor(async () => (await openConnections()) === MAX_CONNECTIONS, 2_000, `${MAX_CONNECTIONS} connections open`);
    const beyond = await Promise.all([open(), open(), open()]);
    for (const socket of beyond) {
      const closedAfter = await closesWithin(socket, HANDSHAKE_TIMEOUT_MS / 2);
      assert.ok(closedAfter !== undefined, "a connection beyond the limit was kept open");
    }
    // Neither an SDK client: refused while the limit is reached.
    const client = t.client();
    await assert.rejects(client.platform(platform).query("SELECT 1", [], { timeoutMs: HANDSHAKE_TIMEOUT_MS / 2 }));
    client.close();
    assert.ok((await refused("max_connections")) >= before + beyond.length);
    assert.ok(held.every((socket) => !socket.closed));
    for (const socket of held.slice(0, 2)) socket.destroy();
    await waitFor(async () => (await openConnections()) < MAX_CONNECTIONS, 2_000, "connections freed");
    await query();
  });
});
