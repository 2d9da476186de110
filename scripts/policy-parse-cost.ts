// How long the statement policy takes to class a statement (libpg-query's parse on the gateway's thread): a typical one, cached and not, and long ones.
import { loadStatementParser, StatementPolicy } from "../server/src/execution/statement-policy.js";

await loadStatementParser();
const time = (runs: number, fn: (i: number) => void): number => {
  const started = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) fn(i);
  return Number(process.hrtime.bigint() - started) / runs / 1000;
};
const policy = new StatementPolicy(["dml"]);
const typical = "SELECT a, b, c FROM orders WHERE id = $1 AND tenant = $2";
console.log(`typical, cached:   ${time(20_000, () => policy.check(typical)).toFixed(2)} µs`);
// A new text each time: the parse itself (the cache keeps each class).
console.log(`typical, parsed:   ${time(20_000, (i) => policy.check(`${typical} AND n = ${i}`)).toFixed(2)} µs`);
for (const bytes of [4_096, 65_000]) {
  const values = Array.from({ length: Math.floor(bytes / 8) }, (_, i) => `(${i % 1000})`).join(",");
  const sql = `INSERT INTO t VALUES ${values}`.slice(0, bytes).replace(/,?\(?\d*$/, "");
  console.log(`${sql.length} characters: ${(time(20, (i) => policy.check(`${sql} -- ${i}`)) / 1000).toFixed(2)} ms`);
}
