/**
 * Statements that may be sent to PostgreSQL behind one another before the
 * first is answered (pipelined) inside a batch: those that can neither end
 * the batch's transaction nor open one. Judged by the statement's first
 * keyword, which decides its kind: a Parse message holds exactly one
 * statement. Anything else (COMMIT, ROLLBACK, BEGIN, PREPARE TRANSACTION,
 * SET, CALL, DO, EXPLAIN …, or a keyword this lexer does not find) runs one
 * statement at a time, checked after each. A procedure or DO block cannot
 * end a transaction from inside one, and a function never can.
 */
const PIPELINABLE = new Set(["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "TABLE", "("]);

export function canPipeline(sql: string): boolean {
  return PIPELINABLE.has(leadingKeyword(sql));
}

const WRITES = new Set(["INSERT", "UPDATE", "DELETE", "MERGE"]);

/**
 * Whether the statement is a write that returns no rows: INSERT, UPDATE,
 * DELETE or MERGE, without RETURNING (the word anywhere in its text, even in
 * a literal or a name, counts: a false "no" costs only speed).
 */
export function returnsNoRows(sql: string): boolean {
  return WRITES.has(leadingKeyword(sql)) && !/returning/i.test(sql);
}

/**
 * Whether the statement is a COPY, the only statement that can make
 * PostgreSQL exchange COPY data with the client (a function cannot). Run for
 * every statement, so a statement starting with any other letter (every
 * point select) is told by its first character alone.
 */
export function isCopy(sql: string): boolean {
  const c = sql.charCodeAt(0) | 0x20; // a letter lower-cased
  if (c >= 0x61 && c <= 0x7a && c !== 0x63) return false;
  return leadingKeyword(sql) === "COPY";
}

/**
 * Where the comment that starts at `i` ends, as PostgreSQL's lexer reads it:
 * a `--` line comment at the line break, a `/* *\/` comment (they nest)
 * after its close; `i` itself when none starts there, -1 when a block comment
 * is never closed.
 */
export function commentEnd(sql: string, i: number): number {
  const n = sql.length;
  if (sql.startsWith("--", i)) {
    while (i < n && sql[i] !== "\n" && sql[i] !== "\r") i++;
    return i;
  }
  if (!sql.startsWith("/*", i)) return i;
  let depth = 0;
  do {
    if (sql.startsWith("/*", i)) {
      depth++;
      i += 2;
    } else if (sql.startsWith("*/", i)) {
      depth--;
      i += 2;
    } else i++;
  } while (depth > 0 && i < n);
  return depth > 0 ? -1 : i;
}

/**
 * The statement's first token, as PostgreSQL's lexer reads it, when it is a
 * word of ASCII letters (upper-cased) or "(": after white space, `--` line
 * comments, nested `/* *\/` comments and semicolons (PostgreSQL drops the
 * empty statements they end, so `;COPY …` is a COPY). Anything else gives "".
 */
export function leadingKeyword(sql: string): string {
  const n = sql.length;
  let i = 0;
  for (;;) {
    while (i < n && isSpace(sql.charCodeAt(i))) i++;
    const comment = commentEnd(sql, i);
    if (comment === -1) return ""; // unterminated
    if (comment > i) {
      i = comment;
    } else if (sql[i] === ";") {
      i++;
    } else break;
  }
  if (sql[i] === "(") return "(";
  let end = i;
  while (end < n && isIdentifierPart(sql.charCodeAt(end))) end++;
  const word = sql.slice(i, end);
  return /^[A-Za-z]+$/.test(word) ? word.toUpperCase() : "";
}

/** PostgreSQL's white space: space, \t, \n, \r, \f (and \v, which PostgreSQL 16 added). */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

/** A character that continues an unquoted identifier or keyword: letters, digits, _, $, and any non-ASCII. */
function isIdentifierPart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x5f || c === 0x24 || c >= 0x80;
}

/** The statements that only read (a parenthesized query among them), as far as their first word tells. */
const READS = new Set(["SELECT", "VALUES", "TABLE", "SHOW", "("]);

/**
 * Whether a statement may change its database, as far as its first word
 * tells: anything but SELECT, VALUES, TABLE, SHOW or "(". A SELECT that
 * calls a function that writes is taken for a read.
 */
export function mayWrite(sql: string): boolean {
  return !READS.has(leadingKeyword(sql));
}
