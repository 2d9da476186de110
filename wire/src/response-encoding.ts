// Responses written by hand around results already encoded: Query and Transaction results, QueryMany, Batch and QueryStream outcomes.
import {
  ANSWERS,
  BATCH_RESULT,
  QUERY_ANSWER,
  QUERY_ANSWER_BATCH,
  QUERY_RESPONSE_COMMIT_TOKEN,
  QUERY_RESPONSE_FROM_CACHE,
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
export function encodeQueryResponse(resultSet: Uint8Array, commitToken = "", fromCache = false): Buffer {
  const result = encodeBytesField(QUERY_RESPONSE_RESULT, resultSet);
  if (commitToken === "" && !fromCache) return result;
  const parts = [result];
  // A token is an LSN's text (at most 17 ASCII bytes): its length fits one byte.
  if (commitToken !== "") parts.push(Buffer.from([QUERY_RESPONSE_COMMIT_TOKEN, commitToken.length]), Buffer.from(commitToken, "latin1"));
  if (fromCache) parts.push(Buffer.from([QUERY_RESPONSE_FROM_CACHE, 1]));
  return Buffer.concat(parts);
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
  return encodeRepeated([{ tag: RESULTS, numberTag: BATCH_RESULT.query, entries: outcomeEntries(BATCH_RESULT, outcomes, errorBytes) }]);
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
  const answers = { tag: ANSWERS, numberTag: QUERY_ANSWER.query, entries: outcomeEntries(QUERY_ANSWER, outcomes, errorBytes, (j) => numbers[j]!) };
  if (transactions.length === 0) return encodeRepeated([answers]);
  const answered = transactions.map((t) => ({
    number: t.transaction,
    tag: t.response !== undefined ? STREAM_TRANSACTION_RESPONSE.response : STREAM_TRANSACTION_RESPONSE.failed,
    bytes: t.response ?? errorBytes(t.failed!),
  }));
  return encodeRepeated([answers, { tag: STREAM_TRANSACTIONS, numberTag: STREAM_TRANSACTION_RESPONSE.transaction, entries: answered }]);
}

/** One message of a repeated field: a number (left out when 0, as protobuf-es does) and one length-delimited field. */
interface NumberedEntry {
  number: number;
  tag: number;
  bytes: Uint8Array;
}

/** Each outcome as an entry: the result, the batch's results or the error with `tags`, after the number `numberOf` gives (0 without). */
function outcomeEntries<E>(
  tags: OutcomeTags,
  outcomes: readonly StreamOutcome<E>[],
  errorBytes: (error: E) => Uint8Array,
  numberOf?: (index: number) => number,
): NumberedEntry[] {
  return outcomes.map((o, j) => ({
    number: numberOf?.(j) ?? 0,
    tag: o.result !== undefined ? tags.result : o.batch !== undefined ? QUERY_ANSWER_BATCH : tags.error,
    bytes: o.result ?? o.batch ?? errorBytes(o.error!),
  }));
}

/** Repeated fields of numbered entries, field after field, in one buffer sized first. */
function encodeRepeated(fields: readonly { tag: number; numberTag: number; entries: readonly NumberedEntry[] }[]): Buffer {
  const sizes: number[] = [];
  let total = 0;
  for (const field of fields) {
    for (const e of field.entries) {
      const size = (e.number === 0 ? 0 : 1 + varintSize(e.number)) + lengthDelimitedSize(e.bytes.length);
      sizes.push(size);
      total += lengthDelimitedSize(size);
    }
  }
  const response = Buffer.allocUnsafe(total);
  let at = 0;
  let n = 0;
  for (const { tag, numberTag, entries } of fields) {
    for (const e of entries) {
      response[at++] = tag;
      at = writeVarint(response, at, sizes[n++]!);
      if (e.number !== 0) at = writeVarintField(response, at, numberTag, e.number);
      at = writeBytesField(response, at, e.tag, e.bytes);
    }
  }
  return response;
}
