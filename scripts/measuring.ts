/**
 * What the benchmark and profiling scripts read about the processes they
 * measure (CPU time from /proc, a gateway's connection count from /metrics)
 * and the bare gRPC server they compare the gateway with.
 */
import { fork } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import type { GatewayProcess } from "../test/helpers/gateway-process.js";
import { testPki } from "../test/helpers/pki.js";

/** A process's or thread's name and its user and system CPU time so far, in microseconds, from its /proc stat file (fields 14 and 15, in ticks of 10 ms). */
export async function cpuOf(statFile: string): Promise<{ name: string; user: number; system: number }> {
  const stat = await readFile(statFile, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), user: Number(fields[11]) * 10_000, system: Number(fields[12]) * 10_000 };
}

/** Every `postgres` process's CPU time (user + system) so far, in microseconds, by pid. */
export async function postgresCpu(): Promise<Map<string, number>> {
  const byPid = new Map<string, number>();
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const { name, user, system } = await cpuOf(`/proc/${pid}/stat`);
      if (name === "postgres") byPid.set(pid, user + system);
    } catch {
      // gone
    }
  }
  return byPid;
}

/** PostgreSQL connections a gateway has opened so far (its db_gateway_connections_opened_total). */
export async function connectionsOpened(gateway: GatewayProcess): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gateway.metricsPort}/metrics`)).text();
  return Number(/^db_gateway_connections_opened_total (\d+)/m.exec(text)?.[1] ?? NaN);
}

/** scripts/bare-grpc-server.ts in `mode` on `databaseUrl`, with the test PKI the gateway processes use. */
export async function startBareServer(databaseUrl: string, mode: "reset" | "statement" | "memory"): Promise<{ port: number; close: () => void }> {
  const pki = testPki();
  const args = [JSON.stringify({ key: pki.server.key, cert: pki.server.cert, ca: pki.ca.cert, url: databaseUrl, mode })];
  const server = fork(new URL("./bare-grpc-server.ts", import.meta.url).pathname, args, { execArgv: ["--import", "tsx"] });
  const { port } = await new Promise<{ port: number }>((resolve, reject) => {
    server.once("message", (m) => resolve(m as { port: number }));
    server.once("exit", (code) => reject(new Error(`bare-grpc-server.ts exited (${code})`)));
  });
  return { port, close: () => server.kill() };
}
