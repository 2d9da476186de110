/**
 * What the benchmark and profiling scripts read about the processes they
 * measure (CPU time from /proc, a gateway's connection count from /metrics)
 * and the bare gRPC server they compare the gateway with; CPU cores used
 * between two samples, by the gateway, PostgreSQL and the rest.
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

/** CPU time so far, in microseconds: the gateway's, PostgreSQL's (NaN on PG_URL's server), this process's, and the whole machine's when not idle. */
export interface CpuSample {
  at: number;
  gateway: number;
  postgres: number;
  benchmark: number;
  machineBusy: number;
}

/** CPU seconds a second between two samples; `other`: the rest of the machine (other programs, the kernel's own threads). */
export interface Cores {
  gateway: number;
  postgres: number;
  benchmark: number;
  other: number;
  machineBusy: number;
}

export async function cpuSample(gw: Pick<GatewayProcess, "cpuMicros">, postmaster: number | undefined): Promise<CpuSample> {
  const [gateway, postgres, machineBusy] = await Promise.all([gw.cpuMicros(), postgresMicros(postmaster), machineBusyMicros()]);
  const { user, system } = process.cpuUsage();
  return { at: performance.now(), gateway, postgres, benchmark: user + system, machineBusy };
}

export function coresBetween(a: CpuSample, b: CpuSample): Cores {
  const micros = (b.at - a.at) * 1000;
  const [gateway, postgres, benchmark, machineBusy] = [
    b.gateway - a.gateway,
    b.postgres - a.postgres,
    b.benchmark - a.benchmark,
    b.machineBusy - a.machineBusy,
  ];
  return {
    gateway: round(gateway / micros),
    postgres: round(postgres / micros),
    benchmark: round(benchmark / micros),
    other: round((machineBusy - gateway - (Number.isNaN(postgres) ? 0 : postgres) - benchmark) / micros),
    machineBusy: round(machineBusy / micros),
  };
}

/** The embedded PostgreSQL's postmaster: the process started with its data directory. */
export async function postmasterOf(dataDir: string): Promise<number | undefined> {
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const args = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (args.split("\0").includes(dataDir)) return Number(pid);
  }
  return undefined;
}

/**
 * The CPU time of the postmaster and all its children so far: their own (the
 * living ones, from /proc) and that of those ended and reaped (the
 * postmaster's cutime and cstime), so the backends of the migrations' short
 * connections count too.
 */
async function postgresMicros(postmaster: number | undefined): Promise<number> {
  if (postmaster === undefined) return NaN;
  const fields = async (pid: string) => {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // After the ") ": field 3 (state) is [0], ppid [1], utime [11], stime [12], cutime [13], cstime [14].
    return stat
      .slice(stat.lastIndexOf(")") + 2)
      .split(" ")
      .map(Number);
  };
  const own = await fields(String(postmaster));
  let ticks = own[11]! + own[12]! + own[13]! + own[14]!;
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const child = await fields(pid).catch(() => undefined);
    if (child?.[1] === postmaster) ticks += child[11]! + child[12]!;
  }
  return ticks * 10_000;
}

/** The machine's non-idle CPU time so far (the cpu line of /proc/stat less idle and iowait), in microseconds. */
async function machineBusyMicros(): Promise<number> {
  const ticks = (await readFile("/proc/stat", "utf8")).split("\n")[0]!.split(/ +/).slice(1, 9).map(Number);
  return (ticks.reduce((a, b) => a + b, 0) - ticks[3]! - ticks[4]!) * 10_000;
}

/** Two decimals. */
export function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/** Calls per second, and the client's and the gateway's CPU per call, of `calls` calls made by `concurrency` callers. */
export interface CallsMeasured {
  callsPerSecond: number;
  clientCpuMicros: number;
  gatewayCpuMicros: number;
}

/** Makes `warmUp` calls (JIT, connections, pools), then `calls` calls by `concurrency` callers, and measures them (`CallsMeasured`). */
export async function measureCalls(
  gateway: Pick<GatewayProcess, "cpuMicros">,
  call: () => Promise<unknown>,
  { calls, concurrency, warmUp }: { calls: number; concurrency: number; warmUp: number },
): Promise<CallsMeasured> {
  for (let i = 0; i < warmUp; i++) await call();
  const cpu = process.cpuUsage();
  const gatewayCpu = await gateway.cpuMicros();
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < calls) await call();
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    callsPerSecond: calls / seconds,
    clientCpuMicros: (used.user + used.system) / calls,
    gatewayCpuMicros: ((await gateway.cpuMicros()) - gatewayCpu) / calls,
  };
}
