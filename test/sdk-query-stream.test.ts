// The SDK's QueryStream session end to end: concurrent queries ride one stream, a turn's in one message, kept while queries keep coming and half-closed once idle; a timeout fails one query alone; QueryMany where there is no stream.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Code, createClient, GatewayError } from "../client-sdk/src/index.js";
import { STREAM_LINGER_MS } from "../client-sdk/src/query-stream.js";
import { callsOf, metricValue, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { testPki } from "./helpers/pki.js";
import { waitFor } from "./helpers/wait.js";

const statements = (t: TestGateway, platform: string, method: string) => callsOf(t, platform, method, "db_gateway_statements_total");

describe("SDK: concurrent queries travel over a QueryStream", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
  });
  after(() => t.close());

  it("keeps the stream while queries keep coming, and half-closes it once idle", async () => {
    const client = t.client();
    try {
      const db = client.platform(platform);
      const open = () => metricValue(t, `db_gateway_open_streams{method="QueryStream"}`);
      const before = await statements(t, platform, "QueryStream");
      // Waves of concurrent callers, each sending its next query as soon as its last is answered.
      await Promise.all(
        Array.from({ length: 16 }, async (_, caller) => {
          for (let i = 0; i < 20; i++) {
            const { rows } = await db.query<{ n: number }>("SELECT $1::int AS n", [caller * 100 + i]);
            assert.equal(rows[0]!.n, caller * 100 + i);
          }
        }),
      );
      assert.equal((await statements(t, platform, "QueryStream")) - before, 320);
      assert.equal(await open(), 1, "one stream carried them all, still open");
      await waitFor(async () => (await open()) === 0, STREAM_LINGER_MS * 10, "the stream is half-closed once idle");
      // A later burst opens another.
      const results = await Promise.all([db.query("SELECT 1 AS one"), db.query("SELECT 2 AS two")]);
      assert.deepEqual(
        results.map((r) => r.rows[0]),
        [{ one: 1 }, { two: 2 }],
      );
    } finally {
      client.close();
    }
  });

  it("sends a turn's queries as one message however deep in promise reactions they are made, and a query awaited before the next as a message each", async () => {
    const client = t.client();
    try {
      const db = client.platform(platform);
      const messages = () => callsOf(t, platform, "QueryStream");
      // The earlier test's streams are counted once ended.
      await waitFor(async () => (await metricValue(t, `db_gateway_open_streams{method="QueryStream"}`)) === 0, 5_000, "no stream open");
      const before = { messages: await messages(), statements: await statements(t, platform, "QueryStream") };
      // Nothing is in flight: the turn's queries leave at the end of its callback, once its promise reactions have run.
      const later = async () => {
        for (let i = 0; i < 5; i++) await Promise.resolve();
        return db.query("SELECT 2 AS b");
      };
      await Promise.all([db.query("SELECT 1 AS a"), later()]);
      for (let i = 0; i < 3; i++) assert.deepEqual((await db.query("SELECT $1::int AS n", [i])).rows, [{ n: i }]);
      assert.equal((await statements(t, platform, "QueryStream")) - before.statements, 5);
      // Parts of a stream still open: one for the two callers' turn, one for each query awaited before the next.
      assert.equal((await messages()) - before.messages, 4);
    } finally {
      client.close();
    }
  });

  it("fails a query at its timeout while those beside it succeed", async () => {
    const client = t.client();
    try {
      const db = client.platform(platform);
      // Queries of one timeout share a message, and may be pipelined behind one another: the quick one has none.
      const [slow, quick] = await Promise.allSettled([db.query("SELECT pg_sleep(5)", [], { timeoutMs: 300 }), db.query("SELECT 'quick' AS q")]);
      assert.equal(slow.status, "rejected");
      assert.equal(((slow as PromiseRejectedResult).reason as GatewayError).code, Code.DeadlineExceeded);
      assert.deepEqual((quick as PromiseFulfilledResult<{ rows: unknown[] }>).value.rows, [{ q: "quick" }]);
    } finally {
      client.close();
    }
  });

  it("sends QueryMany calls to a gateway without QueryStream, with the stream's queries", async () => {
    const old = await gatewayBeforeQueryStream(t);
    const client = createClient({ ...t.clientOptions(t.keys[platform]!), url: old.url });
    try {
      const db = client.platform(platform);
      const before = {
        one: await statements(t, platform, "Query"),
        many: await statements(t, platform, "QueryMany"),
        stream: await statements(t, platform, "QueryStream"),
      };
      // A lone query: the stream it opened is refused, and it goes as a Query call.
      assert.equal((await db.query<{ n: number }>("SELECT 42 AS n")).rows[0]!.n, 42);
      assert.equal((await statements(t, platform, "Query")) - before.one, 1, "the lone query ran, once, as Query");
      // The client remembers: the next turns go as QueryMany straight away.
      const first = await Promise.all(Array.from({ length: 5 }, (_, i) => db.query<{ n: number }>("SELECT $1::int AS n", [i])));
      assert.deepEqual(
        first.map((r) => r.rows[0]!.n),
        [0, 1, 2, 3, 4],
      );
      const second = await Promise.all(Array.from({ length: 3 }, (_, i) => db.query<{ n: number }>("SELECT $1::int + 10 AS n", [i])));
      assert.deepEqual(
        second.map((r) => r.rows[0]!.n),
        [10, 11, 12],
      );
      assert.equal((await statements(t, platform, "QueryMany")) - before.many, 8, "every query ran, once, in QueryMany");
      assert.equal((await statements(t, platform, "QueryStream")) - before.stream, 0);
      assert.equal(old.streamsRefused(), 1, "QueryStream was tried once");
    } finally {
      client.close();
      old.close();
    }
  });

  it("sends a QueryMany call per turn with queryStream: false", async () => {
    const client = createClient({ ...t.clientOptions(t.keys[platform]!), queryStream: false });
    try {
      const before = { many: await statements(t, platform, "QueryMany") };
      await Promise.all(Array.from({ length: 5 }, () => client.platform(platform).query("SELECT 1")));
      assert.equal((await statements(t, platform, "QueryMany")) - before.many, 5, "all five in QueryMany");
    } finally {
      client.close();
    }
  });
});

/**
 * A gateway from before QueryStream, played by a grpc-js proxy over the same
 * mTLS that passes Query and QueryMany calls, as bytes, to the test's gateway
 * and answers QueryStream UNIMPLEMENTED.
 */
async function gatewayBeforeQueryStream(t: TestGateway): Promise<{ url: string; streamsRefused(): number; close(): void }> {
  const pki = testPki();
  const upstream = new grpc.Client(
    `localhost:${t.port}`,
    grpc.credentials.createSsl(Buffer.from(pki.ca.cert), Buffer.from(pki.clientFor(t.platforms[0]!).key), Buffer.from(pki.clientFor(t.platforms[0]!).cert)),
  );
  const server = new grpc.Server();
  const bytes = (b: Buffer) => b;
  const methods = ["Query", "QueryMany"].map((name) => ({ name, path: `/dbgateway.v1.QueryService/${name}` }));
  const definition = Object.fromEntries(
    methods.map(({ name, path }) => [
      name,
      {
        path,
        requestStream: false,
        responseStream: false,
        requestSerialize: bytes,
        requestDeserialize: bytes,
        responseSerialize: bytes,
        responseDeserialize: bytes,
      },
    ]),
  );
  const handlers = Object.fromEntries(
    methods.map(({ name, path }) => [
      name,
      (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        upstream.makeUnaryRequest(path, bytes, bytes, call.request, call.metadata, { deadline: call.getDeadline() }, callback),
    ]),
  );
  // QueryStream answered UNIMPLEMENTED, as grpc-js answers a method it does not know, and counted.
  let refused = 0;
  const stream = {
    path: "/dbgateway.v1.QueryService/QueryStream",
    requestStream: true,
    responseStream: true,
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
  };
  const refuse = (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    refused++;
    call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: "The server does not implement the method /dbgateway.v1.QueryService/QueryStream" });
  };
  server.addService(
    { ...definition, QueryStream: stream } as grpc.ServiceDefinition,
    { ...handlers, QueryStream: refuse } as grpc.UntypedServiceImplementation,
  );
  const credentials = grpc.ServerCredentials.createSsl(
    Buffer.from(pki.ca.cert),
    [{ private_key: Buffer.from(pki.server.key), cert_chain: Buffer.from(pki.server.cert) }],
    true,
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", credentials, (err, port) => (err ? reject(err) : resolve(port))));
  return {
    url: `https://localhost:${port}`,
    streamsRefused: () => refused,
    close: () => {
      server.forceShutdown();
      upstream.close();
    },
  };
}
