/**
 * The SDK's own CPU per operation against one gateway process: point selects
 * from 64 concurrent callers for 6 s (`point`), or one stream of 1,000,000
 * rows (`stream` row by row, `batches` a message's rows at a time), or write
 * transactions with `transaction()` (`tx`: an update and an insert), after a warm-up round. Prints operations per second, this
 * process's CPU per operation (the SDK: encoding, the transport, decoding
 * rows into objects) and the gateway's (from /proc). With PROF=1 it writes a
 * V8 CPU profile of this process to /tmp/prof, with GATEWAY_PROF=1 one of the
 * gateway's (node --cpu-prof, both rounds); with COALESCE=0 the SDK sends
 * every query as its own call.
 *
 *   PG_URL=postgres://postgres@127.0.0.1:5432/postgres npx tsx scripts/profile-sdk.ts [point|stream|batches|tx] [concurrency]
 */
import { mkdir, writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { dropOwnerRole, dropPlatformDatabases } from "../test/helpers/gateway.js";
import { createClient } from "../client-sdk/src/index.js";
import { createWorkloadTables, workloadOperation } from "./workload.js";

const url = process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const mode = process.argv[2] ?? "point";
const concurrency = Number(process.argv[3] ?? 64);
const gateway = await startGatewayProcess({ databaseUrl: url, nodeArgs: process.env.GATEWAY_PROF ? ["--cpu-prof", "--cpu-prof-dir=/tmp/prof"] : [] });
try {
  await gateway.adminClient().admin().createTenant(gateway.platform, "");
  const db = createClient({ ...gateway.clientOptions(gateway.platformKey), coalesce: process.env.COALESCE !== "0" }).platform(gateway.platform);
  await createWorkloadTables(db);
  const round = async (label: string) => {
    const client0 = process.cpuUsage();
    const gateway0 = await gateway.cpuMicros();
    const started = Date.now();
    let n = 0;
    if (mode === "point" || mode === "tx") {
      const end = Date.now() + 6_000;
      const op = workloadOperation(db, mode);
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (Date.now() < end) {
            await op();
            n++;
          }
        }),
      );
    } else {
      const stream = db.stream("SELECT g AS n, md5(g::text) AS hash FROM generate_series(1, $1::int) g", [1_000_000]);
      if (mode === "batches") for await (const rows of stream.batches()) n += rows.length;
      else for await (const row of stream) n += row ? 1 : 0;
    }
    const client = process.cpuUsage(client0);
    const gatewayMicros = (await gateway.cpuMicros()) - gateway0;
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `${label}: ${n} ${mode === "point" ? "queries" : mode === "tx" ? "transactions" : "rows"}, ${(n / seconds).toFixed(0)}/s, SDK CPU ${((client.user + client.system) / n).toFixed(2)} µs, gateway CPU ${(gatewayMicros / n).toFixed(2)} µs each`,
    );
  };
  await round("warm-up");
  const session = new Session();
  if (process.env.PROF) {
    session.connect();
    await session.post("Profiler.enable");
    await session.post("Profiler.start");
  }
  await round("measured");
  if (process.env.PROF) {
    const { profile } = await session.post("Profiler.stop");
    await mkdir("/tmp/prof", { recursive: true });
    await writeFile(`/tmp/prof/sdk-${mode}.cpuprofile`, JSON.stringify(profile));
  }
} finally {
  await gateway.close();
  await dropPlatformDatabases([gateway.platform], url);
  await dropOwnerRole(url);
}
