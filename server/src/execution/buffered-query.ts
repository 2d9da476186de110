// A statement whose rows are encoded for the response as they arrive, within its call's result limits.
import { create } from "@bufbuild/protobuf";
import pg, { DatabaseError } from "pg";
import { GatewayError } from "../errors.js";
import { RetryInfoSchema } from "../../../wire/src/gen/google/rpc/error_details_pb.js";
import { RawDataRow } from "../pool/data-row-parser.js";
import { destroyWireConnection, useExtendedProtocol } from "../pool/pg-internals.js";
import type { PgParam } from "./params.js";
import { RESULT_STEP_BYTES, type ResultAccount } from "./result-budget.js";
import { encodeResultSetOf, type ResultHead, type TextRow } from "../../../wire/src/result-set.js";
import { RESULT_SET_ROWS, RowChunker } from "../../../wire/src/row-encoding.js";

/** Encoded rows are kept in chunks of at most this many bytes: a chunk is copied as it grows, the rows of a full one never again until the end. */
const CHUNK_BYTES = 1 << 20;
/** The first chunk's room: most results are a row or a few. */
const FIRST_ROOM = 256;
/** How long a call refused for want of memory should wait before it tries again (`google.rpc.RetryInfo`). */
const MEMORY_RETRY_DELAY = { seconds: 1n, nanos: 0 };

/** A statement's result with its rows encoded already. */
export interface BufferedResult extends ResultHead {
  /**
   * The whole ResultSet in its wire encoding, with `elapsedNanos` as its
   * execution time. From then on the result holds exactly its encoded size
   * of its account's budget (until the account is released). Once only.
   */
  encode(elapsedNanos: bigint): Uint8Array;
}

/**
 * One statement (extended protocol, rows in text) whose rows are encoded into
 * `ResultSet.rows` as they arrive, from the DataRow's bytes when the
 * connection passes them on (`passDataRowBytes`), instead of being kept as
 * arrays of strings and encoded at the end: what a result holds is about
 * its size on the wire, and no object per row outlives the row.
 *
 * The rows count against the account's limits (`ResultLimits`: rows and
 * bytes, of this result or of the account's results together) and draw on
 * the gateway's budget in steps of `RESULT_STEP_BYTES`. Past either, the
 * result is cut off: its rows are dropped, those still to come are not kept,
 * `onCut` is told (to stop the statement on PostgreSQL; without it the rest
 * of the rows are read and dropped), and `done` rejects with
 * RESULT_TOO_LARGE or RESULT_MEMORY_EXHAUSTED once PostgreSQL has answered.
 *
 * A subclass of pg's Query, so that it can be pipelined as one.
 */
export class BufferedQuery extends pg.Query implements BufferedResult {
  /** Resolves with this query once it has been answered; rejects with its error. */
  readonly done: Promise<BufferedResult>;
  readonly #account: ResultAccount;
  readonly #onCut: ((error: GatewayError) => void) | undefined;
  readonly #rows = new RowChunker(RESULT_SET_ROWS, { maxRows: Infinity, maxBytes: CHUNK_BYTES }, FIRST_ROOM);
  #head: ResultHead | undefined;
  /** Bytes of the budget this result holds. */
  #held = 0;
  /** The next row count and byte count at which the limits and the budget are looked at again. */
  #checkRows = 0;
  #checkBytes = -1;
  #cut: GatewayError | undefined;
  /** Set when PostgreSQL entered COPY mode for this statement, which was not sent as a COPY (`abandonStrayCopy`). */
  #strayCopy: GatewayError | undefined;
  #resolve!: (result: BufferedResult) => void;
  #reject!: (error: Error) => void;

  constructor(sql: string, values: PgParam[], account: ResultAccount, onCut?: (error: GatewayError) => void) {
    // pg answers (null, result) or (error), once its ReadyForQuery has come. Made from the text, not
    // a config object, which pg copies property by property; the rows never go through pg's row mode.
    super(sql, values, (err, head) => this.#settle(err ?? undefined, head));
    // Even without parameters: the text is then exactly one statement, never a script.
    useExtendedProtocol(this);
    this.#account = account;
    this.#onCut = onCut;
    this.done = new Promise<BufferedResult>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  get fields(): ResultHead["fields"] {
    return this.#head!.fields;
  }

  get command(): ResultHead["command"] {
    return this.#head!.command;
  }

  get rowCount(): ResultHead["rowCount"] {
    return this.#head!.rowCount;
  }

  /** pg's Submittable protocol: a DataRow of this statement. */
  handleDataRow(message: RawDataRow | { fields: TextRow }): void {
    if (this.#cut !== undefined) return;
    const rows = this.#rows;
    if (message instanceof RawDataRow) rows.addDataRow(message.bytes, message.offset);
    else rows.addTextRow(message.fields);
    if (rows.bytes > this.#checkBytes || rows.rows > this.#checkRows) this.#check();
  }

  /** pg's Submittable protocol: PostgreSQL waits for COPY data from a statement not sent as a COPY (see `CopyQuery`). */
  handleCopyInResponse(connection: CopyingConnection): void {
    this.#strayCopy ??= abandonStrayCopy(connection);
  }

  /** pg's Submittable protocol: COPY data from a statement not sent as a COPY. */
  handleCopyData(_message: unknown, connection: CopyingConnection): void {
    this.#strayCopy ??= abandonStrayCopy(connection);
  }

  encode(elapsedNanos: bigint): Uint8Array {
    const encoded = encodeResultSetOf(this.#head!, this.#rows.take(), elapsedNanos);
    const more = encoded.length - this.#held;
    if (more > 0) this.#account.take(more, true);
    else this.#account.give(-more);
    this.#held = encoded.length;
    return encoded;
  }

  /** The limits, and the next step of the budget: past a limit, or without room, the result is cut off. */
  #check(): void {
    const rows = this.#rows;
    const account = this.#account;
    const { maxRows, maxBytes, maxBufferedBytes } = account.limits;
    if (account.rows + rows.rows > maxRows) return this.#stop(tooLarge("MAX_RESULT_ROWS", maxRows, "rows"));
    if (account.bytes + rows.bytes > maxBytes) return this.#stop(tooLarge("MAX_RESULT_BYTES", maxBytes, "bytes of rows"));
    if (rows.bytes > this.#held) {
      const step = Math.max(RESULT_STEP_BYTES, rows.bytes - this.#held);
      if (!account.take(step, this.#held === 0 && rows.bytes <= RESULT_STEP_BYTES)) {
        return this.#stop(account.released ? new GatewayError("CANCELLED", "the call ended before its result was read") : memoryExhausted(maxBufferedBytes));
      }
      this.#held += step;
    }
    this.#checkRows = maxRows - account.rows;
    this.#checkBytes = Math.min(this.#held, maxBytes - account.bytes);
  }

  #stop(error: GatewayError): void {
    this.#cut = error;
    this.#drop();
    this.#onCut?.(error);
  }

  /** Rows dropped, and the budget they held given back. */
  #drop(): void {
    this.#rows.take();
    this.#account.give(this.#held);
    this.#held = 0;
  }

  /** Answered: `done` resolves, or rejects with the error (a cut-off result's own, unless the connection failed). */
  #settle(err: Error | undefined, head: ResultHead | undefined): void {
    const account = this.#account;
    if (account.whole) {
      account.rows += this.#rows.rows;
      account.bytes += this.#rows.bytes;
    }
    // A stray COPY fails its statement even if PostgreSQL's answer was read before its connection closed.
    if (err === undefined && this.#cut === undefined && this.#strayCopy === undefined) {
      this.#head = head;
      this.#resolve(this);
      return;
    }
    this.#drop();
    if (this.#strayCopy !== undefined) this.#reject(this.#strayCopy);
    else this.#reject(this.#cut !== undefined && (err === undefined || err instanceof DatabaseError) ? this.#cut : err!);
  }
}

/** pg's connection, which pg hands a query's handlers. */
export type CopyingConnection = pg.Connection;

/**
 * What becomes of a statement that PostgreSQL put in COPY mode although it
 * was not sent as a COPY (`isCopy` did not see one; `CopyQuery` handles those
 * that are): other messages may have been written behind it, which
 * PostgreSQL would read as COPY data, so its connection is closed. The
 * statement ends with INVALID_REQUEST, its connection not reused (the error
 * has a cause that is no statement error).
 */
export function abandonStrayCopy(connection: CopyingConnection): GatewayError {
  destroyWireConnection(connection);
  return new GatewayError("INVALID_REQUEST", "COPY … FROM STDIN and COPY … TO STDOUT are not supported through the gateway", {
    cause: new Error("a statement not sent as a COPY entered COPY mode: its connection was closed"),
  });
}

/** The end of a cut-off result's message: what became of its statement. */
const STOPPED =
  "The statement was stopped: a write it made (INSERT … RETURNING) may or may not have committed, unless it ran in a transaction, which is rolled back";

function tooLarge(setting: string, limit: number, what: string): GatewayError {
  return new GatewayError(
    "RESULT_TOO_LARGE",
    `the result has more than ${limit} ${what}, the most a call may buffer (${setting}; a batch's results together): read it with StreamQuery, which streams results of any size. ${STOPPED}`,
    { metadata: { limit: setting, max: String(limit), statement_sent: "true" } },
  );
}

function memoryExhausted(limit: number): GatewayError {
  return new GatewayError(
    "RESULT_MEMORY_EXHAUSTED",
    `the gateway's memory for buffered results (${limit} bytes, MAX_BUFFERED_RESULT_BYTES) is taken by other calls: try again shortly, or read large results with StreamQuery. ${STOPPED}`,
    {
      metadata: { limit: "MAX_BUFFERED_RESULT_BYTES", max: String(limit), statement_sent: "true" },
      details: [{ schema: RetryInfoSchema, message: create(RetryInfoSchema, { retryDelay: MEMORY_RETRY_DELAY }) }],
    },
  );
}
