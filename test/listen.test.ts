// Listen: subscribers sharing one connection per database, reconnection and missed notifications, slow subscribers, dropped databases.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type pg from "pg";
import { Code, type GatewayClient, type NotificationEvent, type Subscription } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { mapLimit, waitFor } from "./helpers/wait.js";

/** Collects a subscription's events in the background. */
function collect(subscription: Subscription): { events: NotificationEvent[]; done: Promise<unknown> } {
  const events: NotificationEvent[] = [];
  const done = (async () => {
    for await (const event of subscription) events.push(event);
  })().catch((err: unknown) => err);
  return { events, done };
}

/** The gateway's connections to a database, from pg_stat_activity. */
async function gatewayConnections(direct: pg.Client, database: string): Promise<number> {
  const { rows } = await direct.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'db-gateway' AND datname = $1", [
    database,
  ]);
  return rows[0]!.n;
}

async function busyConnections(t: TestGateway, database: string): Promise<number> {
  const stats = await t.adminClient().admin().getPoolStats();
  return stats.pools.find((p) => p.database === database)?.busy ?? 0;
}

describe("Listen", () => {
  let t: TestGateway;
  let platform: string;
  let database: string;
  let direct: pg.Client;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    database = `${platform}_main`;
    direct = await t.pg(database);
  });
  after(() => t.close());

  it("1,000 subscribers on 10 channels share one connection, and each NOTIFY reaches exactly its channel's subscribers", async () => {
    const clients: GatewayClient[] = Array.from({ length: 4 }, () => t.client());
    const channels = Array.from({ length: 10 }, (_, i) => `ch${i}`);
    const subscribers = await mapLimit(
      Array.from({ length: 1_000 }, (_, i) => i),
      100,
      async (i) => {
        const channel = channels[i % 10]!;
        const subscription = await clients[i % clients.length]!.platform(platform).listen(channel);
        return { channel, subscription, ...collect(subscription) };
      },
    );
    assert.equal(await busyConnections(t, database), 1, "one listening connection for the database");
    assert.equal(await gatewayConnections(direct, database), 1);

    for (const [i, channel] of channels.entries()) await direct.query("SELECT pg_notify($1, $2)", [channel, `payload ${i} ✓`]);
    await waitFor(() => subscribers.every((s) => s.events.length >= 1), 10_000, "every subscriber notified");
    await new Promise((r) => setTimeout(r, 200)); // room for a wrong extra delivery to show up
    for (const s of subscribers) {
      assert.equal(s.events.length, 1, `${s.channel}: ${JSON.stringify(s.events)}`);
      const event = s.events[0]!;
      assert.equal(event.type, "notification");
      if (event.type === "notification") {
        assert.equal(event.channel, s.channel);
        assert.equal(event.payload, `payload ${s.channel.slice(2)} ✓`);
        assert.equal(event.senderPid, (direct as unknown as { processID: number }).processID);
      }
    }

    // Subscribers that go away are cleaned up; when the last one leaves, the connection goes back to its pool.
    subscribers.slice(0, 500).forEach((s) => s.subscription.close());
    await Promise.all(subscribers.slice(0, 500).map((s) => s.done));
    await direct.query("SELECT pg_notify('ch0', 'again')");
    await waitFor(
      () =>
        subscribers
          .slice(500)
          .filter((s) => s.channel === "ch0")
          .every((s) => s.events.length === 2),
      5_000,
      "second notification",
    );
    assert.ok(
      subscribers.slice(0, 500).every((s) => s.events.length === 1),
      "closed subscribers got nothing more",
    );
    subscribers.slice(500).forEach((s) => s.subscription.close());
    await waitFor(async () => (await busyConnections(t, database)) === 0, 5_000, "the listening connection released");
  });

  it("a lost listening connection is re-established and its subscribers are told they may have missed notifications", async () => {
    const subscription = await t.client().platform(platform).listen(["alpha", "beta"]);
    const { events } = collect(subscription);
    const { rows } = await direct.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE application_name = 'db-gateway' AND datname = $1 AND pid <> pg_backend_pid()",
      [database],
    );
    assert.equal(rows.length, 1);
    await direct.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
    await waitFor(() => events.some((e) => e.type === "missed"), 10_000, "missed");
    await direct.query("SELECT pg_notify('beta', 'after the reconnect')");
    await waitFor(() => events.some((e) => e.type === "notification"), 5_000, "a notification after reconnecting");
    assert.deepEqual(
      events.map((e) => (e.type === "notification" ? `${e.channel}:${e.payload}` : e.type)),
      ["missed", "beta:after the reconnect"],
    );
    subscription.close();
  });

  it("a transaction's notifications arrive when it commits, through the gateway too", async () => {
    const subscription = await t.client().platform(platform).listen("orders");
    const { events } = collect(subscription);
    const db = t.client().platform(platform);
    await db.transaction(async (tx) => {
      await tx.query("SELECT pg_notify('orders', 'created')");
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(events.length, 0, "nothing before COMMIT");
    });
    await waitFor(() => events.length === 1, 5_000, "the notification");
    subscription.close();
  });

  it("a subscriber arriving while others' channels are being LISTENed gets its own channel too", async () => {
    const db = t.client().platform(platform);
    const many = Array.from({ length: 100 }, (_, i) => `many${i}`);
    const [a, b] = await Promise.all([db.listen(many), db.listen("late_channel")]);
    const events = collect(b).events;
    await direct.query("SELECT pg_notify('late_channel', 'b')");
    await waitFor(() => events.length === 1, 5_000, "the late subscriber's notification");
    a.close();
    b.close();
    // Subscribing again right after the last subscriber left works too.
    await waitFor(async () => (await busyConnections(t, database)) === 0, 5_000, "released");
    const again = await db.listen("late_channel");
    const more = collect(again).events;
    await direct.query("SELECT pg_notify('late_channel', 'again')");
    await waitFor(() => more.length === 1, 5_000, "after re-subscribing");
    again.close();
  });

  it("a subscriber that does not read is ended with SUBSCRIBER_TOO_SLOW, without a listener per unread message", async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name + ": " + w.message);
    process.on("warning", onWarning);
    try {
      const slow = await t.client().platform(platform).listen("flood");
      await direct.query("SELECT pg_notify('flood', repeat('x', 100) || g) FROM generate_series(1, 15000) g");
      const iterator = slow[Symbol.asyncIterator]();
      let received = 0;
      const err = await (async () => {
        for (;;) {
          const next = await iterator.next();
          if (next.done) return undefined;
          received++;
        }
      })().then(
        () => undefined,
        (e: unknown) => e as { code?: Code; reason?: string },
      );
      assert.equal(err?.code, Code.ResourceExhausted);
      assert.equal(err?.reason, "SUBSCRIBER_TOO_SLOW");
      assert.ok(received < 15_000, `${received} notifications before the end`);
      // Only the slow subscriber was ended: the channel serves a new one.
      const next = await t.client().platform(platform).listen("flood");
      const { events } = collect(next);
      await direct.query("SELECT pg_notify('flood', 'after the slow one')");
      await waitFor(() => events.some((e) => e.type === "notification" && e.payload === "after the slow one"), 5_000, "a notification for the next subscriber");
      next.close();
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(
        warnings.filter((w) => w.includes("MaxListeners")),
        [],
      );
    } finally {
      process.off("warning", onWarning);
    }
  });

  it("rejects invalid channel names with INVALID_ARGUMENT before listening", async () => {
    const db = t.client().platform(platform);
    for (const channels of [[], ['x"; DROP TABLE y; --'], ["a".repeat(64)], ["with space"], Array.from({ length: 101 }, (_, i) => `c${i}`)]) {
      await rejectsWith(db.listen(channels), Code.InvalidArgument, "INVALID_CHANNEL");
    }
  });

  it("ends its subscribers with NOT_FOUND when the database is dropped", async () => {
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "shortlived");
    const subscription = await t.client().platform(platform).tenant("shortlived").listen("c");
    const { done } = collect(subscription);
    await admin.dropTenant(platform, "shortlived");
    const err = await done;
    assert.ok(err instanceof Error);
    assert.equal((err as { code?: Code }).code, Code.NotFound);
  });
});
