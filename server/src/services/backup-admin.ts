// AdminService's backup, restore, verification, fork and ListTenants handlers: each change audited, files described as the manifest does.
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { userInfo } from "node:os";
import { Writable } from "node:stream";
import type pg from "pg";
import { GatewayError } from "../errors.js";
import type { ResponseStream } from "../execution/call-streams.js";
import {
  BackupFileSchema,
  type AdminService,
  type BackupFile as BackupFileMessage,
  type DownloadBackupResponseSchema,
} from "../../../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import type { PoolManager } from "../pool/pool-manager.js";
import { Backups, type BackupFile, type Verification } from "../tenancy/backups.js";
import type { Clusters } from "../tenancy/clusters.js";
import { parseDatabaseName } from "../tenancy/naming.js";
import type { RecentCalls } from "../tenancy/recent-calls.js";
import type { DatabaseRegistry } from "../tenancy/registry.js";
import { PgTools, toolConnection } from "../tenancy/pg-tools.js";
import type { TenantRoles } from "../tenancy/roles.js";
import { TenantFactStore } from "../tenancy/tenant-facts.js";
import { databaseMessage as describe, safeDatabaseName } from "./database-message.js";
import type { CallContext, ServiceImpl } from "./service-contract.js";

export interface BackupAdministration {
  backups: Backups;
  facts: TenantFactStore;
  recentCalls: RecentCalls;
  lifecycle: Clusters;
  registry: DatabaseRegistry;
  pools: PoolManager;
  /** The admin pool, for database sizes. */
  sizes(databases: readonly string[]): Promise<Map<string, bigint>>;
  /** Runs an action and records it in the audit trail whatever its outcome (admin-service.ts). */
  audited(
    ctx: CallContext,
    action: string,
    target: { platform: string; tenantId: string; database?: string },
    detail: Record<string, string>,
    run: () => Promise<string>,
  ): Promise<string>;
}

type Handlers = ServiceImpl<(typeof AdminService)["method"]>;

/** Longest ListTenants page, and its default. */
const MAX_PAGE = 1_000;
const DEFAULT_PAGE = 100;

export function backupHandlers(
  a: BackupAdministration,
): Pick<Handlers, "backup" | "downloadBackup" | "restoreTenant" | "verifyBackup" | "forkTenant" | "listTenants"> {
  return {
    async backup(request, ctx) {
      let taken: Awaited<ReturnType<Backups["take"]>> | undefined;
      const detail: Record<string, string> = { keep_days: String(request.keepDays) };
      await a.audited(ctx, "backup.take", { platform: request.platform, tenantId: "", database: "" }, detail, async () => {
        a.lifecycle.requireConfigured(request.platform);
        taken = await a.backups.take(request.platform, request.tenantIds.length > 0 ? request.tenantIds : undefined, {
          keepDays: request.keepDays,
          verify: request.verify,
          signal: ctx.signal,
        });
        Object.assign(detail, { set: taken.set, databases: String(taken.files.length), removed_sets: taken.removed.join(",") });
        return "";
      });
      return {
        backupSet: taken!.set,
        files: taken!.files.map(fileMessage),
        removedSets: taken!.removed,
        verified: taken!.verified.map((v) => ({ file: v.file, ...verificationMessage(v) })),
      };
    },
    async downloadBackup(request, responses: ResponseStream<typeof DownloadBackupResponseSchema>, ctx) {
      // Chunks leave as fast as the caller reads them: pg_dump waits meanwhile, and is stopped if the caller goes.
      const output = new Writable({
        write(chunk: Buffer, _encoding, done) {
          if (ctx.signal.aborted) done(new GatewayError("CANCELLED", "the call was cancelled"));
          else responses.send({ part: { case: "chunk", value: chunk } }).then(() => done(), done);
        },
      });
      let file: BackupFile | undefined;
      await a.audited(ctx, "backup.download", request, {}, async () => {
        file = await a.backups.download(request.platform, request.tenantId, output, ctx.signal);
        return file.database;
      });
      await responses.send({ part: { case: "done", value: fileMessage(file!) } });
    },
    async restoreTenant(request, ctx) {
      let rows: Record<string, number> = {};
      const name = await a.audited(ctx, "backup.restore", request, { file: request.file }, async () => {
        const restored = await a.backups.restore(request.platform, request.tenantId, request.file);
        rows = restored.tableRows;
        return restored.database;
      });
      return { database: describe(name, a.registry.clusterOf(name)), tableRows: bigints(rows) };
    },
    async verifyBackup(request, ctx) {
      let result: Verification | undefined;
      // The platform the file's path names, when it is one (naming.ts decides).
      const named = request.file.split("/")[0]!;
      const platform = safeDatabaseName(named, "") === "" ? "" : named;
      await a.audited(ctx, "backup.verify", { platform, tenantId: "", database: "" }, { file: request.file }, async () => {
        result = await a.backups.verify(request.file);
        return "";
      });
      return verificationMessage(result!);
    },
    async forkTenant(request, ctx) {
      const started = performance.now();
      let rows: Record<string, number> = {};
      const source = safeDatabaseName(request.platform, request.sourceTenantId);
      const name = await a.audited(ctx, "tenant.fork", request, { source }, async () => {
        const forked = await a.backups.fork(request.platform, request.sourceTenantId, request.tenantId, ctx.signal);
        rows = forked.tableRows;
        return forked.database;
      });
      return {
        database: describe(name, a.registry.clusterOf(name)),
        tableRows: bigints(rows),
        duration: durationFromMs(Math.round(performance.now() - started)),
      };
    },
    async listTenants(request) {
      a.lifecycle.requireConfigured(request.platform);
      const size = Math.min(request.pageSize || DEFAULT_PAGE, MAX_PAGE);
      let after = "";
      if (request.pageToken !== "") {
        after = Buffer.from(request.pageToken, "base64url").toString();
        if (parseDatabaseName(after)?.platform !== request.platform) throw new GatewayError("INVALID_REQUEST", "page_token is not one this call returned");
      }
      const all = a.registry.list(new Set([request.platform])).filter((d) => d.name > after);
      const page = all.slice(0, size);
      const names = page.map((d) => d.name);
      const [sizes, facts] = await Promise.all([a.sizes(names), a.facts.read(names)]);
      const connections = new Map(a.pools.poolStats().map((p) => [p.database, p.size]));
      return {
        tenants: page.map((d) => {
          const f = facts.get(d.name);
          return {
            database: describe(d.name, a.registry.clusterOf(d.name)),
            sizeBytes: sizes.get(d.name) ?? 0n,
            schemaVersion: f?.schemaVersion ?? 0n,
            ...(f?.lastBackup !== undefined ? { lastBackup: timestampFromDate(f.lastBackup) } : {}),
            connections: connections.get(d.name) ?? 0,
            callsLastMinute: BigInt(a.recentCalls.lastMinute(d.name)),
          };
        }),
        nextPageToken: all.length > size ? Buffer.from(page.at(-1)!.name).toString("base64url") : "",
      };
    },
  };
}

function verificationMessage(v: Verification) {
  return {
    ok: v.ok,
    tables: v.tables.map((t) => ({ table: t.table, expectedRows: BigInt(t.expected), restoredRows: BigInt(t.restored) })),
    problems: v.problems,
  };
}

/** A backup file as the API describes it. */
export function fileMessage(f: BackupFile): BackupFileMessage {
  return create(BackupFileSchema, {
    database: f.database,
    tenantId: f.tenantId,
    file: f.file,
    bytes: BigInt(f.bytes),
    sha256: f.sha256,
    takenAt: timestampFromDate(new Date(f.takenAt)),
    tableRows: bigints(f.tableRows),
    migrations: f.migrations.map((m) => ({
      version: BigInt(m.version),
      name: m.name,
      checksum: m.checksum,
      appliedAt: timestampFromDate(new Date(m.applied_at)),
      durationMs: BigInt(m.duration_ms),
      appliedBy: m.applied_by,
    })),
  });
}

function bigints(rows: Record<string, number>): Record<string, bigint> {
  return Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, BigInt(v)]));
}

/** What `backupAdministration` is made from: the gateway's parts (gateway.ts). */
export interface BackupParts {
  /**
   * Each cluster (the catalog's first): its administrative URL, its role
   * (when the URL names it) and password (when moved out of the URL), and
   * its administrative pool.
   */
  clusters: readonly { name: string; url: string; user: string | undefined; password: string | undefined; admin: pg.Pool }[];
  backupDir: string | undefined;
  pgBinDir: string | undefined;
  catalog: pg.Pool;
  catalogDatabase: string;
  connectTo(database: string): Promise<pg.Client>;
  roles: TenantRoles;
  lifecycle: Clusters;
  registry: DatabaseRegistry;
  pools: PoolManager;
  recentCalls: RecentCalls;
}

/** Backups, their tools and the tenants' facts, made from the gateway's parts. */
export async function backupAdministration(p: BackupParts): Promise<Omit<BackupAdministration, "audited">> {
  const clusterOf = (database: string) => p.clusters.find((c) => c.name === p.registry.clusterOf(database)) ?? p.clusters[0]!;
  // The tools must be as new as the newest cluster (one that does not answer is not counted).
  const tools = new PgTools(p.pgBinDir, async () => {
    const versions = await Promise.allSettled(
      p.clusters.map(async (c) => Number((await c.admin.query<{ v: string }>("SELECT pg_catalog.current_setting('server_version_num') AS v")).rows[0]!.v)),
    );
    const answered = versions.flatMap((v) => (v.status === "fulfilled" ? [v.value] : []));
    if (answered.length === 0) throw (versions[0] as PromiseRejectedResult).reason;
    return Math.max(...answered);
  });
  const facts = await TenantFactStore.open(p.catalog);
  const backups = new Backups({
    directory: p.backupDir,
    tools,
    adminOf: (database) => {
      const cluster = clusterOf(database);
      // The administrative role as node-postgres resolves it: the URL's user (or ?user=), else PGUSER, else the process's user.
      return toolConnection(cluster.url, cluster.user ?? process.env.PGUSER ?? userInfo().username, cluster.password);
    },
    asRoleOn: (database, role, password) => toolConnection(clusterOf(database).url, role, password),
    roles: p.roles,
    lifecycle: p.lifecycle,
    registry: p.registry,
    connectTo: p.connectTo,
    catalogDatabase: p.catalogDatabase,
    onTaken: (file) => facts.noteBackup(file.database, file.takenAt),
    onRestored: async (database, version) => {
      if (version > 0n) await facts.noteVersion(database, version);
    },
  });
  return {
    backups,
    facts,
    recentCalls: p.recentCalls,
    lifecycle: p.lifecycle,
    registry: p.registry,
    pools: p.pools,
    async sizes(databases) {
      const sizes = new Map<string, bigint>();
      for (const cluster of p.clusters) {
        const here = databases.filter((d) => clusterOf(d) === cluster);
        if (here.length === 0) continue;
        const { rows } = await cluster.admin.query<{ datname: string; size: string }>(
          "SELECT datname, pg_catalog.pg_database_size(oid)::text AS size FROM pg_catalog.pg_database WHERE datname = ANY($1::text[])",
          [here],
        );
        for (const r of rows) sizes.set(r.datname, BigInt(r.size));
      }
      return sizes;
    },
  };
}
