// Which kinds of statement a platform may run (STATEMENT_CLASSES_<PLATFORM>), each statement classed by PostgreSQL's own parser (libpg_query).
import { GatewayError } from "../errors.js";
import { commentEnd } from "./leading-keyword.js";

/**
 * The classes a policy allows or refuses:
 * - `dml`: queries and data changes (SELECT without INTO, INSERT, UPDATE,
 *   DELETE, MERGE, VALUES, TABLE, WITH of those, EXPLAIN of those), SHOW,
 *   LOCK, and transaction control (BEGIN, COMMIT, SAVEPOINT …);
 * - `ddl`: schema and privilege changes and maintenance (CREATE, ALTER, DROP,
 *   TRUNCATE, COMMENT, GRANT, REVOKE, SELECT … INTO, CREATE TABLE AS,
 *   REFRESH, VACUUM, ANALYZE, REINDEX, CLUSTER …), and any statement not in
 *   another class;
 * - `code`: DO and CALL, which run code that may do anything;
 * - `listen`: LISTEN, UNLISTEN, NOTIFY, and the Listen call;
 * - `copy`: COPY;
 * - `set`: session state (SET, RESET, DISCARD, PREPARE, EXECUTE, DEALLOCATE).
 */
export const STATEMENT_CLASSES = ["dml", "ddl", "code", "listen", "copy", "set"] as const;
export type StatementClass = (typeof STATEMENT_CLASSES)[number];

/** Checks one statement's SQL against a platform's policy; throws PERMISSION_DENIED naming the class. */
export type StatementCheck = (sql: string) => void;

/** libpg_query's parser, loaded once (a WebAssembly module) by `loadStatementParser`. */
let parser: typeof import("libpg-query") | undefined;

/** Loads the parser: only a gateway with a policy needs it. */
export async function loadStatementParser(): Promise<void> {
  if (parser !== undefined) return;
  const module = await import("libpg-query");
  await module.loadModule();
  parser = module;
}

const DML_NODES = new Set([
  "InsertStmt",
  "UpdateStmt",
  "DeleteStmt",
  "MergeStmt",
  "VariableShowStmt",
  "LockStmt",
  "TransactionStmt",
  "ConstraintsSetStmt",
  "FetchStmt",
  "ClosePortalStmt",
]);
const NODE_CLASSES: Readonly<Record<string, StatementClass>> = {
  DoStmt: "code",
  CallStmt: "code",
  ListenStmt: "listen",
  UnlistenStmt: "listen",
  NotifyStmt: "listen",
  CopyStmt: "copy",
  VariableSetStmt: "set",
  DiscardStmt: "set",
  PrepareStmt: "set",
  ExecuteStmt: "set",
  DeallocateStmt: "set",
};

/** The class of a parsed statement node (`{ SelectStmt: {…} }` and the like). */
function classOf(node: Record<string, unknown>): StatementClass {
  const [kind, body] = Object.entries(node)[0] ?? ["", {}];
  // INTO makes a SELECT a CREATE TABLE AS wherever PostgreSQL finds it (the first branch of a UNION, say): anywhere in the tree.
  if (kind === "SelectStmt") return holds(body, "intoClause") ? "ddl" : "dml";
  // EXPLAIN ANALYZE runs what it explains, and a cursor is declared for its query: they are of that statement's class.
  if (kind === "ExplainStmt" || kind === "DeclareCursorStmt") return classOf((body as { query: Record<string, unknown> }).query);
  if (DML_NODES.has(kind)) return "dml";
  return NODE_CLASSES[kind] ?? "ddl";
}

/** Whether a key appears anywhere in a parse tree. */
function holds(tree: unknown, key: string): boolean {
  if (tree === null || typeof tree !== "object") return false;
  if (Array.isArray(tree)) return tree.some((item) => holds(item, key));
  return Object.entries(tree).some(([k, v]) => k === key || holds(v, key));
}

/**
 * The statement as PostgreSQL reads it with standard_conforming_strings off,
 * which a session may set (`set_config` is a function): every string
 * literal read as an escape string, where a backslash escapes the quote that
 * would end it. Made by marking each literal's opening quote `E'` as that
 * lexer finds them (comments, quoted names and dollar quotes skipped).
 */
function withEscapeStrings(sql: string): string {
  let out = "";
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i]!;
    const comment = commentEnd(sql, i);
    if (comment !== i) {
      const stop = comment === -1 ? n : comment;
      out += sql.slice(i, stop);
      i = stop;
    } else if (c === '"') {
      const end = sql.indexOf('"', i + 1);
      const stop = end === -1 ? n : end + 1;
      out += sql.slice(i, stop);
      i = stop;
    } else if (c === "$" && /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.test(sql.slice(i, i + 64))) {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i, i + 64))![0];
      const end = sql.indexOf(tag, i + tag.length);
      const stop = end === -1 ? n : end + tag.length;
      out += sql.slice(i, stop);
      i = stop;
    } else if (c === "'") {
      // A plain literal becomes E'…'; E'…' is one already, B'…' and X'…' take no escapes, U&'…' stays (an error with the setting off).
      let j = i;
      while (j > 0 && /[A-Za-z0-9_$]/.test(sql[j - 1]!)) j--;
      const prefix = sql.slice(j, i);
      if (/^[nN]$/.test(prefix))
        out = `${out.slice(0, -1)} E'`; // N'…' is a plain literal of type text
      else if (/^[bBxXeE]$/.test(prefix) || (prefix === "" && /[uU]&$/.test(sql.slice(Math.max(0, i - 2), i)))) out += "'";
      else out += " E'";
      i++;
      for (;;) {
        while (i < n && sql[i] !== "'") {
          // A backslash and the character it escapes, together.
          const step = sql[i] === "\\" ? 2 : 1;
          out += sql.slice(i, i + step);
          i += step;
        }
        // '' inside a literal is a quote, not its end.
        if (sql[i + 1] !== "'") break;
        out += "''";
        i += 2;
      }
      out += sql.slice(i, i + 1);
      i++;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** Parsed statements' classes by their text: ORMs send the same few statements again and again. */
const MAX_REMEMBERED = 10_000;
/** Statements longer than this are classed but not remembered: the memory of the cache stays bounded (about 20 MB). */
const MAX_REMEMBERED_LENGTH = 2_048;
/**
 * The longest statement a policy checks: parsing takes time in proportion to
 * the text, on the gateway's thread (BENCHMARKS.md, "Statement policy"), so a
 * longer one is refused; large values go as parameters.
 */
export const MAX_CHECKED_SQL_BYTES = 65_536;

/** The classes of the statements in a text (one, in a Parse message: PostgreSQL refuses more). */
function parsedClasses(sql: string): StatementClass[] {
  return (parser!.parseSync(sql).stmts ?? []).map((s) => classOf((s.stmt ?? {}) as Record<string, unknown>));
}

/**
 * The statements of a script, each as its own text, split where PostgreSQL's
 * grammar ends them (quotes, dollar quotes and comments kept whole); a
 * syntax error is the parser's. Loads the parser when needed.
 */
export async function splitStatements(sql: string): Promise<string[]> {
  await loadStatementParser();
  const bytes = Buffer.from(sql);
  // Locations count bytes of UTF-8; a length of 0 runs to the end.
  return (parser!.parseSync(sql).stmts ?? []).map((s) => {
    const start = s.stmt_location ?? 0;
    return bytes
      .subarray(start, s.stmt_len ? start + s.stmt_len : bytes.length)
      .toString()
      .trim();
  });
}

/** The class that decides among several: any but dml. */
function strictest(classes: readonly StatementClass[]): StatementClass {
  return classes.find((c) => c !== "dml") ?? "dml";
}

/**
 * A platform's statement policy: the classes it allows. Each statement is
 * parsed by PostgreSQL's own grammar (libpg_query), so comments, case,
 * `WITH`, `EXPLAIN` and `SELECT … INTO` cannot disguise it; text it cannot
 * parse is refused with the parser's syntax error, never let through.
 * Functions that a statement calls do
 * what they do: a policy classes statements, PostgreSQL's privileges decide
 * what functions may change.
 */
export class StatementPolicy {
  readonly #allowed: ReadonlySet<StatementClass>;
  /** Each statement's class, or the parser's error. */
  readonly #classes = new Map<string, StatementClass | GatewayError>();

  constructor(allowed: Iterable<StatementClass>) {
    this.#allowed = new Set(allowed);
    if (parser === undefined) throw new Error("loadStatementParser() must be awaited before a policy is made");
  }

  /** PERMISSION_DENIED unless the policy allows the class. */
  require(kind: StatementClass, what = `${kind.toUpperCase()} statements`): void {
    if (!this.#allowed.has(kind)) {
      throw new GatewayError("PERMISSION_DENIED", `${what} are not allowed for this platform (statement class "${kind}")`, {
        metadata: { statement_class: kind },
        logFields: { event: "statement_class" },
      });
    }
  }

  /** Throws PERMISSION_DENIED if the statement's class is not allowed. */
  readonly check: StatementCheck = (sql) => {
    const kind = this.#classify(sql);
    if (kind instanceof GatewayError) throw kind;
    this.require(kind, `statements of class "${kind}"`);
  };

  #classify(sql: string): StatementClass | GatewayError {
    let kind = this.#classes.get(sql);
    if (kind !== undefined) return kind;
    if (sql.length > MAX_CHECKED_SQL_BYTES) {
      return new GatewayError(
        "INVALID_REQUEST",
        `a statement under this platform's statement policy is at most ${MAX_CHECKED_SQL_BYTES} characters: pass values as parameters`,
      );
    }
    try {
      kind = strictest(parsedClasses(sql));
      // Without a backslash both readings of its string literals agree; with one, the stricter class of the two decides.
      if (sql.includes("\\")) {
        let other: StatementClass;
        try {
          other = strictest(parsedClasses(withEscapeStrings(sql)));
        } catch {
          other = "ddl"; // read the other way it is no statement the policy can class
        }
        kind = strictest([kind, other]);
      }
    } catch (err) {
      // Refused rather than let through: what PostgreSQL's grammar cannot class, the policy cannot allow.
      kind = new GatewayError("INVALID_REQUEST", `the statement cannot be parsed: ${(err as Error).message}`);
    }
    if (sql.length <= MAX_REMEMBERED_LENGTH) {
      if (this.#classes.size >= MAX_REMEMBERED) this.#classes.clear();
      this.#classes.set(sql, kind);
    }
    return kind;
  }
}
