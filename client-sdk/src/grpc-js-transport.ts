// The SDK's Connect transport to one gateway address over @grpc/grpc-js (a channel: keepalive, reconnection, round-robin over the addresses of a name) and its mutual-TLS credentials.
import {
  create,
  fromBinary,
  type DescMessage,
  type DescMethod,
  type DescMethodStreaming,
  type DescMethodUnary,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type StreamResponse, type Transport, type UnaryResponse } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { isIP } from "node:net";
import { connect as tlsConnect, createSecureContext } from "node:tls";
import { StatusSchema } from "../../wire/src/gen/google/rpc/status_pb.js";
import { decoderFor, encoderFor } from "../../wire/src/codecs.js";

/** Options of `createGrpcJsTransport`. */
export interface GrpcJsTransportOptions {
  /** `host:port` of the gateway (a host name's addresses are each connected and used round-robin). */
  target: string;
  credentials: grpc.ChannelCredentials;
  /** Adds the metadata every call carries (the API key, trace context). */
  decorate(metadata: grpc.Metadata): void;
  /** Awaited before the first call: what `decorate` needs to be loaded. */
  ready: Promise<void>;
  /** Largest response message accepted. */
  maxReceiveMessageBytes: number;
  /** "gzip": requests are gzip-compressed, which asks the gateway to compress its responses (grpc-js accepts compressed responses either way). */
  compression: "gzip" | "none";
  /** The signature headers of a call to `path` whose request message is `body` (undefined: a stream of them, only the opening signed). */
  sign?: (path: string, body: Uint8Array | undefined) => Record<string, string>;
}

type SecureConnector = ReturnType<grpc.ChannelCredentials["_createSecureConnector"]>;

/**
 * Mutual-TLS channel credentials for `host`. For a host name they are
 * grpc-js's own; for an IP address they send no TLS server name (RFC 6066
 * forbids an address there, and Node warns about it on every process, but
 * grpc-js always sets one) and check the certificate's IP address instead, as
 * Node does for a connection without one.
 */
export function tlsCredentials(host: string, tls: { ca: Buffer; key: Buffer; cert: Buffer }): grpc.ChannelCredentials {
  const address = host.replace(/^\[(.*)\]$/, "$1");
  if (isIP(address) === 0) return grpc.credentials.createSsl(tls.ca, tls.key, tls.cert);
  return new AddressTlsCredentials(address, createSecureContext({ ca: tls.ca, key: tls.key, cert: tls.cert }));
}

class AddressTlsCredentials extends grpc.ChannelCredentials {
  constructor(
    private readonly address: string,
    private readonly context: ReturnType<typeof createSecureContext>,
  ) {
    super();
  }
  _isSecure(): boolean {
    return true;
  }
  _equals(other: grpc.ChannelCredentials): boolean {
    return other === this;
  }
  _createSecureConnector(_target: unknown, _options: unknown, callCredentials?: grpc.CallCredentials): SecureConnector {
    const { address, context } = this;
    return {
      connect: (socket) =>
        new Promise((resolve, reject) => {
          const tlsSocket = tlsConnect({ socket, secureContext: context, host: address, ALPNProtocols: ["h2"] }, () => {
            if (tlsSocket.authorized) resolve({ socket: tlsSocket, secure: true });
            else reject(tlsSocket.authorizationError);
          });
          tlsSocket.on("error", reject);
        }),
      waitForReady: () => Promise.resolve(),
      getCallCredentials: () => callCredentials ?? grpc.credentials.createEmpty(),
      destroy() {},
    };
  }
}

/** A Connect transport that can also be closed. */
export interface ClosableTransport extends Transport {
  close(): void;
}

/** A transport to one gateway address, which tells whether it has a connection. */
export interface GatewayTransport extends ClosableTransport {
  /** The channel's state; `connect` starts connecting an idle one (a call does too). */
  connectivity(connect: boolean): grpc.connectivityState;
}

/**
 * A Connect `Transport` over @grpc/grpc-js: Connect's typed clients on top,
 * grpc-js's HTTP/2 and gRPC framing underneath. Measured against Connect's
 * own gRPC transport on the same gateway, it costs the client about half the
 * CPU per call (BENCHMARKS.md), and grpc-js's channel brings keepalive and
 * reconnection with backoff. Errors are ConnectErrors with the status details
 * the gateway sent (google.rpc.Status in grpc-status-details-bin).
 */
export function createGrpcJsTransport(options: GrpcJsTransportOptions): GatewayTransport {
  const client = new grpc.Client(options.target, options.credentials, {
    // Every address a host name resolves to is connected and used in turn (pick_first, the default, would use one).
    "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 5_000,
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes,
    "grpc.max_send_message_length": -1,
    ...(options.compression === "gzip" ? { "grpc.default_compression_algorithm": grpc.compressionAlgorithms.gzip } : {}),
  });
  const codecs = new Map<DescMethod, Codec>();
  /** Calls in flight, cancelled by `close`. */
  const active = new Set<{ cancel(): void }>();
  const codec = (method: DescMethod): Codec => {
    let c = codecs.get(method);
    if (c === undefined) {
      c = {
        path: `/${method.parent.typeName}/${method.name}`,
        ...requestCodec(method.input),
        deserialize: decoderFor(method.output),
      };
      codecs.set(method, c);
    }
    return c;
  };
  const callOptions = (timeoutMs: number | undefined): grpc.CallOptions =>
    timeoutMs !== undefined && timeoutMs > 0 ? { deadline: Date.now() + timeoutMs } : {};
  const metadataOf = (header: HeaderInit | undefined): grpc.Metadata => {
    const metadata = new grpc.Metadata();
    if (header !== undefined) new Headers(header).forEach((value, key) => metadata.set(key, value));
    options.decorate(metadata);
    return metadata;
  };

  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: MessageInitShape<I>,
    ): Promise<UnaryResponse<I, O>> {
      await options.ready;
      if (signal?.aborted) throw aborted(signal);
      const { path, serialize, deserialize, byHand } = codec(method);
      return new Promise((resolve, reject) => {
        let responseHeader: grpc.Metadata | undefined;
        let trailer: grpc.Metadata | undefined;
        const onAbort = () => call.cancel();
        const message = byHand ? input : create(method.input, input);
        const metadata = metadataOf(header);
        // A signed call: the signature covers the very bytes sent, so they are encoded once, here.
        const bytes = options.sign === undefined ? undefined : serialize(message);
        if (bytes !== undefined) signInto(metadata, options.sign!(path, bytes));
        const encode = bytes === undefined ? serialize : () => bytes;
        const call = client.makeUnaryRequest(path, encode, deserialize, message, metadata, callOptions(timeoutMs), (err, value) => {
          signal?.removeEventListener("abort", onAbort);
          active.delete(call);
          if (err) reject(toConnectError(err, signal));
          else
            resolve({
              stream: false,
              service: method.parent,
              method,
              header: toHeaders(responseHeader),
              message: value as MessageShape<O>,
              trailer: toHeaders(trailer),
            });
        });
        call.on("metadata", (m: grpc.Metadata) => (responseHeader = m));
        call.on("status", (s: grpc.StatusObject) => (trailer = s.metadata));
        signal?.addEventListener("abort", onAbort, { once: true });
        active.add(call);
      });
    },

    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
    ): Promise<StreamResponse<I, O>> {
      await options.ready;
      if (signal?.aborted) throw aborted(signal);
      const { path, serialize, deserialize, byHand } = codec(method);
      const metadata = metadataOf(header);
      let call: grpc.ClientReadableStream<MessageShape<DescMessage>>;
      switch (method.methodKind) {
        case "server_streaming": {
          let request: MessageInitShape<I> | undefined;
          for await (const message of input) {
            request = message;
            break;
          }
          if (request === undefined) throw new ConnectError("a server-streaming call needs its request", Code.InvalidArgument);
          const message = create(method.input, request);
          const bytes = options.sign === undefined ? undefined : serialize(message);
          if (bytes !== undefined) signInto(metadata, options.sign!(path, bytes));
          call = client.makeServerStreamRequest(path, bytes === undefined ? serialize : () => bytes, deserialize, message, metadata, callOptions(timeoutMs));
          break;
        }
        case "bidi_streaming": {
          if (options.sign !== undefined) signInto(metadata, options.sign(path, undefined));
          const duplex = client.makeBidiStreamRequest(path, serialize, deserialize, metadata, callOptions(timeoutMs));
          void pump(input, duplex, byHand ? undefined : (method.input as DescMessage));
          call = duplex;
          break;
        }
        default:
          throw new ConnectError(`${method.methodKind} calls are not supported`, Code.Unimplemented);
      }
      const onAbort = () => call.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
      active.add(call);
      call.on("status", () => active.delete(call));
      // The reader sees the error (the iterator listens too); one that never reads must not make it uncaught.
      call.on("error", () => undefined);
      const responseHeader = new Headers();
      const trailer = new Headers();
      call.on("metadata", (m: grpc.Metadata) => copyInto(responseHeader, m));
      call.on("status", (s: grpc.StatusObject) => copyInto(trailer, s.metadata));
      async function* messages(): AsyncGenerator<MessageShape<O>> {
        try {
          for await (const message of call as AsyncIterable<MessageShape<O>>) yield message;
        } catch (err) {
          throw toConnectError(err as grpc.ServiceError, signal);
        } finally {
          signal?.removeEventListener("abort", onAbort);
          call.cancel(); // a no-op once the call has ended; stops it when the reader left early
        }
      }
      return { stream: true, service: method.parent, method, header: responseHeader, message: messages(), trailer };
    },

    connectivity: (connect) => client.getChannel().getConnectivityState(connect),

    close() {
      for (const call of active) call.cancel();
      active.clear();
      client.close();
    },
  };
}

function signInto(metadata: grpc.Metadata, headers: Record<string, string>): void {
  for (const [name, value] of Object.entries(headers)) metadata.set(name, value);
}

/** What Connect passes as call headers (the DOM's HeadersInit). */
type HeaderInit = ConstructorParameters<typeof Headers>[0];

interface Codec {
  path: string;
  /** Requests are encoded from their init shape by hand (`encoderFor`): no message is made of them first. */
  byHand: boolean;
  serialize(message: MessageShape<DescMessage> | MessageInitShape<DescMessage>): Buffer;
  deserialize(bytes: Buffer): MessageShape<DescMessage>;
}

/** How a method's requests are encoded (see `encoderFor`). */
function requestCodec(schema: DescMessage): Pick<Codec, "byHand" | "serialize"> {
  const { byHand, encode } = encoderFor(schema);
  return {
    byHand,
    serialize: (message) => {
      const bytes = encode(message);
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
  };
}

/**
 * Writes the request messages of a bidirectional call as they come, with
 * backpressure, then half-closes. Each is made into a message of `schema`
 * first, unless `schema` is undefined: its requests are encoded by hand from
 * their init shape (QueryStream's, one per turn of a busy client).
 */
async function pump(
  input: AsyncIterable<MessageInitShape<DescMessage>>,
  call: grpc.ClientDuplexStream<MessageShape<DescMessage> | MessageInitShape<DescMessage>, unknown>,
  schema: DescMessage | undefined,
): Promise<void> {
  try {
    for await (const message of input) {
      if (!call.write(schema === undefined ? message : create(schema, message))) await new Promise((resolve) => call.once("drain", resolve));
    }
    call.end();
  } catch {
    call.cancel();
  }
}

function aborted(signal: AbortSignal): ConnectError {
  return new ConnectError("the operation was aborted", Code.Canceled, undefined, undefined, signal.reason);
}

/**
 * A grpc-js error as a ConnectError: same code (both number them as gRPC
 * does), the server's message, its trailers, and the details of the
 * `google.rpc.Status` in grpc-status-details-bin.
 */
function toConnectError(err: grpc.ServiceError, signal: AbortSignal | undefined): ConnectError {
  if (err.code === grpc.status.CANCELLED && signal?.aborted) return aborted(signal);
  if (typeof err.code !== "number") return ConnectError.from(err);
  const metadata = err.metadata as grpc.Metadata | undefined;
  const error = new ConnectError(err.details ?? err.message, err.code as number as Code, toHeaders(metadata), undefined, err);
  const bin = metadata?.get("grpc-status-details-bin")[0];
  if (bin instanceof Buffer) {
    try {
      const status = fromBinary(StatusSchema, bin);
      error.details = status.details.map((any) => ({ type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1), value: any.value }));
    } catch {
      // Malformed details: the code and message still stand.
    }
  }
  return error;
}

function toHeaders(metadata: grpc.Metadata | undefined): Headers {
  const headers = new Headers();
  if (metadata !== undefined) copyInto(headers, metadata);
  return headers;
}

function copyInto(headers: Headers, metadata: grpc.Metadata): void {
  for (const [key, values] of Object.entries(metadata.getMap())) {
    headers.append(key, typeof values === "string" ? values : Buffer.from(values).toString("base64"));
  }
}
