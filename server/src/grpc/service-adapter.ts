// Serves protobuf-es service implementations on grpc-js: each call admitted, traced, cancelled and answered once, its errors converted in one place.
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";
import { EncodedMessage } from "../execution/call-streams.js";
import { decoderFor } from "../../../wire/src/codecs.js";
import { toStatusObject } from "../client-errors.js";
import { GatewayError, toGatewayError } from "../errors.js";
import type { Principal } from "../principal.js";
import type { BidiStreamingImpl, CallContext, ServerStreamingImpl, ServiceImpl, UnaryImpl } from "../services/service-contract.js";
import { REQUEST_ID_HEADER, type CallRecord, type CallTelemetry } from "../telemetry/call-telemetry.js";
import { runInContext } from "../telemetry/tracing.js";
import { CompressedMessage } from "./grpc-js-internals.js";
import { requestStream, responseStream, UndecodableRequest } from "./message-streams.js";
import type { OpenCalls } from "./open-calls.js";
import { compressed, compressesResponses, type ResponseCompression } from "./response-compression.js";

type AnyImpl = (...args: never[]) => Promise<unknown>;

/** What authentication reads of a call: its metadata (the API key) and its peer (address, client certificate). */
export type AuthenticatedCall = Pick<grpc.ServerUnaryCall<unknown, unknown>, "metadata" | "getPeer" | "getAuthContext" | "getPath"> & {
  /** The request message of a unary or server-streaming call (see `requestBytesOf`). */
  readonly request?: unknown;
};

/** Each request message's bytes as received, for a signature over them (`requestBytesOf`). */
const requestBytes = new WeakMap<object, Uint8Array>();

/** The bytes a request message was decoded from: what a signed request's signature covers. */
export function requestBytesOf(message: unknown): Uint8Array | undefined {
  return typeof message === "object" && message !== null ? requestBytes.get(message) : undefined;
}

/** Cross-cutting behaviour applied to every call of a service. */
export interface ServiceHooks {
  /**
   * Authenticates the call from its metadata and its peer's certificate,
   * telling `record` the peer; throws to refuse it. A check it cannot finish
   * at once (one that asks Redis) goes to `defer`: the handler runs once it
   * resolves, and the call is refused if it rejects.
   */
  authenticate(call: AuthenticatedCall, record?: CallRecord, defer?: (check: Promise<void>) => void): Principal;
  /**
   * Further checks of the principal for this service (admin only, rate
   * limits), for a call or one part of a long-lived stream (see
   * `CallContext.reauthorize`); throws to refuse it. `charge` says whether it
   * takes a rate-limit token: every call does, and every part of a stream but
   * the first, which the call's token covers.
   */
  authorize?(principal: Principal, charge: boolean): void;
  /** Observes every call: request id, log line, metrics, server span. */
  telemetry: CallTelemetry;
  /** Called with every error sent to a client, after conversion. */
  onError?(method: DescMethod, err: GatewayError): void;
  /** Where every call is counted while it runs, and which refuses new calls once the gateway drains. */
  calls?: OpenCalls;
  /** Response compression (default "none"): see `compressesResponses`. */
  compression?: ResponseCompression;
  /** Keep each unary request's bytes for `requestBytesOf` (only signed requests need them). */
  keepRequestBytes?: boolean;
}

/**
 * Registers a protobuf-es service on a grpc-js server: the grpc-js service
 * definition is derived from the protobuf-es descriptor (one generator for
 * server and client), messages are (de)serialized with protobuf-es, and every
 * call is authenticated before its handler runs. Errors of any kind leave as
 * a gRPC status with rich details.
 */
export function addService<S extends GenServiceMethods>(server: grpc.Server, service: GenService<S>, impl: ServiceImpl<S>, hooks: ServiceHooks): void {
  const definition: Record<string, grpc.MethodDefinition<object, object>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of (service as DescService).methods) {
    definition[method.name] = methodDefinition(service as DescService, method, hooks.keepRequestBytes === true);
    const handler = (impl as Record<string, AnyImpl | undefined>)[method.localName];
    handlers[method.name] =
      handler === undefined
        ? unimplementedHandler(method, hooks)
        : method.methodKind === "unary"
          ? unaryHandler(method, handler as unknown as UnaryImpl<DescMessage, DescMessage>, hooks)
          : method.methodKind === "server_streaming"
            ? serverStreamingHandler(method, handler as unknown as ServerStreamingImpl<DescMessage, DescMessage>, hooks)
            : method.methodKind === "bidi_streaming"
              ? bidiStreamingHandler(method, handler as unknown as BidiStreamingImpl<DescMessage, DescMessage>, hooks)
              : unimplementedHandler(method, hooks);
  }
  server.addService(definition as grpc.ServiceDefinition, handlers);
}

function methodDefinition(service: DescService, method: DescMethod, keepRequestBytes: boolean): grpc.MethodDefinition<object, object> {
  const decodeOrThrow = decoderFor(method.input);
  // Never throws: grpc-js would answer INTERNAL (see UndecodableRequest).
  const decode = (bytes: Uint8Array): object => {
    try {
      return decodeOrThrow(bytes);
    } catch (err) {
      return new UndecodableRequest(method.input.typeName, err);
    }
  };
  return {
    path: `/${service.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: (message) => Buffer.from(toBinary(method.input, message as MessageShape<DescMessage>)),
    requestDeserialize:
      keepRequestBytes && (method.methodKind === "unary" || method.methodKind === "server_streaming")
        ? (bytes: Buffer) => {
            const message = decode(bytes);
            requestBytes.set(message, bytes);
            return message;
          }
        : decode,
    responseSerialize: (message) =>
      message instanceof EncodedMessage || message instanceof CompressedMessage
        ? message.bytes
        : Buffer.from(toBinary(method.output, message as MessageShape<DescMessage>)),
    responseDeserialize: (bytes) => fromBinary(method.output, bytes),
    originalName: method.localName,
  };
}

/**
 * What every handler shares: the call's record (request id sent back at once
 * in the response headers, log line, metrics, server span), authentication
 * and authorization before the handler runs, an AbortSignal for cancellation
 * (the client's, or the deadline's as grpc-js sees it), and one conversion of
 * any error. `run` runs the handler inside the call's trace context and ends
 * the record with its outcome. The call has one answer: the handler takes it
 * with `answer()` before it sends its response or ends the call, and gets
 * false when the gateway's drain has ended the call already (see
 * `OpenCalls.endAll`): its outcome is then dropped. `compress` says whether
 * its responses are gzip-compressed (announced in the response headers).
 */
function startCall(
  method: DescMethod,
  call: {
    metadata: grpc.Metadata;
    getDeadline(): grpc.Deadline;
    on(event: "cancelled", listener: () => void): unknown;
    off(event: "cancelled", listener: () => void): unknown;
    sendMetadata(metadata: grpc.Metadata): void;
    getPeer(): string;
    getPath(): string;
    getAuthContext(): ReturnType<grpc.ServerUnaryCall<object, object>["getAuthContext"]>;
    /** A unary or server-streaming call's request, read before the call is admitted. */
    request?: unknown;
  },
  hooks: ServiceHooks,
  fail: (status: Partial<grpc.StatusObject>) => void,
): { context: CallContext; run: (handler: () => Promise<void>) => void; sendHeaders: () => void; answer: () => boolean; compress: boolean } | undefined {
  const record = hooks.telemetry.start(method, call.metadata);
  const compress = compressesResponses(hooks.compression ?? "none", call.metadata);
  let headersSent = false;
  /** The response headers (the request id), once. */
  const sendHeaders = () => {
    if (headersSent) return;
    headersSent = true;
    const headers = new grpc.Metadata();
    headers.set(REQUEST_ID_HEADER, record.requestId);
    // Replaces grpc-js's default "identity" (its response headers take the handler's last).
    if (compress) headers.set("grpc-encoding", "gzip");
    call.sendMetadata(headers);
  };
  const abort = new AbortController();
  // grpc-js also reports "cancelled" after every call it has ended: listen only while the call runs.
  const onCancelled = () => abort.abort();
  call.on("cancelled", onCancelled);
  let state: "open" | "answered" | "failed" = "open";
  /** Stops counting the call among the open ones (see `ServiceHooks.calls`). */
  let untrack = (): void => undefined;
  /** Takes the call's one answer; false if it has been taken already. */
  const take = (as: "answered" | "failed"): boolean => {
    if (state !== "open") return false;
    state = as;
    call.off("cancelled", onCancelled);
    untrack();
    return true;
  };
  const failWith = (err: unknown) => {
    if (!take("failed")) return;
    const error = toGatewayError(err);
    record.end(error);
    hooks.onError?.(method, error);
    sendHeaders();
    fail(toStatusObject(error));
  };
  /** A check of the call's authentication still under way (see `ServiceHooks.authenticate`): the handler waits for it. */
  let pending: Promise<void> | undefined;
  /** Authenticates and authorizes the call's key, telling `into` the platform; throws to refuse. */
  const admit = (into: CallRecord, charge: boolean): Principal => {
    const principal = hooks.authenticate(call, into, (check) => (pending = check));
    into.platform = principal.kind === "admin" ? "admin" : principal.platform;
    hooks.authorize?.(principal, charge);
    return principal;
  };
  const refusal = hooks.calls?.refusal;
  if (refusal !== undefined) {
    failWith(refusal);
    return undefined;
  }
  let principal: Principal;
  try {
    principal = admit(record, true);
  } catch (err) {
    record.asked = askedFor(call.request);
    failWith(err);
    return undefined;
  }
  // Only now: a caller that may not call learns nothing about what its bytes are.
  if (call.request instanceof UndecodableRequest) {
    failWith(call.request.error());
    return undefined;
  }
  if (hooks.calls !== undefined) untrack = hooks.calls.add(failWith);
  const deadline = call.getDeadline();
  /** Until a part has been admitted: the first uses the call's rate-limit token. */
  let firstPart = true;
  const context: CallContext = {
    principal,
    metadata: call.metadata,
    signal: abort.signal,
    deadline: deadline instanceof Date ? deadline.getTime() : deadline,
    record,
    peer: call.getPeer(),
    get clientCertificate() {
      const subject = call.getAuthContext()?.sslPeerCertificate?.subject as { CN?: string | string[] } | undefined;
      return [subject?.CN ?? ""].flat().join(",");
    },
    startPart: () => hooks.telemetry.start(method, call.metadata, record),
    reauthorize: (part) => {
      admit(part, !firstPart);
      firstPart = false;
    },
  };
  return {
    context,
    sendHeaders,
    compress,
    answer: () => take("answered"),
    run: (handler) => {
      const running =
        pending === undefined
          ? runInContext(record.traceContext, handler)
          : pending.then(
              () => runInContext(record.traceContext, handler),
              (err: unknown) => {
                record.asked = askedFor(call.request);
                throw err;
              },
            );
      running.then(() => {
        if (state === "answered") record.end(undefined);
      }, failWith);
    },
  };
}

function unaryHandler(
  method: DescMethod,
  handler: UnaryImpl<DescMessage, DescMessage>,
  hooks: ServiceHooks,
): grpc.handleUnaryCall<MessageShape<DescMessage>, MessageShape<DescMessage>> {
  return (call, callback) => {
    const started = startCall(method, call, hooks, (status) => callback(status));
    started?.run(async () => {
      const response = await handler(call.request, started.context);
      // grpc-js tells a unary call's end, however it ended, as "cancelled" (once).
      const onSent = response instanceof EncodedMessage ? response.onSent : undefined;
      if (onSent !== undefined) {
        if (call.cancelled) onSent();
        else call.once("cancelled", onSent);
      }
      let message: MessageShape<DescMessage> | EncodedMessage | CompressedMessage =
        response instanceof EncodedMessage ? response : create(method.output, response);
      // Encoded once: a message too small to compress leaves as these bytes.
      if (started.compress) {
        const encoded =
          response instanceof EncodedMessage ? response : new EncodedMessage(Buffer.from(toBinary(method.output, message as MessageShape<DescMessage>)));
        message = await compressed(encoded, encoded.bytes);
      }
      if (!started.answer()) return;
      // Headers and response leave in the same tick: one write.
      started.sendHeaders();
      callback(null, message as MessageShape<DescMessage>);
    });
  };
}

function serverStreamingHandler(
  method: DescMethod,
  handler: ServerStreamingImpl<DescMessage, DescMessage>,
  hooks: ServiceHooks,
): grpc.handleServerStreamingCall<MessageShape<DescMessage>, MessageShape<DescMessage>> {
  return (call) => {
    const started = startCall(method, call, hooks, (status) => call.emit("error", status));
    started?.sendHeaders();
    started?.run(async () => {
      const responses = responseStream(method, call, started.context.signal, started.compress);
      // Rows still being compressed leave before the call ends, with its status or an error's.
      await handler(call.request, responses, started.context).finally(() => responses.written());
      if (started.answer()) call.end();
    });
  };
}

function bidiStreamingHandler(
  method: DescMethod,
  handler: BidiStreamingImpl<DescMessage, DescMessage>,
  hooks: ServiceHooks,
): grpc.handleBidiStreamingCall<MessageShape<DescMessage>, MessageShape<DescMessage>> {
  return (call) => {
    const started = startCall(method, call, hooks, (status) => call.emit("error", status));
    started?.sendHeaders();
    started?.run(async () => {
      const responses = responseStream(method, call, started.context.signal, started.compress);
      // Rows still being compressed leave before the call ends, with its status or an error's.
      await handler(requestStream(call), responses, started.context).finally(() => responses.written());
      if (started.answer()) call.end();
    });
  };
}

/** The platform and tenant a request names, if it has those fields (Query, Batch, CreateTenant …): what a refused call asked for. */
function askedFor(request: unknown): CallRecord["asked"] {
  const { platform, tenantId } = (request ?? {}) as { platform?: unknown; tenantId?: unknown };
  return typeof platform === "string" ? { platform, tenantId: typeof tenantId === "string" ? tenantId : "" } : undefined;
}

/** Answers UNIMPLEMENTED (after authentication, so the service's shape is no secret to outsiders either way). */
function unimplementedHandler(method: DescMethod, hooks: ServiceHooks): grpc.UntypedHandleCall {
  const refuse = (call: AuthenticatedCall): Partial<grpc.StatusObject> => {
    // A record of its own, so that a refusal here is logged and counted as anywhere else.
    const record = hooks.telemetry.start(method, call.metadata);
    let error: GatewayError;
    try {
      const principal = hooks.authenticate(call, record);
      record.platform = principal.kind === "admin" ? "admin" : principal.platform;
      error = new GatewayError("NOT_IMPLEMENTED", `${method.parent.typeName}.${method.name} is not implemented yet`);
    } catch (err) {
      error = toGatewayError(err);
    }
    record.end(error);
    return toStatusObject(error);
  };
  switch (method.methodKind) {
    case "unary":
    case "client_streaming":
      return ((call: AuthenticatedCall, callback: (err: Partial<grpc.StatusObject>) => void) => callback(refuse(call))) as grpc.UntypedHandleCall;
    default:
      return ((call: grpc.ServerWritableStream<object, object>) => call.emit("error", refuse(call))) as grpc.UntypedHandleCall;
  }
}
