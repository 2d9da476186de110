import { createRequire } from "node:module";
import types from "pg-types";

const require = createRequire(import.meta.url);
// postgres-array is what pg-types itself parses arrays with.
const { parse: parseArray } = require("postgres-array") as { parse: <T>(text: string, transform: (v: string) => T) => (T | null)[] };

/** Turns PostgreSQL's text form of one value into a JavaScript value. */
export type TypeParser = (text: string) => unknown;

/** How int8 (bigint) values are returned. */
export type Int8Mode = "bigint" | "string";

const INT8 = 20;
const INT8_ARRAY = 1016;

/**
 * The parser for a type OID: node-postgres's own defaults (from pg-types, the
 * library pg uses) so rows look as they would with `pg`, except int8, which
 * is a `bigint` unless `int8: "string"` asks for pg's string.
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
  return types.getTypeParser(oid, "text") as TypeParser;
}
