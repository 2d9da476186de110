// The commit tokens of the writes a client or a session made, per database: its read-only reads carry the latest, so that a replica serves them only once it shows those writes.

/** An LSN's text ("16/B374D848") as a number, to compare tokens; -1n for text that is not one. */
function lsnOf(token: string): bigint {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(token);
  return match === null ? -1n : (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}

/**
 * The latest commit token (`QueryResult.commitToken`) of each database
 * (by "platform/tenant"): a read-only read of that database carries it as
 * its `readAfter`, so that the gateway serves it from a replica only once the
 * replica has replayed those writes (or from the primary).
 */
export class CommitTokens {
  readonly #latest = new Map<string, { lsn: bigint; token: string }>();

  /** Keeps `token` for the database if it is later than the one kept. */
  note(database: string, token: string | undefined): void {
    if (token === undefined || token === "") return;
    const lsn = lsnOf(token);
    const kept = this.#latest.get(database);
    if (kept === undefined || lsn > kept.lsn) this.#latest.set(database, { lsn, token });
  }

  /** The latest token of the database, "" for none. */
  latest(database: string): string {
    return this.#latest.get(database)?.token ?? "";
  }
}
