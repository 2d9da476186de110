// Canary: the grpc-js internals that server/src/grpc/grpc-js-internals.ts relies on (response compression, the listening servers), checked against the installed package.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Server as TlsServer } from "node:tls";
import { gzipSync } from "node:zlib";
import * as grpc from "@grpc/grpc-js";
import { testPki } from "../../test/helpers/pki.js";
import {
  CompressedMessage,
  exposeRequestEncodings,
  frameCompressedMessages,
  listeningServers,
  REQUEST_ACCEPT_ENCODING_KEY,
  REQUEST_ENCODING_KEY,
} from "../src/grpc/grpc-js-internals.js";

describe("grpc-js internals", () => {
  it("the request's encodings reach the handler, and a CompressedMessage leaves flagged as compressed", async () => {
    const pki = testPki();
    const server = new grpc.Server();
    exposeRequestEncodings(server);
    frameCompressedMessages();
    const seen: unknown[] = [];
    const bytes = (b: Buffer) => b;
    server.addService(
      {
        echo: {
          path: "/test.Echo/Echo",
          requestStream: false,
          responseStream: false,
          requestSerialize: bytes,
          requestDeserialize: bytes,
          responseSerialize: (m: CompressedMessage | Buffer) => (m instanceof CompressedMessage ? m.bytes : m),
          responseDeserialize: bytes,
        },
      },
      {
        echo: (call: grpc.ServerUnaryCall<Buffer, CompressedMessage>, callback: grpc.sendUnaryData<CompressedMessage>) => {
          seen.push(call.metadata.get(REQUEST_ENCODING_KEY)[0], call.metadata.get(REQUEST_ACCEPT_ENCODING_KEY)[0]);
          const headers = new grpc.Metadata();
          headers.set("grpc-encoding", "gzip");
          call.sendMetadata(headers);
          callback(null, new CompressedMessage(gzipSync(Buffer.concat([call.request, call.request]))));
        },
      },
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(
        "127.0.0.1:0",
        grpc.ServerCredentials.createSsl(
          Buffer.from(pki.ca.cert),
          [{ cert_chain: Buffer.from(pki.server.cert), private_key: Buffer.from(pki.server.key) }],
          true,
        ),
        (err, p) => (err ? reject(err) : resolve(p)),
      ),
    );
    const client = new grpc.Client(
      `localhost:${port}`,
      grpc.credentials.createSsl(Buffer.from(pki.ca.cert), Buffer.from(pki.client.key), Buffer.from(pki.client.cert)),
      { "grpc.default_compression_algorithm": grpc.compressionAlgorithms.gzip },
    );
    try {
      const answer = await new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest("/test.Echo/Echo", bytes, bytes, Buffer.from("abc"), (err, value) => (err ? reject(err) : resolve(value!))),
      );
      // Decompressed by the grpc-js client: the frame said compressed, and the headers gzip.
      assert.equal(answer.toString(), "abcabc");
      assert.equal(seen[0], "gzip");
      assert.match(String(seen[1]), /\bgzip\b/);
    } finally {
      client.close();
      server.forceShutdown();
    }
  });

  it("the node servers behind a bound port are found: TLS servers listening on it", async () => {
    const pki = testPki();
    const server = new grpc.Server();
    try {
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync(
          "127.0.0.1:0",
          grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(pki.server.cert), private_key: Buffer.from(pki.server.key) }]),
          (err, p) => (err ? reject(err) : resolve(p)),
        ),
      );
      const servers = listeningServers(server);
      assert.equal(servers.length, 1);
      assert.ok(servers[0] instanceof TlsServer);
      assert.equal((servers[0].address() as { port: number }).port, port);
    } finally {
      server.forceShutdown();
    }
  });
});
