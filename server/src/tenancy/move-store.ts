// The catalog's record of tenant moves between clusters (tenant_move), so that a move interrupted on any gateway is known to the next run.
import type pg from "pg";
import { applySchema } from "../audit/catalog.js";

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS public.tenant_move (
    database text PRIMARY KEY,
    source text NOT NULL,
    target text NOT NULL,
    phase text NOT NULL CHECK (phase IN ('copying', 'switched', 'done')),
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    pause_ms integer,
    last_error text
  );
  REVOKE ALL ON public.tenant_move FROM PUBLIC;
`;

/**
 * Where a move is: `copying` (the target is being made and filled by logical
 * replication; the tenant is served from its source), `switched` (the
 * placement names the target; the replication and the source are still to be
 * cleaned up) or `done`.
 */
export type MovePhase = "copying" | "switched" | "done";

/** A tenant's latest move, as recorded. */
export interface MoveRecord {
  database: string;
  source: string;
  target: string;
  phase: MovePhase;
  lastError: string | null;
}

/** The `tenant_move` table of the catalog: one row per database, its latest move. */
export class MoveStore {
  private constructor(private readonly catalog: pg.Pool) {}

  /** Sets up the table in the catalog if needed. */
  static async open(catalog: pg.Pool): Promise<MoveStore> {
    await applySchema(catalog, "tenant moves", SCHEMA);
    return new MoveStore(catalog);
  }

  /** The database's latest move, if any. */
  async get(database: string): Promise<MoveRecord | undefined> {
    const { rows } = await this.catalog.query<MoveRecord>(
      `SELECT database, source, target, phase, last_error AS "lastError" FROM public.tenant_move WHERE database = $1`,
      [database],
    );
    return rows[0];
  }

  /** Records a move begun (or begun again) from `source` to `target`. */
  async begin(database: string, source: string, target: string): Promise<void> {
    await this.catalog.query(
      `INSERT INTO public.tenant_move (database, source, target, phase) VALUES ($1, $2, $3, 'copying')
       ON CONFLICT (database) DO UPDATE SET source = excluded.source, target = excluded.target, phase = 'copying',
         started_at = clock_timestamp(), updated_at = clock_timestamp(), pause_ms = NULL, last_error = NULL`,
      [database, source, target],
    );
  }

  /** Records the phase a move reached, and its pause once known. */
  async reached(database: string, phase: MovePhase, pauseMillis?: number): Promise<void> {
    await this.catalog.query(
      "UPDATE public.tenant_move SET phase = $2, pause_ms = coalesce($3, pause_ms), last_error = NULL, updated_at = clock_timestamp() WHERE database = $1",
      [database, phase, pauseMillis ?? null],
    );
  }

  /** Records why a move stopped (it stays in its phase, for the next run). */
  async failed(database: string, error: string): Promise<void> {
    await this.catalog.query("UPDATE public.tenant_move SET last_error = $2, updated_at = clock_timestamp() WHERE database = $1", [
      database,
      error.slice(0, 2_000),
    ]);
  }
}
