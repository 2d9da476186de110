// Errors as clients see them: gRPC status, reason and every PostgreSQL field; authentication and authorization first on every method.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ConnectError, createClient as createConnectClient } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../wire/src/gen/google/rpc/error_details_pb.js";
import { PostgresErrorSchema } from "../wire/src/gen/dbgateway/v1/errors_pb.js";
import { Code, createClient, QueryService, type GatewayClient } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { rawTransport, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { testPki } from "./helpers/pki.js";

describe("errors: gRPC status, reason and PostgreSQL fields", () => {
  let t: TestGateway;
  let a: string;
  let b: string;
  let client: GatewayClient;
  before(async () => {
    t = await startTestGateway({ platforms: 2 });
    [a, b] = t.platforms as [string, string];
    client = t.client(a);
    await client.platform(a).query("CREATE TABLE items (id int PRIMARY KEY, qty int CHECK (qty >= 0), name text)");
    await client.platform(a).query("INSERT INTO items VALUES (1, 1, 'one')");
  });
  after(() => t.close());

  describe("authentication reveals nothing about why it failed", () => {
    for (const [what, headers] of [
      ["no key", {}],
      ["an unknown key", { "x-api-key": "not-a-key-0123456789abcdef" }],
      ["an empty key", { "x-api-key": "" }],
      ["another platform's key with a suffix", { "x-api-key": "KEY-SUFFIX" }],
    ] as const) {
      it(`refuses ${what} with UNAUTHENTICATED "unauthenticated"`, async () => {
        const { transport, close } = rawTransport(t, { cert: testPki().client.cert, key: testPki().client.key });
        try {
          const header = "x-api-key" in headers ? { "x-api-key": headers["x-api-key"].replace("KEY", t.keys[a]!) } : {};
          const call = createConnectClient(QueryService, transport).query({ platform: a, sql: "SELECT 1" }, { headers: header });
          const err = await rejectsWith(call, Code.Unauthenticated, "UNAUTHENTICATED");
          assert.equal(err.message, "unauthenticated");
          assert.deepEqual(err.metadata, {});
        } finally {
          close();
        }
      });
    }
  });

  describe("authorization", () => {
    it("refuses a platform's key for another platform", async () => {
      await rejectsWith(client.platform(b).query("SELECT 1"), Code.PermissionDenied, "PERMISSION_DENIED");
    });
    it("refuses the admin key on QueryService", async () => {
      await rejectsWith(t.adminClient().platform(a).query("SELECT 1"), Code.PermissionDenied, "PERMISSION_DENIED");
    });
    it("refuses a platform's key on AdminService", async () => {
      await rejectsWith(client.admin().createTenant(a, "sneaky"), Code.PermissionDenied, "PERMISSION_DENIED");
      await rejectsWith(client.admin().listDatabases(a), Code.PermissionDenied, "PERMISSION_DENIED");
    });
  });

  describe("routing", () => {
    it("answers NOT_FOUND for a tenant without a database", async () => {
      const err = await rejectsWith(client.platform(a).tenant("nobody").query("SELECT 1"), Code.NotFound, "DATABASE_NOT_FOUND");
      assert.match(err.message, /tenant "nobody"/);
    });
    it("answers INVALID_ARGUMENT for empty SQL", async () => {
      await rejectsWith(client.platform(a).query("  "), Code.InvalidArgument, "INVALID_REQUEST");
    });
  });

  describe("invalid parameters", () => {
    it("rejects a numeric that is not a number", async () => {
      const err = await rejectsWith(
        client.raw.query.query({ platform: a, sql: "SELECT $1::numeric", params: [{ kind: { case: "numericValue", value: "12abc" } }] }),
        Code.InvalidArgument,
        "INVALID_PARAMETER",
      );
      assert.equal(err.metadata.parameter, "$1");
    });
    it("rejects invalid JSON", async () => {
      await rejectsWith(
        client.raw.query.query({ platform: a, sql: "SELECT $1::jsonb", params: [{ kind: { case: "jsonValue", value: "{nope" } }] }),
        Code.InvalidArgument,
        "INVALID_PARAMETER",
      );
    });
    it("rejects text with a zero byte, naming the array element", async () => {
      const err = await rejectsWith(client.platform(a).query("SELECT $1::text[]", [["ok", "a\0b"]]), Code.InvalidArgument, "INVALID_PARAMETER");
      assert.equal(err.metadata.parameter, "$1[1]");
    });
  });

  describe("PostgreSQL errors carry every field, with the code from the SQLSTATE", () => {
    it("syntax error: INVALID_ARGUMENT with position", async () => {
      const err = await rejectsWith(client.platform(a).query("SELECT FROM WHERE"), Code.InvalidArgument, "QUERY_FAILED");
      assert.equal(err.sqlstate, "42601");
      assert.equal(err.postgres?.position, 13);
      assert.equal(err.postgres?.severity, "ERROR");
      assert.equal(err.metadata.sqlstate, "42601");
    });
    it("unique violation: ALREADY_EXISTS with constraint, table and detail", async () => {
      const err = await rejectsWith(client.platform(a).query("INSERT INTO items VALUES ($1, 1, 'dup')", [1]), Code.AlreadyExists, "QUERY_FAILED");
      assert.equal(err.sqlstate, "23505");
      assert.equal(err.postgres?.constraintName, "items_pkey");
      assert.equal(err.postgres?.tableName, "items");
      assert.equal(err.postgres?.schemaName, "public");
      assert.match(err.postgres?.detail ?? "", /Key \(id\)=\(1\) already exists/);
    });
    it("check violation: FAILED_PRECONDITION", async () => {
      const err = await rejectsWith(client.platform(a).query("UPDATE items SET qty = $1", [-1]), Code.FailedPrecondition, "QUERY_FAILED");
      assert.equal(err.sqlstate, "23514");
      assert.equal(err.postgres?.constraintName, "items_qty_check");
    });
    it("raised exception: detail, hint and where", async () => {
      const err = await rejectsWith(
        client.platform(a).query("DO $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'the detail', HINT = 'the hint'; END $$"),
        Code.FailedPrecondition,
        "QUERY_FAILED",
      );
      assert.equal(err.message, "boom");
      assert.equal(err.postgres?.detail, "the detail");
      assert.equal(err.postgres?.hint, "the hint");
      assert.match(err.postgres?.where ?? "", /PL\/pgSQL/);
    });
    it("division by zero: INVALID_ARGUMENT", async () => {
      const err = await rejectsWith(client.platform(a).query("SELECT 1 / $1::int", [0]), Code.InvalidArgument, "QUERY_FAILED");
      assert.equal(err.sqlstate, "22012");
    });
    it("the details are standard google.rpc.Status details", async () => {
      try {
        await client.raw.query.query({ platform: a, sql: "SELECT * FROM missing_table" });
        assert.fail("expected an error");
      } catch (err) {
        assert.ok(err instanceof ConnectError);
        const [info] = err.findDetails(ErrorInfoSchema);
        assert.equal(info?.reason, "QUERY_FAILED");
        assert.equal(info?.domain, "dbgateway");
        assert.equal(info?.metadata.sqlstate, "42P01");
        const [postgres] = err.findDetails(PostgresErrorSchema);
        assert.equal(postgres?.message, 'relation "missing_table" does not exist');
        assert.equal(postgres?.routine, "parserOpenTable");
        assert.match(postgres?.file ?? "", /\.c$/);
        assert.ok((postgres?.line ?? 0) > 0);
        assert.equal(postgres?.position, 15);
      }
    });
    it("errors inside functions carry the internal query and position", async () => {
      await client.platform(a).query("CREATE FUNCTION broken() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT nope FROM items); END $$");
      const err = await rejectsWith(client.platform(a).query("SELECT broken()"), Code.InvalidArgument, "QUERY_FAILED");
      assert.equal(err.sqlstate, "42703");
      assert.equal(err.postgres?.internalQuery, "(SELECT nope FROM items)");
      assert.equal(err.postgres?.internalPosition, 9);
    });
    it("a not-null violation names the column", async () => {
      await client.platform(a).query("CREATE TABLE strict_t (v text NOT NULL)");
      const err = await rejectsWith(client.platform(a).query("INSERT INTO strict_t VALUES ($1)", [null]), Code.FailedPrecondition, "QUERY_FAILED");
      assert.equal(err.sqlstate, "23502");
      assert.equal(err.postgres?.columnName, "v");
      assert.equal(err.postgres?.tableName, "strict_t");
    });
    it("a failed statement leaves the connection usable", async () => {
      await assert.rejects(client.platform(a).query("SELECT 1/0"));
      const { rows } = await client.platform(a).query("SELECT name FROM items WHERE id = $1", [1]);
      assert.deepEqual(rows, [{ name: "one" }]);
    });
  });

  describe("every method of QueryService authenticates and authorizes first", () => {
    const drain = async (stream: AsyncIterable<unknown>) => {
      for await (const _ of stream) void _;
    };
    const calls = (c: GatewayClient, platform: string): [string, () => Promise<unknown>][] => [
      ["Batch", () => c.raw.query.batch({ platform, statements: [{ sql: "SELECT 1" }] })],
      ["StreamQuery", () => drain(c.raw.query.streamQuery({ platform, sql: "SELECT 1" }))],
      ["Listen", () => drain(c.raw.query.listen({ platform, channels: ["c"] }))],
      [
        "Transaction",
        () =>
          drain(
            c.raw.query.transaction(
              (async function* () {
                yield { kind: { case: "begin" as const, value: { platform } } };
              })(),
            ),
          ),
      ],
    ];
    it("an unknown key is UNAUTHENTICATED on every method", async () => {
      const stranger = createClient(t.clientOptions("z".repeat(20)));
      try {
        for (const [method, call] of calls(stranger, a)) {
          const err = await rejectsWith(call(), Code.Unauthenticated, "UNAUTHENTICATED");
          assert.equal(err.message, "unauthenticated", method);
        }
      } finally {
        stranger.close();
      }
    });
    it("another platform's database is PERMISSION_DENIED on every method", async () => {
      for (const [, call] of calls(client, b)) await rejectsWith(call(), Code.PermissionDenied, "PERMISSION_DENIED");
    });
  });
});
