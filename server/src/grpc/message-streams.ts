// The message streams of a grpc-js call as handlers see them (the types of execution/call-streams.ts): responses with backpressure by bytes, requests pulled one at a time.
import { create, toBinary, type DescMessage, type DescMethod, type MessageShape } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { GatewayError } from "../errors.js";
import { EncodedMessage, type RequestStream, type ResponseStream } from "../execution/call-streams.js";
import type { CompressedMessage } from "./grpc-js-internals.js";
import { compressed } from "./response-compression.js";

/** Bytes a streaming call may have written and not yet handed to HTTP/2 before `send` waits. */
const RESPONSE_BUFFER_BYTES = 1 << 20;

/**
 * The writing side of a grpc-js call with backpressure by bytes: messages are
 * encoded here, and once more than `RESPONSE_BUFFER_BYTES` are written but not
 * yet taken by HTTP/2 (whose flow control follows the client's reading),
 * `send` waits. grpc-js's own high-water mark counts 16 messages whatever
 * their size. Every waiting `send` shares one promise, so a handler that does
 * not await (Listen) adds no listener per message. A message's `onSent` is
 * called when its write is done, or else when the call ends (grpc-js drops
 * the writes of a call that has ended without calling them back).
 *
 * With `compress`, each message is gzip-compressed on the thread pool as it
 * is sent, several at once, and written in order when its turn comes; it is
 * counted by its uncompressed size from `send` on, so the backpressure (and
 * the result budget its `onSent` releases) holds what the gateway encoded,
 * not what leaves. `written()` resolves once every message sent has been
 * handed to grpc-js: the handler awaits it before it ends the call.
 */
export function responseStream(
  method: DescMethod,
  call: grpc.ServerWritableStream<object, object> | grpc.ServerDuplexStream<object, object>,
  signal: AbortSignal,
  compress = false,
): ResponseStream<DescMessage> & { written(): Promise<void> } {
  /** The last compressed message's write, which the next one follows. */
  let queue: Promise<void> = Promise.resolve();
  let pending = 0;
  let pendingBytes = 0;
  let room: { promise: Promise<void>; resolve: () => void } | undefined;
  const free = () => {
    const waiting = room;
    room = undefined;
    waiting?.resolve();
  };
  signal.addEventListener("abort", free, { once: true });
  /** `onSent` of the messages whose writes are not done; all called when the call ends. */
  let unsent: Set<() => void> | undefined;
  const ended = () => {
    for (const onSent of unsent!) onSent();
    unsent!.clear();
  };
  return {
    get pending() {
      return pending;
    },
    written: () => queue,
    send(message) {
      const onSent = message instanceof EncodedMessage ? message.onSent : undefined;
      if (signal.aborted || call.writableEnded || call.destroyed) {
        onSent?.();
        return Promise.resolve();
      }
      if (onSent !== undefined) {
        if (unsent === undefined) {
          unsent = new Set();
          call.once("cancelled", ended);
        }
        unsent.add(onSent);
      }
      const encoded = message instanceof EncodedMessage ? message : new EncodedMessage(Buffer.from(toBinary(method.output, create(method.output, message))));
      const size = encoded.bytes.length;
      pending++;
      pendingBytes += size;
      const done = () => {
        pending--;
        pendingBytes -= size;
        if (onSent !== undefined && unsent!.delete(onSent)) onSent();
        if (pendingBytes <= RESPONSE_BUFFER_BYTES) free();
      };
      if (!compress) call.write(encoded, done);
      else {
        const frame = compressed(encoded, encoded.bytes);
        queue = queue.then(async () => {
          const message: EncodedMessage | CompressedMessage = await frame;
          // Ended while it was compressed: dropped, as grpc-js drops what it was given.
          if (call.writableEnded || call.destroyed) done();
          else call.write(message, done);
        });
      }
      if (pendingBytes <= RESPONSE_BUFFER_BYTES) return Promise.resolve();
      if (room === undefined) {
        let resolve!: () => void;
        const promise = new Promise<void>((r) => (resolve = r));
        room = { promise, resolve };
      }
      return room.promise;
    },
  };
}

/**
 * A request message whose bytes could not be decoded, as the deserializer
 * hands it on: grpc-js answers a deserializer that throws with INTERNAL, as if
 * the gateway had failed, where the client sent a bad request. The call fails
 * with INVALID_ARGUMENT instead, once it is authenticated (service-adapter.ts),
 * or, for a message of a stream, where the handler reads it.
 */
export class UndecodableRequest {
  constructor(
    readonly typeName: string,
    readonly cause: unknown,
  ) {}

  error(): GatewayError {
    const why = this.cause instanceof Error ? `: ${this.cause.message}` : "";
    return new GatewayError("INVALID_REQUEST", `the request is not a valid ${this.typeName} message${why}`, { cause: this.cause });
  }
}

/**
 * The reading side of a bidirectional call, pulled one message at a time:
 * the call is paused while a message waits to be read, so a client cannot
 * queue unbounded requests in the gateway. Resolves undefined at half-close
 * or when the call ends; rejects with INVALID_ARGUMENT at a message that could
 * not be decoded.
 */
export function requestStream(call: grpc.ServerDuplexStream<object, object>): RequestStream<DescMessage> {
  const queue: (MessageShape<DescMessage> | UndecodableRequest)[] = [];
  let ended = false;
  let waiting: { resolve: (message: MessageShape<DescMessage> | undefined) => void; reject: (err: GatewayError) => void } | undefined;
  const finish = () => {
    ended = true;
    waiting?.resolve(undefined);
    waiting = undefined;
  };
  call.on("data", (message: MessageShape<DescMessage> | UndecodableRequest) => {
    if (waiting !== undefined) {
      const { resolve, reject } = waiting;
      waiting = undefined;
      if (message instanceof UndecodableRequest) reject(message.error());
      else resolve(message);
      return;
    }
    queue.push(message);
    call.pause();
  });
  call.on("end", finish);
  call.on("cancelled", finish);
  call.on("error", finish);
  return {
    next() {
      const message = queue.shift();
      if (message !== undefined) {
        call.resume();
        return message instanceof UndecodableRequest ? Promise.reject(message.error()) : Promise.resolve(message);
      }
      if (ended) return Promise.resolve(undefined);
      return new Promise((resolve, reject) => (waiting = { resolve, reject }));
    },
  };
}
