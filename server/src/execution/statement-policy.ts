// Which kinds of statement a platform may run (STATEMENT_CLASSES_<PLATFORM>), each statement classed by PostgreSQL's own parser (libpg_query).
import { GatewayError } from "../errors.js";

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

const DML_NODES = new Set(["InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "VariableShowStmt", "LockStmt", "TransactionStmt"]);
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
  if (kind === "SelectStmt") return (body as { intoClause?: unknown }).intoClause === undefined ? "dml" : "ddl";
  // EXPLAIN ANALYZE runs what it explains: it is of that statement's class.
  if (kind === "ExplainStmt") return classOf((body as { query: Record<string, unknown> }).query);
  if (DML_NODES.has(kind)) return "dml";
  return NODE_CLASSES[kind] ?? "ddl";
}

/** Parsed statements' classes by their text: ORMs send the same few statements again and again. */
const MAX_REMEMBERED = 10_000;

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
    try {
      const statements = parser!.parseSync(sql).stmts ?? [];
      // One statement per Parse message: PostgreSQL refuses more. The strictest class decides, should there be several.
      const classes = statements.map((s) => classOf((s.stmt ?? {}) as Record<string, unknown>));
      kind = classes.find((c) => c !== "dml") ?? classes[0] ?? "dml";
    } catch (err) {
      // Refused rather than let through: what PostgreSQL's grammar cannot class, the policy cannot allow.
      kind = new GatewayError("INVALID_REQUEST", `the statement cannot be parsed: ${(err as Error).message}`);
    }
    if (this.#classes.size >= MAX_REMEMBERED) this.#classes.clear();
    this.#classes.set(sql, kind);
    return kind;
  }
}
