// What a service implements and what its handlers know of a call: the contract between services/ and the transport (grpc/service-adapter.ts), which serves it on grpc-js.
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type * as grpc from "@grpc/grpc-js";
import type { EncodedMessage, RequestStream, ResponseStream } from "../execution/call-streams.js";
import type { Principal } from "../principal.js";
import type { CallRecord } from "../telemetry/call-telemetry.js";

/** What a handler knows about its call besides the request. */
export interface CallContext {
  readonly principal: Principal;
  readonly metadata: grpc.Metadata;
  /** Aborted when the client cancels. */
  readonly signal: AbortSignal;
  /** The call's deadline in epoch milliseconds; Infinity when it has none. */
  readonly deadline: number;
  /** The call's record for logs, metrics and traces: the handler's routing tells it the database. */
  readonly record: CallRecord;
  /** The client's address. */
  readonly peer: string;
  /** The subject (CN) of the client's certificate, "" if it has none. Read on demand: it is costly (a full X.509 parse). */
  readonly clientCertificate: string;
  /** A record of its own for one part of a long-lived stream (a QueryStream message): its own log line, metrics, and span under the call's. */
  startPart(): CallRecord;
  /**
   * Authenticates and authorizes the call again, for a part of a long-lived
   * stream: the rate limit takes a token, except for the first part, which
   * uses the call's (and, should keys ever change while the gateway runs, a
   * key removed since the call began is refused). Throws to refuse; tells
   * `record` the platform.
   */
  reauthorize(record: CallRecord): void;
}

export type UnaryImpl<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => Promise<MessageInitShape<O> | EncodedMessage>;

export type ServerStreamingImpl<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  responses: ResponseStream<O>,
  ctx: CallContext,
) => Promise<void>;

export type BidiStreamingImpl<I extends DescMessage, O extends DescMessage> = (
  requests: RequestStream<I>,
  responses: ResponseStream<O>,
  ctx: CallContext,
) => Promise<void>;

/**
 * Handlers of a service's methods, by their local (camelCase) name. Missing
 * ones answer UNIMPLEMENTED. A streaming handler's call ends with OK when its
 * promise resolves, and with the error's status when it rejects.
 */
export type ServiceImpl<S extends GenServiceMethods> = {
  [K in keyof S]?: S[K] extends { methodKind: "unary"; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? UnaryImpl<I, O>
    : S[K] extends { methodKind: "server_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? ServerStreamingImpl<I, O>
      : S[K] extends { methodKind: "bidi_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
        ? BidiStreamingImpl<I, O>
        : never;
};
