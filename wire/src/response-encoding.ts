// Responses written by hand around results already encoded: Query and Transaction results, QueryMany, Batch and QueryStream outcomes.
import { ANSWERS, BATCH_RESULT, QUERY_ANSWER, QUERY_RESPONSE_RESULT, RESULTS, TRANSACTION_RESPONSE_RESULT, type OutcomeTags } from "./tags.js";
import { encodeBytesField, lengthDelimitedSize, varintSize, writeBytesField, writeVarint, writeVarintField } from "./wire-writer.js";

/** The outcome of one statement: its ResultSet, encoded, or its error, of the caller's type `E` (`errorBytes` encodes it as a google.rpc.Status). */
export type Outcome<E> = { result: Uint8Array; error?: undefined } | { result?: undefined; error: E };

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

/**
 * A QueryStreamResponse written by hand around the results already encoded:
 * `repeated QueryAnswer answers`, QueryAnswer `{ uint64 query; result | error }`,
 * each outcome with its query's number over the stream.
 */
export function encodeAnswers<E>(numbers: readonly number[], outcomes: readonly Outcome<E>[], errorBytes: (error: E) => Uint8Array): Buffer {
  return encodeOutcomes(ANSWERS, QUERY_ANSWER, outcomes, errorBytes, (j) => numbers[j]!);
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
  outcomes: readonly Outcome<E>[],
  errorBytes: (error: E) => Uint8Array,
  numberOf?: (index: number) => number,
): Buffer {
  const parts = outcomes.map((o, j) => {
    const number = numberOf?.(j) ?? 0;
    const bytes = o.error === undefined ? o.result! : errorBytes(o.error);
    const size = (number === 0 ? 0 : 1 + varintSize(number)) + lengthDelimitedSize(bytes.length);
    return { number, tag: o.error === undefined ? tags.result : tags.error, bytes, size };
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
