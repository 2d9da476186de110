/**
 * The container test (`npm run test:containers`, not part of `npm test`): the gateway's image and the
 * compose stack on this machine's Docker, from local images only (scripts/container-images.sh).
 *
 * 1. The image, alone: `docker run --read-only` as its non-root user against a PostgreSQL container,
 *    with certificates and keys made by the image's own CLI (`certs`, `keys`), called over mutual TLS
 *    with the SDK; its HEALTHCHECK turns healthy; `docker stop` drains it and it exits 0.
 * 2. compose.yaml (with test/containers/compose.test.yaml: local images, host networking, free ports):
 *    Prometheus scrapes the gateway and has loaded the alert rules, the collector receives the
 *    gateway's spans, no secret is in a container's environment, and a tenant's rows survive
 *    `down` and `up` in the PostgreSQL volume.
 *
 * Everything made here (containers, volumes, networks, the temporary directory) is removed at the
 * end, even on failure; the images stay, so a rerun is quick. The machine's own PostgreSQL is not used.
 * One file, longer than most: its steps run in order on the images and secrets the first ones make.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createClient, type GatewayClient } from "../../client-sdk/src/index.js";

const root = new URL("../..", import.meta.url).pathname;
const PREFIX = process.env.DB_GATEWAY_IMAGE_PREFIX || "db-gateway-local";
const IMAGES = {
  node: `${PREFIX}/node:20-bookworm-slim`,
  postgres: `${PREFIX}/postgres:15`,
  prometheus: `${PREFIX}/prometheus:latest`,
  collector: `${PREFIX}/otel-collector-standin:latest`,
  gateway: `${PREFIX}/gateway:test`,
};
const PLATFORM = "medstoreapp";
/** The gateway image's user (Dockerfile). */
const GATEWAY_UID = 10001;

/** A run's names: containers, the compose project and its volumes, all removed at the end. */
const runId = randomBytes(4).toString("hex");
const project = `dbgwtest${runId}`;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command (never with a secret among its arguments); rejects with its output's end unless it exits 0. */
function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; allowFailure?: boolean; quietStderr?: boolean } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => {
      const result = { code: code ?? 1, stdout, stderr };
      if (result.code === 0 || options.allowFailure) resolve(result);
      else reject(new Error(`${command} ${args.join(" ")} exited ${result.code}:\n${(stderr || stdout).slice(-3000)}`));
    });
  });
}
const docker = (...args: string[]) => run("docker", args).then((r) => r.stdout.trim());

/** Polls `probe` until it returns something other than undefined; fails with its last error after `timeoutMs`. */
async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, diagnose?: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const detail = diagnose ? await diagnose().catch((err: Error) => `(no diagnosis: ${err.message})`) : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ""}\n${detail}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Free TCP ports on 127.0.0.1, distinct (held open together while they are picked). */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer();
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

async function httpJson(url: string): Promise<unknown> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function healthy(metricsPort: number): Promise<true | undefined> {
  const response = await fetch(`http://127.0.0.1:${metricsPort}/health`, { signal: AbortSignal.timeout(3_000) });
  return response.status === 200 ? true : undefined;
}

/** The uid the container's main process runs as, read from the host's /proc (not from inside, where the image could lie). */
async function processUid(container: string): Promise<number> {
  const pid = await docker("inspect", "--format", "{{.State.Pid}}", container);
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1];
  assert.ok(uid !== undefined, `no Uid line in /proc/${pid}/status`);
  return Number(uid);
}

const logsOf = async (container: string) => {
  const r = await run("docker", ["logs", "--tail", "40", container], { allowFailure: true });
  return `--- docker logs ${container}\n${r.stdout}${r.stderr}`;
};

/** Certificates and keys made with the image's CLI, and the two database passwords, as files in `dir`. */
interface Secrets {
  dir: string;
  /** Every secret value, to check that none leaks into a container's environment. */
  values: string[];
  adminKey: string;
  platformKey: string;
}

async function makeSecrets(dir: string): Promise<Secrets> {
  await mkdir(dir);
  // The CLI runs in the image, as the image's own user (10001), writing into the mounted directory.
  await chmod(dir, 0o777);
  const cli = (...args: string[]) => docker("run", "--rm", "--network", "none", "--read-only", "-v", `${dir}:/out`, IMAGES.gateway, ...args);
  await cli(
    "certs",
    "--out",
    "/out",
    "--platform",
    PLATFORM,
    "--admin",
    "--server-name",
    "localhost",
    "--server-name",
    "127.0.0.1",
    "--server-name",
    "gateway",
  );
  await cli("keys", "--out", "/out", "--platform", PLATFORM, "--admin", "--secret");
  const passwords = { "postgres-password": randomBytes(24).toString("base64url"), "database-password": randomBytes(24).toString("base64url") };
  for (const [name, value] of Object.entries(passwords)) await writeFile(join(dir, name), value);
  const read = (name: string) => readFile(join(dir, name), "utf8");
  const [adminKey, platformKey, gatewaySecret] = await Promise.all([read("api-key-admin"), read(`api-key-${PLATFORM}`), read("gateway-secret")]);
  // Compose's file secrets keep the host file's owner and mode, and the containers' users differ
  // (the gateway's 10001, PostgreSQL's postgres): readable by all, in a directory only root enters.
  await run("sh", ["-c", 'chmod 0644 "$0"/* && chmod 0700 "$0"', dir]);
  return { dir, values: [adminKey, platformKey, gatewaySecret, ...Object.values(passwords)], adminKey, platformKey };
}

/** A rendered compose file less every service's `ports:` (compose config's layout: services at 2 spaces, their keys at 4). */
function withoutPorts(rendered: string): string {
  const kept: string[] = [];
  let inPorts = false;
  for (const line of rendered.split("\n")) {
    if (/^ {4}ports:/.test(line)) {
      inPorts = !/\[\]\s*$/.test(line);
      continue;
    }
    if (inPorts && /^( {4}- | {6,})/.test(line)) continue;
    inPorts = false;
    kept.push(line);
  }
  return kept.join("\n");
}

function gatewayClient(secrets: Secrets, port: number, who: "admin" | "platform"): GatewayClient {
  return createClient({
    url: `https://127.0.0.1:${port}`,
    apiKey: who === "admin" ? secrets.adminKey : secrets.platformKey,
    tls: {
      ca: join(secrets.dir, "ca.crt"),
      cert: join(secrets.dir, who === "admin" ? "client-admin.crt" : `client-${PLATFORM}.crt`),
      key: join(secrets.dir, who === "admin" ? "client-admin.key" : `client-${PLATFORM}.key`),
    },
    timeoutMs: 20_000,
  });
}

describe("containers", () => {
  let workDir: string;
  let secrets: Secrets;
  const standalone = { postgres: `${project}-postgres`, gateway: `${project}-gateway` };
  let composeCommand: string[] = [];
  let composeEnv: NodeJS.ProcessEnv = {};
  const clients: GatewayClient[] = [];
  /** The stack's file: compose.yaml with the test's overrides, as rendered by `compose config`, less its published ports. */
  let stackFile = "";
  const composeRaw = (args: string[]) => run(composeCommand[0]!, [...composeCommand.slice(1), "-p", project, ...args], { env: composeEnv });
  const compose = (...args: string[]) => composeRaw(["-f", stackFile, ...args]);

  before(async () => {
    await docker("info", "--format", "{{.ServerVersion}}");
    // The local images (kept between runs), then the gateway's image on the local Node base.
    await run(join(root, "scripts/container-images.sh"), []);
    const previous = await run("docker", ["image", "inspect", "--format", "{{.Id}}", IMAGES.gateway], { allowFailure: true });
    await run("docker", ["build", "--network", "host", "--build-arg", `BASE_IMAGE=${IMAGES.node}`, "--tag", IMAGES.gateway, "."]);
    // The image this build replaced, now untagged (kept if the build changed nothing or a container still uses it).
    if (previous.code === 0 && previous.stdout.trim() !== (await docker("image", "inspect", "--format", "{{.Id}}", IMAGES.gateway))) {
      await run("docker", ["image", "rm", previous.stdout.trim()], { allowFailure: true });
    }
    // The build stage's untagged images (the Dockerfile labels them): the newest is this build's cache, the others are stale.
    const stages = await docker("images", "--quiet", "--no-trunc", "--filter", "dangling=true", "--filter", "label=db-gateway.stage=build");
    const stale = stages.split("\n").filter(Boolean).slice(1);
    if (stale.length > 0) await run("docker", ["image", "rm", ...stale], { allowFailure: true });
    workDir = await mkdtemp(join(tmpdir(), "db-gateway-containers-"));
    secrets = await makeSecrets(join(workDir, "secrets"));
    composeCommand = (await run("docker", ["compose", "version"], { allowFailure: true })).code === 0 ? ["docker", "compose"] : ["docker-compose"];
  });

  after(async () => {
    for (const client of clients) client.close();
    await run("docker", ["rm", "--force", "--volumes", standalone.gateway, standalone.postgres], { allowFailure: true });
    if (stackFile) await compose("down", "--volumes", "--remove-orphans", "--timeout", "10").catch((err: Error) => console.error(err.message));
    // Whatever of this run's is still there (compose down failed half-way, say).
    const left = await run("docker", ["ps", "--all", "--quiet", "--filter", `name=${project}`], { allowFailure: true });
    if (left.stdout.trim()) await run("docker", ["rm", "--force", "--volumes", ...left.stdout.trim().split("\n")], { allowFailure: true });
    const volumes = await run("docker", ["volume", "ls", "--quiet", "--filter", `name=${project}`], { allowFailure: true });
    if (volumes.stdout.trim()) await run("docker", ["volume", "rm", ...volumes.stdout.trim().split("\n")], { allowFailure: true });
    const networks = await run("docker", ["network", "ls", "--quiet", "--filter", `name=${project}`], { allowFailure: true });
    if (networks.stdout.trim()) await run("docker", ["network", "rm", ...networks.stdout.trim().split("\n")], { allowFailure: true });
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("the image runs read-only as a non-root user, serves over mutual TLS, turns healthy and drains on docker stop", async () => {
    const [postgresPort, gatewayPort, metricsPort] = await freePorts(3);
    const secret = (file: string, target = file) => ["-v", `${join(secrets.dir, file)}:/run/secrets/${target}:ro`];
    await docker(
      "run",
      "--detach",
      "--name",
      standalone.postgres,
      "--network",
      "host",
      "--env",
      `PGPORT=${postgresPort}`,
      "--env",
      "POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password",
      ...secret("postgres-password", "postgres_password"),
      ...secret("database-password", "database_password"),
      "-v",
      `${join(root, "ops/postgres/initdb.d")}:/docker-entrypoint-initdb.d:ro`,
      "--tmpfs",
      "/var/lib/postgresql/data",
      IMAGES.postgres,
    );
    await waitFor(
      "PostgreSQL on TCP",
      60_000,
      async () =>
        (await run("docker", ["exec", standalone.postgres, "pg_isready", "--host", "127.0.0.1"], { allowFailure: true })).code === 0 ? true : undefined,
      () => logsOf(standalone.postgres),
    );

    // No tmpfs even for /tmp: the gateway must not need to write anywhere.
    const gatewayArgs = [
      "--network",
      "host",
      "--read-only",
      ...secret("database-password"),
      ...secret("gateway-secret"),
      ...secret("api-key-admin"),
      ...secret(`api-key-${PLATFORM}`),
      ...secret("server.crt"),
      ...secret("server.key"),
      ...secret("ca.crt"),
      "--env",
      `DATABASE_URL=postgres://dbgateway_admin@127.0.0.1:${postgresPort}/postgres`,
      "--env",
      "DATABASE_PASSWORD_FILE=/run/secrets/database-password",
      "--env",
      "GATEWAY_SECRET_FILE=/run/secrets/gateway-secret",
      "--env",
      "API_KEY_ADMIN_FILE=/run/secrets/api-key-admin",
      "--env",
      `API_KEY_${PLATFORM.toUpperCase()}_FILE=/run/secrets/api-key-${PLATFORM}`,
      "--env",
      "TLS_CERT_FILE=/run/secrets/server.crt",
      "--env",
      "TLS_KEY_FILE=/run/secrets/server.key",
      "--env",
      "TLS_CLIENT_CA_FILE=/run/secrets/ca.crt",
      "--env",
      "GATEWAY_HOST=127.0.0.1",
      "--env",
      `GATEWAY_PORT=${gatewayPort}`,
      "--env",
      `METRICS_PORT=${metricsPort}`,
    ];
    // The image's CLI checks the same settings, certificates and role first.
    const check = await run("docker", ["run", "--rm", ...gatewayArgs, IMAGES.gateway, "check"], { allowFailure: true });
    assert.equal(check.code, 0, `db-gateway check in the image:\n${check.stdout}${check.stderr}`);
    await docker("run", "--detach", "--name", standalone.gateway, "--health-interval", "2s", ...gatewayArgs, IMAGES.gateway);
    await waitFor(
      "the gateway's /health",
      60_000,
      () => healthy(metricsPort!),
      () => logsOf(standalone.gateway),
    );

    assert.equal(
      await docker("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}", standalone.gateway),
      `true ${GATEWAY_UID}:${GATEWAY_UID}`,
    );
    assert.equal(await processUid(standalone.gateway), GATEWAY_UID);
    // /tmp is writable by everyone in the image: only the read-only root filesystem refuses this.
    const write = await run("docker", ["exec", standalone.gateway, "node", "-e", "require('fs').writeFileSync('/tmp/probe', 'x')"], { allowFailure: true });
    assert.notEqual(write.code, 0);
    assert.match(write.stderr, /EROFS|read-only file system/i);

    const admin = gatewayClient(secrets, gatewayPort!, "admin");
    const platform = gatewayClient(secrets, gatewayPort!, "platform");
    clients.push(admin, platform);
    await admin.admin().createTenant(PLATFORM, "clinic_image");
    const { rows } = await platform
      .platform(PLATFORM)
      .tenant("clinic_image")
      .query<{ answer: number; role: string }>("SELECT $1::int + 1 AS answer, current_user AS role", [41]);
    assert.equal(rows[0]?.answer, 42);
    assert.notEqual(rows[0]?.role, "dbgateway_admin", "tenant statements run as the tenant's role");

    // The Dockerfile's HEALTHCHECK (its command, at this run's interval).
    await waitFor(
      "docker's health status 'healthy'",
      60_000,
      async () => ((await docker("inspect", "--format", "{{.State.Health.Status}}", standalone.gateway)) === "healthy" ? true : undefined),
      async () => `health: ${await docker("inspect", "--format", "{{json .State.Health}}", standalone.gateway)}`,
    );

    // docker stop sends the image's STOPSIGNAL (SIGTERM): the gateway drains and exits 0 well before the kill.
    const stopped = Date.now();
    await docker("stop", "--time", "30", standalone.gateway);
    assert.ok(Date.now() - stopped < 25_000, "stopped by its own drain, not killed");
    assert.equal(await docker("inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", standalone.gateway), "0 false");
    assert.match((await run("docker", ["logs", standalone.gateway])).stdout, /draining/);
  });

  it("compose brings up a working stack: metrics scraped, alert rules loaded, traces received, no secret in the environment", async () => {
    const [postgresPort, gatewayPort, metricsPort, prometheusPort, collectorPort] = await freePorts(5);
    // ops/prometheus/prometheus.yml itself, with the gateway's address on the host network.
    const prometheusConfig = (await readFile(join(root, "ops/prometheus/prometheus.yml"), "utf8")).replace('"gateway:9464"', `"127.0.0.1:${metricsPort}"`);
    assert.match(prometheusConfig, new RegExp(`127\\.0\\.0\\.1:${metricsPort}`), "the scrape target is replaced");
    const prometheusConfigFile = join(workDir, "prometheus.yml");
    await writeFile(prometheusConfigFile, prometheusConfig, { mode: 0o644 });
    composeEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      SECRETS_DIR: secrets.dir,
      GATEWAY_IMAGE: IMAGES.gateway,
      POSTGRES_IMAGE: IMAGES.postgres,
      PROMETHEUS_IMAGE: IMAGES.prometheus,
      OTEL_COLLECTOR_IMAGE: IMAGES.collector,
      TEST_POSTGRES_PORT: String(postgresPort),
      TEST_GATEWAY_PORT: String(gatewayPort),
      TEST_METRICS_PORT: String(metricsPort),
      TEST_PROMETHEUS_PORT: String(prometheusPort),
      TEST_COLLECTOR_PORT: String(collectorPort),
      TEST_PROMETHEUS_CONFIG: prometheusConfigFile,
    };
    // Host networking publishes nothing, and docker-compose 1.x refuses `ports:` beside `network_mode: host`;
    // an override cannot remove them, so they are dropped from the rendered file (absolute paths, variables resolved).
    const rendered = (await composeRaw(["-f", "compose.yaml", "-f", "test/containers/compose.test.yaml", "config"])).stdout;
    stackFile = join(workDir, "compose.yaml");
    await writeFile(stackFile, withoutPorts(rendered));
    assert.doesNotMatch(await readFile(stackFile, "utf8"), /^\s+ports:/m);
    const container = async (service: string) => (await compose("ps", "--quiet", service)).stdout.trim();
    const stackLogs = async () => (await compose("logs", "--no-color", "--tail", "30").catch((err: Error) => ({ stdout: err.message }))).stdout;

    await compose("up", "--detach", "--no-build");
    await waitFor("the stack's gateway /health", 120_000, () => healthy(metricsPort!), stackLogs);

    const admin = gatewayClient(secrets, gatewayPort!, "admin");
    const platform = gatewayClient(secrets, gatewayPort!, "platform");
    clients.push(admin, platform);
    await admin.admin().createTenant(PLATFORM, "clinic_stack");
    const clinic = platform.platform(PLATFORM).tenant("clinic_stack");
    await clinic.query("CREATE TABLE visits (id int PRIMARY KEY, patient text NOT NULL)");
    await clinic.query("INSERT INTO visits VALUES (1, 'ada'), (2, 'grace'), (3, 'edsger')");
    const before = (await clinic.query<{ id: number; patient: string }>("SELECT id, patient FROM visits ORDER BY id")).rows;
    assert.deepEqual(
      before.map((r) => r.patient),
      ["ada", "grace", "edsger"],
    );

    // Prometheus: the gateway's target is up, with its metrics, and every rule of ops/prometheus/alerts.yml is loaded.
    const prometheus = `http://127.0.0.1:${prometheusPort}/api/v1`;
    type Vector = { data: { result: { value: [number, string] }[] } };
    await waitFor(
      'up{job="db-gateway"} == 1 in Prometheus',
      90_000,
      async () => {
        const result = ((await httpJson(`${prometheus}/query?query=${encodeURIComponent('up{job="db-gateway"}')}`)) as Vector).data.result;
        return result.length === 1 && result[0]!.value[1] === "1" ? true : undefined;
      },
      stackLogs,
    );
    const postgresUp = ((await httpJson(`${prometheus}/query?query=db_gateway_postgres_up`)) as Vector).data.result;
    assert.equal(postgresUp[0]?.value[1], "1", "the gateway's own metrics were scraped");
    const expectedAlerts = [...(await readFile(join(root, "ops/prometheus/alerts.yml"), "utf8")).matchAll(/^\s*- alert: (\w+)/gm)].map((m) => m[1]!).sort();
    assert.ok(expectedAlerts.length >= 6, "alerts.yml's rules were read");
    const rules = (await httpJson(`${prometheus}/rules?type=alert`)) as { data: { groups: { rules: { name: string; health: string }[] }[] } };
    const loaded = rules.data.groups.flatMap((g) => g.rules);
    assert.deepEqual(loaded.map((r) => r.name).sort(), expectedAlerts);
    await waitFor("every alert rule evaluated without error", 60_000, async () => {
      const again = (await httpJson(`${prometheus}/rules?type=alert`)) as typeof rules;
      return again.data.groups.flatMap((g) => g.rules).every((r) => r.health === "ok") ? true : undefined;
    });

    // The collector (the test's stand-in) received the gateway's spans, those of the calls above among them.
    const spans = await waitFor(
      "spans at the collector",
      30_000,
      async () => {
        const received = (await httpJson(`http://127.0.0.1:${collectorPort}/spans`)) as {
          spans: number;
          services: Record<string, number>;
          names: Record<string, number>;
        };
        return Object.keys(received.names).some((name) => name.includes("CreateTenant")) ? received : undefined;
      },
      stackLogs,
    );
    assert.ok(spans.services["db-gateway"]! > 0, `spans of service db-gateway: ${JSON.stringify(spans.services)}`);

    // Secrets are files: none of their values is in any container's environment.
    for (const service of ["postgres", "gateway", "prometheus", "otel-collector"]) {
      const env = await docker("inspect", "--format", "{{json .Config.Env}}", await container(service));
      for (const value of secrets.values) assert.ok(!env.includes(value), `a secret is in ${service}'s environment`);
    }
    const gateway = await container("gateway");
    assert.equal(await docker("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", gateway), "true");
    assert.equal(await processUid(gateway), GATEWAY_UID);

    // Down without --volumes, and up again: the rows are in the PostgreSQL volume.
    await compose("down", "--timeout", "30");
    assert.equal(await container("gateway").catch(() => ""), "");
    assert.match(await docker("volume", "inspect", "--format", "{{.Name}}", `${project}_postgres-data`), /postgres-data/);
    await compose("up", "--detach", "--no-build");
    await waitFor("the gateway's /health after up", 120_000, () => healthy(metricsPort!), stackLogs);
    const after = (await clinic.query<{ id: number; patient: string }>("SELECT id, patient FROM visits ORDER BY id", [], { idempotent: true })).rows;
    assert.deepEqual(after, before);
  });
});
