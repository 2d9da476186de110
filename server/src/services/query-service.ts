// QueryService's handlers: each data call routed to its tenant's database, run within its deadline and limits, ended cleanly at shutdown.
import { beforeStatement, GatewayError, toGatewayError } from "../errors.js";
import type { QueryService, QueryStreamRequest } from "../gen/dbgateway/v1/query_service_pb.js";
import { prepareBatch, runBatch } from "../execution/batch.js";
import { prepareStatement } from "../execution/execute.js";
import { runPipelined, type Outcome } from "../execution/pipeline.js";
import { encodeBytesField } from "../execution/protobuf-wire.js";
import { encodeAnswers, encodeResults } from "../execution/response-encoding.js";
import { checkQueryCount, runQueries, runQueryMany, type Answers } from "../execution/query-many.js";
import { runInteractiveTransaction } from "../execution/interactive-transaction.js";
import type { ResultAccount, ResultBudget } from "../execution/result-budget.js";
import { chunkLimits, streamQuery } from "../execution/stream-query.js";
import { beginStatement } from "../execution/transaction-control.js";
import { EncodedMessage } from "../execution/call-streams.js";
import { validateChannels, type ListenerHub } from "../notifications/listener-hub.js";
import type { PoolManager } from "../pool/pool-manager.js";
import { runInContext, withStatementSpan } from "../telemetry/tracing.js";
import type { CallRecord } from "../telemetry/call-telemetry.js";
import type { Router } from "../tenancy/router.js";
import type { ServiceImpl } from "./service-contract.js";

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
  const statementLimits = (ctx: { deadline: number; signal: AbortSignal }) => ({
    deadline: Math.min(ctx.deadline, Date.now() + limits.maxStatementMillis),
    signal: ctx.signal,
  });
  return {
    async query(request, ctx) {
      ctx.record.statements = 1;
      const database = await router.route(ctx, request.platform, request.tenantId);
      const statement = prepareStatement(request);
      return limits.results.withAccount(async (account) => {
        const [outcome] = await pools.withConnection(database, (lease) => runPipelined(lease, [statement], account), statementLimits(ctx));
        if (outcome!.error !== undefined) throw outcome!.error;
        return new EncodedMessage(encodeBytesField(1, outcome!.result), () => account.release()); // QueryResponse { result = 1 }
      });
    },

    async queryMany(request, ctx) {
      ctx.record.statements = request.queries.length;
      router.checkPlatform(ctx, request.platform);
      return limits.results.withAccount(async (account) => {
        const databaseOf = (tenantId: string) => router.database(request.platform, tenantId);
        const { outcomes, databases } = await runQueryMany(pools, databaseOf, request.queries, statementLimits(ctx), account);
        ctx.record.database = describeDatabases(databases);
        tallyFailures(ctx.record, outcomes);
        return encodeResults(outcomes, () => account.release());
      });
    },

    async queryStream(requests, responses, ctx) {
      let numbered = 0; // queries read so far: the next one's number
      let unanswered = 0;
      let awaiting = 0; // queries read whose answers are not yet in the outbox
      let room: (() => void) | undefined;
      const running = new Set<Promise<void>>();
      // Answers that come in the same turn of the event loop (from several connections' reads) leave as one
      // message, of about RESPONSE_BYTES at most (the client's receive limit can be low); at once when no
      // query read is still to be answered: no other answer can join them, and a lone query's answer then
      // leaves before its message's record is ended (metrics, log line). `sent`: each answer's message's
      // countdown of its answers written out, which then gives its results' share of the budget back.
      let outbox: { numbers: number[]; outcomes: Outcome[]; sent: (() => void)[]; bytes: number } | undefined;
      const flush = () => {
        if (outbox === undefined) return;
        const { numbers, outcomes, sent } = outbox;
        outbox = undefined;
        // A query counts until the transport has taken its answer: a client that does not read its
        // answers stops the gateway reading its queries, and answers cannot pile up in memory.
        const written = encodeAnswers(numbers, outcomes, () => sent.forEach((answerSent) => answerSent()));
        void responses.send(written).then(() => {
          unanswered -= numbers.length;
          if (unanswered < limits.maxStreamQueries) room?.();
        });
      };
      const answerFrom =
        (first: number, sent: () => void): Answers =>
        (indexes, outcomes) => {
          for (const [j, i] of indexes.entries()) {
            const outcome = outcomes[j]!;
            const bytes = outcome.result?.length ?? 256;
            if (outbox !== undefined && outbox.bytes + bytes > RESPONSE_BYTES) flush();
            if (outbox === undefined) {
              outbox = { numbers: [], outcomes: [], sent: [], bytes: 0 };
              setImmediate(flush);
            }
            outbox.numbers.push(first + i);
            outbox.outcomes.push(outcome);
            outbox.sent.push(sent);
            outbox.bytes += bytes;
          }
          awaiting -= indexes.length;
          if (awaiting <= 0) flush();
        };
      // The gateway's drain ends the wait under way (for a message, or for room): a function called, not
      // a promise raced against, since every race adds a reaction to a promise that lives as long as the
      // stream, holding each message's queries (a QueryStream's memory grew by every query it carried).
      let stopped = false;
      let wake: (() => void) | undefined;
      const stop = () => {
        stopped = true;
        wake?.();
      };
      /** `promise`'s value, or undefined at once when the gateway drains. */
      const unlessStopped = <T>(promise: Promise<T>): Promise<T | undefined> =>
        stopped
          ? Promise.resolve(undefined)
          : new Promise<T | undefined>((resolve, reject) => {
              wake = () => resolve(undefined);
              promise.then(resolve, reject);
            }).finally(() => (wake = undefined));
      if (draining.aborted) stop();
      else draining.addEventListener("abort", stop, { once: true });
      try {
        await readStream();
      } finally {
        draining.removeEventListener("abort", stop);
      }
      await Promise.all(running);
      flush();
      if (draining.aborted) throw beforeStatement(new GatewayError("SHUTTING_DOWN", "the gateway is shutting down: queries without an answer were not run"));

      /** Reads messages and starts each, until the client half-closes or the gateway drains. */
      async function readStream(): Promise<void> {
        for (;;) {
          const request = await unlessStopped(requests.next());
          if (request === undefined) break;
          const first = numbered;
          numbered += request.queries.length;
          if (request.queries.length === 0) continue;
          const record = ctx.startPart();
          let refused: GatewayError | undefined;
          try {
            ctx.reauthorize(record);
          } catch (err) {
            refused = toGatewayError(err);
            // Over the rate limit: this message's queries get the error, and the stream goes on. Any other refusal ends it.
            if (refused.reason !== "RATE_LIMITED") {
              record.end(refused);
              throw err;
            }
          }
          unanswered += request.queries.length;
          awaiting += request.queries.length;
          // The message's results hold their share of the budget until all its answers have been written out.
          const account = limits.results.account();
          let unsent = request.queries.length;
          const answer = answerFrom(first, () => {
            if (--unsent === 0) account.release();
          });
          // In the message's trace context: its statement spans hang under its span.
          const run = runInContext(record.traceContext, () => runStreamedQueries(request, record, account, answer, refused)).finally(() => running.delete(run));
          running.add(run);
          while (unanswered >= limits.maxStreamQueries && !ctx.signal.aborted && !draining.aborted) {
            await unlessStopped(new Promise<void>((resolve) => (room = resolve)));
          }
        }
      }

      async function runStreamedQueries(
        request: QueryStreamRequest,
        record: CallRecord,
        account: ResultAccount,
        answer: Answers,
        refused: GatewayError | undefined,
      ): Promise<void> {
        let error: GatewayError | undefined;
        try {
          if (refused !== undefined) throw refused;
          record.statements = request.queries.length;
          router.checkPlatform(ctx, request.platform);
          checkQueryCount(request.queries.length, "a QueryStream message");
          const deadline = request.timeoutMs > 0 ? Date.now() + request.timeoutMs : Infinity;
          const databaseOf = (tenantId: string) => router.database(request.platform, tenantId);
          const answerAndTally: Answers = (indexes, outcomes) => {
            // Queries stopped by the stream's own cancellation are not failures of theirs: the stream's end counts it.
            if (!ctx.signal.aborted) tallyFailures(record, outcomes);
            answer(indexes, outcomes);
          };
          const queryLimits = statementLimits({ deadline, signal: ctx.signal });
          record.database = describeDatabases(await runQueries(pools, databaseOf, request.queries, queryLimits, account, answerAndTally, "answer"));
        } catch (err) {
          // The message as a whole could not run (refused, a platform that is not the key's, too many queries): each query gets the error.
          error = toGatewayError(err);
          answer(
            request.queries.map((_, i) => i),
            request.queries.map(() => ({ error: error! })),
          );
        }
        record.end(error);
      }
    },

    async streamQuery(request, responses, ctx) {
      ctx.record.statements = 1;
      const database = await router.route(ctx, request.platform, request.tenantId);
      const statement = prepareStatement(request);
      const chunks = chunkLimits(request.maxRowsPerMessage, request.maxBytesPerMessage);
      await pools.withConnection(
        database,
        (lease) => withStatementSpan(database, statement.sql, () => streamQuery(lease, statement, responses, chunks)),
        statementLimits(ctx),
      );
    },

    async batch(request, ctx) {
      ctx.record.statements = request.statements.length;
      const database = await router.route(ctx, request.platform, request.tenantId);
      const batch = prepareBatch(request.statements, request.atomic, request.transactionOptions);
      // One response carries every result: the limits apply to them together.
      return limits.results.withAccount(async (account) => {
        const outcomes = await pools.withConnection(database, (lease) => runBatch(lease, batch, account), statementLimits(ctx));
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
      const transactionLimits = {
        maxStatementMillis: limits.maxStatementMillis,
        idleTimeoutMillis: limits.transactionIdleTimeoutMillis,
        results: limits.results,
      };
      const counted = {
        async next() {
          const request = await requests.next();
          if (request?.kind.case === "statement") ctx.record.statements++;
          return request;
        },
      };
      let begun = false;
      try {
        await pools.withConnection(
          database,
          (lease) => {
            begun = true;
            return runInteractiveTransaction(lease, begin, counted, responses, transactionLimits);
          },
          { deadline: ctx.deadline, signal: ctx.signal },
        );
      } catch (err) {
        // Interrupted by the end of the shutdown's grace period before COMMIT was sent (after, the shield
        // makes it COMMIT_OUTCOME_UNKNOWN): the transaction cannot commit, and the gateway rolls it back.
        if (begun && err instanceof GatewayError && err.reason === "SHUTTING_DOWN") {
          throw new GatewayError("ROLLED_BACK_AT_SHUTDOWN", "the gateway shut down with the transaction open: it was rolled back, nothing of it committed");
        }
        throw err;
      }
    },

    async listen(request, responses, ctx) {
      const database = await router.route(ctx, request.platform, request.tenantId);
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

/** About the most bytes of results one QueryStream response carries (a result larger than this goes alone). */
const RESPONSE_BYTES = 1 << 20;

/** Tells a call's record of its queries that failed on their own (the call itself went on). */
function tallyFailures(record: CallRecord, outcomes: readonly Outcome[]): void {
  for (const outcome of outcomes) if (outcome.error !== undefined) record.queryFailed(outcome.error);
}

/** The databases a call's queries went to, for its log line: the one, or how many. */
function describeDatabases(databases: readonly string[]): string {
  return databases.length === 1 ? databases[0]! : databases.length === 0 ? "" : `${databases.length} databases`;
}
