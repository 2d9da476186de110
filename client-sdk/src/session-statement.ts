// What a statement means to a pg-style session over the gateway: transaction control, session state the gateway cannot keep, or plain SQL.
import { Code, GatewayError } from "./gateway-error.js";
import type { TransactionOptions } from "./transaction.js";

/** A statement as a pg-compatible client must handle it. */
export type SessionStatement =
  | { kind: "begin"; options: TransactionOptions }
  | { kind: "commit" }
  | { kind: "rollback" }
  | { kind: "refused"; error: GatewayError }
  | { kind: "sql"; inTransactionOnly: boolean };

/** `sql` after its leading whitespace and comments, which PostgreSQL ignores before a statement's first keyword (block comments nest, line comments end at \n or \r). */
function withoutLeadingComments(sql: string): string {
  let i = 0;
  for (;;) {
    while (i < sql.length && /\s/.test(sql[i]!)) i++;
    if (sql.startsWith("--", i)) {
      while (i < sql.length && sql[i] !== "\n" && sql[i] !== "\r") i++;
    } else if (sql.startsWith("/*", i)) {
      let depth = 0;
      do {
        if (sql.startsWith("/*", i) || sql.startsWith("*/", i)) {
          depth += sql[i] === "/" ? 1 : -1;
          i += 2;
        } else i++;
      } while (depth > 0 && i < sql.length);
    } else return sql.slice(i);
  }
}

/** Whether something other than comments follows the first `;`: several statements, which the gateway runs one call at a time. */
function hasSeveralStatements(text: string): boolean {
  const semicolon = text.indexOf(";");
  return semicolon !== -1 && withoutLeadingComments(text.slice(semicolon + 1)).replace(/^[;\s]*/, "").length > 0;
}

/**
 * Classifies `sql` by its first keywords. Each gateway call may run on
 * another connection, reset after it: state that outlives a statement or a
 * transaction (session SET, LISTEN, named prepared statements, temporary
 * objects kept across calls) cannot be kept, and is refused with a clear
 * error rather than silently lost.
 */
export function classifySessionStatement(sql: string): SessionStatement {
  const text = withoutLeadingComments(sql).toLowerCase();
  const words = text.match(/^[a-z_]+(?:\s+[a-z_]+){0,3}/)?.[0].split(/\s+/) ?? [];
  const [first = "", second = ""] = words;
  // A transaction-control keyword is handled here, not sent: what follows it in the same string would be lost.
  if (["begin", "start", "commit", "end", "abort", "rollback"].includes(first) && hasSeveralStatements(text))
    return refused("several statements in one query", "send each statement as a query of its own");
  // AND CHAIN opens a new transaction at once, which a pg-style client here does not do.
  if (["commit", "end", "abort", "rollback"].includes(first) && /\band\s+chain\b/.test(text))
    return refused(`${first.toUpperCase()} AND CHAIN`, "end the transaction, then send BEGIN again");
  switch (first) {
    case "begin":
    case "start":
      return { kind: "begin", options: transactionOptionsOf(text) };
    case "commit":
    case "end":
      return second === "prepared" ? refused(`${first.toUpperCase()} PREPARED`, "two-phase commit is not available through the gateway") : { kind: "commit" };
    case "abort":
      return { kind: "rollback" };
    case "rollback":
      // ROLLBACK TO [SAVEPOINT] stays inside the transaction, as PostgreSQL runs it.
      if (second === "to") return { kind: "sql", inTransactionOnly: true };
      if (second === "prepared") return refused("ROLLBACK PREPARED", "two-phase commit is not available through the gateway");
      return { kind: "rollback" };
    case "savepoint":
    case "release":
      return { kind: "sql", inTransactionOnly: true };
    case "set":
      // Scoped to the transaction: they end with it, as on one connection.
      if (second === "local" || second === "transaction" || second === "constraints") return { kind: "sql", inTransactionOnly: true };
      return refused(
        "session-level SET",
        "each call may run on another connection, reset after it: use SET LOCAL inside a transaction, set_config(name, value, true), or ALTER ROLE/DATABASE … SET",
      );
    case "reset":
    case "discard":
      return refused(first.toUpperCase(), "the gateway resets each connection itself after every call; there is no session state to reset");
    case "listen":
    case "unlisten":
      return refused(first.toUpperCase(), "notifications need a connection of their own: use database.listen(channels) of @db-gateway/client");
    case "prepare":
    case "execute":
    case "deallocate":
      return refused(
        `${first.toUpperCase()} (prepared statements by name)`,
        "a named prepared statement would outlive its call; the gateway prepares and caches parameterized statements itself",
      );
    default:
      return { kind: "sql", inTransactionOnly: false };
  }
}

/** The error for a pg feature that cannot work through the gateway. */
export function unsupportedByGateway(what: string, why: string): GatewayError {
  return new GatewayError(`${what} is not supported through the gateway: ${why}`, Code.Unimplemented, "NOT_SUPPORTED_BY_GATEWAY", {}, undefined);
}

/**
 * Refuses, for an ORM's statements outside its own transactions, what the
 * gateway cannot run as one call: transaction control (BEGIN would end with
 * its call, leaving the statements after it committed one by one; `use`
 * names the ORM's way) and session state (see `classifySessionStatement`).
 */
export function refuseSessionControl(sql: string, use: string): void {
  const statement = classifySessionStatement(sql);
  if (statement.kind === "refused") throw statement.error;
  if (statement.kind !== "sql") throw unsupportedByGateway("transaction control as SQL (BEGIN, COMMIT, ROLLBACK)", use);
}

function refused(what: string, why: string): SessionStatement {
  return { kind: "refused", error: unsupportedByGateway(what, why) };
}

/** The options written after BEGIN or START TRANSACTION. */
function transactionOptionsOf(text: string): TransactionOptions {
  const options: TransactionOptions = {};
  const isolation = /isolation\s+level\s+(serializable|repeatable\s+read|read\s+committed|read\s+uncommitted)/.exec(text)?.[1]?.replace(/\s+/g, " ");
  // PostgreSQL runs READ UNCOMMITTED as READ COMMITTED.
  if (isolation !== undefined)
    options.isolationLevel = isolation === "read uncommitted" ? "read committed" : (isolation as TransactionOptions["isolationLevel"]);
  if (/read\s+only/.test(text)) options.readOnly = true;
  if (/(?<!not\s+)deferrable/.test(text)) options.deferrable = true;
  return options;
}
