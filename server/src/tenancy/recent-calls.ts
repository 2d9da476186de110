// Calls to each database in the last minute on this gateway instance (ListTenants), in six buckets of ten seconds.
const BUCKET_MILLIS = 10_000;
const BUCKETS = 6;

/** One database's counts: `counts[i]` is of the bucket numbered `numbers[i]` (time / BUCKET_MILLIS). */
interface Window {
  counts: Uint32Array;
  numbers: Float64Array;
}

/**
 * Counts calls per database (each connection a call took) over the last
 * minute, give or take a bucket. A database not called for a minute is
 * forgotten at the next sweep, so memory follows the databases in use.
 */
export class RecentCalls {
  readonly #windows = new Map<string, Window>();
  #lastSweep = 0;

  constructor(private readonly now: () => number = Date.now) {}

  count(database: string): void {
    const bucket = Math.floor(this.now() / BUCKET_MILLIS);
    let w = this.#windows.get(database);
    if (w === undefined) {
      w = { counts: new Uint32Array(BUCKETS), numbers: new Float64Array(BUCKETS).fill(-1) };
      this.#windows.set(database, w);
    }
    const i = bucket % BUCKETS;
    if (w.numbers[i] !== bucket) {
      w.numbers[i] = bucket;
      w.counts[i] = 0;
    }
    w.counts[i]!++;
    if (bucket - this.#lastSweep >= BUCKETS) this.#sweep(bucket);
  }

  lastMinute(database: string): number {
    const w = this.#windows.get(database);
    if (w === undefined) return 0;
    const bucket = Math.floor(this.now() / BUCKET_MILLIS);
    let sum = 0;
    for (let i = 0; i < BUCKETS; i++) if (w.numbers[i]! > bucket - BUCKETS) sum += w.counts[i]!;
    return sum;
  }

  #sweep(bucket: number): void {
    this.#lastSweep = bucket;
    for (const [database, w] of this.#windows) if (Math.max(...w.numbers) <= bucket - BUCKETS) this.#windows.delete(database);
  }
}
