import { toBinary } from "@bufbuild/protobuf";
import { toRpcStatus } from "../errors.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { EncodedMessage } from "../grpc/service-adapter.js";
import type { Outcome } from "./pipeline.js";
import { lengthDelimitedSize, lengthDelimitedTag, varintSize, varintTag, writeBytesField, writeVarint } from "./protobuf-wire.js";

/**
 * A QueryManyResponse or a BatchResponse (the same wire format:
 * `repeated BatchResult results = 1`, BatchResult `{ result = 1 | error = 2 }`),
 * written by hand around the results already encoded.
 */
export function encodeResults(outcomes: readonly Outcome[]): EncodedMessage {
  const parts = outcomes.map((o) => (o.error === undefined ? { field: 1, bytes: o.result } : { field: 2, bytes: toBinary(StatusSchema, toRpcStatus(o.error)) }));
  const response = Buffer.allocUnsafe(parts.reduce((size, p) => size + lengthDelimitedSize(lengthDelimitedSize(p.bytes.length)), 0));
  let at = 0;
  for (const p of parts) {
    response[at++] = lengthDelimitedTag(1);
    at = writeVarint(response, at, lengthDelimitedSize(p.bytes.length));
    at = writeBytesField(response, at, p.field, p.bytes);
  }
  return new EncodedMessage(response);
}

/**
 * A QueryStreamResponse written by hand around the results already encoded:
 * `repeated QueryAnswer answers = 1`, QueryAnswer `{ uint64 query = 1;
 * result = 2 | error = 3 }`, the query numbered `first` + its index in its message.
 */
export function encodeAnswers(first: number, indexes: readonly number[], outcomes: readonly Outcome[]): EncodedMessage {
  const parts = outcomes.map((o, j) => {
    const query = first + indexes[j]!;
    const bytes = o.error === undefined ? o.result : toBinary(StatusSchema, toRpcStatus(o.error));
    const size = (query === 0 ? 0 : 1 + varintSize(query)) + lengthDelimitedSize(bytes.length);
    return { query, field: o.error === undefined ? 2 : 3, bytes, size };
  });
  const response = Buffer.allocUnsafe(parts.reduce((size, p) => size + lengthDelimitedSize(p.size), 0));
  let at = 0;
  for (const p of parts) {
    response[at++] = lengthDelimitedTag(1);
    at = writeVarint(response, at, p.size);
    if (p.query !== 0) {
      response[at++] = varintTag(1);
      at = writeVarint(response, at, p.query);
    }
    at = writeBytesField(response, at, p.field, p.bytes);
  }
  return new EncodedMessage(response);
}
