// The server's outcomes (encoded results, or GatewayErrors sent as google.rpc.Status) as Query, QueryMany, Batch and QueryStream responses, by wire's hand encoders.
import { toBinary } from "@bufbuild/protobuf";
import { toRpcStatus } from "../client-errors.js";
import type { GatewayError } from "../errors.js";
import { StatusSchema } from "../../../wire/src/gen/google/rpc/status_pb.js";
import * as wire from "../../../wire/src/response-encoding.js";
import { EncodedMessage } from "./call-streams.js";

/** The outcome of one statement run as a call of its own: its ResultSet, encoded (`BufferedResult.encode`), or its error. */
export type Outcome = wire.Outcome<GatewayError>;

const statusBytes = (error: GatewayError): Uint8Array => toBinary(StatusSchema, toRpcStatus(error));

/** A QueryResponse of one encoded ResultSet, with the write's commit token if any and whether it came from the result cache; `onSent` as for any `EncodedMessage`. */
export function encodeQueryResponse(resultSet: Uint8Array, onSent?: () => void, commitToken = "", fromCache = false): EncodedMessage {
  return new EncodedMessage(wire.encodeQueryResponse(resultSet, commitToken, fromCache), onSent);
}

/** A QueryManyResponse or a BatchResponse of `outcomes`; `onSent` as for any `EncodedMessage`. */
export function encodeResults(outcomes: readonly Outcome[], onSent?: () => void): EncodedMessage {
  return new EncodedMessage(wire.encodeResults(outcomes, statusBytes), onSent);
}

/** A QueryStream answer's outcome: a query's, or a batch's (its BatchResponse, `encodeBatchResults`, or the error that failed it). */
export type StreamOutcome = wire.StreamOutcome<GatewayError>;

/** A transaction's answer on a QueryStream: its TransactionResponse, encoded, or the error that ended it. */
export type TransactionAnswer = wire.TransactionAnswer<GatewayError>;

/** A BatchResponse of `outcomes`, as a QueryStream answer carries it. */
export function encodeBatchResults(outcomes: readonly Outcome[]): Uint8Array {
  return wire.encodeResults(outcomes, statusBytes);
}

/** A QueryStreamResponse of `outcomes`, each with its query's or batch's number over the stream (`numbers`, in the same order), and of transactions' answers. */
export function encodeAnswers(
  numbers: readonly number[],
  outcomes: readonly StreamOutcome[],
  onSent?: () => void,
  transactions: readonly TransactionAnswer[] = [],
): EncodedMessage {
  return new EncodedMessage(wire.encodeAnswers(numbers, outcomes, statusBytes, transactions), onSent);
}
