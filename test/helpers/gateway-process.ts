// A gateway run as a process of its own (the `npm start` entry point) for tests, with its clients, output, memory and CPU time.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { createClient, type ClientOptions, type GatewayClient } from "../../client-sdk/src/index.js";
import { dropPlatformDatabases, pgUrl } from "./gateway.js";
import { testPki } from "./pki.js";

const root = new URL("../..", import.meta.url).pathname;

/** A gateway running as a process of its own (the `npm start` entry point), so its memory and CPU are its own. */
export interface GatewayProcess {
  readonly pid: number;
  readonly port: number;
  /** The port of /metrics and /health. */
  readonly metricsPort: number;
  readonly url: string;
  readonly platform: string;
  readonly platformKey: string;
  /** The folder holding its TLS files (ca.crt, server.crt, server.key), which SIGHUP reads again. */
  readonly tlsDir: string;
  readonly adminKey: string;
  clientOptions(apiKey: string): ClientOptions;
  client(): GatewayClient;
  adminClient(): GatewayClient;
  /** Resident set size, from /proc. */
  rssBytes(): Promise<number>;
  /** User plus system CPU time so far, in microseconds, from /proc. */
  cpuMicros(): Promise<number>;
  /** What each open file descriptor refers to, from /proc: a path, "socket:[inode]", "pipe:[inode]", "anon_inode:[eventpoll]" … */
  openFiles(): Promise<string[]>;
  /** Everything the process printed. */
  output(): string;
  /** Sends the process a signal, leaving its clients open (SIGTERM, SIGINT: it drains and exits). */
  kill(signal: NodeJS.Signals): void;
  /** Settles once the process has exited: its exit code, or the signal that ended it. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Stops the process (SIGTERM) and removes its files. Databases it made are the caller's to drop. */
  close(): Promise<void>;
}

/**
 * Starts `server/src/main.ts` against `databaseUrl` with real mTLS material
 * (the test PKI written to a temporary folder), one platform with a random
 * name, an admin key, an audit catalog of its own (`catalog_{platform}`,
 * dropped by `dropPlatformDatabases`), and any further settings in `env`.
 * `root` runs another checkout's gateway (its own `server/`), for comparisons;
 * `entry` another entry point than the sources (the compiled `server/dist/server/src/main.js`);
 * `secretsInFiles` passes the API keys, the gateway secret and the database
 * password as `*_FILE` settings instead of values; `secrets` gives the keys
 * and the gateway secret instead of random ones (several gateways serving
 * the same platform share them, as they share `platform`).
 */
export async function startGatewayProcess(options: {
  databaseUrl: string;
  platform?: string;
  env?: Record<string, string>;
  nodeArgs?: string[];
  root?: string;
  entry?: string[];
  secretsInFiles?: boolean;
  secrets?: { platformKey: string; adminKey: string; gatewaySecret: string };
}): Promise<GatewayProcess> {
  const work = await mkdtemp(join(tmpdir(), "db-gateway-process-"));
  await chmod(work, 0o700);
  const pki = testPki();
  await writeFile(join(work, "ca.crt"), pki.ca.cert);
  await writeFile(join(work, "server.crt"), pki.server.cert);
  await writeFile(join(work, "server.key"), pki.server.key);
  const platform = options.platform ?? `p${randomBytes(5).toString("hex")}`;
  const platformKey = options.secrets?.platformKey ?? `key-${randomBytes(16).toString("hex")}`;
  const adminKey = options.secrets?.adminKey ?? `admin-${randomBytes(16).toString("hex")}`;
  const secrets: Record<string, string> = {
    [`API_KEY_${platform.toUpperCase()}`]: platformKey,
    API_KEY_ADMIN: adminKey,
    GATEWAY_SECRET: options.secrets?.gatewaySecret ?? randomBytes(32).toString("hex"),
  };
  let databaseUrl = options.databaseUrl;
  if (options.secretsInFiles) {
    const url = new URL(databaseUrl);
    if (url.password) secrets.DATABASE_PASSWORD = decodeURIComponent(url.password);
    url.password = "";
    databaseUrl = url.toString();
    for (const [name, value] of Object.entries(secrets)) {
      await writeFile(join(work, name), value + "\n", { mode: 0o600 });
      delete secrets[name];
      secrets[`${name}_FILE`] = join(work, name);
    }
  }
  const child: ChildProcess = spawn(process.execPath, [...(options.nodeArgs ?? []), ...(options.entry ?? ["--import", "tsx", "server/src/main.ts"])], {
    cwd: options.root ?? root,
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: databaseUrl,
      GATEWAY_PORT: "0",
      METRICS_PORT: "0",
      CATALOG_DATABASE: `catalog_${platform}`,
      TLS_CERT_FILE: join(work, "server.crt"),
      TLS_KEY_FILE: join(work, "server.key"),
      TLS_CLIENT_CA_FILE: join(work, "ca.crt"),
      ...secrets,
      ...options.env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const [port, metricsPort] = await new Promise<[number, number]>((resolve, reject) => {
    const timer = setInterval(() => {
      const match = /"port":(\d+),"metricsPort":(\d+)[^\n]*"msg":"serving"/.exec(output);
      if (match) {
        clearInterval(timer);
        resolve([Number(match[1]), Number(match[2])]);
      } else if (child.exitCode !== null) {
        clearInterval(timer);
        reject(new Error(`the gateway exited:\n${output}`));
      }
    }, 50);
  });
  const url = `https://localhost:${port}`;
  const clients: GatewayClient[] = [];
  const clientOptions = (apiKey: string): ClientOptions => {
    const { cert, key } = pki.clientFor(apiKey === adminKey ? "admin" : platform);
    return { url, apiKey, tls: { ca: pki.ca.cert, cert, key } };
  };
  const track = (c: GatewayClient) => (clients.push(c), c);
  const stat = async () => (await readFile(`/proc/${child.pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  return {
    pid: child.pid!,
    port,
    metricsPort,
    url,
    platform,
    platformKey,
    tlsDir: work,
    adminKey,
    clientOptions,
    client: () => track(createClient(clientOptions(platformKey))),
    adminClient: () => track(createClient(clientOptions(adminKey))),
    async rssBytes() {
      const status = await readFile(`/proc/${child.pid}/status`, "utf8");
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
    },
    async cpuMicros() {
      // Fields 14 and 15 of /proc/<pid>/stat (utime, stime), in clock ticks of 1/100 s; counted from after the ") ".
      const fields = await stat();
      return (Number(fields[11]) + Number(fields[12])) * 10_000;
    },
    async openFiles() {
      const dir = `/proc/${child.pid}/fd`;
      // A descriptor closed between the listing and its readlink is left out.
      const links = await Promise.all((await readdir(dir)).map((fd) => readlink(join(dir, fd)).catch(() => undefined)));
      return links.filter((l) => l !== undefined);
    },
    output: () => output,
    kill: (signal) => void child.kill(signal),
    exited,
    async close() {
      clients.forEach((c) => c.close());
      child.kill("SIGTERM");
      await exited;
      await rm(work, { recursive: true, force: true });
    },
  };
}

/**
 * A gateway process for the tests of a `describe` block: started on the run's
 * PostgreSQL with its platform's main database before them, stopped and its
 * databases dropped after them. The process, once the tests run.
 */
export function gatewayProcessForSuite(): () => GatewayProcess {
  let gateway: GatewayProcess | undefined;
  before(async () => {
    gateway = await startGatewayProcess({ databaseUrl: pgUrl() });
    await gateway.adminClient().admin().createTenant(gateway.platform, "");
  });
  after(async () => {
    if (gateway === undefined) return;
    await gateway.close();
    await dropPlatformDatabases([gateway.platform]);
  });
  return () => gateway!;
}
