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
    // Not events.once: it rejects on the 'error' (a reset) that may come before the close.
    new Promise<true>((resolve) => socket.once("close", () => resolve(true))),
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
export const FrameType = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, PING: 0x6, GOAWAY: 0x7, CONTINUATION: 0x9 } as const;
/** Flags: END_STREAM 0x1 (DATA, HEADERS), END_HEADERS 0x4 (HEADERS, CONTINUATION), ACK 0x1 (SETTINGS, PING). */
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

/** A frame as the gateway sent it. */
export interface ReceivedFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** The frames the gateway sends on `socket`, parsed as they arrive (a server sends no preface: frames from its first byte). */
export interface FrameReader {
  readonly frames: readonly ReceivedFrame[];
  /** Whether a frame `matches` arrives within `withinMs` (one that came already counts); false if the connection closes first. */
  until(matches: (frame: ReceivedFrame) => boolean, withinMs: number): Promise<boolean>;
}

/** Reads the HTTP/2 frames the gateway sends on `socket` (see `FrameReader`). */
export function readFrames(socket: Socket): FrameReader {
  const frames: ReceivedFrame[] = [];
  let pending = Buffer.alloc(0);
  const waiters = new Set<() => void>();
  socket.on("data", (data: Buffer) => {
    pending = Buffer.concat([pending, data]);
    while (pending.length >= 9 && pending.length >= 9 + pending.readUIntBE(0, 3)) {
      const length = pending.readUIntBE(0, 3);
      frames.push({ type: pending[3]!, flags: pending[4]!, streamId: pending.readUInt32BE(5) & 0x7fffffff, payload: pending.subarray(9, 9 + length) });
      pending = pending.subarray(9 + length);
    }
    for (const wake of waiters) wake();
  });
  socket.on("close", () => waiters.forEach((wake) => wake()));
  return {
    frames,
    until(matches, withinMs) {
      return new Promise((resolve) => {
        const timer = setTimeout(() => done(false), withinMs);
        const done = (found: boolean) => {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(found);
        };
        const check = () => {
          if (frames.some(matches)) done(true);
          else if (socket.closed) done(false);
        };
        waiters.add(check);
        check();
      });
    },
  };
}
