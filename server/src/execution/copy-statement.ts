// Sends COPY statements so that one whose data would pass through the client fails as the client's mistake and leaves its connection usable.
import type { EventEmitter } from "node:events";
import pg from "pg";
import { GatewayError } from "../errors.js";
import { BufferedQuery, type CopyingConnection } from "./buffered-query.js";

/** What a client is told instead: the data of a COPY cannot pass through a gateway call. */
const COPY_FROM_STDIN_REFUSED =
  "COPY … FROM STDIN is not supported through the gateway: insert rows with INSERT and parameters (many statements at once in a Batch)";
const COPY_TO_STDOUT_REFUSED =
  "COPY … TO STDOUT is not supported through the gateway: read rows with SELECT, or with StreamQuery for large results (the COPY's output was discarded)";

/** pg's connection and Query members used here; pg's type declarations do not show them. */
interface CopyConnection extends EventEmitter {
  sendCopyFail(message: string): void;
  sync(): void;
}
interface QueryMethods {
  submit(connection: CopyConnection): Error | null;
  handleError(err: Error, connection: CopyConnection): void;
  handleReadyForQuery(connection: CopyConnection): void;
}
const query = pg.Query.prototype as unknown as QueryMethods;

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
  #connection: CopyConnection | undefined;
  readonly #onCopyOut = () => (this.#refusal = COPY_TO_STDOUT_REFUSED);

  override submit = (connection: pg.Connection) => {
    this.#connection = connection as unknown as CopyConnection;
    this.#connection.on("copyOutResponse", this.#onCopyOut);
    return query.submit.call(this, this.#connection);
  };

  override handleCopyInResponse(connection: CopyingConnection): void {
    this.#refusal = COPY_FROM_STDIN_REFUSED;
    const copying = connection as unknown as CopyConnection;
    copying.sendCopyFail(COPY_FROM_STDIN_REFUSED);
    copying.sync();
  }

  /** CopyOut's data: dropped as it arrives. */
  override handleCopyData(): void {}

  handleError(err: Error, connection: CopyConnection): void {
    this.#connection?.removeListener("copyOutResponse", this.#onCopyOut);
    // PostgreSQL's answer to the CopyFail, or an error while copying out: the refusal says more. A lost connection stays what it is.
    const refusal = this.#refusal;
    const refused = refusal !== undefined && err instanceof pg.DatabaseError && err.severity === "ERROR";
    query.handleError.call(this, refused ? new GatewayError("INVALID_REQUEST", refusal, { cause: err }) : err, connection);
  }

  handleReadyForQuery(connection: CopyConnection): void {
    this.#connection?.removeListener("copyOutResponse", this.#onCopyOut);
    if (this.#refusal === undefined) query.handleReadyForQuery.call(this, connection);
    else query.handleError.call(this, new GatewayError("INVALID_REQUEST", this.#refusal), connection);
  }
}
