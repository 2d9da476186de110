// Hostile HTTP/2 over real mutual TLS against a gateway process: rapid reset, a CONTINUATION flood, random bytes, many idle connections and stalled handshakes. It keeps serving, in bounded memory, with no PostgreSQL connection left behind.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect as http2Connect, constants as http2Constants } from "node:http2";
import type { Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import pg from "pg";
import { QueryRequestSchema } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { startGatewayProcess, type GatewayProcess } from "./helpers/gateway-process.js";
import { dropPlatformDatabases, metricSample, pgUrl } from "./helpers/gateway.js";
import { testPki } from "./helpers/pki.js";
import {
  clientHelloBytes,
  closesWithin,
  frame,
  FrameFlag,
  FrameType,
  headerBlock,
  HTTP2_PREFACE,
  openTcp,
  openTls,
  readFrames,
  type FrameReader,
  type ReceivedFrame,
} from "./helpers/raw-connections.js";
import { mapLimit, waitFor } from "./helpers/wait.js";

const MIB = 1024 * 1024;
/**
 * How much the gateway's RSS may grow over its warm size, the attacks one
 * after another: mostly V8's heap, grown for the thousands of calls the
 * resets open. The CONTINUATION flood alone offers 256 MiB of headers.
 */
const RSS_GROWTH_BOUND = 160 * MIB;
const QUERY_PATH = "/dbgateway.v1.QueryService/Query";
/** The gateway's TLS_HANDSHAKE_TIMEOUT_SECS, short so that the idle-connection test waits it out (each connection here completes its handshake at once). */
const HANDSHAKE_TIMEOUT_MS = 3_000;

describe("HTTP/2 abuse: a gateway process", () => {
  let gw: GatewayProcess;
  let admin: pg.Client;
  let warmRss: number;
  const sockets: Socket[] = [];
  before(async () => {
    gw = await startGatewayProcess({
      databaseUrl: pgUrl(),
      env: { MAX_CONNECTIONS_PER_POOL: "5", TLS_HANDSHAKE_TIMEOUT_SECS: String(HANDSHAKE_TIMEOUT_MS / 1000) },
    });
    await gw.adminClient().admin().createTenant(gw.platform, "");
    admin = new pg.Client({ connectionString: pgUrl() });
    await admin.connect();
    // Warm: code loaded, the pool's connections open; then the size each attack is measured from.
    const client = gw.client();
    for (let i = 0; i < 50; i++) await Promise.all(Array.from({ length: 5 }, () => client.platform(gw.platform).query("SELECT pg_sleep(0.001)")));
    client.close();
    warmRss = await gw.rssBytes();
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await admin?.end();
    await gw?.close();
    if (gw) await dropPlatformDatabases([gw.platform]);
  });

  /** A gRPC request's HEADERS block, as a client would send it (`x-api-key` the platform's). */
  function requestHeaders(): Buffer {
    return headerBlock([
      [":method", "POST"],
      [":scheme", "https"],
      [":path", QUERY_PATH],
      [":authority", "localhost"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ["x-api-key", gw.platformKey],
    ]);
  }

  /** A length-prefixed gRPC message: a QueryRequest for `sql` on the platform's main database. */
  function queryMessage(sql: string): Buffer {
    const message = toBinary(QueryRequestSchema, create(QueryRequestSchema, { platform: gw.platform, sql }));
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(message.length, 1);
    return Buffer.concat([prefix, message]);
  }

  /** A TLS connection with the platform's certificate, the HTTP/2 preface and an empty SETTINGS frame written: ready for frames. */
  async function openHttp2(): Promise<{ socket: Socket; reader: FrameReader }> {
    const socket = await openTls(gw.port, gw.platform);
    sockets.push(socket);
    const reader = readFrames(socket);
    socket.write(Buffer.concat([HTTP2_PREFACE, frame(FrameType.SETTINGS, 0, 0)]));
    return { socket, reader };
  }

  /** Writes `chunk`, then waits for the socket to take more (or to close). */
  async function write(socket: Socket, chunk: Buffer): Promise<void> {
    if (socket.write(chunk)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        socket.off("drain", done).off("close", done);
        resolve();
      };
      socket.on("drain", done).on("close", done);
    });
  }

  /**
   * What must hold after every attack: within 15 s no statement is left
   * running and no connection busy, and PostgreSQL has exactly the
   * connections the pool counts (none lost track of); then a new SDK
   * client's query is served; the RSS is within its bound of the warm size.
   */
  async function assertUnharmed(attack: string): Promise<void> {
    const role = `${gw.platform}_main`;
    let seen = "";
    const start = performance.now();
    await waitFor(
      async () => {
        const { rows } = await admin.query<{ total: number; active: number }>(
          "SELECT count(*)::int AS total, (count(*) FILTER (WHERE state <> 'idle'))::int AS active FROM pg_stat_activity WHERE usename = $1",
          [role],
        );
        const metrics = await (await fetch(`http://127.0.0.1:${gw.metricsPort}/metrics`)).text();
        const pool = (state: string) => metricSample(metrics, "db_gateway_pool_connections", { database: role, state });
        const [busy, idle, connecting] = [pool("busy"), pool("idle"), pool("connecting")];
        seen = `PostgreSQL: ${rows[0]!.total} backends, ${rows[0]!.active} active; the pool: ${idle} idle, ${busy} busy, ${connecting} connecting`;
        return rows[0]!.active === 0 && busy === 0 && connecting === 0 && rows[0]!.total === idle;
      },
      15_000,
      `after ${attack}, no connection busy and none unaccounted for`,
    ).catch((err: Error) => assert.fail(`${err.message} (${seen})`));
    const settledMs = performance.now() - start;
    const client = gw.client();
    try {
      const { rows } = await client.platform(gw.platform).query<{ n: number }>("SELECT 41 + 1 AS n");
      assert.deepEqual(rows, [{ n: 42 }], `after ${attack}`);
    } finally {
      client.close();
    }
    const growth = (await gw.rssBytes()) - warmRss;
    console.log(
      `${attack}: settled in ${Math.round(settledMs)} ms; RSS ${growth >= 0 ? "+" : ""}${(growth / MIB).toFixed(1)} MiB over the warm ${(warmRss / MIB).toFixed(0)} MiB`,
    );
    assert.ok(growth < RSS_GROWTH_BOUND, `after ${attack}, RSS grew by ${(growth / MIB).toFixed(0)} MiB, more than ${RSS_GROWTH_BOUND / MIB} MiB`);
  }

  /** Query calls the gateway counted (its handler ran: authenticated, decoded). */
  const queryCalls = async () =>
    metricSample(await (await fetch(`http://127.0.0.1:${gw.metricsPort}/metrics`)).text(), "db_gateway_queries_total", {
      platform: gw.platform,
      method: "Query",
    });

  it("rapid reset: thousands of streams opened, sent a query and reset at once, on raw frames", async () => {
    const callsBefore = await queryCalls();
    const headers = requestHeaders();
    const message = queryMessage("SELECT pg_sleep(0.2)");
    const cancel = Buffer.alloc(4);
    cancel.writeUInt32BE(http2Constants.NGHTTP2_CANCEL);
    for (let connection = 0; connection < 4; connection++) {
      const { socket, reader } = await openHttp2();
      const frames: Buffer[] = [];
      for (let i = 0; i < 5_000; i++) {
        const stream = 2 * i + 1;
        frames.push(
          frame(FrameType.HEADERS, FrameFlag.END_HEADERS, stream, headers),
          frame(FrameType.DATA, FrameFlag.END_STREAM, stream, message),
          frame(FrameType.RST_STREAM, 0, stream, cancel),
        );
      }
      // A PING after them: its ACK says the gateway has read every frame before it. Or node ends the session first
      // (GOAWAY, after a couple of thousand: its limit on streams it had to refuse), and reads nothing more.
      const ping = randomBytes(8);
      await write(socket, Buffer.concat([...frames, frame(FrameType.PING, 0, 0, ping)]));
      const acked = (f: ReceivedFrame) => f.type === FrameType.PING && (f.flags & FrameFlag.ACK) !== 0 && f.payload.equals(ping);
      const ended = await reader.until((f) => acked(f) || f.type === FrameType.GOAWAY, 30_000);
      assert.ok(ended || socket.closed, "the gateway neither read the resets nor ended the connection within 30 s");
      const goaway = reader.frames.find((f) => f.type === FrameType.GOAWAY);
      if (goaway !== undefined)
        console.log(`rapid reset: GOAWAY (error ${goaway.payload.readUInt32BE(4)}) after stream ${goaway.payload.readUInt32BE(0)} of ${2 * 5_000 - 1}`);
      socket.destroy();
    }
    assert.ok((await queryCalls()) - callsBefore >= 1_000, "the resets' calls never reached the gateway's handler");
    await assertUnharmed("rapid reset");
  });

  it("rapid reset with statements running: streams cancelled by node's HTTP/2 client while PostgreSQL runs them", async () => {
    const pki = testPki();
    const message = queryMessage("SELECT pg_sleep(1)");
    const running = async () => {
      const { rows } = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 AND state = 'active' AND query = 'SELECT pg_sleep(1)'",
        [`${gw.platform}_main`],
      );
      return rows[0]!.n;
    };
    // A session per round: node ends one that has had about a thousand streams reset (see the raw-frame test).
    for (let round = 0; round < 10; round++) {
      const session = http2Connect(`https://localhost:${gw.port}`, { ca: pki.ca.cert, ...pki.clientFor(gw.platform) });
      session.on("error", () => undefined);
      try {
        await once(session, "connect");
        const requests = Array.from({ length: 200 }, () => {
          const request = session.request({
            ":method": "POST",
            ":path": QUERY_PATH,
            "content-type": "application/grpc",
            te: "trailers",
            "x-api-key": gw.platformKey,
          });
          request.on("error", () => undefined);
          request.end(message);
          return request;
        });
        // Reset once PostgreSQL runs some (the pool has five connections: the rest wait for one).
        await waitFor(async () => (await running()) > 0, 10_000, `round ${round}: statements running`);
        for (const request of requests) request.close(http2Constants.NGHTTP2_CANCEL);
      } finally {
        session.destroy();
      }
    }
    await assertUnharmed("streams reset while their statements ran");
  });

  it("a CONTINUATION flood: one HEADERS frame without END_HEADERS, then CONTINUATION frames without end", async () => {
    const headers = requestHeaders();
    const padding = headerBlock([["x-flood", "y".repeat(100)]]);
    for (let connection = 0; connection < 4; connection++) {
      const { socket } = await openHttp2();
      socket.write(frame(FrameType.HEADERS, 0, 1, headers));
      let sent = 0;
      // 64 MiB of header fields at most, written as fast as the gateway reads them, until it ends the connection.
      while (!socket.destroyed && !socket.writableEnded && sent < 64 * MIB) {
        const chunk = Buffer.concat(Array.from({ length: 256 }, () => frame(FrameType.CONTINUATION, 0, 1, padding)));
        sent += chunk.length;
        await write(socket, chunk);
      }
      const closedAfter = await closesWithin(socket, 5_000);
      assert.ok(closedAfter !== undefined, `the gateway kept reading CONTINUATION frames (${(sent / MIB).toFixed(1)} MiB sent)`);
      console.log(`CONTINUATION flood: the gateway closed the connection after ${(sent / 1024).toFixed(0)} KiB`);
    }
    await assertUnharmed("a CONTINUATION flood");
  });

  it("random bytes: instead of TLS and instead of HTTP/2's preface, the connection is closed; after the preface, the gateway sends GOAWAY", async () => {
    for (const where of ["instead of TLS", "instead of the preface"]) {
      for (let connection = 0; connection < 8; connection++) {
        const socket = where === "instead of TLS" ? await openTcp(gw.port) : await openTls(gw.port, gw.platform);
        sockets.push(socket);
        socket.resume();
        socket.write(randomBytes(256 * 1024));
        const closedAfter = await closesWithin(socket, 5_000);
        assert.ok(closedAfter !== undefined, `random bytes ${where}: the gateway kept the connection open`);
      }
    }
    // A frame header of random bytes is a protocol error: nghttp2 answers GOAWAY with its code and reads nothing more.
    // (node then leaves the TCP connection to the client to close: it counts against MAX_CLIENT_CONNECTIONS until then.)
    for (let connection = 0; connection < 8; connection++) {
      const { socket, reader } = await openHttp2();
      socket.write(randomBytes(256 * 1024));
      const goaway = await reader.until((f) => f.type === FrameType.GOAWAY && f.payload.readUInt32BE(4) !== http2Constants.NGHTTP2_NO_ERROR, 5_000);
      assert.ok(goaway || socket.closed, "random bytes after the preface: neither GOAWAY nor a closed connection");
      socket.destroy();
    }
    await assertUnharmed("random bytes");
  });

  it("many idle connections and handshakes that never finish: 100 idle after mutual TLS and HTTP/2's preface are kept past the handshake timeout and answer PING; 200 stalled in their ClientHello are closed at it", async () => {
    const IDLE = 100;
    const STALLED = 200;
    const metrics = async () => (await fetch(`http://127.0.0.1:${gw.metricsPort}/metrics`)).text();
    const openConnections = async () => metricSample(await metrics(), "db_gateway_client_connections");
    const timeouts = async () => metricSample(await metrics(), "db_gateway_client_connections_refused_total", { reason: "tls_handshake_timeout" });
    // The admin client of the setup keeps its connection.
    const base = await openConnections();
    const timeoutsBefore = await timeouts();
    // The idle ones first, so that they have been open longer than the handshake timeout when the stalled ones are closed.
    const idle = await mapLimit(
      Array.from({ length: IDLE }, (_, i) => i),
      16,
      () => openHttp2(),
    );
    const hello = await clientHelloBytes();
    const stalled = await Promise.all(
      Array.from({ length: STALLED }, async () => {
        const socket = await openTcp(gw.port);
        sockets.push(socket);
        socket.write(hello.subarray(0, Math.floor(hello.length / 2)));
        return socket;
      }),
    );
    await waitFor(async () => (await openConnections()) === base + IDLE + STALLED, 10_000, `${IDLE + STALLED} client connections counted`);
    // Served meanwhile.
    const client = gw.client();
    try {
      assert.deepEqual((await client.platform(gw.platform).query<{ n: number }>("SELECT 41 + 1 AS n")).rows, [{ n: 42 }]);
    } finally {
      client.close();
    }
    const closedAfter = await Promise.all(stalled.map((socket) => closesWithin(socket, HANDSHAKE_TIMEOUT_MS * 4)));
    assert.equal(closedAfter.filter((ms) => ms === undefined).length, 0, "stalled handshakes still open");
    assert.equal(await timeouts(), timeoutsBefore + STALLED);
    assert.equal(idle.filter(({ socket }) => socket.closed).length, 0, "idle connections were cut");
    // Each idle connection is still served: node answers its PING.
    const answered = await Promise.all(
      idle.map(({ socket, reader }) => {
        const ping = randomBytes(8);
        socket.write(frame(FrameType.PING, 0, 0, ping));
        return reader.until((f) => f.type === FrameType.PING && (f.flags & FrameFlag.ACK) !== 0 && f.payload.equals(ping), 10_000);
      }),
    );
    assert.equal(answered.filter((ok) => !ok).length, 0, "idle connections left unanswered");
    for (const { socket } of idle) socket.destroy();
    // Nothing leaked: every connection gone from the gateway's count.
    await waitFor(async () => (await openConnections()) === base, 10_000, "every client connection closed");
    await assertUnharmed("many idle connections and stalled handshakes");
  });
});
