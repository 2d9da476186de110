// QueryMany, Batch and QueryStream responses written by hand around results already encoded: each statement's result or error.
import { toBinary } from "@bufbuild/protobuf";
import { toRpcStatus, type GatewayError } from "../errors.js";
import { StatusSchema } from "../../../wire/src/gen/google/rpc/status_pb.js";
import { EncodedMessage } from "./call-streams.js";
import { lengthDelimitedSize, lengthDelimitedTag, varintSize, writeBytesField, writeVarint, writeVarintField } from "./protobuf-wire.js";

/** The outcome of one statement run as a call of its own: its ResultSet, encoded (`BufferedResult.encode`), or its error. */
export type Outcome = { result: Uint8Array; error?: undefined } | { result?: undefined; error: GatewayError };

/**
 * A QueryManyResponse or a BatchResponse (the same wire format:
 * `repeated BatchResult results = 1`, BatchResult `{ result = 1 | error = 2 }`),
 * written by hand around the results already encoded; `onSent` as for any
 * `EncodedMessage`.
 */
export function encodeResults(outcomes: readonly Outcome[], onSent?: () => void): EncodedMessage {
  return encodeOutcomes(outcomes, 1, undefined, onSent);
}

/**
 * A QueryStreamResponse written by hand around the results already encoded:
 * `repeated QueryAnswer answers = 1`, QueryAnswer `{ uint64 query = 1;
 * result = 2 | error = 3 }`, each outcome with its query's number over the stream.
 */
export function encodeAnswers(numbers: readonly number[], outcomes: readonly Outcome[], onSent?: () => void): EncodedMessage {
  return encodeOutcomes(outcomes, 2, (j) => numbers[j]!, onSent);
}

/**
 * `repeated … = 1` of messages each holding one outcome, its result as field
 * `resultField` and its error (a google.rpc.Status) as the next field, after
 * the varint field 1 that `numberOf` gives (left out when 0, as protobuf-es does).
 */
function encodeOutcomes(outcomes: readonly Outcome[], resultField: number, numberOf?: (index: number) => number, onSent?: () => void): EncodedMessage {
  const parts = outcomes.map((o, j) => {
    const number = numberOf?.(j) ?? 0;
    const bytes = o.error === undefined ? o.result : toBinary(StatusSchema, toRpcStatus(o.error));
    const size = (number === 0 ? 0 : 1 + varintSize(number)) + lengthDelimitedSize(bytes.length);
    return { number, field: o.error === undefined ? resultField : resultField + 1, bytes, size };
  });
  const response = Buffer.allocUnsafe(parts.reduce((size, p) => size + lengthDelimitedSize(p.size), 0));
  let at = 0;
  for (const p of parts) {
    response[at++] = lengthDelimitedTag(1);
    at = writeVarint(response, at, p.size);
    if (p.number !== 0) at = writeVarintField(response, at, 1, p.number);
    at = writeBytesField(response, at, p.field, p.bytes);
  }
  return new EncodedMessage(response, onSent);
}
