// A transaction driven message by message from a test, as a client library would drive it, over a Transaction call or a QueryStream.
import assert from "node:assert/strict";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import {
  TransactionRequestSchema,
  type QueryStreamRequestSchema,
  type QueryStreamResponse,
  type TransactionResponse,
} from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { GatewayError, type GatewayClient } from "../../client-sdk/src/index.js";

type Request = MessageInitShape<typeof TransactionRequestSchema>;

/** The two ways a transaction travels: a Transaction call of its own, or messages on the platform's QueryStream. */
export const TRANSPORTS = ["Transaction call", "QueryStream"] as const;
export type Transport = (typeof TRANSPORTS)[number];

/** A transaction driven message by message, as a client library would, over a Transaction call or a QueryStream. */
export function openStream(client: GatewayClient, platform: string, options: { timeoutMs?: number } = {}, transport: Transport = "Transaction call") {
  const { send, next, halfClose, cancel } = transport === "QueryStream" ? overQueryStream(client, platform, options) : overCall(client, options);
  return {
    send,
    begin: (value: Extract<Request["kind"], { case: "begin" }>["value"] = {}) => send({ kind: { case: "begin", value: { platform, ...value } } }),
    statement: (sql: string) => send({ kind: { case: "statement", value: { sql } } }),
    /** The next response ("end" once the transaction is over); throws the call's error, or the error that ended the transaction, as a GatewayError. */
    next,
    halfClose,
    cancel,
  };
}

function overCall(client: GatewayClient, options: { timeoutMs?: number }) {
  const requests = createWritableIterable<Request>();
  const abort = new AbortController();
  const responses = client.raw.query.transaction(requests, { signal: abort.signal, timeoutMs: options.timeoutMs })[Symbol.asyncIterator]();
  return {
    send: (request: Request) => void requests.write(create(TransactionRequestSchema, request)).catch(() => undefined),
    async next(): Promise<TransactionResponse["kind"] | "end"> {
      try {
        const r = await responses.next();
        return r.done ? "end" : r.value.kind;
      } catch (err) {
        throw GatewayError.from(err);
      }
    },
    halfClose: () => requests.close(),
    cancel: () => abort.abort(),
  };
}

/** One transaction (number 7) on a QueryStream of its own; the gateway's first response (its features) must say it carries transactions. */
function overQueryStream(client: GatewayClient, platform: string, options: { timeoutMs?: number }) {
  const requests = createWritableIterable<MessageInitShape<typeof QueryStreamRequestSchema>>();
  const abort = new AbortController();
  const responses = client.raw.query.queryStream(requests, { signal: abort.signal })[Symbol.asyncIterator]();
  const number = 7n;
  const answers: TransactionResponse["kind"][] = [];
  let over = false;
  let sawFeatures = false;
  return {
    send: (request: Request) =>
      void requests
        .write({ platform, transactions: [{ transaction: number, request, timeoutMs: request.kind?.case === "begin" ? options.timeoutMs : undefined }] })
        .catch(() => undefined),
    async next(): Promise<TransactionResponse["kind"] | "end"> {
      for (;;) {
        const answer = answers.shift();
        if (answer !== undefined) {
          if (answer.case === "committed" || answer.case === "rolledBack") over = true;
          return answer;
        }
        if (over) return "end";
        let r: IteratorResult<QueryStreamResponse>;
        try {
          r = await responses.next();
        } catch (err) {
          throw GatewayError.from(err);
        }
        if (r.done) return "end";
        if (!sawFeatures) {
          assert.equal(r.value.features?.transactions, true, "the stream's first response says it carries transactions");
          sawFeatures = true;
        }
        for (const t of r.value.transactions) {
          assert.equal(t.transaction, number);
          if (t.kind.case === "failed") {
            over = true;
            throw GatewayError.fromStatus(t.kind.value);
          }
          assert.equal(t.kind.case, "response");
          answers.push(t.kind.value!.kind);
        }
      }
    },
    halfClose: () => requests.close(),
    cancel: () => abort.abort(),
  };
}

export async function expectKind(stream: ReturnType<typeof openStream>, kind: string): Promise<TransactionResponse["kind"]> {
  const answer = await stream.next();
  assert.notEqual(answer, "end", `expected ${kind}, the stream ended`);
  if (answer === "end") throw new Error("unreachable");
  assert.equal(answer.case, kind, answer.case === "error" ? answer.value.message : undefined);
  return answer;
}

/** Reads the next answer, which must be an error with the given SQLSTATE. */
export async function expectSqlstate(stream: ReturnType<typeof openStream>, sqlstate: string): Promise<void> {
  const answer = await expectKind(stream, "error");
  assert.equal(answer.case === "error" && GatewayError.fromStatus(answer.value).sqlstate, sqlstate);
}

/** A Transaction stream whose BEGIN has been answered. */
export async function begunStream(
  client: GatewayClient,
  platform: string,
  begin: Parameters<ReturnType<typeof openStream>["begin"]>[0] = {},
  options: { timeoutMs?: number } = {},
  transport: Transport = "Transaction call",
) {
  const s = openStream(client, platform, options, transport);
  s.begin(begin);
  await expectKind(s, "begun");
  return s;
}
