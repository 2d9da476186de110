// How `npm run bench` measures a setup in a scenario and records it as a row of its table: throughput, latencies, errors, the gateway's CPU and memory, PostgreSQL's connections.
import type pg from "pg";
import type { GatewayProcess } from "../../test/helpers/gateway-process.js";
import { connectionsOpened } from "../measuring.js";

/** One row of the table and of the JSON's `results`: a setup in a scenario. */
export interface Result {
  scenario: string;
  setup: string;
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  vsDirect?: number;
  gatewayCpuMicrosPerOp?: number;
  gatewayPeakRssMb?: number;
  peakPgConnections?: number;
  errors: Record<string, number>;
  note?: string;
}

export interface MeasureOptions {
  /** The gateway process the setup goes through: its CPU time and peak RSS are recorded. */
  gateway?: GatewayProcess;
  /** Samples PostgreSQL's connections to the tenant databases, and counts those the gateway opened. */
  sampleConnections?: boolean;
}

/** Runs `op` from `concurrency` workers for the run's duration and records one row. */
export type Measure = (scenario: string, setup: string, concurrency: number, op: () => Promise<unknown>, options?: MeasureOptions) => Promise<void>;

/** Reads whole streams of the run's stream rows, one after another, and records rows per second. */
export type MeasureStream = (scenario: string, setup: string, read: () => Promise<number>, options?: { gateway?: GatewayProcess }) => Promise<void>;

interface Peaks {
  rssMb?: number;
  rssStartMb?: number;
  connections?: number;
}

/**
 * The measurements of one run, recorded in `results` in the order they ran.
 * `admin` (a superuser connection) counts the connections to the platform's
 * tenant databases.
 */
export function measuring(run: { durationMs: number; streamRows: number; admin: pg.Client; platform: string }): {
  results: Result[];
  measure: Measure;
  measureStream: MeasureStream;
} {
  const { durationMs, streamRows, admin, platform } = run;
  const results: Result[] = [];

  const measure: Measure = async (scenario, setup, concurrency, op, options = {}) => {
    // Warm-up: connections opened, code compiled.
    const warm = Date.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (Date.now() - warm < Math.min(1_000, durationMs / 4)) await op().catch(() => undefined);
      }),
    );
    const sampler = startSampler(options);
    const cpu = options.gateway ? await options.gateway.cpuMicros() : 0;
    const opened = options.gateway && options.sampleConnections ? await connectionsOpened(options.gateway) : 0;
    const latencies: number[] = [];
    const errors: Record<string, number> = {};
    const started = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() - started < durationMs) {
          const t0 = performance.now();
          try {
            await op();
            latencies.push(performance.now() - t0);
          } catch (err) {
            const key = (err as { reason?: string; code?: string }).reason ?? (err as { code?: string }).code ?? (err as Error).message.slice(0, 40);
            errors[key] = (errors[key] ?? 0) + 1;
          }
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const gatewayCpu = options.gateway ? (await options.gateway.cpuMicros()) - cpu : 0;
    const peaks = await sampler.stop();
    record(scenario, setup, latencies, seconds, errors, options.gateway ? gatewayCpu : undefined, peaks);
    if (options.gateway && options.sampleConnections)
      results.at(-1)!.note = `${(await connectionsOpened(options.gateway)) - opened} connections opened while measured`;
  };

  // Streams are read until the duration has passed (at least one): a single stream is too short to rise above the machine's noise.
  const measureStream: MeasureStream = async (scenario, setup, read, options = {}) => {
    const sampler = startSampler({ gateway: options.gateway, clientRss: !options.gateway });
    const cpu = options.gateway ? await options.gateway.cpuMicros() : 0;
    const started = performance.now();
    let rows = 0;
    let streams = 0;
    do {
      const read1 = await read();
      if (read1 !== streamRows) throw new Error(`${setup}: read ${read1} rows of ${streamRows}`);
      rows += read1;
      streams++;
    } while (performance.now() - started < durationMs);
    const seconds = (performance.now() - started) / 1000;
    const gatewayCpu = options.gateway ? (await options.gateway.cpuMicros()) - cpu : 0;
    const peaks = await sampler.stop();
    results.push({
      scenario,
      setup,
      opsPerSecond: Math.round(rows / seconds),
      p50Ms: NaN,
      p99Ms: NaN,
      gatewayCpuMicrosPerOp: options.gateway ? round(gatewayCpu / rows, 2) : undefined,
      gatewayPeakRssMb: peaks.rssMb,
      errors: {},
      note: `${streams} streams; ${options.gateway ? "gateway" : "bench process"} RSS ${peaks.rssStartMb} → peak ${peaks.rssMb} MB`,
    });
    console.log(`${scenario} | ${setup}: ${Math.round(rows / seconds)} rows/s`);
  };

  function record(
    scenario: string,
    setup: string,
    latencies: number[],
    seconds: number,
    errors: Record<string, number>,
    gatewayCpu: number | undefined,
    peaks: Peaks,
  ): void {
    latencies.sort((a, b) => a - b);
    const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
    const opsPerSecond = latencies.length / seconds;
    const row: Result = {
      scenario,
      setup,
      opsPerSecond: Math.round(opsPerSecond),
      p50Ms: round(pct(50), 3),
      p99Ms: round(pct(99), 3),
      gatewayCpuMicrosPerOp: gatewayCpu === undefined ? undefined : Math.round(gatewayCpu / Math.max(1, latencies.length)),
      gatewayPeakRssMb: gatewayCpu === undefined ? undefined : peaks.rssMb,
      peakPgConnections: peaks.connections,
      errors,
    };
    results.push(row);
    console.log(
      `${scenario} | ${setup}: ${row.opsPerSecond} ops/s, p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms${Object.keys(errors).length ? `, errors ${JSON.stringify(errors)}` : ""}`,
    );
  }

  /** Samples, every 50 ms, the gateway's RSS (or this process's) and PostgreSQL's connections to the tenant databases. */
  function startSampler(options: { gateway?: GatewayProcess; clientRss?: boolean; sampleConnections?: boolean }): { stop(): Promise<Peaks> } {
    const peaks: Peaks = {};
    let running = true;
    const rss = async () =>
      options.gateway ? (await options.gateway.rssBytes()) / 1048576 : options.clientRss ? process.memoryUsage.rss() / 1048576 : undefined;
    const loop = (async () => {
      const start = await rss();
      peaks.rssStartMb = start === undefined ? undefined : Math.round(start);
      while (running) {
        const r = await rss();
        if (r !== undefined) peaks.rssMb = Math.max(peaks.rssMb ?? 0, Math.round(r));
        if (options.sampleConnections) {
          // Client connections to the tenant databases only: not the other gateway's to the main database,
          // nor this sampler's, nor PostgreSQL's own autovacuum workers.
          const { rows } = await admin.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname ~ '^${platform}_t[0-9]+$'`,
          );
          peaks.connections = Math.max(peaks.connections ?? 0, rows[0]!.n);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    return {
      async stop() {
        running = false;
        await loop;
        return peaks;
      },
    };
  }

  return { results, measure, measureStream };
}

/** Sets each row's "vs A": its throughput as a ratio of the (A) row's in the same scenario. */
export function compareWithDirect(results: Result[]): void {
  for (const row of results) {
    const a = results.find((r) => r.scenario === row.scenario && r.setup.startsWith("A "));
    row.vsDirect = a === undefined || a.opsPerSecond === 0 ? undefined : round(row.opsPerSecond / a.opsPerSecond, 2);
  }
}

/** Prints `heading`, then the results as a Markdown table (BENCHMARKS.md's). */
export function printTable(results: Result[], heading: string): void {
  console.log(`\n${heading}\n`);
  console.log("| scenario | setup | ops/s | p50 ms | p99 ms | vs A | gateway CPU µs/op | gateway peak RSS MB | peak PG connections | errors |");
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const r of results) {
    const cell = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? "" : String(v));
    const errs =
      Object.entries(r.errors)
        .map(([k, v]) => `${k}: ${v}`)
        .join(", ") ||
      (r.note ?? "");
    console.log(
      `| ${r.scenario} | ${r.setup} | ${r.opsPerSecond} | ${cell(r.p50Ms)} | ${cell(r.p99Ms)} | ${cell(r.vsDirect)} | ${cell(r.gatewayCpuMicrosPerOp)} | ${cell(r.gatewayPeakRssMb)} | ${cell(r.peakPgConnections)} | ${errs} |`,
    );
  }
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
