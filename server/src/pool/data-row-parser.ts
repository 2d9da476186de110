// DataRows kept as the bytes PostgreSQL sent on UTF-8 connections, so that rows are copied on without decoding each value.
import type pg from "pg";
import { replacePacketHandler, type BackendMessage, type DataRowMessage, type PacketHandler, type ParameterStatusMessage } from "./pg-internals.js";

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
    private readonly parse: PacketHandler,
  ) {}

  get fields(): (string | null)[] {
    return (this.#fields ??= (this.parse(this.offset, DATA_ROW, this.length, this.bytes) as DataRowMessage).fields);
  }
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
 * pg offers no hook for this: the client parses its messages with a parser
 * of which DataRows are handled here (`replacePacketHandler`). If pg or
 * pg-protocol changes shape, the client is left as pg made it.
 */
export function passDataRowBytes(client: pg.Client): void {
  replacePacketHandler(client, (handlePacket) => {
    const encodings = { server_encoding: "", client_encoding: "" };
    let utf8 = false;
    return (offset, code, length, bytes) => {
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
  });
}
