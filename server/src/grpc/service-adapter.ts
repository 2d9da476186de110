import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";
import { GatewayError, toGatewayError, toStatusObject } from "../errors.js";
import type { Principal } from "./api-keys.js";

/** What a handler knows about its call besides the request. */
export interface CallContext {
  readonly principal: Principal;
  readonly metadata: grpc.Metadata;
  /** Aborted when the client cancels. */
  readonly signal: AbortSignal;
  /** The call's deadline in epoch milliseconds; Infinity when it has none. */
  readonly deadline: number;
}

type UnaryImpl<I extends DescMessage, O extends DescMessage> = (request: MessageShape<I>, ctx: CallContext) => Promise<MessageInitShape<O>>;

/** Handlers of a service's unary methods, by their local (camelCase) name. Missing ones answer UNIMPLEMENTED. */
export type ServiceImpl<S extends GenServiceMethods> = {
  [K in keyof S]?: S[K] extends { methodKind: "unary"; input: infer I extends DescMessage; output: infer O extends DescMessage } ? UnaryImpl<I, O> : never;
};

/** Cross-cutting behaviour applied to every call of a service. */
export interface ServiceHooks {
  /** Authenticates the call from its metadata; throws to refuse it. */
  authenticate(metadata: grpc.Metadata): Principal;
  /** Further checks of the principal for this service (e.g. admin only). */
  authorize?(principal: Principal): void;
  /** Called with every error sent to a client, after conversion. */
  onError?(method: DescMethod, err: GatewayError): void;
}

/**
 * Registers a protobuf-es service on a grpc-js server: the grpc-js service
 * definition is derived from the protobuf-es descriptor (one generator for
 * server and client), messages are (de)serialized with protobuf-es, and every
 * call is authenticated before its handler runs. Errors of any kind leave as
 * a gRPC status with rich details.
 */
export function addService<S extends GenServiceMethods>(
  server: grpc.Server,
  service: GenService<S>,
  impl: ServiceImpl<S>,
  hooks: ServiceHooks,
): void {
  const definition: Record<string, grpc.MethodDefinition<object, object>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of (service as DescService).methods) {
    definition[method.name] = methodDefinition(service as DescService, method);
    const handler = (impl as Record<string, UnaryImpl<DescMessage, DescMessage> | undefined>)[method.localName];
    handlers[method.name] =
      method.methodKind === "unary" && handler !== undefined ? unaryHandler(method, handler, hooks) : unimplementedHandler(method, hooks);
  }
  server.addService(definition as grpc.ServiceDefinition, handlers);
}

function methodDefinition(service: DescService, method: DescMethod): grpc.MethodDefinition<object, object> {
  return {
    path: `/${service.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: (message) => Buffer.from(toBinary(method.input, message as MessageShape<DescMessage>)),
    requestDeserialize: (bytes) => fromBinary(method.input, bytes),
    responseSerialize: (message) => Buffer.from(toBinary(method.output, message as MessageShape<DescMessage>)),
    responseDeserialize: (bytes) => fromBinary(method.output, bytes),
    originalName: method.localName,
  };
}

function unaryHandler(
  method: DescMethod,
  handler: UnaryImpl<DescMessage, DescMessage>,
  hooks: ServiceHooks,
): grpc.handleUnaryCall<MessageShape<DescMessage>, MessageShape<DescMessage>> {
  return (call, callback) => {
    const abort = new AbortController();
    call.once("cancelled", () => abort.abort());
    const fail = (err: unknown) => {
      const error = toGatewayError(err);
      hooks.onError?.(method, error);
      callback(toStatusObject(error));
    };
    let principal: Principal;
    try {
      principal = hooks.authenticate(call.metadata);
      hooks.authorize?.(principal);
    } catch (err) {
      fail(err);
      return;
    }
    const deadline = call.getDeadline();
    const context = { principal, metadata: call.metadata, signal: abort.signal, deadline: deadline instanceof Date ? deadline.getTime() : deadline };
    handler(call.request, context).then(
      (response) => callback(null, create(method.output, response)),
      fail,
    );
  };
}

/** Answers UNIMPLEMENTED (after authentication, so the service's shape is no secret to outsiders either way). */
function unimplementedHandler(method: DescMethod, hooks: ServiceHooks): grpc.UntypedHandleCall {
  const status = (): Partial<grpc.StatusObject> => {
    return toStatusObject(new GatewayError("NOT_IMPLEMENTED", `${method.parent.typeName}.${method.name} is not implemented yet`));
  };
  const refuse = (metadata: grpc.Metadata): Partial<grpc.StatusObject> => {
    try {
      hooks.authenticate(metadata);
      return status();
    } catch (err) {
      return toStatusObject(toGatewayError(err));
    }
  };
  switch (method.methodKind) {
    case "unary":
    case "client_streaming":
      return ((call: { metadata: grpc.Metadata }, callback: (err: Partial<grpc.StatusObject>) => void) =>
        callback(refuse(call.metadata))) as grpc.UntypedHandleCall;
    default:
      return ((call: grpc.ServerWritableStream<object, object>) => call.emit("error", refuse(call.metadata))) as grpc.UntypedHandleCall;
  }
}
