// Rows and ResultSets encoded by hand, whole or in chunks, from DataRow bytes or text: the bytes protobuf-es writes.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { StreamQueryResponseSchema } from "../src/gen/dbgateway/v1/query_service_pb.js";
import { ResultSetSchema } from "../src/gen/dbgateway/v1/values_pb.js";
import { encodeResultSet, toResultSet, toRow, type TextRow } from "../src/result-set.js";
import { encodeRows, RESULT_SET_ROWS, RowChunker, STREAM_QUERY_ROWS } from "../src/row-encoding.js";

const ROWS: TextRow[] = [
  ["1", null, "", "abc"],
  [null],
  [],
  ['naïve 🐘 "quoted" back\\slash', "\u0000 is not here but \u00ff is"],
  ["x".repeat(127), "y".repeat(128), "z".repeat(16_383), "w".repeat(16_384), "é".repeat(100_000)],
];

/** A DataRow message's payload as PostgreSQL sends it: int16 field count, then each field's int32 length (-1 for NULL) and bytes. */
function dataRow(row: TextRow): Buffer {
  const parts = [Buffer.from([row.length >> 8, row.length & 0xff])];
  for (const value of row) {
    const bytes = value === null ? Buffer.alloc(0) : Buffer.from(value, "utf8");
    const length = Buffer.alloc(4);
    length.writeInt32BE(value === null ? -1 : bytes.length);
    parts.push(length, bytes);
  }
  return Buffer.concat(parts);
}

describe("row encoding", () => {
  it("writes the same bytes as protobuf-es for the rows field of StreamQueryResponse and ResultSet", () => {
    for (const [field, schema] of [
      [STREAM_QUERY_ROWS, StreamQueryResponseSchema],
      [RESULT_SET_ROWS, ResultSetSchema],
    ] as const) {
      const expected = toBinary(schema, create(schema, { rows: ROWS.map(toRow) }));
      assert.deepEqual(new Uint8Array(encodeRows(field, ROWS)), expected);
    }
  });

  it("concatenates with the other fields into one message that decodes back to the rows", () => {
    const head = toBinary(StreamQueryResponseSchema, create(StreamQueryResponseSchema, { columns: [{ name: "a", typeOid: 25 }] }));
    const tail = toBinary(StreamQueryResponseSchema, create(StreamQueryResponseSchema, { summary: { command: "SELECT", rowsAffected: 5n } }));
    const message = fromBinary(StreamQueryResponseSchema, Buffer.concat([head, encodeRows(STREAM_QUERY_ROWS, ROWS), tail]));
    assert.equal(message.columns[0]?.name, "a");
    assert.equal(message.summary?.rowsAffected, 5n);
    const decoded = message.rows.map((r) => r.values.map((v) => (v.kind.case === "stringValue" ? v.kind.value : null)));
    assert.deepEqual(decoded, ROWS);
  });

  it("encodes rows added one by one, from DataRow bytes or from text, as encodeRows does, in chunks within the limits", () => {
    const rows = [...ROWS, ...ROWS, ...ROWS];
    for (const limits of [
      { maxRows: Infinity, maxBytes: Infinity },
      { maxRows: 2, maxBytes: Infinity },
      { maxRows: 1_000, maxBytes: 150 },
      { maxRows: 1, maxBytes: 1 },
    ]) {
      for (const from of ["bytes", "text"] as const) {
        const chunker = new RowChunker(STREAM_QUERY_ROWS, limits);
        const chunks: Buffer[] = [];
        for (const [i, row] of rows.entries()) {
          if (from === "bytes") {
            // At an offset in a larger buffer, as in the parser's buffer.
            const payload = Buffer.concat([Buffer.from("xyz"), dataRow(row), Buffer.from("tail")]);
            chunker.addDataRow(payload, 3);
          } else {
            chunker.addTextRow(row);
          }
          if (i === 4) chunks.push(...chunker.take());
        }
        chunks.push(...chunker.take());
        assert.deepEqual(chunker.take(), [], "nothing is left once taken");
        assert.deepEqual(Buffer.concat(chunks), encodeRows(STREAM_QUERY_ROWS, rows), `${from}, ${JSON.stringify(limits)}`);
        assert.equal(chunker.rows, rows.length);
        assert.equal(chunker.bytes, encodeRows(STREAM_QUERY_ROWS, rows).length);
        let decodedRows = 0;
        for (const chunk of chunks) {
          const message = fromBinary(StreamQueryResponseSchema, chunk);
          assert.ok(message.rows.length >= 1);
          assert.ok(message.rows.length <= limits.maxRows, "at most maxRows rows a chunk");
          assert.ok(message.rows.length === 1 || chunk.length <= limits.maxBytes, "at most maxBytes a chunk unless it is one row");
          decodedRows += message.rows.length;
        }
        assert.equal(decodedRows, rows.length);
      }
    }
  });

  it("encodes no rows as nothing", () => {
    assert.equal(encodeRows(STREAM_QUERY_ROWS, []).length, 0);
  });

  it("writes a whole ResultSet as protobuf-es does, for results with and without rows, columns, command and count", () => {
    const field = (name: string, dataTypeID: number, dataTypeModifier: number, tableID: number, columnID: number) => ({
      name,
      dataTypeID,
      dataTypeModifier,
      tableID,
      columnID,
      dataTypeSize: -1,
      format: "text" as const,
    });
    const results = [
      {
        fields: [field("id", 23, -1, 16_384, 1), field("?column?", 25, 0, 0, 0), field("", 1043, 68, 4_294_967_295, 32_767)],
        rows: ROWS.slice(0, 2),
        command: "SELECT",
        rowCount: 2,
      },
      { fields: [], rows: [], command: "INSERT", rowCount: 3_000_000_000 },
      { fields: [], rows: [], command: "", rowCount: null },
      { fields: [field("n", 20, -1, 0, 0)], rows: [], command: "SELECT", rowCount: 0 },
    ];
    for (const result of results) {
      for (const elapsed of [0n, 999n, 1_000_000_000n, 12_345_678_901n]) {
        const pgResult = { ...result, oid: 0 } as unknown as Parameters<typeof toResultSet>[0];
        assert.deepEqual(new Uint8Array(encodeResultSet(pgResult, elapsed)), toBinary(ResultSetSchema, toResultSet(pgResult, elapsed)));
      }
    }
  });
});
