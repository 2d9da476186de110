import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NullValue } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { ValueSchema, type Value } from "../client-sdk/src/gen/dbgateway/v1/values_pb.js";
import type { GatewayClient } from "../client-sdk/src/index.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

/** Each row: a SQL expression of one type, with edge values. */
const TABLE: { type: string; sql: string; params?: unknown[] }[] = [
  { type: "int8 beyond 2^53", sql: "SELECT 9007199254740993::int8 AS v" },
  { type: "int8 extremes", sql: "SELECT '-9223372036854775808'::int8 AS v, '9223372036854775807'::int8 AS w" },
  { type: "int2, int4", sql: "SELECT 32767::int2 AS v, (-2147483648)::int4 AS w" },
  { type: "numeric with 40 digits", sql: "SELECT '1234567890123456789012345678901234567890.0123456789'::numeric AS v, 'NaN'::numeric AS w" },
  { type: "float8 edges", sql: "SELECT 'NaN'::float8 AS v, '-Infinity'::float8 AS w, 5e-324::float8 AS x, 1.7976931348623157e308::float8 AS y" },
  { type: "float4", sql: "SELECT 3.14159::float4 AS v" },
  { type: "bool", sql: "SELECT true AS v, false AS w" },
  { type: "bytea with zero bytes", sql: "SELECT '\\x00ff0001'::bytea AS v, ''::bytea AS w" },
  { type: "NULL distinct from the empty string", sql: "SELECT NULL::text AS v, ''::text AS w" },
  { type: "text with unicode", sql: "SELECT 'naïve 🐘 \"quoted\" back\\slash' AS v" },
  { type: "int4[] with NULL elements", sql: "SELECT ARRAY[1, NULL, 3]::int4[] AS v, '{}'::int4[] AS w" },
  { type: "text[] with NULL, empty and quoted elements", sql: `SELECT ARRAY['a', NULL, '', 'b,c', '"q"', 'NULL']::text[] AS v` },
  { type: "int8[] beyond 2^53", sql: "SELECT ARRAY[9007199254740993, NULL]::int8[] AS v" },
  { type: "2-D array", sql: "SELECT '{{1,2},{3,NULL}}'::int4[] AS v" },
  { type: "json", sql: `SELECT '{"a": [1, 2, {"b": null}], "s": "x"}'::json AS v` },
  { type: "jsonb", sql: `SELECT '{"a": [1, 2, {"b": null}], "n": 1.5}'::jsonb AS v, 'null'::jsonb AS w` },
  { type: "timestamptz with microseconds", sql: "SELECT '2024-02-29 12:34:56.789123+00'::timestamptz AS v" },
  { type: "timestamp", sql: "SELECT '1999-12-31 23:59:59.999999'::timestamp AS v" },
  { type: "date, time", sql: "SELECT '2024-02-29'::date AS v, '12:34:56.5'::time AS w" },
  { type: "interval", sql: "SELECT '1 year 2 mons 3 days 04:05:06.789'::interval AS v, '-1 day'::interval AS w" },
  { type: "uuid", sql: "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS v" },
  { type: "inet, macaddr", sql: "SELECT '192.168.0.1/24'::inet AS v, '08:00:2b:01:02:03'::macaddr AS w" },
  { type: "oid, money", sql: "SELECT 1259::oid AS v, 12.34::money AS w" },
];

describe("type exactness: the gateway returns what pg returns", () => {
  let t: TestGateway;
  let client: GatewayClient;
  let platform: string;
  let direct: pg.Client;
  let directText: pg.Client;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    client = t.client();
    direct = await t.pg(`${platform}_main`);
    directText = await t.pg(`${platform}_main`);
    await directText.query("SELECT 1");
  });
  after(() => t.close());

  for (const row of TABLE) {
    it(`${row.type}: text form and decoded value match pg`, async () => {
      // The text form on the wire is exactly PostgreSQL's text output.
      const raw = await client.raw.query.query({ platform, sql: row.sql });
      const text = await directText.query({ text: row.sql, rowMode: "array", types: { getTypeParser: () => (v: string) => v } });
      const wire = raw.result!.rows[0]!.values.map((v) => (v.kind.case === "nullValue" ? null : v.kind.value));
      assert.deepEqual(wire, text.rows[0]);
      // Decoded by the SDK, values equal pg's own decoding (int8 compared as text: pg gives strings, the SDK bigints).
      const ours = await client.platform(platform).query(row.sql);
      const theirs = await direct.query(row.sql);
      assert.deepEqual(normalize(ours.rows), normalize(theirs.rows));
      assert.deepEqual(
        ours.fields.map((f) => f.dataTypeID),
        theirs.fields.map((f) => f.dataTypeID),
      );
    });
  }

  it("int8 values are bigint in the SDK, exact beyond 2^53", async () => {
    const { rows } = await client.platform(platform).query("SELECT 9007199254740993::int8 AS v, ARRAY[9007199254740993]::int8[] AS a");
    assert.deepEqual(rows, [{ v: 9007199254740993n, a: [9007199254740993n] }]);
  });

  it("round-trips parameters of every kind exactly", async () => {
    const db = client.platform(platform);
    const bytes = Buffer.from([0, 1, 0, 255, 0]);
    const when = new Date("2024-02-29T12:34:56.789Z");
    const { rows } = await db.query(
      `SELECT $1::int8 AS big, $2::numeric::text AS num, $3::bytea AS bytes, $4::text AS empty, $5::text AS nul,
              $6::int4[] AS arr, $7::jsonb AS doc, $8::timestamptz AS ts, $9::float8 AS dbl, $10::bool AS flag,
              $11::uuid AS id, $12::text[] AS texts`,
      [
        9223372036854775807n,
        "1234567890123456789012345678901234567890.0123456789",
        bytes,
        "",
        null,
        [1, null, 3],
        { a: [1, { b: null }], s: "x'y\"z" },
        when,
        0.1 + 0.2,
        true,
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ["a", null, "", "b,c", '"q"', "NULL"],
      ],
    );
    assert.deepEqual(rows[0], {
      big: 9223372036854775807n,
      num: "1234567890123456789012345678901234567890.0123456789",
      bytes,
      empty: "",
      nul: null,
      arr: [1, null, 3],
      doc: { a: [1, { b: null }], s: "x'y\"z" },
      ts: when,
      dbl: 0.1 + 0.2,
      flag: true,
      id: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
      texts: ["a", null, "", "b,c", '"q"', "NULL"],
    });
  });

  it("sends numeric, json, timestamp (to the microsecond), special doubles and nested arrays through typed values", async () => {
    const v = (kind: Value["kind"]) => create(ValueSchema, { kind });
    const raw = await client.raw.query.query({
      platform,
      sql: `SELECT $1::numeric::text, $2::json::text, $3::timestamptz, $4::float8, $5::float8, $6::int4[], $7::bytea[], $8::text`,
      params: [
        v({ case: "numericValue", value: "-0.000000000000000000000000000000000000001" }),
        v({ case: "jsonValue", value: '{"x": 12345678901234567890}' }),
        v({ case: "timestampValue", value: { $typeName: "google.protobuf.Timestamp", seconds: 1709210096n, nanos: 123456789 } }),
        v({ case: "doubleValue", value: Number.NaN }),
        v({ case: "doubleValue", value: -Infinity }),
        v({
          case: "arrayValue",
          value: {
            $typeName: "dbgateway.v1.ValueList",
            values: [
              v({ case: "arrayValue", value: { $typeName: "dbgateway.v1.ValueList", values: [v({ case: "int64Value", value: 1n }), v({ case: "nullValue", value: NullValue.NULL_VALUE })] } }),
              v({ case: "arrayValue", value: { $typeName: "dbgateway.v1.ValueList", values: [v({ case: "int64Value", value: 3n }), v({ case: "int64Value", value: 4n })] } }),
            ],
          },
        }),
        v({ case: "arrayValue", value: { $typeName: "dbgateway.v1.ValueList", values: [v({ case: "bytesValue", value: new Uint8Array([0, 92, 34]) })] } }),
        v({ case: undefined }),
      ],
    });
    const values = raw.result!.rows[0]!.values.map((x) => (x.kind.case === "nullValue" ? null : x.kind.value));
    assert.deepEqual(values, [
      "-0.000000000000000000000000000000000000001",
      '{"x": 12345678901234567890}',
      "2024-02-29 12:34:56.123456+00",
      "NaN",
      "-Infinity",
      "{{1,NULL},{3,4}}",
      '{"\\\\x005c22"}',
      null,
    ]);
  });
});

/** int8 as text, so the SDK's bigints compare with pg's strings; everything else as is. */
function normalize(value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.map(normalize);
  if (value instanceof Date || Buffer.isBuffer(value) || value === null || typeof value !== "object") return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
}
