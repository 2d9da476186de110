import type { Metadata } from "@grpc/grpc-js";

type OpenTelemetryApi = typeof import("@opentelemetry/api");

let api: OpenTelemetryApi | undefined;

/**
 * Resolves once `@opentelemetry/api` (an optional peer dependency) has been
 * looked for. Without it, no trace context is sent.
 */
export const traceContextReady: Promise<void> = import("@opentelemetry/api").then(
  (loaded) => void (api = loaded),
  () => undefined,
);

/**
 * Adds the W3C trace context of the caller's active OpenTelemetry span to a
 * call's metadata: through the propagators the application registered when it
 * registered any (so baggage or other formats it chose travel too), else as
 * `traceparent` and `tracestate` written here.
 */
export function injectTraceContext(metadata: Metadata): void {
  if (api === undefined) return;
  const { context, propagation, trace } = api;
  const active = context.active();
  if (propagation.fields().length > 0) {
    propagation.inject(active, metadata, { set: (carrier, key, value) => carrier.set(key, value) });
    return;
  }
  const span = trace.getSpanContext(active);
  if (span === undefined || !trace.isSpanContextValid(span)) return;
  metadata.set("traceparent", `00-${span.traceId}-${span.spanId}-${(span.traceFlags & 0xff).toString(16).padStart(2, "0")}`);
  const state = span.traceState?.serialize();
  if (state) metadata.set("tracestate", state);
}
