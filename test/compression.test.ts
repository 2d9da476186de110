// gRPC compression end to end: the SDK's compression option gets the same rows in fewer bytes, the gateway decompresses any client's gzip and compresses only for clients that ask.
import assert from "node:assert/strict";
import { connect as http2Connect, type ClientHttp2Session, type IncomingHttpHeaders } from "node:http2";
import { after, before, describe, it } from "node:test";
import { gunzipSync, gzipSync } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createClient, type GatewayClient } from "../client-sdk/src/index.js";
import { QueryRequestSchema, QueryResponseSchema } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { testPki } from "./helpers/pki.js";

/** A result that compresses well, as result sets do: repeated text, small integers. */
const COMPRESSIBLE = "SELECT g AS id, 'status-' || (g % 4) AS status, repeat('lorem ipsum ', 8) AS note FROM generate_series(1, $1::int) g";

describe("gRPC compression", () => {
  let t: TestGateway;
  let platform: string;
  let proxy: FaultProxy;
  const clients: GatewayClient[] = [];
  /** An SDK client, through the counting proxy. */
  const client = (options: { compression?: "gzip" | "none"; coalesce?: boolean }) => {
    const c = createClient({ ...t.clientOptions(t.keys[platform]!), url: `https://localhost:${proxy.port}`, ...options });
    clients.push(c);
    return c;
  };
  /** Bytes from the gateway to the client while `run` runs (alone on the proxy). */
  const bytesToClient = async (run: () => Promise<unknown>) => {
    const before = proxy.bytes.toClient;
    await run();
    return proxy.bytes.toClient - before;
  };

  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    proxy = await startFaultProxy({ host: "127.0.0.1", port: t.port });
  });
  after(async () => {
    clients.forEach((c) => c.close());
    await proxy.close();
    await t.close();
  });

  it("gets the same rows with compression as without: Query, QueryStream, a stream and a batch", async () => {
    const plain = client({ coalesce: false }).platform(platform);
    const gzip = client({ compression: "gzip", coalesce: false }).platform(platform);
    const plainStreamed = client({}).platform(platform);
    const gzipStreamed = client({ compression: "gzip" }).platform(platform);
    const rows = (r: { rows: unknown[] }) => r.rows;

    const expected = rows(await plain.query(COMPRESSIBLE, [5_000]));
    assert.equal(expected.length, 5_000);
    assert.deepEqual(rows(await gzip.query(COMPRESSIBLE, [5_000])), expected, "Query");
    assert.deepEqual(rows(await plainStreamed.query(COMPRESSIBLE, [5_000])), expected, "QueryStream, uncompressed");
    assert.deepEqual(rows(await gzipStreamed.query(COMPRESSIBLE, [5_000])), expected, "QueryStream");
    // Small answers too, which leave uncompressed on a compressed call.
    assert.deepEqual(rows(await gzipStreamed.query("SELECT 1 AS one")), [{ one: 1 }]);

    const streamed = async (db: typeof plain) => {
      const all: unknown[] = [];
      for await (const row of db.stream(COMPRESSIBLE, [50_000], { maxRowsPerMessage: 2_000 })) all.push(row);
      return all;
    };
    const streamRows = await streamed(plain);
    assert.equal(streamRows.length, 50_000);
    assert.deepEqual(await streamed(gzip), streamRows, "a stream");

    // A stream that fails part-way fails the same way. The gateway sends the same messages before
    // the status either way (checked at the HTTP/2 level); but grpc-js's client, which
    // decompresses asynchronously, may pass the error status on while decoded messages still wait
    // in the call's buffer, and its stream then drops them: the reader may see fewer of the rows
    // before the error than without compression.
    const failing = async (db: typeof plain) => {
      let n = 0;
      try {
        for await (const row of db.stream("SELECT g, repeat('x', 100) AS pad, 1 / (20000 - g) AS boom FROM generate_series(1, 30000) g", [], {
          maxRowsPerMessage: 500,
        }))
          n += row ? 1 : 0;
      } catch (err) {
        return { n, error: (err as Error).message };
      }
      return { n, error: undefined };
    };
    const failedPlain = await failing(plain);
    assert.match(failedPlain.error ?? "", /division by zero/);
    assert.ok(failedPlain.n > 19_000, `${failedPlain.n} rows before the error`);
    const failedGzip = await failing(gzip);
    assert.equal(failedGzip.error, failedPlain.error, "a stream failing part-way");
    assert.ok(failedGzip.n <= failedPlain.n, `${failedGzip.n} rows before the error`);

    const batch = [{ sql: COMPRESSIBLE, params: [3_000] }, "SELECT 2 AS two", { sql: COMPRESSIBLE, params: [10] }];
    const summary = (results: Awaited<ReturnType<typeof plain.batch>>) => results.map((r) => (r instanceof Error ? r : r.rows));
    assert.deepEqual(summary(await gzip.batch(batch)), summary(await plain.batch(batch)), "a batch");
  });

  it("sends a compressible result in far fewer bytes", async () => {
    const plain = client({});
    const gzip = client({ compression: "gzip" });
    const drain = async (c: GatewayClient) => {
      let n = 0;
      for await (const row of c.platform(platform).stream(COMPRESSIBLE, [100_000])) n += row ? 1 : 0;
      assert.equal(n, 100_000);
    };
    // Connected first, so that neither count holds a TLS handshake.
    await plain.platform(platform).query("SELECT 1");
    await gzip.platform(platform).query("SELECT 1");
    const plainBytes = await bytesToClient(() => drain(plain));
    const gzipBytes = await bytesToClient(() => drain(gzip));
    assert.ok(gzipBytes * 4 < plainBytes, `compressed: ${gzipBytes} bytes, plain: ${plainBytes}`);
    const oneResult = async (c: GatewayClient) => bytesToClient(() => c.platform(platform).query(COMPRESSIBLE, [10_000]));
    const [plainOne, gzipOne] = [await oneResult(plain), await oneResult(gzip)];
    assert.ok(gzipOne * 4 < plainOne, `one result compressed: ${gzipOne} bytes, plain: ${plainOne}`);
  });

  it("serves a plain grpc-js client sending gzip-compressed requests", async () => {
    const pki = testPki();
    const raw = new grpc.Client(
      `localhost:${t.port}`,
      grpc.credentials.createSsl(Buffer.from(pki.ca.cert), Buffer.from(t.tlsFor(t.keys[platform]!).key), Buffer.from(t.tlsFor(t.keys[platform]!).cert)),
      {
        "grpc.default_compression_algorithm": grpc.compressionAlgorithms.gzip,
      },
    );
    try {
      const metadata = new grpc.Metadata();
      metadata.set("x-api-key", t.keys[platform]!);
      // A large SQL text, so that the request really is compressed (grpc-js compresses every message on such a channel).
      const sql = `SELECT $1::text AS echo /* ${"padding ".repeat(2_000)} */`;
      const request = create(QueryRequestSchema, { platform, sql, params: [{ kind: { case: "textValue", value: "hello" } }] });
      const response = await new Promise<ReturnType<typeof fromBinary<typeof QueryResponseSchema>>>((resolve, reject) =>
        raw.makeUnaryRequest(
          "/dbgateway.v1.QueryService/Query",
          (r: typeof request) => Buffer.from(toBinary(QueryRequestSchema, r)),
          (b: Buffer) => fromBinary(QueryResponseSchema, b),
          request,
          metadata,
          (err, value) => (err ? reject(err) : resolve(value!)),
        ),
      );
      assert.deepEqual(
        response.result?.rows.map((r) => r.values.map((v) => v.kind.value)),
        [["hello"]],
      );
    } finally {
      raw.close();
    }
  });

  describe("at the HTTP/2 level", () => {
    let session: ClientHttp2Session;
    before(() => {
      const pki = testPki();
      session = http2Connect(t.url, { ca: pki.ca.cert, ...t.tlsFor(t.keys[platform]!) });
    });
    after(() => session.close());

    /** One Query call with the given encoding headers: the response headers, its messages' compressed flags and bytes, and the trailers. */
    const call = (headers: Record<string, string>, sql: string, compressRequest = false) =>
      new Promise<{ headers: IncomingHttpHeaders; flags: number[]; messages: Buffer[]; trailers: IncomingHttpHeaders }>((resolve, reject) => {
        const req = session.request({
          ":method": "POST",
          ":path": "/dbgateway.v1.QueryService/Query",
          "content-type": "application/grpc",
          te: "trailers",
          "x-api-key": t.keys[platform]!,
          ...headers,
        });
        let responseHeaders: IncomingHttpHeaders = {};
        const chunks: Buffer[] = [];
        req.on("response", (h) => (responseHeaders = h));
        req.on("data", (chunk: Buffer) => chunks.push(chunk));
        // A trailers-only answer (an error before any message) has its status in the headers, and no trailers.
        let trailers: IncomingHttpHeaders = {};
        req.on("trailers", (t) => (trailers = t));
        req.on("end", () => {
          const body = Buffer.concat(chunks);
          const flags: number[] = [];
          const messages: Buffer[] = [];
          for (let at = 0; at < body.length;) {
            const length = body.readUInt32BE(at + 1);
            flags.push(body[at]!);
            messages.push(body.subarray(at + 5, at + 5 + length));
            at += 5 + length;
          }
          resolve({ headers: responseHeaders, flags, messages, trailers });
        });
        req.on("error", reject);
        const message = Buffer.from(
          toBinary(QueryRequestSchema, create(QueryRequestSchema, { platform, sql, params: [{ kind: { case: "textValue", value: "2000" } }] })),
        );
        const payload = compressRequest ? gzipSync(message) : message;
        const frame = Buffer.alloc(5);
        frame[0] = compressRequest ? 1 : 0;
        frame.writeUInt32BE(payload.length, 1);
        req.end(Buffer.concat([frame, payload]));
      });
    const rowCount = (message: Buffer) => fromBinary(QueryResponseSchema, message).result?.rows.length;

    it("compresses the responses of a client that sends gzip and accepts it", async () => {
      const answer = await call({ "grpc-encoding": "gzip", "grpc-accept-encoding": "identity,gzip" }, COMPRESSIBLE, true);
      assert.equal(answer.trailers["grpc-status"], "0");
      assert.equal(answer.headers["grpc-encoding"], "gzip");
      assert.deepEqual(answer.flags, [1]);
      assert.equal(rowCount(gunzipSync(answer.messages[0]!)), 2_000);
    });

    it("does not compress for a client that does not accept gzip, nor for one that sends its requests uncompressed", async () => {
      const cases: Record<string, string>[] = [
        { "grpc-encoding": "gzip", "grpc-accept-encoding": "identity" },
        { "grpc-encoding": "gzip" },
        { "grpc-accept-encoding": "identity,gzip" },
      ];
      for (const headers of cases) {
        const answer = await call(headers, COMPRESSIBLE, headers["grpc-encoding"] === "gzip");
        assert.equal(answer.trailers["grpc-status"], "0", JSON.stringify(headers));
        assert.notEqual(answer.headers["grpc-encoding"], "gzip", JSON.stringify(headers));
        assert.deepEqual(answer.flags, [0], JSON.stringify(headers));
        assert.equal(rowCount(answer.messages[0]!), 2_000);
      }
    });

    it("cannot be made to compress by a client's own copy of the gateway's internal header", async () => {
      const answer = await call({ "x-db-gateway-request-grpc-encoding": "gzip", "x-db-gateway-request-grpc-accept-encoding": "gzip" }, COMPRESSIBLE);
      assert.equal(answer.trailers["grpc-status"], "0");
      assert.deepEqual(answer.flags, [0]);
    });

    it("answers UNIMPLEMENTED to a request compressed with an encoding it does not support", async () => {
      const answer = await call({ "grpc-encoding": "br", "grpc-accept-encoding": "identity" }, "SELECT $1::int AS n", true);
      assert.equal(answer.trailers["grpc-status"] ?? answer.headers["grpc-status"], String(grpc.status.UNIMPLEMENTED));
      assert.match(decodeURIComponent(String(answer.trailers["grpc-message"] ?? answer.headers["grpc-message"])), /unsupported encoding "br"/);
    });
  });
});

describe("gRPC compression off at the gateway (GRPC_COMPRESSION=none)", () => {
  let t: TestGateway;
  let proxy: FaultProxy;
  before(async () => {
    t = await startTestGateway({ platforms: 1, overrides: { compression: "none" } });
    proxy = await startFaultProxy({ host: "127.0.0.1", port: t.port });
  });
  after(async () => {
    await proxy.close();
    await t.close();
  });

  it("still takes a client's compressed requests, and answers uncompressed", async () => {
    const platform = t.platforms[0]!;
    const measure = async (compression: "gzip" | "none") => {
      const c = createClient({ ...t.clientOptions(t.keys[platform]!), url: `https://localhost:${proxy.port}`, compression });
      try {
        await c.platform(platform).query("SELECT 1");
        const before = proxy.bytes.toClient;
        const { rows } = await c.platform(platform).query(COMPRESSIBLE, [10_000]);
        assert.equal(rows.length, 10_000);
        return proxy.bytes.toClient - before;
      } finally {
        c.close();
      }
    };
    const plain = await measure("none");
    const gzip = await measure("gzip");
    assert.ok(gzip > plain * 0.9, `with compression asked: ${gzip} bytes, without: ${plain}`);
  });
});
