// Result rows encoded by hand into protobuf wire bytes, from PostgreSQL's text or DataRow bytes, whole or in bounded chunks.
import { LIST_VALUE_ENTRY, RESULT_SET, STREAM_QUERY_RESPONSE, VALUE } from "./tags.js";
import { varintSize, writeVarint } from "./wire-writer.js";

/**
 * Protobuf wire encoding of result rows, written straight from PostgreSQL's
 * text values. A row is a `google.protobuf.ListValue` whose values are
 * `google.protobuf.Value`s holding `string_value` or `null_value`
 * (NULL_VALUE = 0). Building protobuf-es objects for every value and
 * serializing them costs several allocations per value; rows are the bulk of
 * every result, so they are encoded here by hand (the output is the same bytes
 * `toBinary` writes: see wire/test/row-encoding.test.ts) and the rest of a
 * message with protobuf-es.
 */

/** A row in node-postgres's array row mode with text pass-through parsers: PostgreSQL's text form of each value, or null. */
export type TextRow = (string | null)[];

/** The tags of the rows of a ResultSet and of a StreamQueryResponse: what `encodeRows` and `RowChunker` take. */
export const RESULT_SET_ROWS = RESULT_SET.rows;
export const STREAM_QUERY_ROWS = STREAM_QUERY_RESPONSE.rows;

/** `Value.null_value = NULL_VALUE` as a ListValue entry: its tag, length 2, then null_value's tag and 0. */
const NULL_ENTRY = [LIST_VALUE_ENTRY, 0x02, VALUE.nullValue, 0x00] as const;

const EMPTY = Buffer.alloc(0);
/** The first chunk's room; later chunks start with the size of the one before. */
const FIRST_CHUNK = 64 * 1024;
/** Values shorter than this are copied byte by byte: cheaper than a call into Buffer.copy. */
const SHORT_COPY = 48;

/**
 * Encodes rows as the entries of a repeated `google.protobuf.ListValue` field
 * of the enclosing message, whose one-byte tag is `rowTag` (`RESULT_SET_ROWS`,
 * `STREAM_QUERY_ROWS`): bytes that can be concatenated with the rest of that
 * message's encoding.
 */
export function encodeRows(rowTag: number, rows: readonly TextRow[]): Buffer {
  // Pass 1: sizes. UTF-8 lengths are kept so that pass 2 does not compute them again.
  const utf8Lengths: number[] = [];
  const rowLengths: number[] = [];
  const firstLengths: number[] = []; // index in utf8Lengths of each row's first value
  let total = 0;
  for (const row of rows) {
    firstLengths.push(utf8Lengths.length);
    const rowLength = measureTextRow(row, utf8Lengths);
    rowLengths.push(rowLength);
    total += 1 + varintSize(rowLength) + rowLength;
  }
  // Pass 2: bytes.
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  for (const [r, row] of rows.entries()) {
    out[at++] = rowTag;
    at = writeVarint(out, at, rowLengths[r]!);
    at = writeTextRow(out, at, row, utf8Lengths, firstLengths[r]!);
  }
  return out;
}

/**
 * Rows encoded one by one as they arrive (the entries of a repeated ListValue
 * field, as `encodeRows` writes them) and cut into chunks of at most
 * `maxRows` rows and `maxBytes` encoded bytes; a single larger row makes a
 * chunk of its own. A row comes either as PostgreSQL's DataRow payload, whose
 * values are copied on as they are (they must be UTF-8), or as text values.
 */
export class RowChunker {
  readonly #rowTag: number;
  readonly #limits: { maxRows: number; maxBytes: number };
  #chunks: Buffer[] = [];
  #buffer = EMPTY;
  #at = 0;
  /** Room for the next chunk: the last one's size. */
  #nextRoom: number;
  #chunkRows = 0;
  #utf8Lengths: number[] = [];
  /** Rows added, and their encoded bytes, since the chunker was made. */
  rows = 0;
  bytes = 0;

  /** `rowTag`: as for `encodeRows`. `firstRoom`: the first chunk's room before it grows (a result expected to be small starts small). */
  constructor(rowTag: number, limits: { maxRows: number; maxBytes: number }, firstRoom = FIRST_CHUNK) {
    this.#rowTag = rowTag;
    this.#limits = limits;
    this.#nextRoom = Math.min(firstRoom, limits.maxBytes);
  }

  /** Adds the row of a DataRow message whose payload (field count, then each field's int32 length and bytes) is at `offset`. */
  addDataRow(bytes: Buffer, offset: number): void {
    const count = (bytes[offset]! << 8) | bytes[offset + 1]!;
    let at = offset + 2;
    let rowLength = 0;
    for (let i = 0; i < count; i++) {
      const length = readInt32(bytes, at);
      at += 4;
      if (length < 0) {
        rowLength += NULL_ENTRY.length;
      } else {
        at += length;
        const valueLength = 1 + varintSize(length) + length;
        rowLength += 1 + varintSize(valueLength) + valueLength;
      }
    }
    const out = this.#reserve(1 + varintSize(rowLength) + rowLength);
    let w = this.#at;
    out[w++] = this.#rowTag;
    w = writeVarint(out, w, rowLength);
    at = offset + 2;
    for (let i = 0; i < count; i++) {
      const length = readInt32(bytes, at);
      at += 4;
      if (length < 0) {
        for (const byte of NULL_ENTRY) out[w++] = byte;
        continue;
      }
      out[w++] = LIST_VALUE_ENTRY;
      w = writeVarint(out, w, 1 + varintSize(length) + length);
      out[w++] = VALUE.stringValue;
      w = writeVarint(out, w, length);
      if (length < SHORT_COPY) {
        for (let end = at + length; at < end;) out[w++] = bytes[at++]!;
      } else {
        w += bytes.copy(out, w, at, at + length);
        at += length;
      }
    }
    this.#at = w;
  }

  /** Adds a row of text values. */
  addTextRow(row: TextRow): void {
    const lengths = this.#utf8Lengths;
    lengths.length = 0;
    const rowLength = measureTextRow(row, lengths);
    const out = this.#reserve(1 + varintSize(rowLength) + rowLength);
    let w = this.#at;
    out[w++] = this.#rowTag;
    w = writeVarint(out, w, rowLength);
    this.#at = writeTextRow(out, w, row, lengths, 0);
  }

  /** The chunks of the rows added since the last call, in order. */
  take(): Buffer[] {
    this.#finishChunk();
    const chunks = this.#chunks;
    this.#chunks = [];
    return chunks;
  }

  /** Room for a row entry of `size` bytes at `#at`, in a new chunk when the current one is full. */
  #reserve(size: number): Buffer {
    if (this.#chunkRows > 0 && (this.#chunkRows >= this.#limits.maxRows || this.#at + size > this.#limits.maxBytes)) this.#finishChunk();
    if (this.#at + size > this.#buffer.length) {
      // Started at the last chunk's size and grown by doubling, so a chunk is copied about once in all.
      const room = this.#buffer.length === 0 ? this.#nextRoom : Math.min(this.#buffer.length * 2, this.#limits.maxBytes);
      const grown = Buffer.allocUnsafe(Math.max(this.#at + size, room));
      this.#buffer.copy(grown, 0, 0, this.#at);
      this.#buffer = grown;
    }
    this.#chunkRows++;
    this.rows++;
    this.bytes += size;
    return this.#buffer;
  }

  #finishChunk(): void {
    if (this.#chunkRows === 0) return;
    this.#chunks.push(this.#buffer.subarray(0, this.#at));
    this.#nextRoom = Math.max(1, this.#at);
    this.#buffer = EMPTY;
    this.#at = 0;
    this.#chunkRows = 0;
  }
}

/** The encoded length of a row of text values (without its tag and length), pushing each non-NULL value's UTF-8 length onto `utf8Lengths`. */
function measureTextRow(row: TextRow, utf8Lengths: number[]): number {
  let rowLength = 0;
  for (const value of row) {
    if (value === null) {
      rowLength += NULL_ENTRY.length;
      continue;
    }
    const length = Buffer.byteLength(value, "utf8");
    utf8Lengths.push(length);
    const valueLength = 1 + varintSize(length) + length;
    rowLength += 1 + varintSize(valueLength) + valueLength;
  }
  return rowLength;
}

/** Writes a row's values at `at`, their UTF-8 lengths being `utf8Lengths` from `lengthIndex` on; returns the end. */
function writeTextRow(out: Buffer, at: number, row: TextRow, utf8Lengths: readonly number[], lengthIndex: number): number {
  for (const value of row) {
    if (value === null) {
      for (const byte of NULL_ENTRY) out[at++] = byte;
      continue;
    }
    const length = utf8Lengths[lengthIndex++]!;
    out[at++] = LIST_VALUE_ENTRY;
    at = writeVarint(out, at, 1 + varintSize(length) + length);
    out[at++] = VALUE.stringValue;
    at = writeVarint(out, at, length);
    at += out.write(value, at, length, "utf8");
  }
  return at;
}

function readInt32(bytes: Buffer, at: number): number {
  return (bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!;
}
