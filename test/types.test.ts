// Type exactness: values come back through the gateway and the SDK as pg returns them, and parameters of every kind round-trip.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NullValue } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { ValueSchema, type Value } from "../wire/src/gen/dbgateway/v1/values_pb.js";
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
  // Every array type pg-types decodes.
  { type: "bool[], bytea[]", sql: "SELECT ARRAY[true, NULL, false] AS v, ARRAY['\\x00ff'::bytea, NULL, ''::bytea] AS w" },
  {
    type: "int2[], oid[], float4[], float8[]",
    sql: "SELECT ARRAY[1, NULL]::int2[] AS v, ARRAY[1259]::oid[] AS w, ARRAY[1.5, NULL]::float4[] AS x, ARRAY['NaN', '-Infinity', 0.1]::float8[] AS y",
  },
  { type: "char[], varchar[], name[]", sql: `SELECT ARRAY['a', NULL]::char(2)[] AS v, ARRAY['x y', ''] ::varchar[] AS w, ARRAY['n']::name[] AS x` },
  {
    type: "uuid[], inet[], cidr[], macaddr[], money[]",
    sql: "SELECT ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, NULL] AS v, ARRAY['::1'::inet] AS w, ARRAY['10.0.0.0/8'::cidr] AS x, ARRAY['08:00:2b:01:02:03'::macaddr] AS y, ARRAY[1.5::money] AS z",
  },
  {
    type: "date[], timestamp[], timestamptz[]",
    sql: "SELECT ARRAY['2024-02-29'::date, NULL] AS v, ARRAY['2024-02-29 01:02:03.456789'::timestamp] AS w, ARRAY['2024-02-29 01:02:03.456789+05'::timestamptz, NULL] AS x",
  },
  {
    type: "time[], timetz[], interval[]",
    sql: "SELECT ARRAY['01:02:03'::time] AS v, ARRAY['01:02:03+02'::timetz] AS w, ARRAY['1 day 02:03:04'::interval, NULL] AS x",
  },
  { type: "json[], jsonb[]", sql: `SELECT ARRAY['{"a": 1}'::json, NULL] AS v, ARRAY['[1, "x"]'::jsonb] AS w` },
  { type: "point, point[], circle", sql: "SELECT '(1.5,-2)'::point AS v, ARRAY['(1,2)'::point] AS w, '<(1,2),3>'::circle AS x" },
  // Types pg-types leaves as text: ranges, multiranges, enums, geometric, bit strings, text search, system types.
  {
    type: "ranges",
    sql: "SELECT '[1,10)'::int4range AS v, '(,5]'::int8range AS w, 'empty'::numrange AS x, '[2024-01-01,2024-02-01)'::daterange AS y, '[\"2024-01-01 00:00\",)'::tstzrange AS z",
  },
  { type: "multiranges", sql: "SELECT '{[1,3), [5,7)}'::int4multirange AS v" },
  { type: "enum", sql: "SELECT 'happy'::mood AS v, ARRAY['sad', NULL]::mood[] AS w" },
  { type: "domain, composite", sql: "SELECT 7::positive_int AS v, ROW(1, 'a b', NULL)::pair AS w" },
  {
    type: "box, line, lseg, path, polygon",
    sql: "SELECT '(1,1),(0,0)'::box AS v, '{1,-1,0}'::line AS w, '[(0,0),(1,1)]'::lseg AS x, '((0,0),(1,1),(1,0))'::path AS y, '((0,0),(1,1),(1,0))'::polygon AS z",
  },
  { type: "bit, varbit", sql: "SELECT B'1010'::bit(4) AS v, B'1'::varbit AS w" },
  { type: "tsvector, tsquery", sql: "SELECT to_tsvector('simple', 'a quick fox') AS v, 'fox & quick'::tsquery AS w" },
  {
    type: "macaddr8, pg_lsn, regclass, regtype, xid",
    sql: "SELECT '08:00:2b:01:02:03:04:05'::macaddr8 AS v, '16/B374D848'::pg_lsn AS w, 'pg_class'::regclass AS x, 'int4'::regtype AS y, '42'::xid AS z",
  },
  { type: "infinite dates and timestamps", sql: "SELECT 'infinity'::date AS v, '-infinity'::timestamptz AS w, 'infinity'::timestamp AS x" },
  { type: "dates before the common era", sql: "SELECT '0044-03-15 BC'::date AS v, '0001-01-01 00:00:00 BC'::timestamptz AS w" },
  { type: "large text and bytea", sql: "SELECT repeat('ab', 100000) AS v, decode(repeat('00ff', 50000), 'hex') AS w" },
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
    // User-defined types, made by an administrator in the tenant's database (public types are usable by everyone).
    await direct.query("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')");
    await direct.query("CREATE DOMAIN positive_int AS int CHECK (VALUE > 0)");
    await direct.query("CREATE TYPE pair AS (a int, b text, c text)");
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

  it("numeric[] elements are exact strings, where pg's floats lose digits", async () => {
    const sql = "SELECT ARRAY[0.1, 12345678901234567890.123456789, NULL]::numeric[] AS v";
    const { rows } = await client.platform(platform).query(sql);
    assert.deepEqual(rows, [{ v: ["0.1", "12345678901234567890.123456789", null] }]);
    const theirs = await direct.query(sql);
    assert.notEqual(String(theirs.rows[0].v[1]), "12345678901234567890.123456789", "pg rounds (the reason for the difference)");
  });

  it("custom parsers by type OID come first, and rows can be arrays", async () => {
    const { createClient } = await import("../client-sdk/src/index.js");
    const custom = createClient({ ...t.clientOptions(t.keys[platform]!), typeParsers: { 1700: (text) => Number(text), 3904: (text) => `range ${text}` } });
    try {
      const { rows } = await custom.platform(platform).query("SELECT 1.25::numeric AS n, '[1,2)'::int4range AS r", [], { rowMode: "array" });
      assert.deepEqual(rows, [[1.25, "range [1,2)"]]);
    } finally {
      custom.close();
    }
  });

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
              v({
                case: "arrayValue",
                value: {
                  $typeName: "dbgateway.v1.ValueList",
                  values: [v({ case: "int64Value", value: 1n }), v({ case: "nullValue", value: NullValue.NULL_VALUE })],
                },
              }),
              v({
                case: "arrayValue",
                value: { $typeName: "dbgateway.v1.ValueList", values: [v({ case: "int64Value", value: 3n }), v({ case: "int64Value", value: 4n })] },
              }),
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
