// The wire writer: varints and int32 values written and sized as protobuf-es writes them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { int32Size, varintSize, writeInt32, writeVarint } from "../src/wire-writer.js";

describe("protobuf wire writer", () => {
  it("write varints as protobuf-es does, up to 2^53 - 1, and size them exactly", () => {
    const values = [
      0,
      1,
      127,
      128,
      16_383,
      16_384,
      2 ** 21 - 1,
      2 ** 21,
      2 ** 28 - 1,
      2 ** 28,
      2 ** 31 - 1,
      2 ** 31,
      2 ** 32 - 1,
      2 ** 32,
      3_000_000_000,
      2 ** 35,
      2 ** 42 + 5,
      2 ** 49,
      Number.MAX_SAFE_INTEGER,
    ];
    for (const n of values) {
      const expected = new BinaryWriter().uint64(n).finish();
      const out = new Uint8Array(16);
      const end = writeVarint(out, 0, n);
      assert.deepEqual(out.subarray(0, end), expected, String(n));
      assert.equal(varintSize(n), expected.length, String(n));
    }
  });

  it("write int32 values, negative ones as ten bytes, as protobuf-es does", () => {
    for (const n of [0, 1, 300, 2 ** 31 - 1, -1, -2, -300, -(2 ** 31)]) {
      const expected = new BinaryWriter().int32(n).finish();
      const out = new Uint8Array(16);
      const end = writeInt32(out, 0, n);
      assert.deepEqual(out.subarray(0, end), expected, String(n));
      assert.equal(int32Size(n), expected.length, String(n));
    }
  });
});
