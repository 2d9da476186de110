// A row stream's rows one at a time, from the batches the gateway sends.

/**
 * Rows one at a time from batches of rows. Written by hand: an async
 * generator's `yield* rows` costs several promise steps per row, this one
 * resolved promise (`npx tsx scripts/profile-sdk.ts stream`, BENCHMARKS.md).
 * Leaving early (`return`) returns the batches, which ends the call.
 */
export function rowByRow<Row>(batches: AsyncIterable<Row[]>): AsyncIterableIterator<Row> {
  const source = batches[Symbol.asyncIterator]();
  let rows: Row[] = [];
  let next = 0;
  /** The batch being awaited: a `next` made meanwhile waits for it. */
  let pending: Promise<IteratorResult<Row>> | undefined;
  const take = (result: IteratorResult<Row[]>): IteratorResult<Row> | Promise<IteratorResult<Row>> => {
    if (result.done) {
      pending = undefined;
      return { value: undefined, done: true };
    }
    rows = result.value;
    next = 0;
    if (rows.length === 0) return source.next().then(take);
    pending = undefined;
    return { value: rows[next++]!, done: false };
  };
  const iterator: AsyncIterableIterator<Row> = {
    next() {
      if (next < rows.length) return Promise.resolve({ value: rows[next++]!, done: false });
      if (pending !== undefined) return pending.then(() => iterator.next());
      return (pending = source.next().then(take));
    },
    async return(value?: unknown) {
      rows = [];
      await source.return?.();
      return { value: value as Row, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
