// A redis-server of the test's own, on a free port, without persistence: started, killed and started again on the same port.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";

/** A Redis server started for a test. */
export interface OwnRedis {
  readonly port: number;
  /** redis://127.0.0.1:{port} */
  readonly url: string;
  /** Kills it (SIGKILL: as a crash, no goodbye to its clients); its data is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same port, empty. */
  restart(): Promise<void>;
  /** Stops it answering without closing a connection (SIGSTOP), until `resume` (SIGCONT): a hung server. */
  pause(): void;
  resume(): void;
  /** Stops it for good. */
  stop(): Promise<void>;
}

/** Starts `redis-server` (REDIS_SERVER, else the PATH's) on a free port of 127.0.0.1, with no snapshot or append-only file. */
export async function startOwnRedis(): Promise<OwnRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async () => {
    const started = spawn(process.env.REDIS_SERVER ?? "redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = started;
    let output = "";
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        output += String(chunk);
        if (output.includes("Ready to accept connections")) resolve();
      };
      started.stdout!.on("data", onData);
      started.stderr!.on("data", onData);
      started.once("error", reject);
      started.once("exit", (code) => reject(new Error(`redis-server exited (${code}) before it was ready:\n${output}`)));
    });
    started.stdout!.resume();
    started.stderr!.resume();
  };
  const end = async (signal: NodeJS.Signals) => {
    const running = child;
    child = undefined;
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return;
    const exited = new Promise((resolve) => running.once("exit", resolve));
    running.kill(signal);
    await exited;
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill: () => end("SIGKILL"),
    restart: start,
    pause: () => child?.kill("SIGSTOP"),
    resume: () => child?.kill("SIGCONT"),
    // A paused server would not act on SIGTERM: continued first.
    stop: () => (child?.kill("SIGCONT"), end("SIGTERM")),
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
  await new Promise((resolve) => server.close(resolve));
  return port;
}
