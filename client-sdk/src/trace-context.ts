// The caller's OpenTelemetry trace context sent to the gateway, per call or per query, when the optional @opentelemetry/api is installed.
import type { Metadata } from "@grpc/grpc-js";

type OpenTelemetryApi = typeof import("@opentelemetry/api");

let api: OpenTelemetryApi | undefined;
let lookedFor = false;

/**
 * Resolves once `@opentelemetry/api` (an optional peer dependency) has been
 * looked for. Without it, no trace context is sent.
 */
export const traceContextReady: Promise<void> = import("@opentelemetry/api").then(
  (loaded) => {
    api = loaded;
    lookedFor = true;
  },
  () => void (lookedFor = true),
);

/** Whether `traceContextReady` has resolved: until then a caller's context cannot be read yet. */
export function traceContextLookedFor(): boolean {
  return lookedFor;
}

type Context = import("@opentelemetry/api").Context;

/**
 * A caller's OpenTelemetry context, kept with a query until it is sent
 * (undefined without `@opentelemetry/api`). Opaque in the SDK's declarations,
 * which must type-check without the optional package.
 */
export type CallerContext = object | undefined;

/** The caller's active OpenTelemetry context, to send with its query later (`traceContextOf`). */
export function callerContext(): CallerContext {
  return api?.context.active();
}

/**
 * Adds the W3C trace context of the caller's active OpenTelemetry span to a
 * call's metadata: through the propagators the application registered when it
 * registered any (so baggage or other formats it chose travel too), else as
 * `traceparent` and `tracestate` written here.
 */
export function injectTraceContext(metadata: Metadata): void {
  if (api !== undefined) inject(api, api.context.active(), metadata, (carrier, key, value) => carrier.set(key, value));
}

/** A query's trace context as `TenantQuery.trace_context` carries it, the same way; undefined when there is none. */
export function traceContextOf(caller: CallerContext): Record<string, string> | undefined {
  if (api === undefined || caller === undefined) return undefined;
  // Made only once a field is written: most queries of an untraced caller carry none.
  let carrier: Record<string, string> | undefined;
  inject(api, caller as Context, undefined, (_, key, value) => ((carrier ??= {})[key] = value));
  return carrier;
}

/** Runs `fn` in the caller's context (`callerContext`), so that a call it makes carries the caller's trace context. */
export function runInCallerContext<T>(caller: CallerContext, fn: () => T): T {
  return api === undefined || caller === undefined ? fn() : api.context.with(caller as Context, fn);
}

/**
 * Runs `fn` outside any caller's trace: for a call that carries many callers'
 * queries over time (a QueryStream), whose own span belongs to none of them.
 */
export function outsideTraces<T>(fn: () => T): T {
  return api === undefined ? fn() : api.context.with(api.ROOT_CONTEXT, fn);
}

function inject<C>(otel: OpenTelemetryApi, active: Context, carrier: C, set: (carrier: C, key: string, value: string) => void): void {
  const { propagation, trace } = otel;
  if (propagation.fields().length > 0) {
    propagation.inject(active, carrier, { set });
    return;
  }
  const span = trace.getSpanContext(active);
  if (span === undefined || !trace.isSpanContextValid(span)) return;
  set(carrier, "traceparent", `00-${span.traceId}-${span.spanId}-${(span.traceFlags & 0xff).toString(16).padStart(2, "0")}`);
  const state = span.traceState?.serialize();
  if (state) set(carrier, "tracestate", state);
}
