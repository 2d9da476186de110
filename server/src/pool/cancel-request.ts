// Cancels what a connection's backend is running: PostgreSQL's CancelRequest, sent on a connection of its own.
import type pg from "pg";
import { backendKey, CancelConnection } from "./pg-internals.js";

/**
 * Asks PostgreSQL to cancel whatever the backend of `target` is running, with
 * the protocol's CancelRequest on a connection of its own (TLS as configured),
 * made with node-postgres's own connection code. Resolves true once the server
 * has closed that connection, which it does only after it signalled the
 * backend; false if the request could not be delivered in `timeoutMillis`.
 *
 * The caller must not send the target anything else before this resolves:
 * a cancel that is still on its way could otherwise hit the next statement.
 */
export function sendCancelRequest(config: pg.ClientConfig, target: pg.Client, timeoutMillis: number): Promise<boolean> {
  const key = backendKey(target);
  if (key === undefined) return Promise.resolve(true); // never connected: nothing runs
  const con = new CancelConnection(config);
  return new Promise((resolve) => {
    let settled = false;
    const finish = (delivered: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!delivered) con.destroy();
      resolve(delivered);
    };
    const timer = setTimeout(() => finish(false), timeoutMillis);
    con.send(
      key,
      () => finish(true),
      () => finish(false),
    );
  });
}
