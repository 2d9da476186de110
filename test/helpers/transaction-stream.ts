// A Transaction stream driven message by message from a test, as a client library would drive it.
import assert from "node:assert/strict";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { TransactionRequestSchema, type TransactionResponse } from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { GatewayError, type GatewayClient } from "../../client-sdk/src/index.js";

type Request = MessageInitShape<typeof TransactionRequestSchema>;

/** A Transaction stream driven message by message, as a client library would. */
export function openStream(client: GatewayClient, platform: string, options: { timeoutMs?: number } = {}) {
  const requests = createWritableIterable<Request>();
  const abort = new AbortController();
  const responses = client.raw.query.transaction(requests, { signal: abort.signal, timeoutMs: options.timeoutMs })[Symbol.asyncIterator]();
  const send = (request: Request) => void requests.write(create(TransactionRequestSchema, request)).catch(() => undefined);
  return {
    send,
    begin: (value: Extract<Request["kind"], { case: "begin" }>["value"] = {}) => send({ kind: { case: "begin", value: { platform, ...value } } }),
    statement: (sql: string) => send({ kind: { case: "statement", value: { sql } } }),
    /** The next response; throws the call's error as a GatewayError. */
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
) {
  const s = openStream(client, platform, options);
  s.begin(begin);
  await expectKind(s, "begun");
  return s;
}
