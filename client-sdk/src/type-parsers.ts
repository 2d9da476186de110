// PostgreSQL's text values to JavaScript: pg's own parsers, int8 as bigint and numeric[] exact, custom parsers by OID first.
import { parse as parseArray } from "postgres-array";
import types from "pg-types";
import { parseInteger, type TypeParser } from "../../wire/src/row-decoding.js";

// Defined with the rows' decoding, which reads integers straight from their bytes, and part of this module's API too.
export type { TypeParser };

/** How int8 (bigint) values are returned. */
export type Int8Mode = "bigint" | "string";

const INT8 = 20;
const INT8_ARRAY = 1016;
const NUMERIC_ARRAY = 1231;
const INTEGER_OIDS = new Set([21, 23, 26]); // int2, int4, oid
const identity: TypeParser = (text) => text;

/**
 * The parser for a type OID: node-postgres's own defaults (pg-types, the same
 * version pg uses) so rows look as they would with `pg`, with two exceptions
 * made for exactness: int8 is a `bigint` unless `int8: "string"` asks for pg's
 * string, and numeric[] elements are strings like numeric values (pg turns
 * them into floats, losing digits). Custom parsers by OID come first. Types
 * pg-types does not know (ranges, enums, domains of them, geometric types …)
 * stay PostgreSQL's text.
 */
export function typeParsers(int8: Int8Mode, overrides: Readonly<Record<number, TypeParser>> = {}): (oid: number) => TypeParser {
  const cache = new Map<number, TypeParser>();
  return (oid) => {
    let parser = cache.get(oid);
    if (parser === undefined) {
      parser = overrides[oid] ?? builtin(oid, int8);
      cache.set(oid, parser);
    }
    return parser;
  };
}

function builtin(oid: number, int8: Int8Mode): TypeParser {
  if (int8 === "bigint" && oid === INT8) return (text) => BigInt(text);
  if (int8 === "bigint" && oid === INT8_ARRAY) return (text) => parseArray(text, (v) => BigInt(v));
  if (oid === NUMERIC_ARRAY) return (text) => parseArray(text, identity);
  if (INTEGER_OIDS.has(oid)) return parseInteger;
  return types.getTypeParser(oid, "text") as TypeParser;
}
