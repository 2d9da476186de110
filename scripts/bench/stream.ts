// The stream scenario of `npm run bench`: whole result sets read through pg-cursor and through the SDK's stream(), in rows per second and peak memory.
import pg from "pg";
import Cursor from "pg-cursor";
import type { Run } from "./run.js";

export async function stream({ streamRows, mainDb, gateway, sdk, bouncer, urlFor, measureStream }: Run): Promise<void> {
  const scenario = `stream ${streamRows.toLocaleString("en")} rows`;
  const sql = "SELECT g AS n, md5(g::text) AS hash FROM generate_series(1, $1::int) g";
  const viaCursor = (url: string) => async () => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const cursor = client.query(new Cursor(sql, [streamRows]));
      let n = 0;
      for (;;) {
        const rows = await cursor.read(1000);
        if (rows.length === 0) break;
        n += rows.length;
      }
      await cursor.close();
      return n;
    } finally {
      await client.end();
    }
  };
  await measureStream(scenario, "A pg-cursor direct", viaCursor(urlFor(mainDb)));
  if (bouncer) await measureStream(scenario, "B pg-cursor via PgBouncer", viaCursor(urlFor(mainDb, bouncer.port)));
  // As pg-cursor's read(1000) above: rows a message (1,000 by default) at a time.
  await measureStream(
    scenario,
    "C SDK stream().batches() via gateway",
    async () => {
      let n = 0;
      for await (const rows of sdk.stream(sql, [streamRows]).batches()) n += rows.length;
      return n;
    },
    { gateway },
  );
  await measureStream(
    scenario,
    "C SDK stream() row by row via gateway",
    async () => {
      let n = 0;
      for await (const row of sdk.stream(sql, [streamRows])) n += row ? 1 : 0;
      return n;
    },
    { gateway },
  );
}
