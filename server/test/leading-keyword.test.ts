// The leading keyword that decides whether statements are pipelined or a COPY, found past comments and checked against PostgreSQL.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pg from "pg";
import { canPipeline, isCopy, leadingKeyword } from "../src/execution/leading-keyword.js";
import { pgUrl } from "../../test/helpers/gateway.js";

/** Statements and the first keyword PostgreSQL's lexer sees in them ("" when the lexer here gives up). */
const CASES: [string, string][] = [
  ["SELECT 1", "SELECT"],
  [" \n\t\r\fselect 1", "SELECT"],
  ["-- COMMIT\nSELECT 1", "SELECT"],
  ["-- COMMIT\rSELECT 1", "SELECT"],
  ["/* COMMIT */ SELECT 1", "SELECT"],
  ["/* /* nested */ COMMIT */ SELECT 1", "SELECT"],
  ["/*/ COMMIT */ SELECT 1", "SELECT"],
  ["/***/SELECT 1", "SELECT"],
  ["/**/COMMIT", "COMMIT"],
  ["/* a */ -- b\n /* c */ commit", "COMMIT"],
  ["(SELECT 1)", "("],
  ["WITH x AS (SELECT 1 AS a) SELECT a FROM x", "WITH"],
  ["VALUES (1)", "VALUES"],
  ["TABLE pg_namespace", "TABLE"],
  ["COMMIT", "COMMIT"],
  ["end", "END"],
  ["Abort", "ABORT"],
  ["ROLLBACK AND CHAIN", "ROLLBACK"],
  ["ROLLBACK TO SAVEPOINT s", "ROLLBACK"],
  ["PREPARE TRANSACTION 'x'", "PREPARE"],
  ["BEGIN", "BEGIN"],
  ["SET LOCAL work_mem = '8MB'", "SET"],
  ["/* unterminated COMMIT", ""],
  ["/* /* */ still open COMMIT", ""],
  ["SELECT1", ""],
  ["select$1", ""],
  ["\u017Felect 1", ""], // ſ upper-cases to S in JavaScript, not in PostgreSQL
  ["\u00a0SELECT 1", ""], // no-break space is part of an identifier to PostgreSQL
  ["", ""],
  ["  -- only a comment", ""],
];

describe("the leading keyword that decides whether a batch's statements are pipelined", () => {
  it("is found after white space and comments, nested ones included", () => {
    for (const [sql, keyword] of CASES) assert.equal(leadingKeyword(sql), keyword, JSON.stringify(sql));
  });

  it("only data statements are pipelined", () => {
    const pipelined = CASES.filter(([sql]) => canPipeline(sql)).map(([, keyword]) => keyword);
    assert.deepEqual([...new Set(pipelined)].sort(), ["(", "SELECT", "TABLE", "VALUES", "WITH"]);
    for (const sql of ["INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "DELETE FROM t", "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE"]) {
      assert.ok(canPipeline(sql), sql);
    }
    for (const sql of [
      "COMMIT",
      "END",
      "ABORT",
      "ROLLBACK",
      "PREPARE TRANSACTION 'x'",
      "BEGIN",
      "START TRANSACTION",
      "CALL p()",
      "DO $$ BEGIN END $$",
      "EXPLAIN SELECT 1",
    ]) {
      assert.ok(!canPipeline(sql), sql);
    }
  });

  it("a COPY is told from its first character when that is another letter, and by the keyword otherwise", () => {
    const copies = [
      "COPY t FROM STDIN",
      "copy t to stdout",
      " \n\tCopy t FROM STDIN",
      "-- load\nCOPY t FROM STDIN",
      "/* /* */ */COPY t TO STDOUT",
      ";COPY t FROM STDIN",
      " ; -- x\n; /* y */;copy t TO STDOUT",
    ];
    for (const sql of copies) assert.ok(isCopy(sql), JSON.stringify(sql));
    for (const sql of ["COPYt FROM STDIN", "(COPY t TO STDOUT)", "CALL copy()", "SELECT 'COPY'", "\u00a0COPY t FROM STDIN"])
      assert.ok(!isCopy(sql), JSON.stringify(sql));
    for (const [sql] of CASES) assert.equal(isCopy(sql), leadingKeyword(sql) === "COPY", JSON.stringify(sql));
  });

  it("agrees with PostgreSQL: whatever it would pipeline, PostgreSQL runs as a data statement that leaves the transaction open", async () => {
    const client = new pg.Client({ connectionString: pgUrl() });
    await client.connect();
    let ran = 0;
    try {
      for (const [sql] of CASES) {
        await client.query("BEGIN");
        let command: string | undefined;
        try {
          command = (await client.query({ text: sql, queryMode: "extended" } as pg.QueryConfig)).command; // as the gateway sends it: one Parse
        } catch {
          // PostgreSQL refused it: nothing ran.
        }
        const status = client.getTransactionStatus();
        await client.query("ROLLBACK");
        if (canPipeline(sql) && command !== undefined) {
          assert.ok(["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"].includes(command), `${JSON.stringify(sql)}: ${command}`);
          assert.equal(status, "T", JSON.stringify(sql));
        }
        if (canPipeline(sql) && command !== undefined) ran++;
      }
      assert.equal(ran, 12, "every pipelinable case ran");
    } finally {
      await client.end();
    }
  });
});
