// BufferedQuery on a real connection: the bytes it encodes, and a result cut off by its limits.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { BufferedQuery } from "../src/execution/buffered-query.js";
import { ResultBudget } from "../src/execution/result-budget.js";
import { encodeResultSet, type TextRow } from "../../wire/src/result-set.js";
import { passDataRowBytes } from "../src/pool/data-row-parser.js";
import { TEXT_PASSTHROUGH, type Lease } from "../src/pool/pool-manager.js";
import { streamQuery } from "../src/execution/stream-query.js";
import type { GatewayError } from "../src/errors.js";
import { pgUrl } from "../../test/helpers/gateway.js";

/** Values of many shapes: NULLs, empty text, multi-byte characters, values long and short. */
const SQL = `SELECT g, NULL::text AS nothing, '' AS empty, 'naïve 🐘 ' || g AS word, repeat('é', g * 40) AS long, md5(g::text) AS hash
  FROM generate_series(1, 200) g`;

describe("BufferedQuery", () => {
  let client: pg.Client;
  before(async () => {
    // As the pool makes its connections: values as text, DataRows passed on as their bytes.
    client = new pg.Client({ connectionString: pgUrl(), types: TEXT_PASSTHROUGH });
    passDataRowBytes(client);
    await client.connect();
  });
  after(() => client.end());

  const budget = () => new ResultBudget({ maxRows: 1_000_000, maxBytes: 64 * 1024 * 1024, maxBufferedBytes: 64 * 1024 * 1024 });

  async function buffered(sql: string, results = budget(), onCut?: (error: GatewayError) => void): Promise<Uint8Array> {
    const query = new BufferedQuery(sql, [], results.account(), onCut);
    client.query(query);
    return (await query.done).encode(0n);
  }

  it("encodes the same ResultSet as pg's own rows give, from DataRow bytes and, on a connection that is not UTF-8, from text", async () => {
    for (const encoding of ["UTF8", "LATIN1"]) {
      await client.query(`SET client_encoding = '${encoding}'`);
      const sql = encoding === "UTF8" ? SQL : "SELECT g, NULL::text AS nothing, 'naïve ' || g AS word FROM generate_series(1, 50) g";
      const expected = encodeResultSet(await client.query<TextRow>({ text: sql, rowMode: "array" }), 0n);
      assert.deepEqual(Buffer.from(await buffered(sql)), Buffer.from(expected), encoding);
    }
    await client.query("RESET client_encoding");
  });

  it("cuts a result off past its limits: its rows dropped, onCut told once, the budget given back, the connection usable", async () => {
    const results = new ResultBudget({ maxRows: 100, maxBytes: 64 * 1024 * 1024, maxBufferedBytes: 64 * 1024 * 1024 });
    const cuts: string[] = [];
    await assert.rejects(
      buffered("SELECT g FROM generate_series(1, 5000) g", results, (error) => cuts.push(error.reason)),
      { reason: "RESULT_TOO_LARGE" },
    );
    assert.deepEqual(cuts, ["RESULT_TOO_LARGE"]);
    assert.equal(results.usedBytes, 0);
    assert.ok((await buffered("SELECT 1", results)).length > 0);
  });

  it("holds exactly its encoded size of the budget once encoded, until its account is released", async () => {
    const results = budget();
    const account = results.account();
    const query = new BufferedQuery("SELECT repeat('x', 1000) FROM generate_series(1, 300)", [], account);
    client.query(query);
    const result = await query.done;
    assert.ok(results.usedBytes >= 300 * 1000, "taken as the rows arrived");
    const encoded = result.encode(0n);
    assert.equal(results.usedBytes, encoded.length);
    account.release();
    assert.equal(results.usedBytes, 0);
  });

  it("a statement that enters COPY mode without being sent as a COPY fails INVALID_REQUEST, its connection closed, the process unharmed", async () => {
    for (const sql of ["COPY (SELECT 1) TO STDOUT", "COPY pg_temp.t FROM STDIN"]) {
      const own = new pg.Client({ connectionString: pgUrl(), types: TEXT_PASSTHROUGH });
      passDataRowBytes(own);
      const errors: Error[] = [];
      own.on("error", (err) => errors.push(err));
      await own.connect();
      await own.query("CREATE TEMP TABLE t (id int)");
      const ended = new Promise((resolve) => own.once("end", resolve));
      const query = new BufferedQuery(sql, [], budget().account());
      own.query(query);
      await assert.rejects(query.done, (err: GatewayError) => err.reason === "INVALID_REQUEST" && /not supported through the gateway/.test(err.message));
      await ended;
      await own.end().catch(() => undefined);
    }
  });

  it("a COPY run from a StreamQuery portal without being sent as one fails INVALID_REQUEST instead of throwing in pg", async () => {
    for (const sql of ["COPY (SELECT 1) TO STDOUT", "COPY pg_temp.t FROM STDIN"]) {
      const own = new pg.Client({ connectionString: pgUrl(), types: TEXT_PASSTHROUGH });
      passDataRowBytes(own);
      own.on("error", () => undefined);
      await own.connect();
      await own.query("CREATE TEMP TABLE t (id int)");
      const lease = { client: own, database: "", signal: new AbortController().signal } as unknown as Lease;
      const responses = { send: async () => undefined } as unknown as Parameters<typeof streamQuery>[2];
      await assert.rejects(
        streamQuery(lease, { sql, values: [], copy: false }, responses, { maxRows: 1000, maxBytes: 1 << 20 }),
        (err: GatewayError) => err.reason === "INVALID_REQUEST",
      );
      await own.end().catch(() => undefined);
    }
  });
});
