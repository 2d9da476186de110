// The server's outcomes (encoded results, or GatewayErrors sent as google.rpc.Status) as Query, QueryMany, Batch and QueryStream responses, by wire's hand encoders.
import { toBinary } from "@bufbuild/protobuf";
import { toRpcStatus, type GatewayError } from "../errors.js";
import { StatusSchema } from "../../../wire/src/gen/google/rpc/status_pb.js";
import * as wire from "../../../wire/src/response-encoding.js";
import { EncodedMessage } from "./call-streams.js";

/** The outcome of one statement run as a call of its own: its ResultSet, encoded (`BufferedResult.encode`), or its error. */
export type Outcome = wire.Outcome<GatewayError>;

const statusBytes = (error: GatewayError): Uint8Array => toBinary(StatusSchema, toRpcStatus(error));

/** A QueryResponse of one encoded ResultSet; `onSent` as for any `EncodedMessage`. */
export function encodeQueryResponse(resultSet: Uint8Array, onSent?: () => void): EncodedMessage {
  return new EncodedMessage(wire.encodeQueryResponse(resultSet), onSent);
}

/** A QueryManyResponse or a BatchResponse of `outcomes`; `onSent` as for any `EncodedMessage`. */
export function encodeResults(outcomes: readonly Outcome[], onSent?: () => void): EncodedMessage {
  return new EncodedMessage(wire.encodeResults(outcomes, statusBytes), onSent);
}

/** A QueryStreamResponse of `outcomes`, each with its query's number over the stream (`numbers`, in the same order). */
export function encodeAnswers(numbers: readonly number[], outcomes: readonly Outcome[], onSent?: () => void): EncodedMessage {
  return new EncodedMessage(wire.encodeAnswers(numbers, outcomes, statusBytes), onSent);
}
