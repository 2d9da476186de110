import type { TextRow } from "./result-set.js";

/**
 * Protobuf wire encoding of result rows, written straight from PostgreSQL's
 * text values. A row is a `google.protobuf.ListValue` whose values are
 * `google.protobuf.Value`s holding `string_value` (field 3) or `null_value`
 * (field 1, NULL_VALUE = 0). Building protobuf-es objects for every value and
 * serializing them costs several allocations per value; rows are the bulk of
 * every result, so they are encoded here by hand (the output is the same bytes
 * `toBinary` writes: see server/test/row-encoding.test.ts) and the rest of a
 * message with protobuf-es.
 */

/** `Value.null_value = NULL_VALUE` as a ListValue entry: tag 1/LEN, length 2, tag 1/VARINT, 0. */
const NULL_ENTRY = [0x0a, 0x02, 0x08, 0x00] as const;
const LIST_VALUE_ENTRY_TAG = 0x0a; // ListValue.values = 1, length-delimited
const STRING_VALUE_TAG = 0x1a; // Value.string_value = 3, length-delimited

/**
 * Encodes rows as the entries of a repeated `google.protobuf.ListValue` field
 * `fieldNumber` (1 to 15) of the enclosing message: bytes that can be
 * concatenated with the rest of that message's encoding.
 */
export function encodeRows(fieldNumber: number, rows: readonly TextRow[]): Buffer {
  return encodeRowChunks(fieldNumber, rows, { maxRows: Infinity, maxBytes: Infinity }).chunks[0] ?? Buffer.alloc(0);
}

/** Rows encoded in chunks (see `encodeRowChunks`). */
export interface EncodedChunks {
  chunks: Buffer[];
  /** Encoded bytes of all rows. */
  bytes: number;
}

/**
 * Encodes rows like `encodeRows`, cut into chunks of at most `maxRows` rows
 * and `maxBytes` encoded bytes (a single larger row makes a chunk of its
 * own). Sizes are exact: each value's UTF-8 length is measured once.
 */
export function encodeRowChunks(fieldNumber: number, rows: readonly TextRow[], limits: { maxRows: number; maxBytes: number }): EncodedChunks {
  const rowTag = (fieldNumber << 3) | 2;
  // Pass 1: sizes. UTF-8 lengths are kept so that pass 2 does not compute them again.
  const utf8Lengths: number[] = [];
  const rowLengths: number[] = [];
  const ends: number[] = []; // exclusive end row of each chunk
  let chunkBytes = 0;
  let chunkRows = 0;
  let total = 0;
  const chunkSizes: number[] = [];
  for (let r = 0; r < rows.length; r++) {
    let rowLength = 0;
    for (const value of rows[r]!) {
      if (value === null) {
        rowLength += NULL_ENTRY.length;
        continue;
      }
      const length = Buffer.byteLength(value, "utf8");
      utf8Lengths.push(length);
      const valueLength = 1 + varintSize(length) + length;
      rowLength += 1 + varintSize(valueLength) + valueLength;
    }
    rowLengths.push(rowLength);
    const entry = 1 + varintSize(rowLength) + rowLength;
    if (chunkRows > 0 && (chunkRows >= limits.maxRows || chunkBytes + entry > limits.maxBytes)) {
      ends.push(r);
      chunkSizes.push(chunkBytes);
      chunkBytes = 0;
      chunkRows = 0;
    }
    chunkBytes += entry;
    chunkRows++;
    total += entry;
  }
  if (chunkRows > 0) {
    ends.push(rows.length);
    chunkSizes.push(chunkBytes);
  }
  // Pass 2: bytes.
  const chunks: Buffer[] = [];
  let r = 0;
  let nextLength = 0;
  for (const [c, end] of ends.entries()) {
    const out = Buffer.allocUnsafe(chunkSizes[c]!);
    let at = 0;
    for (; r < end; r++) {
      out[at++] = rowTag;
      at = writeVarint(out, at, rowLengths[r]!);
      for (const value of rows[r]!) {
        if (value === null) {
          for (const byte of NULL_ENTRY) out[at++] = byte;
          continue;
        }
        const length = utf8Lengths[nextLength++]!;
        out[at++] = LIST_VALUE_ENTRY_TAG;
        at = writeVarint(out, at, 1 + varintSize(length) + length);
        out[at++] = STRING_VALUE_TAG;
        at = writeVarint(out, at, length);
        at += out.write(value, at, length, "utf8");
      }
    }
    chunks.push(out);
  }
  return { chunks, bytes: total };
}

function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
}

function writeVarint(out: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[at++] = n;
  return at;
}
