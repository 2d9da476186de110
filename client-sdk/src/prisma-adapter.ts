// @db-gateway/client/prisma: a Prisma driver adapter over one gateway database, with the values @prisma/adapter-pg gives and transactions over the SDK's.
import {
  ColumnTypeEnum,
  DriverAdapterError,
  type ColumnType,
  type ConnectionInfo,
  type IsolationLevel,
  type SqlDriverAdapter,
  type SqlDriverAdapterFactory,
  type SqlQuery,
  type SqlResultSet,
  type Transaction as PrismaTransaction,
} from "@prisma/driver-adapter-utils";
import { parse as parseArray } from "postgres-array";
import types from "pg-types";
import { withTypeParsers, type Database } from "./database.js";
import { GatewayError } from "./gateway-error.js";
import { openTransaction, type OpenTransaction } from "./open-transaction.js";
import type { QueryResult } from "./result.js";
import type { TransactionOptions } from "./transaction.js";
import type { TypeParser } from "./type-parsers.js";
import type { Param } from "./values.js";

/** Options of the adapter. */
export interface PrismaGatewayOptions {
  /** The schema Prisma's queries name (PostgreSQL's `search_path` otherwise). */
  schema?: string;
}

const ADAPTER_NAME = "@db-gateway/client/prisma";

/**
 * Prisma's driver adapter factory over one gateway database:
 * `new PrismaClient({ adapter: new PrismaGateway(gateway.platform(p).tenant(t)) })`.
 * No connection of its own: queries are gateway calls, and interactive or
 * batch transactions (`$transaction`) are the SDK's interactive transactions,
 * with their isolation level. Values are those @prisma/adapter-pg gives
 * Prisma (int8 and numeric as text, dates as ISO text, json as text, bytea as
 * bytes, arrays), so that Prisma makes bigint, Decimal, Date, Json and Uint8Array of them.
 */
export class PrismaGateway implements SqlDriverAdapterFactory {
  readonly provider = "postgres" as const;
  readonly adapterName = ADAPTER_NAME;
  readonly #database: Database;

  constructor(
    database: Database,
    private readonly options: PrismaGatewayOptions = {},
  ) {
    this.#database = withTypeParsers(database, prismaParser);
  }

  async connect(): Promise<SqlDriverAdapter> {
    return new GatewayAdapter(this.#database, this.options);
  }
}

/** Runs Prisma's queries on the database, or on a transaction. */
class GatewayQueryable {
  readonly provider = "postgres" as const;
  readonly adapterName = ADAPTER_NAME;

  constructor(protected readonly run: (sql: string, params: Param[]) => Promise<QueryResult<unknown[]>>) {}

  async queryRaw(query: SqlQuery): Promise<SqlResultSet> {
    const result = await this.perform(query);
    return { columnNames: result.fields.map((f) => f.name), columnTypes: result.fields.map((f) => columnType(f.dataTypeID)), rows: result.rows };
  }

  async executeRaw(query: SqlQuery): Promise<number> {
    return (await this.perform(query)).rowCount;
  }

  protected async perform(query: SqlQuery): Promise<QueryResult<unknown[]>> {
    const params = query.args.map((arg, i) => toParam(arg, query.argTypes[i]));
    try {
      return await this.run(query.sql, params);
    } catch (err) {
      throw toDriverAdapterError(err);
    }
  }
}

class GatewayAdapter extends GatewayQueryable implements SqlDriverAdapter {
  constructor(
    private readonly database: Database,
    private readonly options: PrismaGatewayOptions,
  ) {
    super((sql, params) => database.query(sql, params, { rowMode: "array" }));
  }

  async executeScript(script: string): Promise<void> {
    for (const statement of script.split(";").map((s) => s.trim())) {
      if (statement.length === 0) continue;
      try {
        await this.database.query(statement);
      } catch (err) {
        throw toDriverAdapterError(err);
      }
    }
  }

  async startTransaction(isolationLevel?: IsolationLevel): Promise<PrismaTransaction> {
    return new GatewayTransaction(openTransaction(this.database, transactionOptions(isolationLevel)));
  }

  getConnectionInfo(): ConnectionInfo {
    return { schemaName: this.options.schema, supportsRelationJoins: true };
  }

  async dispose(): Promise<void> {}
}

class GatewayTransaction extends GatewayQueryable implements PrismaTransaction {
  /** Prisma calls commit() and rollback() and sends no COMMIT or ROLLBACK of its own: the SDK's transaction ends itself. */
  readonly options = { usePhantomQuery: true };

  constructor(private readonly transaction: OpenTransaction) {
    super((sql, params) => transaction.query<unknown[]>(sql, params, { rowMode: "array" }));
  }

  async commit(): Promise<void> {
    try {
      await this.transaction.commit();
    } catch (err) {
      throw toDriverAdapterError(err);
    }
  }

  async rollback(): Promise<void> {
    await this.transaction.rollback();
  }

  async createSavepoint(name: string): Promise<void> {
    await this.executeRaw({ sql: `SAVEPOINT ${name}`, args: [], argTypes: [] });
  }

  async rollbackToSavepoint(name: string): Promise<void> {
    await this.executeRaw({ sql: `ROLLBACK TO SAVEPOINT ${name}`, args: [], argTypes: [] });
  }

  async releaseSavepoint(name: string): Promise<void> {
    await this.executeRaw({ sql: `RELEASE SAVEPOINT ${name}`, args: [], argTypes: [] });
  }
}

function transactionOptions(level: IsolationLevel | undefined): TransactionOptions {
  switch (level) {
    case undefined:
      return {};
    case "READ UNCOMMITTED": // PostgreSQL runs it as READ COMMITTED
    case "READ COMMITTED":
      return { isolationLevel: "read committed" };
    case "REPEATABLE READ":
      return { isolationLevel: "repeatable read" };
    case "SERIALIZABLE":
      return { isolationLevel: "serializable" };
    default:
      throw new DriverAdapterError({ kind: "InvalidIsolationLevel", level });
  }
}

// The type OIDs whose values Prisma wants as @prisma/adapter-pg gives them.
const OID = {
  bool: 16,
  bytea: 17,
  char: 18,
  name: 19,
  int8: 20,
  int2: 21,
  int4: 23,
  text: 25,
  oid: 26,
  json: 114,
  xml: 142,
  cidr: 650,
  float4: 700,
  float8: 701,
  money: 790,
  inet: 869,
  bpchar: 1042,
  varchar: 1043,
  date: 1082,
  time: 1083,
  timestamp: 1114,
  timestamptz: 1184,
  timetz: 1266,
  bit: 1560,
  varbit: 1562,
  numeric: 1700,
  uuid: 2950,
  jsonb: 3802,
} as const;
const ARRAY = {
  bool: 1000,
  bytea: 1001,
  char: 1002,
  int2: 1005,
  int4: 1007,
  text: 1009,
  bpchar: 1014,
  varchar: 1015,
  int8: 1016,
  float4: 1021,
  float8: 1022,
  oid: 1028,
  inet: 1041,
  timestamp: 1115,
  date: 1182,
  time: 1183,
  timestamptz: 1185,
  numeric: 1231,
  bit: 1561,
  varbit: 1563,
  cidr: 651,
  money: 791,
  xml: 143,
  json: 199,
  uuid: 2951,
  jsonb: 3807,
} as const;
/** User-defined types (enums above all) start here; Prisma reads them as text. */
const FIRST_NORMAL_OBJECT_ID = 16384;

const COLUMN_TYPES = new Map<number, ColumnType>([
  [OID.int2, ColumnTypeEnum.Int32],
  [OID.int4, ColumnTypeEnum.Int32],
  [OID.int8, ColumnTypeEnum.Int64],
  [OID.oid, ColumnTypeEnum.Int64],
  [OID.float4, ColumnTypeEnum.Float],
  [OID.float8, ColumnTypeEnum.Double],
  [OID.bool, ColumnTypeEnum.Boolean],
  [OID.date, ColumnTypeEnum.Date],
  [OID.time, ColumnTypeEnum.Time],
  [OID.timetz, ColumnTypeEnum.Time],
  [OID.timestamp, ColumnTypeEnum.DateTime],
  [OID.timestamptz, ColumnTypeEnum.DateTime],
  [OID.numeric, ColumnTypeEnum.Numeric],
  [OID.money, ColumnTypeEnum.Numeric],
  [OID.json, ColumnTypeEnum.Json],
  [OID.jsonb, ColumnTypeEnum.Json],
  [OID.uuid, ColumnTypeEnum.Uuid],
  [OID.bytea, ColumnTypeEnum.Bytes],
  ...[OID.bpchar, OID.text, OID.varchar, OID.bit, OID.varbit, OID.inet, OID.cidr, OID.xml, OID.name].map((oid) => [oid, ColumnTypeEnum.Text] as const),
  [ARRAY.int2, ColumnTypeEnum.Int32Array],
  [ARRAY.int4, ColumnTypeEnum.Int32Array],
  [ARRAY.int8, ColumnTypeEnum.Int64Array],
  [ARRAY.oid, ColumnTypeEnum.Int64Array],
  [ARRAY.float4, ColumnTypeEnum.FloatArray],
  [ARRAY.float8, ColumnTypeEnum.DoubleArray],
  [ARRAY.numeric, ColumnTypeEnum.NumericArray],
  [ARRAY.money, ColumnTypeEnum.NumericArray],
  [ARRAY.bool, ColumnTypeEnum.BooleanArray],
  [ARRAY.char, ColumnTypeEnum.CharacterArray],
  ...[ARRAY.bpchar, ARRAY.text, ARRAY.varchar, ARRAY.varbit, ARRAY.bit, ARRAY.inet, ARRAY.cidr, ARRAY.xml].map(
    (oid) => [oid, ColumnTypeEnum.TextArray] as const,
  ),
  [ARRAY.date, ColumnTypeEnum.DateArray],
  [ARRAY.time, ColumnTypeEnum.TimeArray],
  [ARRAY.timestamp, ColumnTypeEnum.DateTimeArray],
  [ARRAY.timestamptz, ColumnTypeEnum.DateTimeArray],
  [ARRAY.json, ColumnTypeEnum.JsonArray],
  [ARRAY.jsonb, ColumnTypeEnum.JsonArray],
  [ARRAY.bytea, ColumnTypeEnum.BytesArray],
  [ARRAY.uuid, ColumnTypeEnum.UuidArray],
]);

/** Prisma's column type for a type OID, as @prisma/adapter-pg maps them; a type it cannot read is UnsupportedNativeDataType. */
function columnType(oid: number): ColumnType {
  const type = COLUMN_TYPES.get(oid);
  if (type !== undefined) return type;
  if (oid >= FIRST_NORMAL_OBJECT_ID) return ColumnTypeEnum.Text;
  throw new DriverAdapterError({ kind: "UnsupportedNativeDataType", type: `oid ${oid}` });
}

const text: TypeParser = (value) => value;
const array =
  (element: (value: string) => unknown): TypeParser =>
  (value) =>
    parseArray(value, element);
const timestamp = (value: string) => `${value.replace(" ", "T")}+00:00`;
// RFC 3339 with the offset PostgreSQL wrote (in the session's time zone, whichever it is): "+05" becomes "+05:00".
const timestamptz = (value: string) => value.replace(" ", "T").replace(/([+-]\d{2})$/, "$1:00");
const money = (value: string) => value.slice(1);
const PRISMA_PARSERS = new Map<number, TypeParser>([
  [OID.numeric, text],
  [ARRAY.numeric, array((v) => v)],
  [OID.time, text],
  [ARRAY.time, array((v) => v)],
  [OID.timetz, (value) => value.replace(/[+-]\d{2}(:\d{2})?$/, "")],
  [OID.date, text],
  [ARRAY.date, array((v) => v)],
  [OID.timestamp, timestamp],
  [ARRAY.timestamp, array(timestamp)],
  [OID.timestamptz, timestamptz],
  [ARRAY.timestamptz, array(timestamptz)],
  [OID.money, money],
  [ARRAY.money, array(money)],
  [OID.json, text],
  [ARRAY.json, array((v) => v)],
  [OID.jsonb, text],
  [ARRAY.jsonb, array((v) => v)],
  [ARRAY.bit, array((v) => v)],
  [ARRAY.varbit, array((v) => v)],
  [ARRAY.xml, array((v) => v)],
]);
const parserCache = new Map<number, TypeParser>();
/** @prisma/adapter-pg's parsers: its own above, pg-types' (pg's defaults: int8 as text, bytea as Buffer) for the rest. */
function prismaParser(oid: number): TypeParser {
  let parser = parserCache.get(oid);
  if (parser === undefined) parserCache.set(oid, (parser = PRISMA_PARSERS.get(oid) ?? (types.getTypeParser(oid, "text") as TypeParser)));
  return parser;
}

/** A Prisma argument as a parameter, as @prisma/adapter-pg sends it: dates as UTC text in the column's form, bytes from base64. */
function toParam(arg: unknown, argType: SqlQuery["argTypes"][number] | undefined): Param {
  if (arg === null || arg === undefined) return null;
  if (Array.isArray(arg) && argType?.arity === "list") return arg.map((value) => toParam(value, argType));
  let value = arg;
  if (typeof value === "string" && argType?.scalarType === "datetime") value = new Date(value);
  if (value instanceof Date) {
    const iso = value.toISOString(); // 2024-02-29T12:34:56.789Z
    switch (argType?.dbType) {
      case "TIME":
      case "TIMETZ":
        return iso.slice(11, 23);
      case "DATE":
        return iso.slice(0, 10);
      default:
        // With its offset, so that a timestamptz does not depend on the session's time zone (a timestamp ignores it).
        return `${iso.slice(0, 10)} ${iso.slice(11, 23)}+00:00`;
    }
  }
  if (typeof value === "string" && argType?.scalarType === "bytes") return Buffer.from(value, "base64");
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return value as Param;
}

/** A GatewayError from PostgreSQL as the error kinds Prisma knows (P2002 unique violation …); other errors as they are. */
function toDriverAdapterError(err: unknown): unknown {
  if (!(err instanceof GatewayError) || err.sqlstate === undefined) return err;
  const original = { originalCode: err.sqlstate, originalMessage: err.message };
  const keyFields = err.detail?.match(/Key \(([^)]+)\)/)?.[1]?.split(", ");
  switch (err.sqlstate) {
    case "22001":
      return new DriverAdapterError({ ...original, kind: "LengthMismatch", column: err.column });
    case "22003":
      return new DriverAdapterError({ ...original, kind: "ValueOutOfRange", cause: err.message });
    case "22P02":
      return new DriverAdapterError({ ...original, kind: "InvalidInputValue", message: err.message });
    case "23505":
      return new DriverAdapterError({
        ...original,
        kind: "UniqueConstraintViolation",
        constraint: err.constraint !== undefined ? { index: err.constraint } : keyFields !== undefined ? { fields: keyFields } : undefined,
        table: err.table,
      });
    case "23502":
      return new DriverAdapterError({
        ...original,
        kind: "NullConstraintViolation",
        constraint: err.column !== undefined ? { fields: [err.column] } : undefined,
      });
    case "23503":
      return new DriverAdapterError({
        ...original,
        kind: "ForeignKeyConstraintViolation",
        constraint: err.column !== undefined ? { fields: [err.column] } : err.constraint !== undefined ? { index: err.constraint } : undefined,
      });
    case "40001":
    case "40P01":
      return new DriverAdapterError({ ...original, kind: "TransactionWriteConflict" });
    case "42P01":
      return new DriverAdapterError({ ...original, kind: "TableDoesNotExist", table: err.message.split(" ")[1]?.split('"')[1] });
    case "42703":
      return new DriverAdapterError({ ...original, kind: "ColumnNotFound", column: err.message.match(/^column (.+) does not exist$/)?.[1] });
    default:
      return new DriverAdapterError({
        ...original,
        kind: "postgres",
        code: err.sqlstate,
        severity: err.severity ?? "ERROR",
        message: err.message,
        detail: err.detail,
        column: err.column,
        hint: err.hint,
      });
  }
}
