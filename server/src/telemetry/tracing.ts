// OpenTelemetry traces when configured: a server span per call in its caller's trace, and a span per statement without its values.
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type Tracer,
} from "@opentelemetry/api";
import { status as Status, type Metadata } from "@grpc/grpc-js";

/** The tracer, once `startTracing` has run with tracing on; undefined means off, and every helper here costs nothing. */
let tracer: Tracer | undefined;

/** A running OpenTelemetry SDK. */
export interface Tracing {
  shutdown(): Promise<void>;
}

/**
 * Starts the OpenTelemetry Node SDK for traces, configured by the standard
 * OTEL_* environment variables (service name, resource attributes, sampler,
 * OTLP endpoint, protocol, headers …), which the SDK reads itself. Only
 * traces: no OTel metrics (Prometheus serves those) and no OTel logs.
 */
export async function startTracing(options: { serviceName: string; serviceVersion: string }): Promise<Tracing> {
  const { NodeSDK } = await import("@opentelemetry/sdk-node");
  const sdk = new NodeSDK({ serviceName: options.serviceName, metricReaders: [], logRecordProcessors: [] });
  sdk.start();
  tracer = trace.getTracer("db-gateway", options.serviceVersion);
  return {
    async shutdown() {
      tracer = undefined;
      await sdk.shutdown();
    },
  };
}

const getter = {
  keys: (carrier: Metadata) => Object.keys(carrier.getMap()),
  get: (carrier: Metadata, key: string) => {
    const values = carrier.get(key);
    return values.length === 0 ? undefined : values.map(String);
  },
};

/**
 * The trace context a query of a QueryMany call or QueryStream message
 * carries of its own (`TenantQuery.trace_context`: its caller's, when the
 * call carries several callers' queries), for `withStatementSpan`. Undefined
 * when it carries no valid span context, when it is larger than trace
 * headers are (over 8 fields or 8 KiB: ignored), or when tracing is off.
 */
export function queryTraceContext(carrier: Readonly<Record<string, string>>): Context | undefined {
  if (tracer === undefined) return undefined;
  const keys = Object.keys(carrier);
  // A carrier as headers would carry it (a few short fields), or none: a larger one is ignored.
  if (keys.length === 0 || keys.length > MAX_CARRIER_FIELDS || keys.reduce((n, k) => n + k.length + carrier[k]!.length, 0) > MAX_CARRIER_CHARS)
    return undefined;
  const extracted = propagation.extract(ROOT_CONTEXT, carrier);
  const span = trace.getSpanContext(extracted);
  return span !== undefined && trace.isSpanContextValid(span) ? extracted : undefined;
}

const MAX_CARRIER_FIELDS = 8;
const MAX_CARRIER_CHARS = 8_192;

/**
 * The server span of an RPC (RPC semantic conventions), continuing the
 * caller's W3C trace context from the call's metadata, and the context to
 * run the handler in so that its spans become children. Undefined when
 * tracing is off.
 */
export function startServerSpan(service: string, method: string, metadata: Metadata): { span: Span; context: Context } | undefined {
  if (tracer === undefined) return undefined;
  const parent = propagation.extract(context.active(), metadata, getter);
  const span = tracer.startSpan(`${service}/${method}`, { kind: SpanKind.SERVER, attributes: rpcAttributes(service, method) }, parent);
  return { span, context: trace.setSpan(parent, span) };
}

/**
 * The span of one part of a long-lived stream (a QueryStream message): a
 * child of the stream's server span, so that the part's statement spans hang
 * under it. Undefined when tracing is off.
 */
export function startPartSpan(service: string, method: string, stream: Context): { span: Span; context: Context } | undefined {
  if (tracer === undefined) return undefined;
  const span = tracer.startSpan(`${service}/${method} message`, { kind: SpanKind.INTERNAL, attributes: rpcAttributes(service, method) }, stream);
  return { span, context: trace.setSpan(stream, span) };
}

/** The RPC semantic conventions' attributes of a call's (or part's) span. */
function rpcAttributes(service: string, method: string): Attributes {
  return { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method };
}

/** Ends a server (or part) span with the call's gRPC status. */
export function endServerSpan(span: Span, code: Status, reason: string | undefined): void {
  span.setAttribute("rpc.grpc.status_code", code);
  if (reason !== undefined) span.setAttribute("db_gateway.reason", reason);
  if (code !== Status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message: reason });
  span.end();
}

/** Runs `fn` in a child span of the active one; without tracing, just runs it. */
export async function withSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T>): Promise<T> {
  if (tracer === undefined) return fn();
  return tracer.startActiveSpan(name, { kind: SpanKind.INTERNAL, attributes }, async (span) => {
    try {
      return await fn();
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as { reason?: string }).reason ?? "error" });
      throw err;
    } finally {
      span.end();
    }
  });
}

/**
 * A span for one statement, following the database conventions: the SQL text
 * has placeholders, never the values. A child of the active span, or, for a
 * query with a trace context of its own (`queryTraceContext`), a child in
 * that trace with a link to the active span (the call or message that
 * carried the query).
 */
export function withStatementSpan<T>(database: string, sql: string, fn: () => Promise<T>, own?: Context): Promise<T> {
  if (tracer === undefined) return fn();
  const operation = /^\s*([A-Za-z]+)/.exec(sql)?.[1]?.toUpperCase() ?? "SQL";
  // The span of the call or message that carried the query: linked from a span in the query's own trace.
  const carrying = own === undefined ? undefined : trace.getSpanContext(context.active());
  const linked = carrying !== undefined && trace.isSpanContextValid(carrying);
  return withClientSpan(
    `${operation} ${database}`,
    { "db.system": "postgresql", "db.system.name": "postgresql", "db.namespace": database, "db.operation.name": operation, "db.query.text": sql },
    fn,
    own ?? context.active(),
    linked ? [{ context: carrying }] : [],
  );
}

async function withClientSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T>, parent: Context, links: Link[]): Promise<T> {
  return tracer!.startActiveSpan(name, { kind: SpanKind.CLIENT, attributes, links }, parent, async (span) => {
    try {
      return await fn();
    } catch (err) {
      const e = err as { reason?: string; metadata?: Record<string, string> };
      if (e.metadata?.sqlstate) span.setAttribute("db.response.status_code", e.metadata.sqlstate);
      span.setStatus({ code: SpanStatusCode.ERROR, message: e.reason ?? "error" });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Runs `fn` in `ctx` (the server span's context); without tracing, just runs it. */
export function runInContext<T>(ctx: Context | undefined, fn: () => T): T {
  return ctx === undefined ? fn() : context.with(ctx, fn);
}
