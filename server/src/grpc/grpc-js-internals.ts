// The only module that reaches past grpc-js's public API: what response compression needs, and the node servers behind the gRPC port.
/*
 * Written against @grpc/grpc-js 1.14.7. grpc-js's server decompresses the
 * requests it receives (gzip, deflate; any other encoding is UNIMPLEMENTED),
 * but never compresses a response (grpc/grpc-node issue 1823): it frames
 * every message with the compressed flag 0, and it removes the request's
 * grpc-encoding and grpc-accept-encoding headers before a handler could see
 * them. Two of its private members are used to do the rest here. A third,
 * the map of the node servers it listens with, is how the connection limit
 * reaches them. None is promised to stay, so server/test/grpc-js-internals.test.ts
 * checks each against the installed package and names the one that changed.
 */
import type * as grpc from "@grpc/grpc-js";
import type { Server as TlsServer } from "node:tls";
// eslint-disable-next-line no-restricted-imports -- this module is where grpc-js's own modules are imported
import { BaseServerInterceptingCall } from "@grpc/grpc-js/build/src/server-interceptors.js";

/**
 * Metadata keys under which a handler finds the request's `grpc-encoding` and
 * `grpc-accept-encoding` (see `exposeRequestEncodings`). Whatever a client
 * sends under these names itself is replaced, so they cannot be forged.
 */
export const REQUEST_ENCODING_KEY = "x-db-gateway-request-grpc-encoding";
export const REQUEST_ACCEPT_ENCODING_KEY = "x-db-gateway-request-grpc-accept-encoding";

/** A response message whose bytes are already gzip-compressed: grpc-js frames it with the compressed flag set. */
export class CompressedMessage {
  constructor(readonly bytes: Buffer) {}
}

type StreamHandler = (this: unknown, extraInterceptors: unknown, stream: unknown, headers: Record<string, string | string[] | undefined>) => void;

/** The grpc-js Server methods every incoming HTTP/2 stream goes through (which one depends on whether channelz is on); both take the raw headers. */
const STREAM_HANDLERS = ["_streamHandler", "_channelzHandler"] as const;

/**
 * Copies each request's `grpc-encoding` and `grpc-accept-encoding` headers into
 * its metadata under `REQUEST_ENCODING_KEY` and `REQUEST_ACCEPT_ENCODING_KEY`.
 * To be called before `bindAsync`, which binds the handlers.
 */
export function exposeRequestEncodings(server: grpc.Server): void {
  const handlers = server as unknown as Record<(typeof STREAM_HANDLERS)[number], StreamHandler>;
  for (const name of STREAM_HANDLERS) {
    const original = handlers[name];
    if (typeof original !== "function") throw new Error(`@grpc/grpc-js has no Server.${name} any more: see server/src/grpc/grpc-js-internals.ts`);
    handlers[name] = function (extraInterceptors, stream, headers) {
      copyHeader(headers, "grpc-encoding", REQUEST_ENCODING_KEY);
      copyHeader(headers, "grpc-accept-encoding", REQUEST_ACCEPT_ENCODING_KEY);
      original.call(this, extraInterceptors, stream, headers);
    };
  }
}

function copyHeader(headers: Record<string, string | string[] | undefined>, from: string, to: string): void {
  const value = headers[from];
  if (value === undefined) delete headers[to];
  else headers[to] = value;
}

type SerializeMessage = (this: unknown, value: unknown) => Buffer;

let framing: "patched" | undefined;

/**
 * Makes grpc-js's server set the compressed flag of the frame of every
 * `CompressedMessage` it writes (its serializer returns the compressed bytes
 * as they are). Once per process; the other messages are framed as before.
 */
export function frameCompressedMessages(): void {
  if (framing === "patched") return;
  const prototype = BaseServerInterceptingCall.prototype as unknown as { serializeMessage: SerializeMessage };
  const original = prototype.serializeMessage;
  if (typeof original !== "function")
    throw new Error("@grpc/grpc-js has no BaseServerInterceptingCall.serializeMessage any more: see server/src/grpc/grpc-js-internals.ts");
  prototype.serializeMessage = function (value) {
    const frame = original.call(this, value);
    if (value instanceof CompressedMessage) frame[0] = 1;
    return frame;
  };
  framing = "patched";
}

/**
 * The node servers (HTTP/2 over TLS: `tls.Server`s) listening on the ports
 * `server` has bound: one per address its bindAsync resolved. To be called
 * once bindAsync has called back.
 */
export function listeningServers(server: grpc.Server): TlsServer[] {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) throw new Error("@grpc/grpc-js has no Server.http2Servers map any more: see server/src/grpc/grpc-js-internals.ts");
  return [...(servers as Map<TlsServer, unknown>).keys()];
}
