// An atomic batch of writes (COMMIT written with its statements) when cancels go wrong: answers read late, cancels delivered late, a statement that survives its cancel.
import assert from "node:assert/strict";
import { createServer, connect, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { GatewayError, type Database } from "../client-sdk/src/index.js";
import { pgUrl, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { assertNoLeftovers } from "./helpers/leftovers.js";

/** A proxy in front of PostgreSQL: `hold` stops passing the server's bytes back; cancel requests are forwarded after `cancelDelay` ms. */
async function startProxy(target: { host: string; port: number }) {
  let held = false;
  let cancelDelay = 0;
  const upstreams = new Set<Socket>();
  const pending = new Map<Socket, Buffer[]>();
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.once("data", (first: Buffer) => {
      const isCancel = first.length >= 8 && first.readInt32BE(4) === 80877102;
      const open = () => {
        const upstream = connect(target.port, target.host);
        sockets.add(upstream);
        if (!isCancel) {
          upstreams.add(upstream);
          if (held) upstream.pause();
        }
        upstream.write(first);
        client.on("data", (chunk: Buffer) => upstream.write(chunk));
        upstream.on("data", (chunk: Buffer) => {
          if (held && !isCancel) {
            const kept = pending.get(client) ?? [];
            kept.push(chunk);
            pending.set(client, kept);
          } else if (!client.destroyed) client.write(chunk);
        });
        const cut = () => (client.destroy(), upstream.destroy());
        upstream.on("error", cut).on("close", cut);
        client.on("error", cut).on("close", () => upstream.end());
      };
      client.on("error", () => undefined);
      // A cancel that is on its way, slowly (an overloaded server accepts late): it arrives all the same.
      if (isCancel && cancelDelay > 0) setTimeout(open, cancelDelay);
      else open();
    });
  });
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
  return {
    url(databaseUrl: string) {
      const url = new URL(databaseUrl);
      url.hostname = "127.0.0.1";
      url.port = String(port);
      return url.toString();
    },
    hold(on: boolean) {
      held = on;
      if (!on) {
        // What the server sent meanwhile reaches the client in one write.
        for (const [client, kept] of pending) if (!client.destroyed) client.write(Buffer.concat(kept));
        pending.clear();
      }
    },
    set cancelDelay(ms: number) {
      cancelDelay = ms;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("An atomic batch of writes when cancels go wrong", () => {
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  let t: TestGateway;
  let db: Database;
  before(async () => {
    const target = new URL(pgUrl());
    proxy = await startProxy({ host: target.hostname, port: Number(target.port || 5432) });
    t = await startTestGateway({ platforms: 1, databaseUrl: proxy.url(pgUrl()), pool: { maxConnectionsPerPool: 1 } });
    db = t.client().platform(t.platforms[0]!);
    await db.query("CREATE TABLE slow_commit (id int)");
    await db.query("CREATE FUNCTION sleep_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$");
    await db.query("CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON slow_commit DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sleep_at_commit()");
    await db.query("CREATE TABLE marks (id int)");
  });
  after(async () => {
    await t.close();
    await proxy.close();
  });

  it("interrupted before BEGIN's answer, every statement answered with it: no cancel is sent, so COMMIT is not cancelled", async () => {
    await db.query("SELECT 1");
    proxy.hold(true);
    const call = db.batch(["INSERT INTO slow_commit VALUES (1)"], { atomic: true, timeoutMs: 300 }).then(
      (r) => r,
      (e: unknown) => GatewayError.from(e),
    );
    await new Promise((r) => setTimeout(r, 600)); // the deadline has passed, BEGIN's answer not read yet; COMMIT sleeps in its trigger
    proxy.hold(false);
    const outcome = await call;
    await new Promise((r) => setTimeout(r, 2_500)); // COMMIT's trigger has long finished, if it was left to
    const committed = (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM slow_commit")).rows[0]!.n;
    // COMMIT was never to be cancelled once every statement had been answered: it commits, and the answer says so.
    assert.equal(
      committed,
      1,
      `COMMIT was cancelled; the call answered ${outcome instanceof GatewayError ? outcome.reason + " " + outcome.message : "results"}`,
    );
    await assertNoLeftovers(t, pgUrl(), `${t.platforms[0]}_main`);
  });

  it("a cancel not delivered within the grace period: the connection is not reused, so it cannot hit the next call's statement", async () => {
    await db.query("SELECT 1");
    proxy.cancelDelay = 2_500; // past the 2 s grace period
    const first = await db.batch(["INSERT INTO marks SELECT 1 FROM pg_sleep(0.6)"], { atomic: true, timeoutMs: 300 }).then(
      () => "results",
      (e: unknown) => GatewayError.from(e).reason,
    );
    // The pool's only connection, for the next call.
    const next = await db.query("SELECT pg_sleep(1.5) AS slept", [], { timeoutMs: 10_000 }).then(
      () => "ok",
      (e: unknown) => `${GatewayError.from(e).reason}: ${GatewayError.from(e).message}`,
    );
    proxy.cancelDelay = 0;
    await new Promise((r) => setTimeout(r, 3_000)); // the delayed cancels all land
    assert.equal(next, "ok", `first call: ${first}; the next call on the reused connection: ${next}`);
    // The connection whose cancel was late was closed, not lost track of.
    await assertNoLeftovers(t, pgUrl(), `${t.platforms[0]}_main`);
  });

  it("a deadline while a statement runs: the SDK answers DEADLINE_EXCEEDED, and the batch must not commit after that", async () => {
    await db.query("CREATE TABLE IF NOT EXISTS stubborn_marks (id int)");
    // A statement that outlives one cancel (it catches query_canceled), as a statement can finish before the cancel lands.
    await db.query(
      "CREATE OR REPLACE FUNCTION stubborn() RETURNS int LANGUAGE plpgsql AS $$ BEGIN BEGIN PERFORM pg_sleep(1); EXCEPTION WHEN query_canceled THEN NULL; END; RETURN 1; END $$",
    );
    const answer = await db.batch(["INSERT INTO stubborn_marks SELECT stubborn()"], { atomic: true, timeoutMs: 300 }).then(
      () => "results",
      (e: unknown) => GatewayError.from(e).reason,
    );
    await new Promise((r) => setTimeout(r, 1_500));
    const n = (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM stubborn_marks")).rows[0]!.n;
    assert.ok(answer === "results" || n === 0, `the call answered ${answer}, yet the batch committed ${n} row(s)`);
    await assertNoLeftovers(t, pgUrl(), `${t.platforms[0]}_main`);
  });
});
