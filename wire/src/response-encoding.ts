// Responses written by hand around results already encoded: Query and Transaction results, QueryMany, Batch and QueryStream outcomes.
import {
  ANSWERS,
  BATCH_RESULT,
  QUERY_ANSWER,
  QUERY_ANSWER_BATCH,
  QUERY_RESPONSE_RESULT,
  RESULTS,
  STREAM_TRANSACTION_RESPONSE,
  STREAM_TRANSACTIONS,
  TRANSACTION_RESPONSE_RESULT,
  type OutcomeTags,
} from "./tags.js";
import { encodeBytesField, lengthDelimitedSize, varintSize, writeBytesField, writeVarint, writeVarintField } from "./wire-writer.js";

/** The outcome of one statement: its ResultSet, encoded, or its error, of the caller's type `E` (`errorBytes` encodes it as a google.rpc.Status). */
export type Outcome<E> = { result: Uint8Array; error?: undefined; batch?: undefined } | { result?: undefined; error: E; batch?: undefined };

/** A QueryResponse holding one ResultSet, encoded. */
export function encodeQueryResponse(resultSet: Uint8Array): Buffer {
  return encodeBytesField(QUERY_RESPONSE_RESULT, resultSet);
}

/** A TransactionResponse holding a statement's ResultSet, encoded. */
export function encodeTransactionResult(resultSet: Uint8Array): Buffer {
  return encodeBytesField(TRANSACTION_RESPONSE_RESULT, resultSet);
}

/**
 * A QueryManyResponse or a BatchResponse (the same wire format: `repeated
 * BatchResult results`, BatchResult `{ result | error }`), written by hand
 * around the results already encoded.
 */
export function encodeResults<E>(outcomes: readonly Outcome<E>[], errorBytes: (error: E) => Uint8Array): Buffer {
  return encodeOutcomes(RESULTS, BATCH_RESULT, outcomes, errorBytes);
}

/** A QueryStream answer's outcome: a query's (or a failed batch's), or a batch's BatchResponse, encoded (`encodeResults`). */
export type StreamOutcome<E> = Outcome<E> | { batch: Uint8Array; result?: undefined; error?: undefined };

/** A transaction's answer on a QueryStream: its TransactionResponse, encoded, or the error that ended it. */
export type TransactionAnswer<E> = { transaction: number; response: Uint8Array; failed?: undefined } | { transaction: number; response?: undefined; failed: E };

/**
 * A QueryStreamResponse written by hand around the results already encoded:
 * `repeated QueryAnswer answers`, QueryAnswer `{ uint64 query; result | error | batch }`,
 * each outcome with its query's number over the stream; then `repeated
 * StreamTransactionResponse transactions`, `{ uint64 transaction; response | failed }`.
 */
export function encodeAnswers<E>(
  numbers: readonly number[],
  outcomes: readonly StreamOutcome<E>[],
  errorBytes: (error: E) => Uint8Array,
  transactions: readonly TransactionAnswer<E>[] = [],
): Buffer {
  const answers = encodeOutcomes(ANSWERS, QUERY_ANSWER, outcomes, errorBytes, (j) => numbers[j]!);
  if (transactions.length === 0) return answers;
  const parts = transactions.map((t) => {
    const bytes = t.response ?? errorBytes(t.failed!);
    const size = (t.transaction === 0 ? 0 : 1 + varintSize(t.transaction)) + lengthDelimitedSize(bytes.length);
    return {
      transaction: t.transaction,
      tag: t.response !== undefined ? STREAM_TRANSACTION_RESPONSE.response : STREAM_TRANSACTION_RESPONSE.failed,
      bytes,
      size,
    };
  });
  const response = Buffer.allocUnsafe(answers.length + parts.reduce((size, p) => size + lengthDelimitedSize(p.size), 0));
  let at = answers.copy(response, 0);
  for (const p of parts) {
    response[at++] = STREAM_TRANSACTIONS;
    at = writeVarint(response, at, p.size);
    if (p.transaction !== 0) at = writeVarintField(response, at, STREAM_TRANSACTION_RESPONSE.transaction, p.transaction);
    at = writeBytesField(response, at, p.tag, p.bytes);
  }
  return response;
}

/** `query`: 0 where the message has no query number (one shape for both: the encoder stays monomorphic). */

/**
 * Messages each holding one outcome, as the repeated field `tag`: the result
 * or the error with `tags`, after the number that `numberOf` gives as the
 * varint `tags.query` (left out when 0, as protobuf-es does).
 */
function encodeOutcomes<E>(
  tag: number,
  tags: OutcomeTags,
  outcomes: readonly StreamOutcome<E>[],
  errorBytes: (error: E) => Uint8Array,
  numberOf?: (index: number) => number,
): Buffer {
  const parts = outcomes.map((o, j) => {
    const number = numberOf?.(j) ?? 0;
    const bytes = o.result ?? o.batch ?? errorBytes(o.error!);
    const size = (number === 0 ? 0 : 1 + varintSize(number)) + lengthDelimitedSize(bytes.length);
    return { number, tag: o.result !== undefined ? tags.result : o.batch !== undefined ? QUERY_ANSWER_BATCH : tags.error, bytes, size };
  });
  const response = Buffer.allocUnsafe(parts.reduce((size, p) => size + lengthDelimitedSize(p.size), 0));
  let at = 0;
  for (const p of parts) {
    response[at++] = tag;
    at = writeVarint(response, at, p.size);
    if (p.number !== 0) at = writeVarintField(response, at, tags.query, p.number);
    at = writeBytesField(response, at, p.tag, p.bytes);
  }
  return response;
}
