/**
 * Where a lone query's time goes (concurrency 1): the same point select on
 * the same table, measured in alternating 1.5 s windows (after one warm-up
 * round), directly with pg; through a bare grpc-js server
 * (`scripts/bare-grpc-server.ts`: the least a gRPC server in front of
 * PostgreSQL can do) answering from memory, running the statement alone, and
 * running it with the gateway's reset behind it, from the SDK (Query calls)
 * and from a plain grpc-js client; and through the gateway; then the same
 * over a QueryStream, as the SDK sends queries by default. Prints each one's median and
 * 99th percentile.
 *
 *   [PG_URL=postgres://postgres@127.0.0.1:5432/postgres] [ROUNDS=5] npx tsx scripts/latency-floor.ts
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { createClient } from "../client-sdk/src/index.js";
import { QueryRequestSchema, QueryResponseSchema, type QueryRequest, type QueryResponse } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { dropOwnerRole, dropPlatformDatabases } from "../test/helpers/gateway.js";
import { testPki } from "../test/helpers/pki.js";
import { startBareServer } from "./measuring.js";
import { createWorkloadTables } from "./workload.js";

const url = process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const rounds = Number(process.env.ROUNDS ?? 5);
const SQL = "SELECT id, note FROM items WHERE id = $1";
const randomId = () => 1 + Math.floor(Math.random() * 100_000);

const gw = await startGatewayProcess({ databaseUrl: url });
const servers: { close: () => void }[] = [];
try {
  await gw.adminClient().admin().createTenant(gw.platform, "");
  await createWorkloadTables(gw.client().platform(gw.platform));
  const databaseUrl = new URL(url);
  databaseUrl.pathname = `/${gw.platform}_main`;
  const direct = new pg.Client(databaseUrl.href);
  await direct.connect();
  const pki = testPki();
  const bare = async (mode: "reset" | "statement" | "memory") => {
    const server = await startBareServer(databaseUrl.href, mode);
    servers.push(server);
    return server.port;
  };
  // Query calls (no coalescing), and the SDK's default: its queries over a QueryStream.
  const sdk = (target: string) => createClient({ ...gw.clientOptions(gw.platformKey), url: target, coalesce: false }).platform(gw.platform);
  const streamed = (target: string) => createClient({ ...gw.clientOptions(gw.platformKey), url: target }).platform(gw.platform);
  const [memory, statement, reset] = [await bare("memory"), await bare("statement"), await bare("reset")];
  const grpcClient = new grpc.Client(
    `localhost:${reset}`,
    grpc.credentials.createSsl(Buffer.from(pki.ca.cert), Buffer.from(pki.client.key), Buffer.from(pki.client.cert)),
  );
  const grpcQuery = () =>
    new Promise<QueryResponse>((resolve, reject) =>
      grpcClient.makeUnaryRequest<QueryRequest, QueryResponse>(
        "/dbgateway.v1.QueryService/Query",
        (m) => Buffer.from(toBinary(QueryRequestSchema, m)),
        (bytes) => fromBinary(QueryResponseSchema, bytes),
        create(QueryRequestSchema, { platform: gw.platform, sql: SQL, params: [{ kind: { case: "int64Value", value: BigInt(randomId()) } }] }),
        (err, value) => (err ? reject(err) : resolve(value!)),
      ),
    );
  const viaMemory = sdk(`https://localhost:${memory}`);
  const viaStatement = sdk(`https://localhost:${statement}`);
  const viaReset = sdk(`https://localhost:${reset}`);
  const viaGateway = sdk(gw.url);
  const [memoryStream, resetStream, gatewayStream] = [streamed(`https://localhost:${memory}`), streamed(`https://localhost:${reset}`), streamed(gw.url)];
  const setups: Record<string, () => Promise<unknown>> = {
    "pg directly": () => direct.query({ text: SQL, values: [randomId()] }),
    "SDK -> bare grpc-js server answering from memory": () => viaMemory.query(SQL, [randomId()]),
    "SDK -> bare server, the statement alone": () => viaStatement.query(SQL, [randomId()]),
    "SDK -> bare server, the statement and DISCARD ALL": () => viaReset.query(SQL, [randomId()]),
    "grpc-js client -> bare server, the statement and DISCARD ALL": grpcQuery,
    "SDK -> gateway": () => viaGateway.query(SQL, [randomId()]),
    "SDK over QueryStream -> bare server answering from memory": () => memoryStream.query(SQL, [randomId()]),
    "SDK over QueryStream -> bare server, the statement and DISCARD ALL": () => resetStream.query(SQL, [randomId()]),
    "SDK over QueryStream -> gateway (the SDK's default)": () => gatewayStream.query(SQL, [randomId()]),
  };
  const latencies: Record<string, number[]> = {};
  for (let round = 0; round <= rounds; round++) {
    for (const [name, run] of Object.entries(setups)) {
      const end = Date.now() + 1_500;
      const times: number[] = [];
      while (Date.now() < end) {
        const started = performance.now();
        await run();
        times.push(performance.now() - started);
      }
      if (round > 0) (latencies[name] ??= []).push(...times);
    }
  }
  for (const [name, times] of Object.entries(latencies)) {
    times.sort((a, b) => a - b);
    console.log(
      `${name}: p50 ${times[times.length >> 1]!.toFixed(3)} ms, p99 ${times[Math.floor(times.length * 0.99)]!.toFixed(3)} ms (${times.length} queries)`,
    );
  }
  grpcClient.close();
  await direct.end();
} finally {
  servers.forEach((s) => s.close());
  await gw.close();
  await dropPlatformDatabases([gw.platform], url);
  await dropOwnerRole(url);
}
