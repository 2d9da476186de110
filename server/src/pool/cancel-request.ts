import pg from "pg";

/** The parts of node-postgres's Client and Connection this module uses (not in @types/pg). */
interface ClientInternals {
  processID: number | null;
  secretKey: number | null;
  connectionParameters: { host: string; port: number; ssl: unknown };
  connection: ConnectionInternals;
}

interface ConnectionInternals {
  stream: { destroy(): void };
  connect(port: number | string, host?: string): void;
  requestSsl(): void;
  cancel(processID: number, secretKey: number): void;
  on(event: "connect" | "sslconnect" | "end", listener: () => void): void;
  on(event: "error", listener: (err: Error) => void): void;
}

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
  const { processID, secretKey } = target as unknown as ClientInternals;
  if (processID === null || secretKey === null) return Promise.resolve(true); // never connected: nothing runs
  const helper = new pg.Client(config) as unknown as ClientInternals;
  const { host, port, ssl } = helper.connectionParameters;
  const con = helper.connection;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (delivered: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!delivered) con.stream.destroy();
      resolve(delivered);
    };
    const timer = setTimeout(() => finish(false), timeoutMillis);
    con.on("connect", () => (ssl ? con.requestSsl() : con.cancel(processID, secretKey)));
    con.on("sslconnect", () => con.cancel(processID, secretKey));
    con.on("error", () => finish(false));
    con.on("end", () => finish(true));
    if (host.startsWith("/")) con.connect(`${host}/.s.PGSQL.${port}`);
    else con.connect(port, host);
  });
}
