/**
 * `npm run bench:sdk`: the client's CPU cost per call, by transport, against
 * one gateway running as its own process (real mTLS) on the embedded
 * PostgreSQL (or PG_URL). The same point query through:
 *
 *   - the SDK (`createClient`: Connect's typed client over the grpc-js transport,
 *     with coalescing off so that every query is its own call),
 *   - Connect's typed client over Connect's own gRPC transport (@connectrpc/connect-node),
 *   - a bare @grpc/grpc-js client with the same protobuf-es messages (the floor).
 *
 *   npm run bench:sdk -- --calls 20000 --concurrency 1,16 [--json out.json]
 *
 * Client CPU is this process's user+system time divided by calls; the
 * gateway's is read from /proc. Rounds alternate between transports so that
 * noise on this shared machine spreads over all of them.
 */
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient as createConnectClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { QueryRequestSchema, QueryResponseSchema, QueryService, type QueryRequest, type QueryResponse } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { postgresForRun } from "../test/helpers/run-postgres.js";
import { dropOwnerRole, dropPlatformDatabases } from "../test/helpers/gateway.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { testPki } from "../test/helpers/pki.js";
import { createClient } from "../client-sdk/src/index.js";
import { measureCalls, type CallsMeasured } from "./measuring.js";

const { values: args } = parseArgs({
  options: {
    calls: { type: "string", default: "20000" },
    concurrency: { type: "string", default: "1,16" },
    rounds: { type: "string", default: "2" },
    json: { type: "string" },
  },
});
const CALLS = Number(args.calls);
const ROUNDS = Number(args.rounds);
const CONCURRENCY = args.concurrency!.split(",").map(Number);

const postgres = await postgresForRun("db-gateway-bench-sdk-");
const gateway = await startGatewayProcess({ databaseUrl: postgres.url });
const results: { transport: string; concurrency: number; callsPerSecond: number; clientCpuMicros: number; gatewayCpuMicros: number }[] = [];
try {
  await gateway.adminClient().admin().createTenant(gateway.platform, "");
  const pki = testPki();
  const request: QueryRequest = create(QueryRequestSchema, {
    platform: gateway.platform,
    sql: "SELECT $1::int AS id, 'point query' AS label",
    params: [{ kind: { case: "int64Value", value: 42n } }],
  });

  // Without coalescing: this compares one call's cost by transport (coalescing is measured by `npm run bench`).
  const sdkClient = createClient({ ...gateway.clientOptions(gateway.platformKey), coalesce: false });
  const sdk = sdkClient.platform(gateway.platform);
  const session = new Http2SessionManager(gateway.url, { pingIntervalMs: 30_000 }, { ca: pki.ca.cert, ...pki.clientFor(gateway.platform) });
  const connect = createConnectClient(
    QueryService,
    createGrpcTransport({
      baseUrl: gateway.url,
      sessionManager: session,
      interceptors: [(next) => (req) => (req.header.set("x-api-key", gateway.platformKey), next(req))],
    }),
  );
  const Bare = grpc.makeGenericClientConstructor(
    {
      Query: {
        path: "/dbgateway.v1.QueryService/Query",
        requestStream: false,
        responseStream: false,
        requestSerialize: (m: QueryRequest) => Buffer.from(toBinary(QueryRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(QueryRequestSchema, b),
        responseSerialize: (m: QueryResponse) => Buffer.from(toBinary(QueryResponseSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(QueryResponseSchema, b),
      },
    },
    "QueryService",
  );
  const bare = new Bare(
    `localhost:${gateway.port}`,
    grpc.credentials.createSsl(Buffer.from(pki.ca.cert), Buffer.from(pki.clientFor(gateway.platform).key), Buffer.from(pki.clientFor(gateway.platform).cert)),
  );
  const metadata = new grpc.Metadata();
  metadata.set("x-api-key", gateway.platformKey);
  const bareQuery = (bare as unknown as { Query: (r: QueryRequest, m: grpc.Metadata, cb: (e: Error | null) => void) => void }).Query.bind(bare);

  const transports: [string, () => Promise<unknown>][] = [
    ["SDK query() (grpc-js transport)", () => sdk.query("SELECT $1::int AS id, 'point query' AS label", [42])],
    ["Connect client, Connect gRPC transport", () => connect.query(request)],
    ["bare grpc-js client (floor)", () => new Promise<void>((resolve, reject) => bareQuery(request, metadata, (e) => (e ? reject(e) : resolve())))],
  ];

  const measure = (call: () => Promise<unknown>, concurrency: number) => measureCalls(gateway, call, { calls: CALLS, concurrency, warmUp: 1_000 });

  for (const concurrency of CONCURRENCY) {
    const sums = new Map<string, CallsMeasured>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, call] of transports) {
        const r = await measure(call, concurrency);
        const s = sums.get(name) ?? { callsPerSecond: 0, clientCpuMicros: 0, gatewayCpuMicros: 0 };
        sums.set(name, {
          callsPerSecond: s.callsPerSecond + r.callsPerSecond,
          clientCpuMicros: s.clientCpuMicros + r.clientCpuMicros,
          gatewayCpuMicros: s.gatewayCpuMicros + r.gatewayCpuMicros,
        });
      }
    }
    for (const [name, s] of sums) {
      results.push({
        transport: name,
        concurrency,
        callsPerSecond: Math.round(s.callsPerSecond / ROUNDS),
        clientCpuMicros: Math.round(s.clientCpuMicros / ROUNDS),
        gatewayCpuMicros: Math.round(s.gatewayCpuMicros / ROUNDS),
      });
    }
  }
  session.abort();
  bare.close();
  sdkClient.close();

  console.log(`\n${CALLS} point queries per measurement, ${ROUNDS} rounds averaged\n`);
  console.log("| transport | concurrency | calls/s | client CPU µs/call | gateway CPU µs/call |");
  console.log("|---|---|---|---|---|");
  for (const r of results) console.log(`| ${r.transport} | ${r.concurrency} | ${r.callsPerSecond} | ${r.clientCpuMicros} | ${r.gatewayCpuMicros} |`);
  if (args.json) await writeFile(args.json, JSON.stringify({ calls: CALLS, rounds: ROUNDS, results }, null, 2));
} finally {
  await gateway.close();
  await dropPlatformDatabases([gateway.platform], postgres.url);
  await dropOwnerRole(postgres.url);
  await postgres.close();
}
