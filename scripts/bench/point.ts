// The point scenario of `npm run bench`: selects by primary key at concurrency 1 and 64, with the gRPC hop's own cost and floor at 1.
import { createClient } from "../../client-sdk/src/index.js";
import { startBareServer } from "../measuring.js";
import { POINT_SQL, type Run } from "./run.js";
import { healthChecker } from "./setups.js";

export async function point({ platform, mainDb, gateway, sdk, bouncer, urlFor, direct, bounced, closePools, randomId, measure }: Run): Promise<void> {
  const uncoalescedClient = createClient({ ...gateway.clientOptions(gateway.platformKey), coalesce: false });
  const uncoalesced = uncoalescedClient.platform(platform);
  const callsClient = createClient({ ...gateway.clientOptions(gateway.platformKey), queryStream: false });
  const byCalls = callsClient.platform(platform);
  for (const concurrency of [1, 64]) {
    const scenario = `point select, c=${concurrency}`;
    const a = direct(mainDb, concurrency);
    await measure(scenario, "A pg direct", concurrency, () => a.query(POINT_SQL, [randomId()]));
    if (bouncer) {
      const b = bounced(mainDb, concurrency);
      await measure(scenario, "B pg via PgBouncer", concurrency, () => b.query(POINT_SQL, [randomId()]));
    }
    // Without coalescing (one Query call per query), then coalesced into a QueryMany call per turn, then
    // as the SDK does by default: coalesced over a QueryStream.
    await measure(scenario, "C SDK via gateway, coalescing off", concurrency, () => uncoalesced.query(POINT_SQL, [randomId()]), { gateway });
    if (concurrency > 1)
      await measure(scenario, "C SDK via gateway, QueryMany calls (queryStream: false)", concurrency, () => byCalls.query(POINT_SQL, [randomId()]), {
        gateway,
      });
    await measure(scenario, "C SDK via gateway", concurrency, () => sdk.query(POINT_SQL, [randomId()]), { gateway });
    if (concurrency === 1) {
      // What the gRPC hop alone costs (mTLS, HTTP/2, grpc-js and the gateway's interceptors, no database): the floor of (C)'s latency.
      const health = healthChecker(gateway);
      await measure(scenario, "C′ gRPC hop alone: grpc-js health Check on the gateway", concurrency, health.check, { gateway });
      health.close();
      // The least any gRPC server in front of PostgreSQL costs a lone query, sent as the SDK sends it:
      // the same statement and reset, with no authentication, routing, pool, deadline or telemetry.
      const bare = await startBareServer(urlFor(mainDb), "reset");
      try {
        const floorClient = createClient({ ...gateway.clientOptions(gateway.platformKey), url: `https://localhost:${bare.port}` });
        const floor = floorClient.platform(platform);
        await measure(
          scenario,
          "C″ floor: SDK over QueryStream to a bare grpc-js server running the statement and DISCARD ALL (scripts/bare-grpc-server.ts)",
          concurrency,
          () => floor.query(POINT_SQL, [randomId()]),
        );
        floorClient.close();
      } finally {
        bare.close();
      }
    }
    await closePools();
  }
  uncoalescedClient.close();
  callsClient.close();
}
