/**
 * The least a gRPC server in front of PostgreSQL can do, for
 * `scripts/latency-floor.ts`: grpc-js over the same mTLS as the gateway,
 * QueryService/Query and QueryStream only, on one pg connection, with no authentication,
 * routing, pool, deadline, telemetry or error details. MODE (the one
 * argument's `mode`) says what it does per call: "reset" runs the statement
 * with `DISCARD ALL` pipelined behind it, as the gateway does; "statement"
 * the statement alone; "memory" answers with the first call's result again
 * without asking PostgreSQL. Started by latency-floor.ts with fork(); tells
 * its port with process.send.
 */
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { toPgParams } from "../server/src/execution/params.js";
import { encodeResultSet, type TextRow } from "../wire/src/result-set.js";
import { encodeQueryResponse } from "../wire/src/response-encoding.js";
import { GatewayError } from "../server/src/errors.js";
import { encodeAnswers } from "../server/src/execution/response-encoding.js";
import type { Outcome } from "../server/src/execution/pipeline.js";
import { QueryRequestSchema, QueryStreamRequestSchema, type QueryRequest, type QueryStreamRequest } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { RESET_STATEMENT, TEXT_PASSTHROUGH } from "../server/src/pool/pool-manager.js";

const { key, cert, ca, url, mode } = JSON.parse(process.argv[2]!) as {
  key: string;
  cert: string;
  ca: string;
  url: string;
  mode: "reset" | "statement" | "memory";
};
const client = new pg.Client({ connectionString: url, types: TEXT_PASSTHROUGH });
await client.connect();
const piped = client as pg.Client & { pipeline: boolean; connection: { stream: import("node:net").Socket } };
let remembered: Uint8Array | undefined;

/** One statement's ResultSet, encoded (in mode "memory", the first one's again). */
function run(request: Pick<QueryRequest, "sql" | "params">): Promise<Uint8Array> {
  if (mode === "memory" && remembered !== undefined) return Promise.resolve(remembered);
  const started = process.hrtime.bigint();
  piped.pipeline = true;
  piped.connection.stream.cork();
  const answer = client.query<TextRow>({
    text: request.sql,
    values: toPgParams(request.params),
    rowMode: "array",
    queryMode: "extended",
  } as pg.QueryArrayConfig);
  const reset = mode === "reset" ? client.query(RESET_STATEMENT) : undefined;
  piped.connection.stream.uncork();
  return Promise.all([answer, reset]).then(([result]) => {
    piped.pipeline = false;
    return (remembered = encodeResultSet(result, process.hrtime.bigint() - started));
  });
}

const query: grpc.handleUnaryCall<QueryRequest, Buffer> = (call, callback) => {
  run(call.request).then(
    (result) => callback(null, encodeQueryResponse(result)),
    (err: unknown) => callback({ code: grpc.status.INTERNAL, details: String(err) }),
  );
};

/** QueryStream: a message's queries run one after the other, each answered in a response of its own once done. */
const queryStream: grpc.handleBidiStreamingCall<QueryStreamRequest, Buffer> = (call) => {
  let numbered = 0;
  let running = Promise.resolve();
  call.on("data", (request: QueryStreamRequest) => {
    for (const q of request.queries) {
      const number = numbered++;
      running = running.then(() =>
        run(q)
          .then(
            (result): Outcome => ({ result }),
            (err: unknown): Outcome => ({ error: new GatewayError("INTERNAL", String(err)) }),
          )
          .then((outcome) => void call.write(encodeAnswers([number], [outcome]).bytes)),
      );
    }
  });
  call.on("end", () => void running.then(() => call.end()));
};

const server = new grpc.Server();
const definition: grpc.MethodDefinition<QueryRequest, Buffer> = {
  path: "/dbgateway.v1.QueryService/Query",
  requestStream: false,
  responseStream: false,
  requestSerialize: () => Buffer.alloc(0),
  requestDeserialize: (bytes) => fromBinary(QueryRequestSchema, bytes),
  responseSerialize: (bytes) => bytes,
  responseDeserialize: (bytes) => bytes,
};
const streamDefinition: grpc.MethodDefinition<QueryStreamRequest, Buffer> = {
  path: "/dbgateway.v1.QueryService/QueryStream",
  requestStream: true,
  responseStream: true,
  requestSerialize: () => Buffer.alloc(0),
  requestDeserialize: (bytes) => fromBinary(QueryStreamRequestSchema, bytes),
  responseSerialize: (bytes) => bytes,
  responseDeserialize: (bytes) => bytes,
};
server.addService({ Query: definition, QueryStream: streamDefinition } as grpc.ServiceDefinition, { Query: query, QueryStream: queryStream });
const credentials = grpc.ServerCredentials.createSsl(Buffer.from(ca), [{ cert_chain: Buffer.from(cert), private_key: Buffer.from(key) }], true);
const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", credentials, (err, bound) => (err ? reject(err) : resolve(bound))));
process.send!({ port });
