// A TCP proxy in front of PostgreSQL or the gateway that cuts or holds connections at a chosen moment, as a network failure would.
import { createServer, connect, type Server, type Socket } from "node:net";

/** What the proxy does when an armed pattern passes from client to server. */
export type Fault =
  /** Forward the chunk holding the pattern, then cut both sides before any answer comes back. */
  | "forward-then-cut"
  /** Cut both sides without forwarding the chunk. */
  | "cut";

/** A TCP proxy (in front of PostgreSQL, or of the gateway) that can cut connections at a chosen moment. */
export interface FaultProxy {
  readonly port: number;
  /** `databaseUrl` with its host and port replaced by the proxy's. */
  url(databaseUrl: string): string;
  /** The next connection that sends `pattern` to the server is cut (once). */
  arm(pattern: string, fault: Fault): void;
  /** Whether an armed fault has happened. */
  readonly tripped: boolean;
  /** Cuts every open connection at once, as a network failure would. */
  cutAll(): void;
  /** Stops passing the server's bytes on to the clients, as clients that do not read would (true), or passes them again (false). */
  hold(held: boolean): void;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Bytes passed on so far, client to server and server to client: what crossed the network, TLS and all. */
  readonly bytes: { readonly toServer: number; readonly toClient: number };
  /** Starts (true) or stops keeping the chunks passed from client to server, as each was read: `sent`. */
  record(on: boolean): void;
  /** The chunks kept while recording: one chunk holds what the client wrote at once (or more, never less than a write's bytes apart). */
  readonly sent: readonly Buffer[];
  close(): Promise<void>;
}

/** Starts a proxy on 127.0.0.1 (port 0) forwarding to `target`. */
export async function startFaultProxy(target: { host: string; port: number }): Promise<FaultProxy> {
  let armed: { pattern: Buffer; fault: Fault } | undefined;
  let tripped = false;
  let connections = 0;
  let held = false;
  const bytes = { toServer: 0, toClient: 0 };
  let recording = false;
  const sent: Buffer[] = [];
  const sockets = new Set<Socket>();
  const upstreams = new Set<Socket>();
  const server: Server = createServer((client) => {
    connections++;
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    upstreams.add(upstream);
    if (held) upstream.pause();
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("data", (chunk: Buffer) => {
      if (armed !== undefined && chunk.includes(armed.pattern)) {
        const { fault } = armed;
        armed = undefined;
        tripped = true;
        if (fault === "forward-then-cut") upstream.end(chunk);
        client.destroy();
        if (fault === "cut") upstream.destroy();
        return;
      }
      bytes.toServer += chunk.length;
      if (recording) sent.push(Buffer.from(chunk));
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      bytes.toClient += chunk.length;
      client.write(chunk);
    });
    client.on("error", cut).on("close", () => (upstream.end(), sockets.delete(client)));
    upstream.on("error", cut).on("close", () => (client.destroy(), sockets.delete(upstream), upstreams.delete(upstream)));
  });
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
  return {
    port,
    url(databaseUrl) {
      const url = new URL(databaseUrl);
      url.hostname = "127.0.0.1";
      url.port = String(port);
      return url.toString();
    },
    arm(pattern, fault) {
      armed = { pattern: Buffer.from(pattern), fault };
      tripped = false;
    },
    get tripped() {
      return tripped;
    },
    cutAll() {
      for (const socket of sockets) socket.destroy();
    },
    hold(hold) {
      held = hold;
      for (const upstream of upstreams) {
        if (hold) upstream.pause();
        else upstream.resume();
      }
    },
    get connections() {
      return connections;
    },
    get bytes() {
      return { ...bytes };
    },
    record(on) {
      recording = on;
      if (on) sent.length = 0;
    },
    get sent() {
      return sent;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
