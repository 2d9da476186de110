// Settings from the environment: defaults, development mode only when asked for, every problem reported at once, secrets never printed.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, describeSettings, loadSettings } from "../src/config.js";

const KEY = "k".repeat(16);
/** Development mode, as npm start runs: no settings needed. */
const DEV = { GATEWAY_MODE: "development" };
/** The least a production start needs (the files are not read as certificates here). */
const PRODUCTION = {
  DATABASE_URL: "postgres://gateway@db/postgres",
  TLS_CERT_FILE: "/dev/null",
  TLS_KEY_FILE: "/dev/null",
  TLS_CLIENT_CA_FILE: "/dev/null",
  GATEWAY_SECRET: "the-gateway-secret-0123456789abcdef",
};

describe("settings", () => {
  it("defaults in development mode to an embedded PostgreSQL on 127.0.0.1:9000", () => {
    for (const s of [loadSettings(DEV), loadSettings({}, { development: true })]) {
      assert.equal(s.development, true);
      assert.equal(s.databaseUrl, undefined);
    }
    const s = loadSettings(DEV);
    assert.equal(s.host, "127.0.0.1");
    assert.equal(s.port, 9000);
    assert.equal(s.pool.maxConnectionsPerPool, 10);
    assert.equal(s.pool.maxTotalConnections, 200);
    assert.equal(s.pool.maxPools, 50);
    assert.equal(s.pool.poolIdleTimeoutMillis, 1_800_000);
    assert.equal(s.pool.maxLifetimeMillis, 3_600_000);
    assert.equal(s.gatewayInstances, 1);
    assert.ok(Object.isFrozen(s));
    assert.equal(loadSettings({ ...PRODUCTION, API_KEY_ADMIN: `ad_${KEY}` }).development, false);
  });

  it("runs in development mode only when asked for, and never with production settings", () => {
    assert.throws(
      () => loadSettings({}),
      (err: ConfigError) => /DATABASE_URL is required/.test(err.problems[0]!),
    );
    assert.throws(
      () => loadSettings({ GATEWAY_MODE: "staging" }),
      (err: ConfigError) => err.problems.some((p) => p.startsWith("GATEWAY_MODE must be one of")),
    );
    for (const production of [{ API_KEY_ACME: `a_${KEY}` }, { TLS_CERT_FILE: "/dev/null" }, { GATEWAY_SECRET_FILE: "/dev/null" }]) {
      assert.throws(
        () => loadSettings({ ...DEV, ...production }, { development: true }),
        (err: ConfigError) => err.problems.some((p) => p.startsWith(`DATABASE_URL is not set, but production settings are (${Object.keys(production)[0]})`)),
      );
    }
  });

  it("reads SHUTDOWN_GRACE_SECS: 20 s by default, 0 to 3,600", () => {
    assert.equal(loadSettings(DEV).shutdownGraceMillis, 20_000);
    assert.equal(loadSettings({ ...DEV, SHUTDOWN_GRACE_SECS: "0" }).shutdownGraceMillis, 0);
    assert.equal(loadSettings({ ...DEV, SHUTDOWN_GRACE_SECS: "45" }).shutdownGraceMillis, 45_000);
    for (const bad of ["-1", "3601", "1.5", "soon"]) {
      assert.throws(
        () => loadSettings({ ...DEV, SHUTDOWN_GRACE_SECS: bad }),
        (err: ConfigError) => err.problems.length === 1 && err.problems[0]!.startsWith("SHUTDOWN_GRACE_SECS"),
      );
    }
  });

  it("limits the gRPC port's connections: 10,000 at once and 10 s for a TLS handshake unless set", () => {
    assert.deepEqual(loadSettings(DEV).clientConnections, { maxConnections: 10_000, tlsHandshakeTimeoutMillis: 10_000 });
    const s = loadSettings({ ...DEV, MAX_CLIENT_CONNECTIONS: "500", TLS_HANDSHAKE_TIMEOUT_SECS: "3" });
    assert.deepEqual(s.clientConnections, { maxConnections: 500, tlsHandshakeTimeoutMillis: 3_000 });
    assert.equal(describeSettings(s).maxClientConnections, 500);
    assert.equal(describeSettings(s).tlsHandshakeTimeoutSecs, 3);
    // 0 would mean no limit to node (maxConnections) or node's own 120 s (handshakeTimeout): refused rather than meaning either.
    assert.throws(
      () => loadSettings({ ...DEV, MAX_CLIENT_CONNECTIONS: "0", TLS_HANDSHAKE_TIMEOUT_SECS: "0" }),
      (err: ConfigError) =>
        err.problems.length === 2 && err.problems[0]!.startsWith("MAX_CLIENT_CONNECTIONS") && err.problems[1]!.startsWith("TLS_HANDSHAKE_TIMEOUT_SECS"),
    );
    for (const [name, bad] of [
      ["MAX_CLIENT_CONNECTIONS", "1000001"],
      ["MAX_CLIENT_CONNECTIONS", "many"],
      ["TLS_HANDSHAKE_TIMEOUT_SECS", "601"],
      ["TLS_HANDSHAKE_TIMEOUT_SECS", "0.5"],
    ]) {
      assert.throws(
        () => loadSettings({ ...DEV, [name!]: bad }),
        (err: ConfigError) =>
          err.problems.length === 1 &&
          err.problems[0] === `${name} must be an integer from 1 to ${name === "MAX_CLIENT_CONNECTIONS" ? 1_000_000 : 600} (got "${bad}")`,
      );
    }
  });

  it("limits buffered results: 1,000,000 rows and 64 MiB a call, 256 MiB for all calls, unless set", () => {
    assert.deepEqual(loadSettings(DEV).results, { maxRows: 1_000_000, maxBytes: 64 * 1024 * 1024, maxBufferedBytes: 256 * 1024 * 1024 });
    const s = loadSettings({ ...DEV, MAX_RESULT_ROWS: "5000", MAX_RESULT_BYTES: "1048576", MAX_BUFFERED_RESULT_BYTES: "8388608" });
    assert.deepEqual(s.results, { maxRows: 5_000, maxBytes: 1_048_576, maxBufferedBytes: 8_388_608 });
    assert.ok(Object.isFrozen(s.results));
  });

  it("refuses result limits that are not whole numbers, and a call's limit beyond the gateway's", () => {
    assert.throws(
      () => loadSettings({ ...DEV, MAX_RESULT_ROWS: "0", MAX_RESULT_BYTES: "1.5", MAX_BUFFERED_RESULT_BYTES: "lots" }),
      (err: ConfigError) =>
        err.problems.length === 3 && ["MAX_RESULT_ROWS", "MAX_RESULT_BYTES", "MAX_BUFFERED_RESULT_BYTES"].every((n, i) => err.problems[i]!.startsWith(n)),
    );
    assert.throws(
      () => loadSettings({ ...DEV, MAX_RESULT_BYTES: "2000000", MAX_BUFFERED_RESULT_BYTES: "1000000" }),
      (err: ConfigError) =>
        err.problems.length === 1 && /MAX_RESULT_BYTES \(2000000\) cannot be more than MAX_BUFFERED_RESULT_BYTES \(1000000\)/.test(err.problems[0]!),
    );
  });

  it("reads API_KEY_<PLATFORM> and API_KEY_ADMIN", () => {
    const s = loadSettings({ ...PRODUCTION, API_KEY_MEDSTOREAPP: `ms_${KEY}`, API_KEY_ADMIN: `ad_${KEY}`, API_KEY_SCHOOL2: `s2_${KEY}` });
    assert.deepEqual([...s.platformKeys.keys()].sort(), ["medstoreapp", "school2"]);
    assert.deepEqual(s.adminKeys, [`ad_${KEY}`]);
  });

  it("reports every problem at once", () => {
    try {
      loadSettings({
        DATABASE_URL: "mysql://x",
        GATEWAY_PORT: "70000",
        MAX_CONNECTIONS_PER_POOL: "zero",
        TLS_CERT_FILE: "/x.crt",
        API_KEY_SHORT: "short",
        API_KEY_BAD_NAME: `x_${KEY}`,
        API_KEY_A: `same_${KEY}`,
        API_KEY_B: `same_${KEY}`,
        API_KEY_Medstore: `m1_${KEY}`,
        API_KEY_MEDSTORE: `m2_${KEY}`,
      });
      assert.fail("expected a ConfigError");
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      const text = err.problems.join("\n");
      for (const expected of [
        "DATABASE_URL",
        "GATEWAY_PORT",
        "MAX_CONNECTIONS_PER_POOL",
        "TLS_KEY_FILE",
        "API_KEY_SHORT",
        "API_KEY_BAD_NAME",
        "API_KEY_B",
        "medstore",
      ]) {
        assert.match(text, new RegExp(expected));
      }
      assert.equal(err.problems.length, 9); // the eight above, and GATEWAY_SECRET
      assert.doesNotMatch(err.message, /same_k|short/, "no key value in the message");
    }
  });

  it("requires certificates and keys with DATABASE_URL", () => {
    assert.throws(
      () => loadSettings({ DATABASE_URL: "postgres://u:p@db/postgres" }),
      (err: ConfigError) => err.problems.length === 3,
    );
  });

  it("checks that the TLS files can be read", () => {
    assert.throws(
      () =>
        loadSettings({
          ...PRODUCTION,
          API_KEY_ADMIN: `ad_${KEY}`,
          TLS_CERT_FILE: "/nonexistent/a.crt",
          TLS_KEY_FILE: "/nonexistent/a.key",
          TLS_CLIENT_CA_FILE: "/nonexistent/ca.crt",
        }),
      (err: ConfigError) => err.problems.length === 3 && err.problems.every((p) => p.includes("cannot read")),
    );
  });

  it("reads REDIS_URL (unset: nothing shared), its key prefix and command timeout, and never prints its password", () => {
    assert.equal(loadSettings(DEV).redis, undefined);
    const s = loadSettings({ ...DEV, REDIS_URL: "redis://:r3dis-pass@cache:6379/2" });
    assert.deepEqual(s.redis, { url: "redis://:r3dis-pass@cache:6379/2", keyPrefix: "dbgateway:", commandTimeoutMillis: 250, resultCache: undefined });
    assert.doesNotMatch(JSON.stringify(describeSettings(s)), /r3dis-pass|cache/);
    assert.deepEqual(loadSettings({ ...DEV, REDIS_URL: "rediss://cache", REDIS_KEY_PREFIX: "eu-1:", REDIS_TIMEOUT_MS: "50" }).redis, {
      url: "rediss://cache",
      keyPrefix: "eu-1:",
      commandTimeoutMillis: 50,
      resultCache: undefined,
    });
    assert.throws(
      () => loadSettings({ ...DEV, REDIS_URL: "http://cache:6379", REDIS_KEY_PREFIX: "with space", REDIS_TIMEOUT_MS: "0" }),
      (err: ConfigError) =>
        err.problems.length === 3 &&
        err.problems[0]!.startsWith("REDIS_URL must be a redis://") &&
        err.problems[1]!.startsWith("REDIS_KEY_PREFIX") &&
        err.problems[2]!.startsWith("REDIS_TIMEOUT_MS"),
    );
    assert.throws(
      () => loadSettings({ ...DEV, REDIS_URL: "not a url" }),
      (err: ConfigError) => err.problems.length === 1 && err.problems[0] === "REDIS_URL is not a valid URL",
    );
  });

  it("reads the clusters (CLUSTER_NAME, CLUSTER_URL_<NAME>, their capacities, caps and replicas), and never prints their URLs", () => {
    const one = loadSettings(DEV).clusters;
    assert.deepEqual(one.primary, { name: "primary", capacity: undefined, maxConnections: undefined, replicas: [] });
    assert.deepEqual(one.others, []);
    const s = loadSettings({
      ...DEV,
      CLUSTER_NAME: "eu1",
      CLUSTER_CAPACITY_EU1: "100",
      CLUSTER_REPLICAS_EU1: "postgres://admin:s3cret@replica-a/postgres, postgres://admin:s3cret@replica-b/postgres",
      CLUSTER_URL_EU2: "postgres://admin:s3cret@eu2/postgres",
      CLUSTER_MAX_CONNECTIONS_EU2: "40",
      REPLICA_MAX_LAG_MS: "250",
    });
    assert.deepEqual(s.clusters.primary, {
      name: "eu1",
      capacity: 100,
      maxConnections: undefined,
      replicas: ["postgres://admin:s3cret@replica-a/postgres", "postgres://admin:s3cret@replica-b/postgres"],
    });
    assert.deepEqual(s.clusters.others, [{ name: "eu2", url: "postgres://admin:s3cret@eu2/postgres", capacity: undefined, maxConnections: 40, replicas: [] }]);
    assert.equal(s.clusters.replicaMaxLagMillis, 250);
    assert.doesNotMatch(JSON.stringify(describeSettings(s)), /s3cret|replica-a|eu2\//);
    assert.throws(
      () =>
        loadSettings({
          ...DEV,
          CLUSTER_URL_PRIMARY: "postgres://x/postgres",
          CLUSTER_URL_BAD: "mysql://s3cret@x",
          CLUSTER_CAPACITY_NOWHERE: "3",
          CLUSTER_REPLICAS_PRIMARY: "not a url",
        }),
      (err: ConfigError) =>
        err.problems.length === 4 &&
        err.problems.some((p) => p.startsWith('CLUSTER_URL_PRIMARY: cluster "primary" is DATABASE_URL\'s')) &&
        err.problems.some((p) => p === "CLUSTER_URL_BAD must be a postgres:// or postgresql:// URL") &&
        err.problems.some((p) => p.startsWith("CLUSTER_CAPACITY_NOWHERE: no cluster")) &&
        err.problems.some((p) => p.startsWith("CLUSTER_REPLICAS_PRIMARY must be")) &&
        !err.problems.join(" ").includes("s3cret"),
    );
  });

  it("turns the result cache on with RESULT_CACHE=on, which needs REDIS_URL, with its limits", () => {
    assert.equal(loadSettings({ ...DEV, REDIS_URL: "redis://cache" }).redis?.resultCache, undefined);
    assert.deepEqual(loadSettings({ ...DEV, REDIS_URL: "redis://cache", RESULT_CACHE: "on", RESULT_CACHE_MAX_TTL_MS: "5000" }).redis?.resultCache, {
      maxTtlMillis: 5_000,
      maxBytes: 1_048_576,
    });
    assert.match(
      JSON.stringify(describeSettings(loadSettings({ ...DEV, REDIS_URL: "redis://cache", RESULT_CACHE: "on" }))),
      /"resultCache":"on \(at most 60000 ms\)"/,
    );
    assert.throws(
      () => loadSettings({ ...DEV, RESULT_CACHE: "yes" }),
      (err: ConfigError) => err.problems.length === 1 && err.problems[0]!.startsWith("RESULT_CACHE must be on or off"),
    );
    assert.throws(
      () => loadSettings({ ...DEV, RESULT_CACHE: "on" }),
      (err: ConfigError) => err.problems.length === 1 && err.problems[0]!.startsWith("RESULT_CACHE=on needs REDIS_URL"),
    );
  });

  it("never prints secrets", () => {
    const s = loadSettings({
      DATABASE_URL: "postgres://gateway:s3cret-pass@db:5432/postgres",
      TLS_CERT_FILE: "/dev/null",
      TLS_KEY_FILE: "/dev/null",
      TLS_CLIENT_CA_FILE: "/dev/null",
      API_KEY_MEDSTOREAPP: `ms_${KEY}`,
      API_KEY_ADMIN: `ad_${KEY}`,
      GATEWAY_SECRET: "the-gateway-secret-0123456789abcdef",
    });
    const printed = JSON.stringify(describeSettings(s));
    assert.doesNotMatch(printed, /s3cret-pass|ms_k|ad_k|the-gateway-secret/);
    assert.match(printed, /medstoreapp/);
  });

  it("never prints a secret pasted into a *_FILE or TLS setting, or a password in DATABASE_URL's query", () => {
    const pasted = "Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZg";
    try {
      loadSettings({ ...PRODUCTION, GATEWAY_SECRET: "", GATEWAY_SECRET_FILE: pasted, TLS_KEY_FILE: `-----BEGIN PRIVATE KEY-----\n${pasted}` });
      assert.fail("expected a ConfigError");
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      assert.doesNotMatch(err.message, new RegExp(pasted));
      assert.match(err.message, /GATEWAY_SECRET_FILE: cannot read the value it holds \(not a path/);
    }
    const s = loadSettings({ ...PRODUCTION, DATABASE_URL: "postgres://gateway@db:5432/postgres?password=hunter2&sslmode=require", API_KEY_ADMIN: `ad_${KEY}` });
    assert.equal(describeSettings(s).database, "postgres://gateway@db:5432/postgres");
    assert.throws(
      () => loadSettings({ ...PRODUCTION, DATABASE_URL: "postgres://gateway@db/postgres?password=x", DATABASE_PASSWORD: "y", API_KEY_ADMIN: `ad_${KEY}` }),
      (err: ConfigError) => err.problems.some((p) => p.startsWith("DATABASE_URL already has a password")),
    );
  });

  it("refuses API keys no client could send: spaces around them, control characters", () => {
    for (const bad of [` ${KEY}`, `${KEY} `, `${KEY}\t`, `a\u0001${KEY}`, `${KEY}é`]) {
      assert.throws(
        () => loadSettings({ ...PRODUCTION, API_KEY_ACME: bad }),
        (err: ConfigError) =>
          err.problems.some(
            (p) =>
              p ===
              "API_KEY_ACME must be printable ASCII: one key, or two separated by a space or a line break, with nothing around them (no client could send it)",
          ) && !err.message.includes(KEY),
      );
    }
  });

  it("reads two keys per principal, separated by a space or a line break, and no more", () => {
    const [a, b, c] = [`a_${KEY}`, `b_${KEY}`, `c_${KEY}`] as const;
    assert.deepEqual(loadSettings({ ...PRODUCTION, API_KEY_ACME: `${a} ${b}` }).platformKeys.get("acme"), [a, b]);
    assert.deepEqual(loadSettings({ ...PRODUCTION, API_KEY_ADMIN: `${a}\n${b}` }).adminKeys, [a, b]);
    const problem = (env: Record<string, string>) => {
      try {
        loadSettings({ ...PRODUCTION, ...env });
      } catch (err) {
        assert.ok(!(err as Error).message.includes(KEY), "no key in the message");
        return (err as ConfigError).problems[0];
      }
      return undefined;
    };
    assert.equal(problem({ API_KEY_ACME: `${a} ${b} ${c}` }), "API_KEY_ACME holds 3 keys: at most 2 (the key in use and the next)");
    assert.equal(problem({ API_KEY_ACME: `${a} short` }), "API_KEY_ACME must be at least 16 characters per key");
    assert.equal(problem({ API_KEY_ACME: `${a} ${a}` }), "API_KEY_ACME has a key that it holds twice: every key must be different");
    assert.equal(problem({ API_KEY_ACME: `${a} ${b}`, API_KEY_ADMIN: b }), "API_KEY_ADMIN has a key that API_KEY_ACME holds too: every key must be different");
  });

  it("reads API_KEY_ names without regard to case, in the development gate as in parsing", () => {
    assert.deepEqual(loadSettings({ ...PRODUCTION, API_KEY_medstoreapp: `ms_${KEY}` }).platformKeys.get("medstoreapp"), [`ms_${KEY}`]);
    assert.throws(
      () => loadSettings({ ...DEV, API_KEY_medstoreapp: `ms_${KEY}` }),
      (err: ConfigError) => /production settings are \(API_KEY_medstoreapp\)/.test(err.message),
    );
  });
});
