// The StreamQuery call: a statement's rows read from a portal and sent in bounded messages, so memory stays small whatever the result's size.
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import Cursor from "pg-cursor";
import { toGatewayError } from "../errors.js";
import { StreamQueryResponseSchema } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { EncodedMessage, type ResponseStream } from "./call-streams.js";
import type { Lease } from "../pool/pool-manager.js";
import { TEXT_PASSTHROUGH } from "../pool/pool-manager.js";
import { RawDataRow } from "../pool/data-row-parser.js";
import { cursorResult, cursorState, failCursor, type CursorResult } from "../pool/pg-internals.js";
import { abandonStrayCopy, type BufferedResult, type CopyingConnection } from "./buffered-query.js";
import { sendStatement, type PreparedStatement } from "./execute.js";
import { DEFAULT_RESULT_LIMITS, ResultBudget } from "./result-budget.js";
import { toColumns, toDuration, type TextRow } from "../../../wire/src/result-set.js";
import { RowChunker, STREAM_QUERY_ROWS } from "../../../wire/src/row-encoding.js";

/** Bounds of one response message of a streamed result. */
export interface ChunkLimits {
  maxRows: number;
  /** Encoded bytes of the rows of one message; a single larger row is sent alone. */
  maxBytes: number;
}

/** Defaults and ceilings of the chunk limits a request may ask for. */
export const STREAM_CHUNK = {
  defaultRows: 1_000,
  maxRows: 100_000,
  defaultBytes: 1 << 20,
  /** Below the 4 MiB that gRPC clients accept by default. */
  maxBytes: 4_000_000,
  /** The first read is small: nothing is known yet of the rows' size. */
  firstRead: 64,
  /**
   * Later reads fetch about this many bytes of rows, however large messages
   * may be: with the read ahead and the response buffer, what one stream
   * holds stays at a few MB.
   */
  readBytes: 1 << 20,
} as const;

/** The chunk limits of a request: 0 picks the default, values beyond the ceiling are lowered to it. */
export function chunkLimits(maxRows: number, maxBytes: number): ChunkLimits {
  return {
    maxRows: Math.min(maxRows || STREAM_CHUNK.defaultRows, STREAM_CHUNK.maxRows),
    maxBytes: Math.min(maxBytes || STREAM_CHUNK.defaultBytes, STREAM_CHUNK.maxBytes),
  };
}

const EMPTY = Buffer.alloc(0);

type StreamQueryResponses = ResponseStream<typeof StreamQueryResponseSchema>;

/**
 * A pg-cursor that encodes each row into `rows` as it arrives instead of
 * keeping it (its reads resolve with no rows): from the DataRow's bytes when
 * the connection passes them on (`passDataRowBytes`), else from its text.
 */
class EncodingCursor extends Cursor<TextRow> {
  constructor(
    statement: PreparedStatement,
    readonly rows: RowChunker,
  ) {
    super(statement.sql, statement.values, { rowMode: "array", types: TEXT_PASSTHROUGH });
  }

  handleDataRow(message: RawDataRow | { fields: TextRow }): void {
    if (message instanceof RawDataRow) this.rows.addDataRow(message.bytes, message.offset);
    else this.rows.addTextRow(message.fields);
  }

  /** pg's Submittable protocol: a COPY run from a portal, which `streamQuery` never sends as one (pg-cursor has no handler: pg would throw). */
  handleCopyInResponse(connection: CopyingConnection): void {
    this.#abandon(connection);
  }

  handleCopyData(_message: unknown, connection: CopyingConnection): void {
    this.#abandon(connection);
  }

  #abandoned = false;
  #abandon(connection: CopyingConnection): void {
    if (this.#abandoned) return;
    this.#abandoned = true;
    failCursor(this, abandonStrayCopy(connection));
  }
}

/**
 * Streams a statement's rows from a portal (pg-cursor: Execute with a row
 * limit, so PostgreSQL produces rows only as they are asked for). Each read is
 * about a message's worth (at most 1 MiB), sized from the rows seen so far,
 * and the next read is in flight while a chunk is being sent; `send` waits
 * when the client reads slowly, so at most two reads' rows are in memory
 * whatever the result's size. The first message carries the columns, the
 * last the summary; an error part-way rejects, and the call ends with its
 * status after the rows before it.
 */
export async function streamQuery(lease: Lease, statement: PreparedStatement, responses: StreamQueryResponses, limits: ChunkLimits): Promise<void> {
  const started = process.hrtime.bigint();
  if (statement.copy) return sendCopyResult(lease, statement, responses, started);
  const rows = new RowChunker(STREAM_QUERY_ROWS, limits);
  const cursor = lease.client.query(new EncodingCursor(statement, rows));
  let readSize: number = Math.min(STREAM_CHUNK.firstRead, limits.maxRows);
  let reading: Promise<TextRow[]> | undefined = cursor.read(readSize);
  let columnsSent = false;
  try {
    while (reading !== undefined) {
      await reading;
      reading = undefined;
      if (lease.signal.aborted) return;
      const done = cursorState(cursor) === "done";
      // Taken before the next read is sent: its rows are encoded as they arrive.
      const chunks = rows.take();
      if (!done) {
        const averageRow = rows.rows > 0 ? rows.bytes / rows.rows : limits.maxBytes;
        readSize = Math.max(1, Math.min(limits.maxRows, Math.floor(Math.min(limits.maxBytes, STREAM_CHUNK.readBytes) / averageRow)));
        reading = cursor.read(readSize);
        reading.catch(() => undefined); // awaited in the next round, or abandoned on abort
      }
      for (let i = 0; i < chunks.length || (done && i === 0) || !columnsSent; i++) {
        const last = done && i >= chunks.length - 1;
        const head = columnsSent ? undefined : encodePart({ columns: toColumns(cursorResult(cursor).fields) });
        const tail = last
          ? encodePart({
              summary: {
                command: cursorResult(cursor).command ?? "",
                rowsAffected: BigInt(rowsAffected(cursorResult(cursor), rows.rows)),
                executionTime: toDuration(process.hrtime.bigint() - started),
              },
            })
          : undefined;
        const body = chunks[i] ?? EMPTY;
        await responses.send(new EncodedMessage(head === undefined && tail === undefined ? body : Buffer.concat([head ?? EMPTY, body, tail ?? EMPTY])));
        columnsSent = true;
        if (lease.signal.aborted) return;
        if (last) break;
      }
    }
  } catch (err) {
    throw toGatewayError(err);
  } finally {
    // An open portal (the client went away, or a send failed) is closed so the connection is idle again.
    const state = cursorState(cursor);
    if (state === "idle" || state === "busy") await cursor.close().catch(() => undefined);
  }
}

/**
 * A COPY, which cannot run from a portal (see `CopyQuery`), run as a statement:
 * its outcome is one message with its (no) columns and its summary.
 */
async function sendCopyResult(lease: Lease, statement: PreparedStatement, responses: StreamQueryResponses, started: bigint): Promise<void> {
  let result: BufferedResult;
  try {
    // A COPY keeps no rows (its data is refused or dropped): a budget of its own costs nothing.
    result = await sendStatement(lease.client, statement, new ResultBudget(DEFAULT_RESULT_LIMITS).account());
  } catch (err) {
    throw toGatewayError(err);
  }
  const summary = { command: result.command ?? "", rowsAffected: BigInt(result.rowCount ?? 0), executionTime: toDuration(process.hrtime.bigint() - started) };
  await responses.send(new EncodedMessage(encodePart({ columns: toColumns(result.fields), summary })));
}

/** A StreamQueryResponse's fields other than rows, encoded: concatenated with the rows, it is one message. */
function encodePart(part: MessageInitShape<typeof StreamQueryResponseSchema>): Buffer {
  return Buffer.from(toBinary(StreamQueryResponseSchema, create(StreamQueryResponseSchema, part)));
}

/**
 * Rows returned or affected. The command tag of a portal fetched in parts
 * counts only the last part's rows, so for a statement that returns rows
 * (SELECT, or a write with RETURNING) the gateway counts them itself; a
 * write without RETURNING has its count in the tag.
 */
function rowsAffected(result: CursorResult, streamed: number): number {
  return result.fields.length > 0 || result.rowCount === null ? streamed : result.rowCount;
}
