// Hand-made connections to the gateway's gRPC port for hostile-client tests: bare TCP, partial TLS handshakes, HTTP/2 frames written byte by byte.
import { once } from "node:events";
import { connect as tcpConnect, createServer, type AddressInfo, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { testPki } from "./pki.js";

/** A TCP connection to 127.0.0.1:`port`, once connected; its errors (a reset, when the gateway closes it) are ignored. */
export async function openTcp(port: number): Promise<Socket> {
  const socket = tcpConnect({ host: "127.0.0.1", port });
  socket.on("error", () => undefined);
  await once(socket, "connect");
  return socket;
}

/**
 * Milliseconds from now until `socket` closes, or undefined if it is still
 * open after `withinMs` (then it is left open: the caller destroys it).
 */
export async function closesWithin(socket: Socket, withinMs: number): Promise<number | undefined> {
  const start = performance.now();
  if (socket.closed) return 0;
  let timer: NodeJS.Timeout | undefined;
  const closed = await Promise.race([
    once(socket, "close").then(() => true),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), withinMs))),
  ]);
  clearTimeout(timer);
  return closed ? performance.now() - start : undefined;
}

let hello: Buffer | undefined;

/**
 * The bytes of a TLS ClientHello as node's client sends it, offering h2 by
 * ALPN (as a gRPC client does): caught by a TCP server that never answers.
 */
export async function clientHelloBytes(): Promise<Buffer> {
  if (hello !== undefined) return hello;
  const sink = createServer();
  sink.listen(0, "127.0.0.1");
  await once(sink, "listening");
  const first = new Promise<Buffer>((resolve) =>
    sink.once("connection", (socket) =>
      socket.once("data", (data: Buffer) => {
        resolve(data);
        socket.destroy();
      }),
    ),
  );
  const client = tlsConnect({ host: "127.0.0.1", port: (sink.address() as AddressInfo).port, servername: "localhost", ALPNProtocols: ["h2"] });
  client.on("error", () => undefined);
  hello = await first;
  client.destroy();
  sink.close();
  return hello;
}

/**
 * A TLS connection to the gateway with a valid client certificate for
 * `principal` and h2 by ALPN, once its handshake is complete: HTTP/2 is the
 * caller's to write, frame by frame (see `frame`).
 */
export async function openTls(port: number, principal: string): Promise<TLSSocket> {
  const pki = testPki();
  const socket = tlsConnect({ host: "127.0.0.1", port, servername: "localhost", ca: pki.ca.cert, ...pki.clientFor(principal), ALPNProtocols: ["h2"] });
  socket.on("error", () => undefined);
  await once(socket, "secureConnect");
  if (socket.alpnProtocol !== "h2") throw new Error(`the gateway chose ALPN ${String(socket.alpnProtocol)}, not h2`);
  return socket;
}

/** HTTP/2's client connection preface (RFC 9113 §3.4), before the client's first SETTINGS frame. */
export const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** HTTP/2 frame types (RFC 9113 §6) written by hand in the tests. */
export const FrameType = { HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, CONTINUATION: 0x9 } as const;
/** Flags: END_STREAM 0x1, END_HEADERS 0x4 (HEADERS and CONTINUATION), ACK 0x1 (SETTINGS). */
export const FrameFlag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

/** One HTTP/2 frame: the 9-byte header (24-bit length, type, flags, 31-bit stream id) and its payload. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header.writeUInt8(type, 3);
  header.writeUInt8(flags, 4);
  header.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([header, payload]);
}

/**
 * An HPACK header block of literal fields without indexing and without
 * Huffman coding (RFC 7541 §6.2.2): enough for a request's headers, no
 * dynamic table involved. Names and values under 127 bytes.
 */
export function headerBlock(fields: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    if (name.length > 126 || value.length > 126) throw new RangeError("headerBlock writes names and values under 127 bytes");
    parts.push(Buffer.from([0x00, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value));
  }
  return Buffer.concat(parts);
}
