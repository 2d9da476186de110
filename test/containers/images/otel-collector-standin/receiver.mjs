// A stand-in for the OpenTelemetry collector, for the container test only: it takes OTLP/HTTP trace exports and counts their spans.
//
// The real collector (otel/opentelemetry-collector, the compose file's default) cannot be had on the
// test machine: no image registry, not packaged by Debian, no Go module proxy to build it. This
// receiver speaks the same OTLP/HTTP (POST /v1/traces, protobuf or JSON, gzip or not) that the
// gateway's exporter sends, so the test can check that traces leave the gateway and arrive.
// GET /spans answers what arrived: { requests, spans, services: {name: n}, names: {name: n} }.
// Listens on OTLP_HTTP_PORT (4318, the collector's) of OTLP_HTTP_HOST (0.0.0.0).
import { createServer } from "node:http";
import { gunzipSync, inflateSync } from "node:zlib";

const received = { requests: 0, spans: 0, services: {}, names: {} };
/** Distinct span and service names kept: bounded, whatever is sent. */
const MAX_NAMES = 500;

function tally(table, name) {
  if (name in table || Object.keys(table).length < MAX_NAMES) table[name] = (table[name] ?? 0) + 1;
}

/** The fields of one protobuf message: [field number, wire type, value (bigint, or bytes for LEN)]. */
function* fields(bytes) {
  let at = 0;
  const varint = () => {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (at >= bytes.length) throw new Error("truncated varint");
      const b = bytes[at++];
      value |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return value;
    }
  };
  while (at < bytes.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 0) yield [field, wire, varint()];
    else if (wire === 1 || wire === 5) {
      at += wire === 1 ? 8 : 4;
      yield [field, wire, 0n];
    } else if (wire === 2) {
      const length = Number(varint());
      if (at + length > bytes.length) throw new Error("truncated field");
      yield [field, wire, bytes.subarray(at, at + length)];
      at += length;
    } else throw new Error(`unsupported wire type ${wire}`);
  }
}
const lenFields = (bytes, number) => [...fields(bytes)].filter(([f, w]) => f === number && w === 2).map(([, , v]) => v);
const text = (bytes) => Buffer.from(bytes).toString("utf8");

/** ExportTraceServiceRequest (opentelemetry/proto/collector/trace/v1): resource_spans = 1. */
function countProtobuf(body) {
  for (const resourceSpans of lenFields(body, 1)) {
    // ResourceSpans: resource = 1 (attributes = 1: KeyValue key = 1, value = 2: AnyValue string_value = 1), scope_spans = 2.
    let service = "unknown";
    for (const resource of lenFields(resourceSpans, 1)) {
      for (const kv of lenFields(resource, 1)) {
        const [key] = lenFields(kv, 1);
        const [value] = lenFields(kv, 2);
        if (key !== undefined && text(key) === "service.name" && value !== undefined) service = text(lenFields(value, 1)[0] ?? new Uint8Array());
      }
    }
    // ScopeSpans: spans = 2; Span: name = 5.
    for (const scopeSpans of lenFields(resourceSpans, 2)) {
      for (const span of lenFields(scopeSpans, 2)) {
        received.spans++;
        tally(received.services, service);
        tally(received.names, text(lenFields(span, 5)[0] ?? new Uint8Array()));
      }
    }
  }
}

/** The same request in OTLP's JSON encoding. */
function countJson(body) {
  const request = JSON.parse(text(body));
  for (const resourceSpans of request.resourceSpans ?? []) {
    const attribute = (resourceSpans.resource?.attributes ?? []).find((a) => a.key === "service.name");
    const service = attribute?.value?.stringValue ?? "unknown";
    for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
      for (const span of scopeSpans.spans ?? []) {
        received.spans++;
        tally(received.services, service);
        tally(received.names, String(span.name ?? ""));
      }
    }
  }
}

const server = createServer((req, res) => {
  if (req.method === "GET" && req.url === "/spans") {
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(received));
    return;
  }
  if (req.method !== "POST" || req.url !== "/v1/traces") {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const json = (req.headers["content-type"] ?? "").startsWith("application/json");
    try {
      let body = Buffer.concat(chunks);
      const encoding = req.headers["content-encoding"];
      if (encoding === "gzip") body = gunzipSync(body);
      else if (encoding === "deflate") body = inflateSync(body);
      received.requests++;
      if (json) countJson(body);
      else countProtobuf(body);
      // An empty ExportTraceServiceResponse: everything accepted.
      res.writeHead(200, { "content-type": json ? "application/json" : "application/x-protobuf" }).end(json ? "{}" : undefined);
    } catch (err) {
      console.error(`otel-collector-standin: bad export: ${err.message}`);
      res.writeHead(400).end();
    }
  });
});

const port = Number(process.env.OTLP_HTTP_PORT || 4318);
server.listen(port, process.env.OTLP_HTTP_HOST || "0.0.0.0", () => console.log(`otel-collector-standin: OTLP/HTTP on port ${port}`));
// As PID 1, node has no default signal handlers: stop at once when the container is stopped.
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
