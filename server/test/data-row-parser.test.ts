// DataRows passed on as their bytes on UTF-8 connections (passDataRowBytes), and decoded by pg while the client encoding is not UTF-8.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pg from "pg";
import { passDataRowBytes, RawDataRow } from "../src/pool/data-row-parser.js";
import { pgUrl } from "../../test/helpers/gateway.js";

/** Values of many shapes: NULLs, empty text, multi-byte characters, values long and short. */
const SQL = `SELECT g, NULL::text AS nothing, '' AS empty, 'naïve 🐘 ' || g AS word, repeat('é', g * 40) AS long, md5(g::text) AS hash
  FROM generate_series(1, 50) g`;

async function connect(passBytes: boolean): Promise<{ client: pg.Client; messages: { raw: number; other: number } }> {
  const client = new pg.Client({ connectionString: pgUrl() });
  if (passBytes) passDataRowBytes(client);
  const messages = { raw: 0, other: 0 };
  (client as unknown as { connection: pg.Connection }).connection.on("dataRow", (message: unknown) => {
    if (message instanceof RawDataRow) messages.raw++;
    else messages.other++;
  });
  await client.connect();
  return { client, messages };
}

describe("DataRow bytes passed on (passDataRowBytes)", () => {
  it("a UTF-8 connection hands rows over as their bytes, and a query that reads them gets what pg decodes", async () => {
    const plain = await connect(false);
    const passing = await connect(true);
    try {
      const expected = await plain.client.query({ text: SQL, rowMode: "array" });
      const got = await passing.client.query({ text: SQL, rowMode: "array" });
      assert.deepEqual(got.rows, expected.rows);
      assert.equal(passing.messages.raw, 50);
      assert.equal(passing.messages.other, 0);
      assert.equal(plain.messages.raw, 0);
    } finally {
      await plain.client.end();
      await passing.client.end();
    }
  });

  it("rows are decoded by pg while the client encoding is not UTF-8, and passed on again once it is", async () => {
    const plain = await connect(false);
    const passing = await connect(true);
    try {
      for (const { client } of [plain, passing]) await client.query("SET client_encoding = 'LATIN1'");
      const latin1 = "SELECT 'naïve' AS word, NULL AS nothing";
      assert.deepEqual((await passing.client.query(latin1)).rows, (await plain.client.query(latin1)).rows);
      assert.deepEqual(passing.messages, { raw: 0, other: 1 });
      await passing.client.query("RESET client_encoding");
      assert.deepEqual((await passing.client.query("SELECT 'naïve' AS word")).rows, [{ word: "naïve" }]);
      assert.deepEqual(passing.messages, { raw: 1, other: 1 });
    } finally {
      await plain.client.end();
      await passing.client.end();
    }
  });
});
