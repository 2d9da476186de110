// The result messages (QueryResponse, QueryManyResponse, BatchResponse, StreamQueryResponse, TransactionResponse, QueryStreamResponse) decoded by hand, to what protobuf-es's fromBinary gives.
import { fromBinary } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import {
  BatchResponseSchema,
  QueryManyResponseSchema,
  QueryResponseSchema,
  QueryStreamResponseSchema,
  StreamQueryResponseSchema,
  TransactionResponseSchema,
  type BatchResult,
  type QueryAnswer,
  type QueryResponse,
  type QueryStreamResponse,
  type StreamQueryResponse,
  type StreamSummary,
  type StreamTransactionResponse,
  type TransactionResponse,
} from "./gen/dbgateway/v1/query_service_pb.js";
import type { Column, ResultSet } from "./gen/dbgateway/v1/values_pb.js";
import { StatusSchema } from "./gen/google/rpc/status_pb.js";
import {
  ANSWERS,
  BATCH_RESULT,
  COLUMN,
  DURATION,
  QUERY_ANSWER,
  QUERY_ANSWER_BATCH,
  QUERY_RESPONSE_COMMIT_TOKEN,
  QUERY_RESPONSE_FROM_CACHE,
  QUERY_RESPONSE_RESULT,
  RESULT_SET,
  RESULT_SET_SUMMARY,
  RESULTS,
  STREAM_QUERY_RESPONSE,
  STREAM_SUMMARY,
  STREAM_TRANSACTION_RESPONSE,
  STREAM_TRANSACTIONS,
  TRANSACTION_RESPONSE_RESULT,
  type OutcomeTags,
  type SummaryTags,
} from "./tags.js";
import { skipListValue, withRowBytes } from "./row-decoding.js";
import { GIVE_UP, Reader } from "./wire-reader.js";

/**
 * Hand-written protobuf decoding of the responses that carry rows.
 *
 * protobuf-es decodes by reflection: for every field of every message it
 * looks the field up in the schema and goes through a reflective setter.
 * Rows are the bulk of every result, two or more `google.protobuf.Value`s
 * per row, so this was most of the SDK's CPU per streamed row
 * (BENCHMARKS.md). These decoders walk the wire format of the few result
 * messages directly and build the very objects `fromBinary` builds (plain
 * objects with `$typeName`, the same fields and defaults; compared with
 * `fromBinary` in wire/test/result-decoding.test.ts).
 *
 * Anything they were not written for (an unknown field from a newer
 * gateway, an unexpected wire type, a singular message sent twice, a
 * malformed message) makes them give up, and `fromBinary` decodes the
 * message instead: the same result or the same error, only slower.
 */
export const resultDecoders = new Map<string, (bytes: Uint8Array) => object>([
  [QueryResponseSchema.typeName, reading(readQueryResponse)],
  [QueryManyResponseSchema.typeName, reading((r) => readResultsResponse(r, "dbgateway.v1.QueryManyResponse"))],
  [BatchResponseSchema.typeName, reading((r) => readResultsResponse(r, "dbgateway.v1.BatchResponse"))],
  [StreamQueryResponseSchema.typeName, reading(readStreamQueryResponse)],
  [TransactionResponseSchema.typeName, reading(readTransactionResponse)],
  [QueryStreamResponseSchema.typeName, reading(readQueryStreamResponse)],
]);

/** A decoder of whole messages from one that reads them off a Reader. */
function reading(read: (r: Reader) => object): (bytes: Uint8Array) => object {
  return (bytes) => {
    const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return read(new Reader(buffer, 0, buffer.length));
  };
}

function readQueryResponse(r: Reader): QueryResponse {
  const message: QueryResponse = { $typeName: "dbgateway.v1.QueryResponse", commitToken: "", fromCache: false };
  while (r.more()) {
    const tag = r.tag();
    if (tag === QUERY_RESPONSE_COMMIT_TOKEN) {
      message.commitToken = r.string();
      continue;
    }
    if (tag === QUERY_RESPONSE_FROM_CACHE) {
      message.fromCache = r.bool();
      continue;
    }
    if (tag !== QUERY_RESPONSE_RESULT || message.result !== undefined) throw GIVE_UP;
    message.result = readResultSet(r.sub());
  }
  return message;
}

function readResultsResponse<T extends "dbgateway.v1.QueryManyResponse" | "dbgateway.v1.BatchResponse">(
  r: Reader,
  typeName: T,
): { $typeName: T; results: BatchResult[] } {
  const results: BatchResult[] = [];
  while (r.more()) {
    if (r.tag() !== RESULTS) throw GIVE_UP;
    results.push(readBatchResult(r.sub()));
  }
  return { $typeName: typeName, results };
}

function readBatchResult(r: Reader): BatchResult {
  const message: BatchResult = { $typeName: "dbgateway.v1.BatchResult", outcome: { case: undefined } };
  while (r.more()) message.outcome = readOutcome(r, r.tag(), message.outcome, BATCH_RESULT);
  return message;
}

/**
 * A `oneof outcome { ResultSet result; google.rpc.Status error }` field whose
 * tag was just read, its tags being `tags` (a second one, or any other field,
 * is left to fromBinary).
 */
function readOutcome(r: Reader, tag: number, outcome: BatchResult["outcome"], tags: OutcomeTags): BatchResult["outcome"] {
  if (outcome.case !== undefined) throw GIVE_UP;
  if (tag === tags.result) return { case: "result", value: readResultSet(r.sub()) };
  if (tag === tags.error) return { case: "error", value: readStatus(r.sub()) };
  throw GIVE_UP;
}

/** A QueryStreamResponse of answers and transactions' answers (its first response, the gateway's features, is left to fromBinary). */
function readQueryStreamResponse(r: Reader): QueryStreamResponse {
  const answers: QueryAnswer[] = [];
  const transactions: StreamTransactionResponse[] = [];
  while (r.more()) {
    const tag = r.tag();
    if (tag === ANSWERS) answers.push(readQueryAnswer(r.sub()));
    else if (tag === STREAM_TRANSACTIONS) transactions.push(readStreamTransactionResponse(r.sub()));
    else throw GIVE_UP;
  }
  return { $typeName: "dbgateway.v1.QueryStreamResponse", answers, transactions };
}

function readQueryAnswer(r: Reader): QueryAnswer {
  const message: QueryAnswer = { $typeName: "dbgateway.v1.QueryAnswer", query: 0n, outcome: { case: undefined } };
  while (r.more()) {
    const tag = r.tag();
    if (tag === QUERY_ANSWER.query) message.query = r.uint64();
    else if (tag === QUERY_ANSWER_BATCH) {
      if (message.outcome.case !== undefined) throw GIVE_UP;
      message.outcome = { case: "batch", value: readResultsResponse(r.sub(), "dbgateway.v1.BatchResponse") };
    } else message.outcome = readOutcome(r, tag, message.outcome as BatchResult["outcome"], QUERY_ANSWER);
  }
  return message;
}

function readStreamTransactionResponse(r: Reader): StreamTransactionResponse {
  const message: StreamTransactionResponse = { $typeName: "dbgateway.v1.StreamTransactionResponse", transaction: 0n, kind: { case: undefined } };
  while (r.more()) {
    const tag = r.tag();
    if (tag === STREAM_TRANSACTION_RESPONSE.transaction) message.transaction = r.uint64();
    else if (message.kind.case !== undefined) throw GIVE_UP;
    else if (tag === STREAM_TRANSACTION_RESPONSE.response) message.kind = { case: "response", value: readAnyTransactionResponse(r.sub()) };
    else if (tag === STREAM_TRANSACTION_RESPONSE.failed) message.kind = { case: "failed", value: readStatus(r.sub()) };
    else throw GIVE_UP;
  }
  return message;
}

/** A TransactionResponse inside a QueryStreamResponse: a result by hand, the other (small) kinds by fromBinary. */
function readAnyTransactionResponse(r: Reader): TransactionResponse {
  const bytes = r.buf.subarray(r.pos, r.end);
  try {
    return readTransactionResponse(r);
  } catch (err) {
    if (err !== GIVE_UP) throw err;
    return fromBinary(TransactionResponseSchema, bytes);
  }
}

function readTransactionResponse(r: Reader): TransactionResponse {
  // Only a statement's result is worth decoding by hand; the other kinds are small and rare.
  if (!r.more() || r.tag() !== TRANSACTION_RESPONSE_RESULT) throw GIVE_UP;
  const result = readResultSet(r.sub());
  if (r.more()) throw GIVE_UP;
  return { $typeName: "dbgateway.v1.TransactionResponse", kind: { case: "result", value: result } };
}

function readStreamQueryResponse(r: Reader): StreamQueryResponse {
  const message: StreamQueryResponse = { $typeName: "dbgateway.v1.StreamQueryResponse", columns: [], rows: [] };
  const bounds: number[] = [];
  while (r.more()) {
    switch (r.tag()) {
      case STREAM_QUERY_RESPONSE.columns:
        message.columns.push(readColumn(r.sub()));
        break;
      case STREAM_QUERY_RESPONSE.rows:
        skipListValue(r.sub(), bounds);
        break;
      case STREAM_QUERY_RESPONSE.summary:
        if (message.summary !== undefined) throw GIVE_UP;
        message.summary = readStreamSummary(r.sub());
        break;
      default:
        throw GIVE_UP;
    }
  }
  return withRowBytes(message, r.buf, bounds);
}

function readStreamSummary(r: Reader): StreamSummary {
  const message: StreamSummary = { $typeName: "dbgateway.v1.StreamSummary", command: "", rowsAffected: 0n };
  while (r.more()) readSummaryField(r, r.tag(), message, STREAM_SUMMARY);
  return message;
}

/**
 * Reads one of the `command`, `rows_affected` and `execution_time` fields
 * that a ResultSet and a StreamSummary share, their tags being `tags`; gives
 * up on any other field.
 */
function readSummaryField(r: Reader, tag: number, message: Pick<ResultSet, "command" | "rowsAffected" | "executionTime">, tags: SummaryTags): void {
  switch (tag) {
    case tags.command:
      message.command = r.string();
      break;
    case tags.rowsAffected:
      message.rowsAffected = r.uint64();
      break;
    case tags.executionTime:
      if (message.executionTime !== undefined) throw GIVE_UP;
      message.executionTime = readDuration(r.sub());
      break;
    default:
      throw GIVE_UP;
  }
}

function readResultSet(r: Reader): ResultSet {
  const message: ResultSet = { $typeName: "dbgateway.v1.ResultSet", columns: [], rows: [], command: "", rowsAffected: 0n };
  const bounds: number[] = [];
  while (r.more()) {
    const tag = r.tag();
    switch (tag) {
      case RESULT_SET.columns:
        message.columns.push(readColumn(r.sub()));
        break;
      case RESULT_SET.rows:
        skipListValue(r.sub(), bounds);
        break;
      default:
        readSummaryField(r, tag, message, RESULT_SET_SUMMARY);
    }
  }
  return withRowBytes(message, r.buf, bounds);
}

function readColumn(r: Reader): Column {
  const message: Column = { $typeName: "dbgateway.v1.Column", name: "", typeOid: 0, typeModifier: 0, tableOid: 0, columnNumber: 0 };
  while (r.more()) {
    const tag = r.tag();
    switch (tag) {
      case COLUMN.name:
        message.name = r.string();
        break;
      case COLUMN.typeOid:
        message.typeOid = r.uint32();
        break;
      case COLUMN.typeModifier:
        message.typeModifier = r.int32();
        break;
      case COLUMN.tableOid:
        message.tableOid = r.uint32();
        break;
      case COLUMN.columnNumber:
        message.columnNumber = r.uint32();
        break;
      default:
        throw GIVE_UP;
    }
  }
  return message;
}

function readDuration(r: Reader): Duration {
  const message: Duration = { $typeName: "google.protobuf.Duration", seconds: 0n, nanos: 0 };
  while (r.more()) {
    const tag = r.tag();
    if (tag === DURATION.seconds) message.seconds = r.int64();
    else if (tag === DURATION.nanos) message.nanos = r.int32();
    else throw GIVE_UP;
  }
  return message;
}

/** An error's `google.rpc.Status`: rare, so protobuf-es decodes it. */
function readStatus(r: Reader) {
  return fromBinary(StatusSchema, r.buf.subarray(r.pos, r.end));
}
