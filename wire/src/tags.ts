// The tags of the result messages, taken once from the generated descriptors: what the hand encoders write and the hand decoders read.
import { DurationSchema, ListValueSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  BatchResponseSchema,
  BatchResultSchema,
  QueryAnswerSchema,
  QueryManyResponseSchema,
  QueryResponseSchema,
  QueryStreamResponseSchema,
  StreamQueryResponseSchema,
  StreamTransactionResponseSchema,
  StreamSummarySchema,
  TransactionResponseSchema,
} from "./gen/dbgateway/v1/query_service_pb.js";
import { ColumnSchema, ResultSetSchema } from "./gen/dbgateway/v1/values_pb.js";
import { oneByteTag } from "./field-tags.js";

export const RESULT_SET = {
  columns: oneByteTag(ResultSetSchema, "columns"),
  rows: oneByteTag(ResultSetSchema, "rows"),
  command: oneByteTag(ResultSetSchema, "command"),
  rowsAffected: oneByteTag(ResultSetSchema, "rowsAffected"),
  executionTime: oneByteTag(ResultSetSchema, "executionTime"),
};
export const COLUMN = {
  name: oneByteTag(ColumnSchema, "name"),
  typeOid: oneByteTag(ColumnSchema, "typeOid"),
  typeModifier: oneByteTag(ColumnSchema, "typeModifier"),
  tableOid: oneByteTag(ColumnSchema, "tableOid"),
  columnNumber: oneByteTag(ColumnSchema, "columnNumber"),
};
export const DURATION = { seconds: oneByteTag(DurationSchema, "seconds"), nanos: oneByteTag(DurationSchema, "nanos") };

/** ListValue.values: each row's entries. */
export const LIST_VALUE_ENTRY = oneByteTag(ListValueSchema, "values");
/** The kinds of a google.protobuf.Value that rows hold. */
export const VALUE = {
  nullValue: oneByteTag(ValueSchema, "nullValue"),
  numberValue: oneByteTag(ValueSchema, "numberValue"),
  stringValue: oneByteTag(ValueSchema, "stringValue"),
  boolValue: oneByteTag(ValueSchema, "boolValue"),
};

export const QUERY_RESPONSE_RESULT = oneByteTag(QueryResponseSchema, "result");
export const QUERY_RESPONSE_COMMIT_TOKEN = oneByteTag(QueryResponseSchema, "commitToken");
export const QUERY_RESPONSE_FROM_CACHE = oneByteTag(QueryResponseSchema, "fromCache");
export const TRANSACTION_RESPONSE_RESULT = oneByteTag(TransactionResponseSchema, "result");
/** QueryManyResponse.results and BatchResponse.results: the two messages share their wire format. */
export const RESULTS = oneByteTag(QueryManyResponseSchema, "results");
if (oneByteTag(BatchResponseSchema, "results") !== RESULTS) throw new Error("QueryManyResponse and BatchResponse no longer share their wire format");
export const ANSWERS = oneByteTag(QueryStreamResponseSchema, "answers");
/** QueryStreamResponse.transactions: the answers of the transactions carried on the stream. */
export const STREAM_TRANSACTIONS = oneByteTag(QueryStreamResponseSchema, "transactions");
/** QueryAnswer.batch: a batch's BatchResponse. */
export const QUERY_ANSWER_BATCH = oneByteTag(QueryAnswerSchema, "batch");
export const STREAM_TRANSACTION_RESPONSE = {
  transaction: oneByteTag(StreamTransactionResponseSchema, "transaction"),
  response: oneByteTag(StreamTransactionResponseSchema, "response"),
  failed: oneByteTag(StreamTransactionResponseSchema, "failed"),
};

/** A `oneof outcome { ResultSet result; google.rpc.Status error }` and, in a QueryAnswer, its query's number (0: a message without one). One shape for both, so that the code taking them stays monomorphic. */
export type OutcomeTags = { query: number; result: number; error: number };
export const BATCH_RESULT: OutcomeTags = { query: 0, result: oneByteTag(BatchResultSchema, "result"), error: oneByteTag(BatchResultSchema, "error") };
export const QUERY_ANSWER: OutcomeTags = {
  query: oneByteTag(QueryAnswerSchema, "query"),
  result: oneByteTag(QueryAnswerSchema, "result"),
  error: oneByteTag(QueryAnswerSchema, "error"),
};

export const STREAM_QUERY_RESPONSE = {
  columns: oneByteTag(StreamQueryResponseSchema, "columns"),
  rows: oneByteTag(StreamQueryResponseSchema, "rows"),
  summary: oneByteTag(StreamQueryResponseSchema, "summary"),
};

/** The fields a ResultSet and a StreamSummary share. */
export type SummaryTags = { command: number; rowsAffected: number; executionTime: number };
export const STREAM_SUMMARY: SummaryTags = {
  command: oneByteTag(StreamSummarySchema, "command"),
  rowsAffected: oneByteTag(StreamSummarySchema, "rowsAffected"),
  executionTime: oneByteTag(StreamSummarySchema, "executionTime"),
};
export const RESULT_SET_SUMMARY: SummaryTags = { command: RESULT_SET.command, rowsAffected: RESULT_SET.rowsAffected, executionTime: RESULT_SET.executionTime };
