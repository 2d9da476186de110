// The only module that reaches past the public API of pg, pg-cursor and pg-protocol: every undeclared member the gateway relies on, behind typed functions.
/*
 * Written against pg 8.23.1, pg-cursor 2.22.0 and pg-protocol 1.16.1 (typings:
 * @types/pg 8.23.1, @types/pg-cursor 2.7.2). None of these members is
 * promised to stay, so an upgrade of any of the three may change them without
 * a type error: server/test/pg-internals.test.ts checks each one against the
 * installed packages and names the one that changed. The lint rule in
 * eslint.config.js keeps other files from reaching them.
 *
 * What pg calls on a query it runs (its Submittable protocol: `submit`,
 * `handleDataRow`, `handleCopyInResponse`, `handleCopyData`, ...) is
 * implemented by the gateway's query classes themselves; the canary checks
 * that pg still calls those too.
 */
import type { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import pg from "pg";
import type Cursor from "pg-cursor";
import type { BackendMessage } from "pg-protocol/dist/messages.js";
import { Parser } from "pg-protocol/dist/parser.js";

export type { BackendMessage, DataRowMessage, ParameterStatusMessage } from "pg-protocol/dist/messages.js";

/** pg's Client, as far as the gateway reaches into it. */
interface ClientInternals {
  /** False once the connection failed or ended unasked (an error, the socket closed): pg then refuses queries. */
  _queryable: boolean;
  /** The query sent and not yet answered (in pipeline mode, the first of those). */
  _getActiveQuery(): unknown;
  /** The backend's key for a CancelRequest (BackendKeyData), null until connected. */
  processID: number | null;
  secretKey: number | null;
  /** Pipeline mode: queued queries are sent without waiting for the previous one's answer (declared read-only in the typings). */
  pipeline: boolean;
  connection: ConnectionInternals;
  connectionParameters: { host: string; port: number; ssl: unknown };
}

/** pg's Connection, as far as the gateway reaches into it. */
interface ConnectionInternals extends EventEmitter {
  stream: Socket;
  /** Set by pg once something listens to the connection's "message" event. */
  _emitMessage: boolean;
  /** Feeds the socket to a pg-protocol parser and emits each message by its name. */
  attachListeners(stream: NodeJS.ReadableStream): void;
  connect(port: number | string, host?: string): void;
  requestSsl(): void;
  cancel(processID: number, secretKey: number): void;
  sendCopyFail(message: string): void;
  sync(): void;
}

/** pg-protocol's Parser: `parse` splits a chunk into messages, `handlePacket` makes each one's object. */
interface ParserInternals {
  parse(buffer: Buffer, callback: (message: BackendMessage) => void): void;
  handlePacket: PacketHandler;
}

/** pg's Query, as far as the gateway reaches into it. */
interface QueryFields {
  /** "extended": sent with the extended protocol (Parse, Bind, Execute) even without parameters. */
  queryMode: string | undefined;
}

/** pg's Query's own methods that a subclass overriding them calls (the typings declare `submit` as a property, the others not at all). */
interface QueryInternals {
  submit(connection: pg.Connection): Error | null | undefined;
  handleError(err: Error, connection: pg.Connection): void;
  handleReadyForQuery(connection: pg.Connection): void;
}

/** pg-cursor's Cursor, as far as the gateway reaches into it. */
interface CursorInternals {
  state: CursorState;
  _result: CursorResult;
  handleError(err: Error): void;
}

// ---- pg's Client

/** Whether pg still takes queries on `client`: false once its connection failed or closed without `end()`. */
export function isQueryable(client: pg.Client): boolean {
  return (client as unknown as Partial<ClientInternals>)._queryable !== false;
}

/** The query `client` is running (sent and not yet answered), if any: one its caller walked away from keeps the connection busy. */
export function activeQueryOf(client: pg.Client): unknown {
  return (client as unknown as Partial<ClientInternals>)._getActiveQuery?.();
}

/** Pipeline mode on or off: on, `client.query` sends each query at once, without waiting for the answers to those before it. */
export function setPipelineMode(client: pg.Client, on: boolean): void {
  (client as unknown as ClientInternals).pipeline = on;
}

/** The socket of `client`'s connection (to cork it while queries are written). */
export function socketOf(client: pg.Client): Socket {
  return (client as unknown as ClientInternals).connection.stream;
}

/** Closes `client`'s socket at once, without the protocol's Terminate: the backend ends when it notices. */
export function destroyConnection(client: pg.Client): void {
  (client as unknown as ClientInternals).connection.stream.destroy();
}

/** The same, for the connection pg hands a query's handlers. */
export function destroyWireConnection(connection: pg.Connection): void {
  connection.stream.destroy();
}

/** What a CancelRequest names: the backend running `client`'s statements. */
export interface BackendKey {
  processID: number;
  secretKey: number;
}

/** `client`'s backend key; undefined before it connected. */
export function backendKey(client: pg.Client): BackendKey | undefined {
  const { processID, secretKey } = client as unknown as ClientInternals;
  return processID === null || secretKey === null ? undefined : { processID, secretKey };
}

/**
 * A connection that sends the protocol's CancelRequest and nothing else,
 * made with pg's own connection code (TLS as `config` says), to the server
 * `config` names.
 */
export class CancelConnection {
  readonly #connection: ConnectionInternals;
  readonly #parameters: ClientInternals["connectionParameters"];

  constructor(config: pg.ClientConfig) {
    const helper = new pg.Client(config) as unknown as ClientInternals;
    this.#parameters = helper.connectionParameters;
    this.#connection = helper.connection;
  }

  /**
   * Connects and sends the CancelRequest for `key`. `onEnd` runs when the
   * server has closed the connection, which it does only after it signalled
   * the backend; `onError` when the connection failed.
   */
  send(key: BackendKey, onEnd: () => void, onError: () => void): void {
    const { host, port, ssl } = this.#parameters;
    const con = this.#connection;
    con.on("connect", () => (ssl ? con.requestSsl() : con.cancel(key.processID, key.secretKey)));
    con.on("sslconnect", () => con.cancel(key.processID, key.secretKey));
    con.on("error", () => onError());
    con.on("end", () => onEnd());
    if (host.startsWith("/")) con.connect(`${host}/.s.PGSQL.${port}`);
    else con.connect(port, host);
  }

  /** Closes the socket at once. */
  destroy(): void {
    this.#connection.stream.destroy();
  }
}

// ---- pg's Connection and pg-protocol's Parser

/** pg-protocol's making of one message's object: the message of type `code` whose `length` bytes of payload are at `offset` in `bytes`. */
export type PacketHandler = (offset: number, code: number, length: number, bytes: Buffer) => BackendMessage;

/**
 * Makes `client` (not yet connected) parse what PostgreSQL sends with a
 * pg-protocol parser whose message objects are made by `replace(own)`, `own`
 * being the parser's own `handlePacket`. pg offers no hook for this, so the
 * connection's `attachListeners` (which feeds the socket to a pg-protocol
 * parser) is replaced by the same few lines with that parser. If either
 * package changes shape, the client is left as pg made it.
 */
export function replacePacketHandler(client: pg.Client, replace: (own: PacketHandler) => PacketHandler): void {
  const connection = (client as unknown as ClientInternals).connection;
  const parser = new Parser() as unknown as ParserInternals;
  if (typeof connection.attachListeners !== "function" || typeof parser.handlePacket !== "function") return;
  parser.handlePacket = replace(parser.handlePacket.bind(parser));
  connection.attachListeners = (stream) => {
    stream.on("data", (chunk: Buffer) => {
      parser.parse(chunk, (message) => {
        const eventName = message.name === "error" ? "errorMessage" : message.name;
        if (connection._emitMessage) connection.emit("message", message);
        connection.emit(eventName, message);
      });
    });
  };
}

/** Answers PostgreSQL's CopyInResponse with CopyFail and a Sync (the Sync sent behind the statement was read during the COPY, which ignores it). */
export function failCopyIn(connection: pg.Connection, message: string): void {
  const copying = connection as unknown as ConnectionInternals;
  copying.sendCopyFail(message);
  copying.sync();
}

/** `listener` runs when PostgreSQL starts a COPY … TO STDOUT on `connection` (its CopyOutResponse, which pg's queries ignore). */
export function onCopyOut(connection: pg.Connection, listener: () => void): void {
  connection.on("copyOutResponse", listener);
}

export function offCopyOut(connection: pg.Connection, listener: () => void): void {
  connection.removeListener("copyOutResponse", listener);
}

// ---- pg's Query, for a subclass that overrides its methods

/**
 * Makes `query` (not yet submitted) go with the extended protocol, as its
 * config's `queryMode: "extended"` would: for a query made from its SQL text
 * alone, which pg does not copy as it copies a config object.
 */
export function useExtendedProtocol(query: pg.Query): void {
  (query as unknown as QueryFields).queryMode = "extended";
}

const queryPrototype = pg.Query.prototype as unknown as QueryInternals;

/** pg's Query's own `submit`, run on `query`. */
export function querySubmit(query: pg.Query, connection: pg.Connection): Error | null | undefined {
  return queryPrototype.submit.call(query, connection);
}

/** pg's Query's own `handleError`, run on `query`: it ends with `err`. */
export function queryHandleError(query: pg.Query, err: Error, connection: pg.Connection): void {
  queryPrototype.handleError.call(query, err, connection);
}

/** pg's Query's own `handleReadyForQuery`, run on `query`: it ends with its result. */
export function queryHandleReadyForQuery(query: pg.Query, connection: pg.Connection): void {
  queryPrototype.handleReadyForQuery.call(query, connection);
}

// ---- pg-cursor's Cursor

export type CursorState = "initialized" | "submitted" | "idle" | "busy" | "done" | "error";

/** What a cursor knows of its statement's result: its columns once described, its command tag once complete. */
export interface CursorResult {
  fields: pg.FieldDef[];
  command: string | null;
  rowCount: number | null;
}

/** Where `cursor` is: "idle" or "busy" while its portal is open, "done" once the last row was read. */
export function cursorState(cursor: Cursor<unknown>): CursorState {
  return (cursor as unknown as CursorInternals).state;
}

/** What `cursor` knows so far of its statement's result. */
export function cursorResult(cursor: Cursor<unknown>): CursorResult {
  return (cursor as unknown as CursorInternals)._result;
}

/** Ends `cursor` with `err`: its pending read rejects with it. */
export function failCursor(cursor: Cursor<unknown>, err: Error): void {
  (cursor as unknown as CursorInternals).handleError(err);
}
