import type { EventEmitter } from "node:events";
import type pg from "pg";
import type { BackendMessage, DataRowMessage, ParameterStatusMessage } from "pg-protocol/dist/messages.js";
import { Parser } from "pg-protocol/dist/parser.js";

/** The protocol's DataRow message code ('D'), and ParameterStatus ('S'). */
const DATA_ROW = 0x44;
const PARAMETER_STATUS = 0x53;

/**
 * A DataRow message whose values are still the bytes PostgreSQL sent: the
 * payload (field count, then each field's int32 length and bytes) at
 * `offset` in `bytes`. `bytes` is the parser's buffer, which the next chunk
 * read from the socket may overwrite, so the bytes are valid only while the
 * message is being handled: pg hands a message to the active query
 * synchronously, and a query that keeps values reads `fields`, which
 * pg-protocol's own parser decodes on first use.
 *
 * Only rows known to be UTF-8 are kept as bytes (see `passDataRowBytes`), so
 * the bytes of a value are the UTF-8 encoding of its text.
 */
export class RawDataRow {
  readonly name = "dataRow";
  #fields: (string | null)[] | undefined;

  constructor(
    readonly bytes: Buffer,
    readonly offset: number,
    readonly length: number,
    /** pg-protocol's parsing of a message (its parser's `handlePacket`), for `fields`. */
    private readonly parse: ParserInternals["handlePacket"],
  ) {}

  get fields(): (string | null)[] {
    return (this.#fields ??= (this.parse(this.offset, DATA_ROW, this.length, this.bytes) as DataRowMessage).fields);
  }
}

/** pg-protocol's parser and pg's connection as far as they are used here: neither declares these members public. */
interface ParserInternals {
  handlePacket(offset: number, code: number, length: number, bytes: Buffer): BackendMessage;
}
interface ConnectionInternals extends EventEmitter {
  _emitMessage: boolean;
  attachListeners(stream: NodeJS.ReadableStream): void;
}

/**
 * Makes `client` (not yet connected) hand DataRow messages to its queries as
 * `RawDataRow`s while the connection's text is UTF-8 both ways (the server
 * and client encodings, which PostgreSQL reports at the start and whenever
 * they change). A query that copies rows on unchanged, as a streamed result
 * does, then skips decoding every value into a string and encoding it again:
 * about a microsecond per row, most of the gateway's CPU per streamed row
 * (BENCHMARKS.md). Any other query sees the same `fields` as before.
 *
 * pg offers no hook for this, so the connection's `attachListeners` (which
 * feeds the socket to a pg-protocol parser) is replaced by the same few lines
 * with a parser of which DataRows are handled here. If pg-protocol changes
 * shape, the client is left as pg made it.
 */
export function passDataRowBytes(client: pg.Client): void {
  const connection = (client as unknown as { connection: ConnectionInternals }).connection;
  const parser = new Parser() as unknown as ParserInternals;
  if (typeof connection.attachListeners !== "function" || typeof parser.handlePacket !== "function") return;
  const handlePacket = parser.handlePacket.bind(parser);
  const encodings = { server_encoding: "", client_encoding: "" };
  let utf8 = false;
  parser.handlePacket = (offset, code, length, bytes) => {
    if (code === DATA_ROW && utf8) return new RawDataRow(bytes, offset, length, handlePacket) as unknown as BackendMessage;
    const message = handlePacket(offset, code, length, bytes);
    if (code === PARAMETER_STATUS) {
      const { parameterName, parameterValue } = message as ParameterStatusMessage;
      if (parameterName === "server_encoding" || parameterName === "client_encoding") {
        encodings[parameterName] = parameterValue.toUpperCase();
        utf8 = encodings.server_encoding === "UTF8" && encodings.client_encoding === "UTF8";
      }
    }
    return message;
  };
  connection.attachListeners = (stream) => {
    stream.on("data", (chunk: Buffer) => {
      (parser as unknown as Parser).parse(chunk, (message) => {
        const eventName = message.name === "error" ? "errorMessage" : message.name;
        if (connection._emitMessage) connection.emit("message", message);
        connection.emit(eventName, message);
      });
    });
  };
}
