// Canary: every pg, pg-cursor and pg-protocol internal that server/src/pool/pg-internals.ts relies on, checked against the installed packages.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { Socket } from "node:net";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import Cursor from "pg-cursor";
import { Parser } from "pg-protocol/dist/parser.js";
import { pgUrl } from "../../test/helpers/gateway.js";
import {
  activeQueryOf,
  backendKey,
  CancelConnection,
  cursorResult,
  cursorState,
  destroyConnection,
  destroyWireConnection,
  failCopyIn,
  failCursor,
  isQueryable,
  offCopyOut,
  onCopyOut,
  queryHandleError,
  queryHandleReadyForQuery,
  querySubmit,
  replacePacketHandler,
  setPipelineMode,
  socketOf,
  useExtendedProtocol,
  type PacketHandler,
} from "../src/pool/pg-internals.js";

type Package = "pg" | "pg-cursor" | "pg-protocol";

/** The installed version of a package (neither pg-cursor nor pg-protocol exports its package.json). */
function installedVersion(name: Package): string {
  const require = createRequire(import.meta.url);
  for (let dir = dirname(require.resolve(name)); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string; version?: string };
      if (manifest.name === name) return manifest.version ?? "?";
    } catch {
      // no package.json here: look further up
    }
  }
  return "?";
}
const VERSIONS: Record<Package, string> = {
  pg: installedVersion("pg"),
  "pg-cursor": installedVersion("pg-cursor"),
  "pg-protocol": installedVersion("pg-protocol"),
};

/** Fails unless `ok`, naming the package, its installed version and the internal that changed. */
function expectInternal(pkg: Package, internal: string, ok: boolean, found: string): void {
  if (!ok)
    assert.fail(`${pkg} ${VERSIONS[pkg]} changed ${internal} (found: ${found}); server/src/pool/pg-internals.ts relies on it and must follow the change`);
}

/** `expectInternal` for a member's type. */
function expectType(pkg: Package, internal: string, value: unknown, expected: "function" | "boolean" | "number" | "string" | "object"): void {
  const actual = value === null ? "null" : typeof value;
  expectInternal(pkg, internal, actual === expected, `it is ${actual}, expected ${expected}`);
}

/** A member of an object the typings do not show. */
function member(target: unknown, name: string): unknown {
  return (target as Record<string, unknown>)[name];
}

/** One protocol message as PostgreSQL sends it: type byte, int32 length (itself included), payload. */
function message(code: string, payload: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.write(code, 0, "latin1");
  header.writeInt32BE(payload.length + 4, 1);
  return Buffer.concat([header, payload]);
}

/** A DataRow's payload: int16 field count, each field's int32 length (-1: NULL) and bytes. */
function dataRowPayload(fields: (string | null)[]): Buffer {
  const parts = [Buffer.from([fields.length >> 8, fields.length & 0xff])];
  for (const field of fields) {
    const bytes = field === null ? Buffer.alloc(0) : Buffer.from(field);
    const length = Buffer.alloc(4);
    length.writeInt32BE(field === null ? -1 : bytes.length);
    parts.push(length, bytes);
  }
  return Buffer.concat(parts);
}

/** Resolves when a query pg ran as a Submittable has ended, with its error if it failed. */
function ended(query: pg.Query): Promise<Error | undefined> {
  return new Promise((resolve) => {
    query.on("end", () => resolve(undefined));
    query.on("error", (err) => resolve(err));
  });
}

/** A statement sent with the extended protocol even without parameters (pg's typings do not show `queryMode`). */
function extended(text: string): pg.QueryConfig {
  return { text, queryMode: "extended" } as pg.QueryConfig;
}

async function connect(prepare?: (client: pg.Client) => void): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: pgUrl() });
  client.on("error", () => undefined); // a socket destroyed on purpose
  prepare?.(client);
  await client.connect();
  return client;
}

describe(`pg internals (pg ${VERSIONS.pg}, pg-cursor ${VERSIONS["pg-cursor"]}, pg-protocol ${VERSIONS["pg-protocol"]})`, () => {
  const clients: pg.Client[] = [];
  let client: pg.Client;
  const open = async (prepare?: (client: pg.Client) => void) => {
    const opened = await connect(prepare);
    clients.push(opened);
    return opened;
  };

  before(async () => {
    client = await open();
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  });

  it("pg-protocol: Parser's parse, which makes each message with its own handlePacket(offset, code, length, bytes)", () => {
    expectType("pg-protocol", "the export Parser of pg-protocol/dist/parser.js", Parser, "function");
    expectType("pg-protocol", "Parser.prototype.parse", member(Parser.prototype, "parse"), "function");
    expectType("pg-protocol", "Parser.prototype.handlePacket", member(Parser.prototype, "handlePacket"), "function");

    const parser = new Parser();
    const own = (member(parser, "handlePacket") as PacketHandler).bind(parser);
    const seen: { offset: number; code: number; length: number }[] = [];
    (parser as unknown as { handlePacket: PacketHandler }).handlePacket = (offset, code, length, bytes) => {
      seen.push({ offset, code, length });
      return own(offset, code, length, bytes);
    };
    const messages: unknown[] = [];
    const status = Buffer.from("client_encoding\0UTF8\0");
    const row = dataRowPayload(["abc", null, "é"]);
    parser.parse(Buffer.concat([message("S", status), message("D", row)]), (m) => messages.push(m));

    expectInternal(
      "pg-protocol",
      "Parser#parse (it no longer calls the parser's own handlePacket for each message)",
      seen.length === 2,
      `${seen.length} calls for 2 messages`,
    );
    expectInternal(
      "pg-protocol",
      "Parser#handlePacket's arguments (offset of the payload, type byte, length with itself, buffer)",
      seen[0]?.offset === 5 &&
        seen[0].code === 0x53 &&
        seen[0].length === status.length + 4 &&
        seen[1]?.offset === 1 + seen[0].length + 5 &&
        seen[1].code === 0x44,
      JSON.stringify(seen),
    );
    const [parameterStatus, dataRow] = messages as Record<string, unknown>[];
    expectInternal(
      "pg-protocol",
      "the ParameterStatus message",
      parameterStatus?.name === "parameterStatus" && parameterStatus.parameterName === "client_encoding" && parameterStatus.parameterValue === "UTF8",
      JSON.stringify(parameterStatus),
    );
    expectInternal(
      "pg-protocol",
      "the DataRow message",
      dataRow?.name === "dataRow" && JSON.stringify(dataRow.fields) === JSON.stringify(["abc", null, "é"]),
      JSON.stringify(dataRow),
    );
  });

  it("pg: a Client's connection (attachListeners, _emitMessage, stream) and connectionParameters, before it connects", () => {
    const fresh = new pg.Client({ connectionString: pgUrl() });
    const connection = member(fresh, "connection");
    expectInternal("pg", "Client#connection", connection instanceof pg.Connection, "not a pg.Connection");
    expectType("pg", "Connection#attachListeners", member(connection, "attachListeners"), "function");
    expectType("pg", "Connection#_emitMessage", member(connection, "_emitMessage"), "boolean");
    (connection as pg.Connection).on("message", () => undefined);
    expectInternal(
      "pg",
      "Connection#_emitMessage (a 'message' listener no longer sets it)",
      member(connection, "_emitMessage") === true,
      String(member(connection, "_emitMessage")),
    );
    expectInternal("pg", "Connection#stream", member(connection, "stream") instanceof Socket, "not a net.Socket");
    for (const name of ["connect", "requestSsl", "cancel", "sendCopyFail", "sync"])
      expectType("pg", `Connection.prototype.${name}`, member(pg.Connection.prototype, name), "function");
    const parameters = member(fresh, "connectionParameters");
    expectType("pg", "Client#connectionParameters", parameters, "object");
    expectType("pg", "Client#connectionParameters.host", member(parameters, "host"), "string");
    expectType("pg", "Client#connectionParameters.port", member(parameters, "port"), "number");
    expectInternal("pg", "Client#connectionParameters.ssl", "ssl" in (parameters as object), "missing");
    expectType("pg", "Client#pipeline", member(fresh, "pipeline"), "boolean");
    expectInternal("pg", "Client#processID before connecting", member(fresh, "processID") === null, String(member(fresh, "processID")));
    assert.equal(backendKey(fresh), undefined);
  });

  it("pg: a connected Client's _queryable, _getActiveQuery, processID and secretKey", async () => {
    expectType("pg", "Client#_queryable", member(client, "_queryable"), "boolean");
    expectType("pg", "Client#_getActiveQuery", member(client, "_getActiveQuery"), "function");
    expectType("pg", "Client#processID", member(client, "processID"), "number");
    expectType("pg", "Client#secretKey", member(client, "secretKey"), "number");
    const { rows } = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
    expectInternal(
      "pg",
      "Client#processID (not the backend's pid)",
      backendKey(client)?.processID === rows[0]!.pid,
      `${member(client, "processID")} for pid ${rows[0]!.pid}`,
    );
    assert.equal(isQueryable(client), true);
    expectInternal("pg", "Client#_getActiveQuery (a query when the client is idle)", !activeQueryOf(client), String(activeQueryOf(client)));

    const cursor = client.query(new Cursor("SELECT generate_series(1, 3)"));
    await cursor.read(1);
    expectInternal("pg", "Client#_getActiveQuery (not the open cursor)", activeQueryOf(client) === cursor, String(activeQueryOf(client)));
    await cursor.close();
    expectInternal("pg", "Client#_getActiveQuery (a query once the cursor closed)", !activeQueryOf(client), String(activeQueryOf(client)));
  });

  it("pg: pipeline mode sends queued queries at once; socketOf is the socket they are written to", async () => {
    const piped = await open();
    const submitted = (query: pg.Query) => {
      let sent = false;
      const submit = query.submit;
      query.submit = (connection) => {
        sent = true;
        return submit.call(query, connection);
      };
      return () => sent;
    };
    const socket = socketOf(piped);
    expectInternal("pg", "Client#connection.stream (not the client's socket)", socket instanceof Socket && !socket.destroyed, "not an open net.Socket");

    setPipelineMode(piped, true);
    expectInternal("pg", "Client#pipeline (not writable)", member(piped, "pipeline") === true, String(member(piped, "pipeline")));
    const first = new pg.Query("SELECT pg_sleep(0.05)");
    const second = new pg.Query("SELECT 2");
    const secondSent = submitted(second);
    socket.cork();
    piped.query(first);
    piped.query(second);
    socket.uncork();
    expectInternal("pg", "Client#pipeline (a queued query waits for the one before it)", secondSent(), "the second query was not sent at once");
    assert.deepEqual(await Promise.all([ended(first), ended(second)]), [undefined, undefined]);
    setPipelineMode(piped, false);

    const third = new pg.Query("SELECT pg_sleep(0.05)");
    const fourth = new pg.Query("SELECT 4");
    const fourthSent = submitted(fourth);
    piped.query(third);
    piped.query(fourth);
    expectInternal("pg", "Client#pipeline (off, a queued query is sent at once)", !fourthSent(), "the second query was sent before the first was answered");
    assert.deepEqual(await Promise.all([ended(third), ended(fourth)]), [undefined, undefined]);
  });

  it("pg-cursor: state and _result through a cursor's life, and handleError failing its pending read", async () => {
    const cursor = new Cursor("SELECT g AS n FROM generate_series(1, 3) g");
    expectType("pg-cursor", "Cursor#state", member(cursor, "state"), "string");
    expectType("pg-cursor", "Cursor#_result", member(cursor, "_result"), "object");
    expectType("pg-cursor", "Cursor#handleError", member(cursor, "handleError"), "function");
    expectInternal("pg-cursor", "Cursor#state before it is submitted", cursorState(cursor) === "initialized", cursorState(cursor));
    client.query(cursor);
    await cursor.read(1);
    expectInternal("pg-cursor", "Cursor#state with its portal open", cursorState(cursor) === "idle", cursorState(cursor));
    const result = cursorResult(cursor);
    expectInternal("pg-cursor", "Cursor#_result.fields", Array.isArray(result.fields) && result.fields[0]?.name === "n", JSON.stringify(result.fields));
    expectInternal("pg-cursor", "Cursor#_result.command before the end", result.command === null, String(result.command));
    const rest = await cursor.read(10);
    assert.equal(rest.length, 2);
    expectInternal("pg-cursor", "Cursor#state once the last rows were read", cursorState(cursor) === "done", cursorState(cursor));
    expectInternal("pg-cursor", "Cursor#_result.command", cursorResult(cursor).command === "SELECT", String(cursorResult(cursor).command));
    expectInternal("pg-cursor", "Cursor#_result.rowCount", cursorResult(cursor).rowCount === 2, String(cursorResult(cursor).rowCount));

    await client.query("CREATE TEMP TABLE written (x int)"); // gone when the session ends
    await client.query("INSERT INTO pg_temp.written VALUES (1), (2)");
    const updated = client.query(new Cursor("UPDATE pg_temp.written SET x = 3"));
    await updated.read(10);
    expectInternal(
      "pg-cursor",
      "Cursor#_result of a write",
      cursorResult(updated).command === "UPDATE" && cursorResult(updated).rowCount === 2 && cursorResult(updated).fields.length === 0,
      JSON.stringify(cursorResult(updated)),
    );

    const failing = await open();
    const failed = new Cursor("SELECT generate_series(1, 100000)");
    failing.query(failed);
    await failed.read(1);
    const reading = failed.read(1000);
    const error = new Error("stopped here");
    failCursor(failed, error);
    await assert.rejects(reading, (err) => {
      expectInternal("pg-cursor", "Cursor#handleError (the pending read did not reject with its error)", err === error, String(err));
      return true;
    });
    expectInternal("pg-cursor", "Cursor#state after handleError", cursorState(failed) === "error" || cursorState(failed) === "done", cursorState(failed));
    destroyConnection(failing);
  });

  it("pg: the parser installed by replacePacketHandler makes every message, and the connection still emits them", async () => {
    const codes: number[] = [];
    const messages: string[] = [];
    const hooked = await open((c) => {
      replacePacketHandler(c, (own) => (offset, code, length, bytes) => {
        codes.push(code);
        return own(offset, code, length, bytes);
      });
      (member(c, "connection") as pg.Connection).on("message", (m: { name: string }) => messages.push(m.name));
    });
    expectInternal(
      "pg",
      "Connection#attachListeners (the replacement parser saw nothing while connecting)",
      codes.includes(0x52) && codes.includes(0x5a),
      `codes ${codes.map((c) => String.fromCharCode(c)).join("")}`,
    );
    const { rows } = await hooked.query({ text: "SELECT 'naïve' AS word, NULL AS nothing", rowMode: "array" });
    assert.deepEqual(rows, [["naïve", null]]);
    expectInternal("pg", "Connection#attachListeners (the replacement parser did not see the DataRow)", codes.includes(0x44), "no DataRow");
    expectInternal(
      "pg",
      "Connection#_emitMessage (no 'message' events from the replacement parser)",
      messages.includes("dataRow") && messages.includes("readyForQuery"),
      messages.join(","),
    );
  });

  it("pg: the Submittable methods its Query has and pg calls, reached by a subclass that overrides them", async () => {
    for (const name of [
      "submit",
      "handleRowDescription",
      "handleDataRow",
      "handleCommandComplete",
      "handleReadyForQuery",
      "handleError",
      "handleCopyInResponse",
      "handleCopyData",
    ]) {
      expectType("pg", `Query.prototype.${name}`, member(pg.Query.prototype, name), "function");
    }
    const calls: string[] = [];
    class Overriding extends pg.Query {
      override submit = (connection: pg.Connection) => {
        calls.push("submit");
        return querySubmit(this, connection);
      };
      handleReadyForQuery(connection: pg.Connection): void {
        calls.push("handleReadyForQuery");
        queryHandleReadyForQuery(this, connection);
      }
      handleError(err: Error, connection: pg.Connection): void {
        calls.push("handleError");
        queryHandleError(this, err, connection);
      }
    }
    const answered = new Promise<unknown>((resolve, reject) =>
      client.query(new Overriding("SELECT 1 AS one", [], (err, result) => (err ? reject(err) : resolve(result.rows)))),
    );
    assert.deepEqual(await answered, [{ one: 1 }]);
    assert.deepEqual(calls, ["submit", "handleReadyForQuery"]);
    const failedQuery = new Promise<unknown>((resolve) => client.query(new Overriding("SELECT 1/0", [], (err) => resolve(err))));
    expectInternal(
      "pg",
      "Query.prototype.handleError (a statement's error did not reach it)",
      (await failedQuery) instanceof pg.DatabaseError && calls.includes("handleError"),
      calls.join(","),
    );
  });

  it("pg: a Query made from its text alone goes with the extended protocol once its queryMode says so", async () => {
    expectType("pg", "Query#queryMode", member(new pg.Query({ text: "SELECT 1", queryMode: "extended" } as pg.QueryConfig), "queryMode"), "string");
    const run = (query: pg.Query) => new Promise<unknown>((resolve) => client.query(Object.assign(query, { callback: (err: unknown) => resolve(err) })));
    // Two statements in one text: the simple protocol runs them, the extended one refuses them (42601).
    assert.equal(await run(new pg.Query("SELECT 1; SELECT 2")), null);
    const extended = new pg.Query("SELECT 1; SELECT 2");
    useExtendedProtocol(extended);
    const refused = await run(extended);
    expectInternal(
      "pg",
      "Query#queryMode (set after construction, it did not make pg use the extended protocol)",
      refused instanceof pg.DatabaseError && refused.code === "42601",
      String(refused),
    );
  });

  it("pg: a COPY's messages (copyOutResponse, handleCopyData, handleCopyInResponse) and CopyFail with its Sync", async () => {
    const copying = await open();
    let copyOut = 0;
    const onCopy = () => copyOut++;
    const connection = member(copying, "connection") as pg.Connection;
    onCopyOut(connection, onCopy);
    const data: unknown[] = [];
    class CopyOut extends pg.Query {
      handleCopyData(_message: unknown, connection: pg.Connection): void {
        data.push(connection);
      }
    }
    // The extended protocol, as the gateway sends statements: PostgreSQL ignores the Sync behind Execute while it copies.
    const out = new CopyOut(extended("COPY (SELECT 1) TO STDOUT"));
    copying.query(out);
    assert.equal(await ended(out), undefined);
    offCopyOut(connection, onCopy);
    expectInternal("pg", "the connection's 'copyOutResponse' event", copyOut === 1, `${copyOut} events`);
    expectInternal("pg", "Query#handleCopyData (not called with the connection)", data.length > 0 && data[0] === connection, `${data.length} calls`);

    await copying.query("CREATE TEMP TABLE copied (x int)"); // gone when the session ends
    let copyIn = 0;
    class CopyIn extends pg.Query {
      handleCopyInResponse(connection: pg.Connection): void {
        copyIn++;
        failCopyIn(connection, "refused by the canary");
      }
    }
    const into = new CopyIn(extended("COPY pg_temp.copied FROM STDIN"));
    copying.query(into);
    const error = await ended(into);
    expectInternal("pg", "Query#handleCopyInResponse", copyIn === 1, `${copyIn} calls`);
    expectInternal("pg", "Connection#sendCopyFail", error instanceof pg.DatabaseError && error.message.includes("refused by the canary"), String(error));
    assert.deepEqual(
      (await copying.query("SELECT count(*)::int AS n FROM pg_temp.copied")).rows,
      [{ n: 0 }],
      "Connection#sync: the connection is usable after the CopyFail",
    );
  });

  it("pg: a CancelRequest on a connection made with pg's own code stops a running statement", async () => {
    const busy = await open();
    const key = backendKey(busy);
    expectInternal("pg", "Client#processID/secretKey after connecting", key !== undefined, "null");
    const running = busy.query("SELECT pg_sleep(30)").then(
      () => undefined,
      (err: unknown) => err,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    const cancel = new CancelConnection({ connectionString: pgUrl() });
    let timer: NodeJS.Timeout | undefined;
    const delivered = await new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), 10_000);
      cancel.send(
        key!,
        () => resolve(true),
        () => resolve(false),
      );
    });
    clearTimeout(timer);
    if (!delivered) cancel.destroy();
    expectInternal("pg", "Connection#connect/cancel (the server did not close the cancel connection)", delivered, "not delivered");
    const error = await running;
    expectInternal("pg", "Connection#cancel (the statement was not cancelled)", error instanceof pg.DatabaseError && error.code === "57014", String(error));
  });

  it("pg: destroying a client's socket ends it, and it is no longer queryable", async () => {
    for (const destroy of [destroyConnection, (c: pg.Client) => destroyWireConnection(member(c, "connection") as pg.Connection)]) {
      const doomed = await open();
      const end = new Promise((resolve) => doomed.once("end", resolve));
      destroy(doomed);
      await end;
      expectInternal("pg", "Client#_queryable (still true once the socket closed)", !isQueryable(doomed), String(member(doomed, "_queryable")));
    }
  });
});
