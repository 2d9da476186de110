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
  const rowTag = (fieldNumber << 3) | 2;
  // Pass 1: sizes. UTF-8 lengths are kept so that pass 2 does not compute them again.
  const utf8Lengths: number[] = [];
  const rowLengths: number[] = [];
  let total = 0;
  for (const row of rows) {
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
    rowLengths.push(rowLength);
    total += 1 + varintSize(rowLength) + rowLength;
  }
  // Pass 2: bytes.
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  let nextLength = 0;
  for (let r = 0; r < rows.length; r++) {
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
  return out;
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
