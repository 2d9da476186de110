// Sends COPY statements so that one whose data would pass through the client fails as the client's mistake and leaves its connection usable.
import pg from "pg";
import { GatewayError } from "../errors.js";
import { failCopyIn, offCopyOut, onCopyOut, queryHandleError, queryHandleReadyForQuery, querySubmit } from "../pool/pg-internals.js";
import { BufferedQuery, type CopyingConnection } from "./buffered-query.js";

/** What a client is told instead: the data of a COPY cannot pass through a gateway call. */
const COPY_FROM_STDIN_REFUSED =
  "COPY … FROM STDIN is not supported through the gateway: insert rows with INSERT and parameters (many statements at once in a Batch)";
const COPY_TO_STDOUT_REFUSED =
  "COPY … TO STDOUT is not supported through the gateway: read rows with SELECT, or with StreamQuery for large results (the COPY's output was discarded)";

/**
 * A statement (`BufferedQuery`) that is a COPY, sent with the extended
 * protocol on a connection that runs nothing else until it is answered
 * (PostgreSQL would read what follows it on the wire as its data). pg answers
 * PostgreSQL's CopyInResponse with CopyFail but no Sync (the Sync it sent
 * behind Execute arrived during the COPY, which ignores it), so the
 * connection would wait for ever; and it ignores CopyOutResponse, reporting a
 * COPY … TO STDOUT as a success without its data. Here CopyIn is failed and
 * followed by a Sync, CopyOut's data is dropped as it arrives, and either
 * ends the statement with INVALID_REQUEST once PostgreSQL is ready for the
 * next one. A COPY to or from a file or program is PostgreSQL's to allow or
 * refuse.
 */
export class CopyQuery extends BufferedQuery {
  #refusal: string | undefined;
  #connection: CopyingConnection | undefined;
  readonly #onCopyOut = () => (this.#refusal = COPY_TO_STDOUT_REFUSED);

  override submit = (connection: pg.Connection) => {
    this.#connection = connection;
    onCopyOut(this.#connection, this.#onCopyOut);
    return querySubmit(this, this.#connection);
  };

  override handleCopyInResponse(connection: CopyingConnection): void {
    this.#refusal = COPY_FROM_STDIN_REFUSED;
    failCopyIn(connection, COPY_FROM_STDIN_REFUSED);
  }

  /** CopyOut's data: dropped as it arrives. */
  override handleCopyData(): void {}

  handleError(err: Error, connection: CopyingConnection): void {
    if (this.#connection !== undefined) offCopyOut(this.#connection, this.#onCopyOut);
    // PostgreSQL's answer to the CopyFail, or an error while copying out: the refusal says more. A lost connection stays what it is.
    const refusal = this.#refusal;
    const refused = refusal !== undefined && err instanceof pg.DatabaseError && err.severity === "ERROR";
    queryHandleError(this, refused ? new GatewayError("INVALID_REQUEST", refusal, { cause: err }) : err, connection);
  }

  handleReadyForQuery(connection: CopyingConnection): void {
    if (this.#connection !== undefined) offCopyOut(this.#connection, this.#onCopyOut);
    if (this.#refusal === undefined) queryHandleReadyForQuery(this, connection);
    else queryHandleError(this, new GatewayError("INVALID_REQUEST", this.#refusal), connection);
  }
}
