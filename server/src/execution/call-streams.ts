// The message streams of a call as handlers and execution see them, and the response already encoded that they may send; grpc/message-streams.ts implements them on grpc-js.
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";

/**
 * A response message already in its wire encoding, for the hot paths that
 * encode rows by hand (see wire/src/row-encoding.ts): sent as is. `onSent`,
 * when given, is called once the transport is done with the bytes: written
 * out (HTTP/2 flow control follows the client's reading), or the call ended
 * without (a unary response: once its call has ended).
 */
export class EncodedMessage {
  constructor(
    readonly bytes: Buffer,
    readonly onSent?: () => void,
  ) {}
}

/**
 * The responses of a streaming call. `send` resolves once the transport can
 * take more (HTTP/2 flow control reaches back to the handler), or at once when
 * the call is over (check `ctx.signal`); messages sent after the call ended
 * are dropped.
 */
export interface ResponseStream<O extends DescMessage> {
  send(message: MessageInitShape<O> | EncodedMessage): Promise<void>;
  /** Messages written and not yet taken by the transport. */
  readonly pending: number;
}

/** The requests of a client-streaming call, read one at a time: undefined once the client has half-closed. */
export interface RequestStream<I extends DescMessage> {
  next(): Promise<MessageShape<I> | undefined>;
  /** The request `next` would give at once, when one has already arrived (a stream that can tell; it stays unread). */
  peek?(): MessageShape<I> | undefined;
}
