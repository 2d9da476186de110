// Limits on the gRPC port's TCP connections: how many may be open at once, and how long each has to complete its TLS handshake.
import type { Socket } from "node:net";
import type { Server as TlsServer } from "node:tls";

/** How many TCP connections the gRPC port holds at once, and how long each has to complete its TLS handshake. */
export interface ClientConnectionLimits {
  /** Connections beyond it are closed as soon as they are accepted, before any TLS. */
  readonly maxConnections: number;
  /** A connection whose TLS handshake has not completed this long after it was accepted is destroyed (node's default is 120 s). */
  readonly tlsHandshakeTimeoutMillis: number;
}

/**
 * 10,000 connections: far more than the API replicas of the platforms a
 * gateway serves hold (gRPC multiplexes a client's calls over one or a few),
 * within the 65,536 descriptors ops/systemd/db-gateway.service allows. 10 s
 * for a handshake: a client on a slow network needs well under one, and a
 * client that sends nothing holds a descriptor and memory until then.
 */
export const DEFAULT_CLIENT_CONNECTION_LIMITS: ClientConnectionLimits = Object.freeze({ maxConnections: 10_000, tlsHandshakeTimeoutMillis: 10_000 });

/** Why a connection was closed before it carried a call: the label values of `db_gateway_client_connections_refused_total`. */
export type ConnectionRefusal = "max_connections" | "tls_handshake_timeout" | "tls_handshake_failed";

/** The open connections of the servers `limitClientConnections` watches. */
export interface ClientConnections {
  /** TCP connections open now, in a TLS handshake or past it. */
  readonly open: number;
}

/**
 * Caps the TCP connections `servers` (the gRPC port's listeners) hold at
 * `maxConnections`: node closes any connection beyond it as it is accepted
 * (net.Server's `maxConnections`). The handshake timeout is node's TLS
 * server option, set where the server is made (see `MutualTlsCredentials`);
 * here its expiries, the refused connections and the failed handshakes are
 * reported to `onRefused`.
 */
export function limitClientConnections(
  servers: readonly TlsServer[],
  maxConnections: number,
  onRefused: (reason: ConnectionRefusal) => void,
): ClientConnections {
  let open = 0;
  for (const server of servers) {
    server.maxConnections = maxConnections;
    server.on("drop", () => onRefused("max_connections"));
    server.on("connection", (socket: Socket) => {
      open++;
      socket.once("close", () => open--);
    });
    // Emitted once per connection whose handshake did not complete: a timeout, a refused certificate, a client that left.
    server.on("tlsClientError", (err: NodeJS.ErrnoException) =>
      onRefused(err.code === "ERR_TLS_HANDSHAKE_TIMEOUT" ? "tls_handshake_timeout" : "tls_handshake_failed"),
    );
  }
  return {
    get open() {
      return open;
    },
  };
}
