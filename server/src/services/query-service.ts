// QueryService's handlers: each data call routed to its tenant's database, run within its deadline and limits, ended cleanly at shutdown.
import { beforeStatement, GatewayError } from "../errors.js";
import type { QueryService } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { prepareBatch, runBatch } from "../execution/batch.js";
import { prepareStatement } from "../execution/execute.js";
import { runPipelined } from "../execution/pipeline.js";
import { encodeQueryResponse, encodeResults } from "../execution/response-encoding.js";
import { limitsOn, runQueryMany, type StatementLimits } from "../execution/query-many.js";
import { runTransaction, type TransactionLimits } from "../execution/interactive-transaction.js";
import type { ResultBudget } from "../execution/result-budget.js";
import { chunkLimits, streamQuery } from "../execution/stream-query.js";
import { beginStatement } from "../execution/transaction-control.js";
import { validateChannels, type ListenerHub } from "../notifications/listener-hub.js";
import type { Lease, PoolManager } from "../pool/pool-manager.js";
import { withStatementSpan } from "../telemetry/tracing.js";
import type { Router } from "../tenancy/router.js";
import { QueryStreamSession, type QueryStreamShared } from "./query-stream-session.js";
import type { ServiceImpl } from "./service-contract.js";
import { databaseNameOrEmpty } from "../tenancy/naming.js";
import type { StatementPolicy } from "../execution/statement-policy.js";
import { commitToken, onReadTarget, readOnlySession, readRequestOf, type ReadRouting } from "./read-targets.js";
import type { ResultCache } from "../coordination/result-cache.js";
import { mayWrite } from "../execution/leading-keyword.js";

/** Limits of the data plane. */
export interface QueryServiceLimits {
  /** Longest a statement (or a streamed result) runs when its call has no shorter deadline. */
  maxStatementMillis: number;
  /** Longest an interactive transaction may wait for its client's next message. */
  transactionIdleTimeoutMillis: number;
  /** Notifications a Listen subscriber may leave unread before it is disconnected. */
  maxPendingNotifications: number;
  /** Once this many queries of one QueryStream are read and not yet answered, the stream is not read until some are answered. */
  maxStreamQueries: number;
  /** The limits of buffered results (each call's) and the budget they draw on (the gateway's). */
  results: ResultBudget;
  /** The statement policy of each platform that has one (STATEMENT_CLASSES_<PLATFORM>); others run any statement. */
  policies?: ReadonlyMap<string, StatementPolicy>;
  /** Each database's quotas: its longest statement, and how many queries sent together it admits (the pool admits other calls). */
  quotas?: Required<Pick<StatementLimits, "statementMillisOf" | "admitSome">>;
  /** The clusters' streaming replicas, for read-only Query, StreamQuery and Transaction calls; undefined: every call runs on the primary. */
  reads?: ReadRouting;
  /** The result cache (RESULT_CACHE=on): Query calls with cache_ttl_ms, and the writes that end a database's cached results. */
  cache?: ResultCache;
}

/**
 * QueryService: request → route to the tenant's database → pool → PostgreSQL
 * → result. Requests are checked before a connection is taken. A call's
 * deadline bounds its wait for a connection and its statements (a transaction
 * as a whole, each of its statements at most `maxStatementMillis`); when it
 * passes or the client cancels, the running statement is cancelled on
 * PostgreSQL. Once `draining` aborts (the gateway shuts down), QueryStreams
 * stop reading and Transaction streams not yet begun end (SHUTTING_DOWN, not
 * sent); a transaction the shutdown interrupts before its COMMIT is sent
 * ends with ROLLED_BACK_AT_SHUTDOWN. Results that are buffered (every call
 * but StreamQuery) are counted as their rows arrive against `limits.results`,
 * and hold their share of the gateway's budget until their response has been
 * written out.
 */
export function createQueryService(
  router: Router,
  pools: PoolManager,
  listeners: ListenerHub,
  limits: QueryServiceLimits,
  draining: AbortSignal,
): ServiceImpl<(typeof QueryService)["method"]> {
  const checkOf = (platform: string) => limits.policies?.get(platform)?.check;
  const reads = limits.reads;
  const cache = limits.cache;
  /** Before a write is answered: the database's cached results end (see `ResultCache`). */
  const afterWrites = cache === undefined ? undefined : (database: string) => cache.invalidate(database);
  const statementLimits = (ctx: { deadline: number; signal: AbortSignal }, platform = ""): StatementLimits => ({
    deadline: Math.min(ctx.deadline, Date.now() + limits.maxStatementMillis),
    signal: ctx.signal,
    check: checkOf(platform),
    ...limits.quotas,
    ...(afterWrites === undefined ? {} : { afterWrites }),
  });
  const transactionLimits: TransactionLimits = {
    maxStatementMillis: limits.maxStatementMillis,
    idleTimeoutMillis: limits.transactionIdleTimeoutMillis,
    results: limits.results,
    ...(limits.quotas === undefined ? {} : { statementMillisOf: limits.quotas.statementMillisOf }),
    ...(limits.reads === undefined ? {} : { commitToken: (database: string, lease: Lease) => commitToken(limits.reads, database, lease) }),
    ...(afterWrites === undefined ? {} : { afterWrites }),
  };
  const streamShared: QueryStreamShared = {
    router,
    pools,
    reads,
    maxStreamQueries: limits.maxStreamQueries,
    results: limits.results,
    statementLimits,
    checkOf,
    draining,
    transactions: transactionLimits,
  };
  return {
    async query(request, ctx) {
      ctx.record.statements = 1;
      const database = await router.route(ctx, request.platform, request.tenantId);
      const statement = prepareStatement(request, undefined, checkOf(request.platform));
      if (request.cacheTtlMs > 0 && mayWrite(request.sql)) {
        throw new GatewayError("INVALID_REQUEST", "cache_ttl_ms is for statements that only read (SELECT, VALUES, TABLE, SHOW)");
      }
      const cached = request.cacheTtlMs > 0 ? await cache?.lookUp(database, request) : undefined;
      if (cached?.hit !== undefined) return encodeQueryResponse(cached.hit, undefined, "", true);
      return limits.results.withAccount(async (account) => {
        const { outcome, token } = await onReadTarget(limits.reads, pools, database, request, (target) =>
          target.withConnection(
            database,
            async (lease) => {
              if (request.readOnly && target === pools) await readOnlySession(lease);
              const [outcome] = await runPipelined(lease, [statement], account);
              // A write's token, once it committed: the position a replica must replay to show it.
              const token = request.readOnly || outcome!.error !== undefined ? "" : await commitToken(limits.reads, database, lease);
              return { outcome: outcome!, token };
            },
            limitsOn(database, statementLimits(ctx)),
          ),
        );
        if (outcome.error !== undefined) throw outcome.error;
        cached?.keep(outcome.result);
        if (afterWrites !== undefined && !request.readOnly && mayWrite(request.sql)) await afterWrites(database);
        return encodeQueryResponse(outcome.result, () => account.release(), token);
      });
    },

    async queryMany(request, ctx) {
      ctx.record.statements = request.queries.length;
      router.checkPlatform(ctx, request.platform);
      return limits.results.withAccount(async (account) => {
        const databaseOf = (tenantId: string) => router.database(request.platform, tenantId);
        const { outcomes, databases } = await runQueryMany(pools, databaseOf, request.queries, statementLimits(ctx, request.platform), account);
        ctx.record.setDatabases(databases);
        ctx.record.tallyFailures(outcomes, (i) => databaseNameOrEmpty(request.platform, request.queries[i]!.tenantId));
        return encodeResults(outcomes, () => account.release());
      });
    },

    queryStream: (requests, responses, ctx) => new QueryStreamSession(streamShared, requests, responses, ctx).run(),

    async streamQuery(request, responses, ctx) {
      ctx.record.statements = 1;
      const database = await router.route(ctx, request.platform, request.tenantId);
      const statement = prepareStatement(request, undefined, checkOf(request.platform));
      const chunks = chunkLimits(request.maxRowsPerMessage, request.maxBytesPerMessage);
      await onReadTarget(limits.reads, pools, database, request, (target) =>
        target.withConnection(
          database,
          async (lease) => {
            if (request.readOnly && target === pools) await readOnlySession(lease);
            return withStatementSpan(database, statement.sql, () => streamQuery(lease, statement, responses, chunks));
          },
          limitsOn(database, statementLimits(ctx)),
        ),
      );
      // Once committed, which is after its last message was sent: a read racing that message may still find a cached result.
      if (afterWrites !== undefined && !request.readOnly && mayWrite(request.sql)) await afterWrites(database);
    },

    async batch(request, ctx) {
      ctx.record.statements = request.statements.length;
      const database = await router.route(ctx, request.platform, request.tenantId);
      const batch = prepareBatch(request.statements, request.atomic, request.transactionOptions, checkOf(request.platform));
      // One response carries every result: the limits apply to them together.
      return limits.results.withAccount(async (account) => {
        const outcomes = await pools.withConnection(database, (lease) => runBatch(lease, batch, account), limitsOn(database, statementLimits(ctx)));
        if (afterWrites !== undefined && batch.statements.some((st) => mayWrite(st.sql))) await afterWrites(database);
        return encodeResults(outcomes, () => account.release());
      }, true);
    },

    async transaction(requests, responses, ctx) {
      const first = await unlessAborted(requests.next(), draining);
      // Not begun when the gateway drains: nothing ran, and the client may begin it again elsewhere.
      if (draining.aborted) throw beforeStatement(new GatewayError("SHUTTING_DOWN", "the gateway is shutting down: the transaction was not begun"));
      if (first === undefined) return; // the client gave up before beginning
      if (first.kind.case !== "begin") throw new GatewayError("INVALID_REQUEST", "the first message of a transaction stream must be begin");
      const { platform, tenantId, options } = first.kind.value;
      const database = await router.route(ctx, platform, tenantId);
      const begin = beginStatement(options);
      const counted = {
        async next() {
          const request = await requests.next();
          if (request?.kind.case === "statement") ctx.record.statements++;
          return request;
        },
      };
      const limits = { ...transactionLimits, onStatementError: (error: GatewayError) => ctx.record.queryFailed(error), check: checkOf(platform) };
      await onReadTarget(reads, pools, database, readRequestOf(options), (target) =>
        runTransaction(target, database, begin, counted, responses, limits, { deadline: ctx.deadline, signal: ctx.signal }),
      );
    },

    async listen(request, responses, ctx) {
      const database = await router.route(ctx, request.platform, request.tenantId);
      limits.policies?.get(request.platform)?.require("listen", "Listen calls");
      const channels = validateChannels(request.channels);
      await new Promise<void>((resolve, reject) => {
        const subscription = listeners.subscribe(database, channels, {
          started: () => void responses.send({ kind: { case: "started", value: {} } }),
          notify: (n) => {
            if (responses.pending >= limits.maxPendingNotifications) {
              subscription.unsubscribe();
              reject(new GatewayError("SUBSCRIBER_TOO_SLOW", `more than ${limits.maxPendingNotifications} notifications were left unread`));
              return;
            }
            void responses.send({ kind: { case: "notification", value: n } });
          },
          missed: () => void responses.send({ kind: { case: "missed", value: {} } }),
          failed: reject,
        });
        const stop = () => {
          subscription.unsubscribe();
          resolve();
        };
        if (ctx.signal.aborted) stop();
        else ctx.signal.addEventListener("abort", stop, { once: true });
      });
    },
  };
}

/** `promise`'s value, or undefined as soon as `signal` aborts. */
function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
