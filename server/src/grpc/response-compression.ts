// Whether a call's responses are gzip-compressed, and the compressing itself (off the event loop, on libuv's thread pool).
import type * as grpc from "@grpc/grpc-js";
import { promisify } from "node:util";
import { constants, gzip } from "node:zlib";
import { CompressedMessage, REQUEST_ACCEPT_ENCODING_KEY, REQUEST_ENCODING_KEY } from "./grpc-js-internals.js";

/** The gateway's response compression: "gzip" compresses the responses of the calls that ask for it (`compressesResponses`); "none" never. */
export type ResponseCompression = "gzip" | "none";

/**
 * Messages smaller than this leave uncompressed even on a compressed call
 * (gRPC lets each message say whether it is): gzip's header and trailer take
 * much of what it would save, for the CPU of a compression each.
 */
const MIN_COMPRESSED_BYTES = 1024;

/**
 * gzip's fastest level: a stream's messages are compressed as fast as
 * PostgreSQL sends rows, and result sets (repeated column values, small
 * integers) compress well even so (see BENCHMARKS.md).
 */
const LEVEL = constants.Z_BEST_SPEED;

const gzipAsync = promisify(gzip);

/**
 * Whether the call's responses are compressed: the gateway's setting is gzip,
 * the client compresses its own requests with gzip (the SDK's `compression`
 * option; as grpc-go's server does, the request's encoding is the client's
 * choice, since grpc-js clients always list gzip as accepted), and it lists
 * gzip in grpc-accept-encoding (the gRPC specification's rule).
 */
export function compressesResponses(setting: ResponseCompression, metadata: grpc.Metadata): boolean {
  if (setting !== "gzip" || metadata.get(REQUEST_ENCODING_KEY)[0] !== "gzip") return false;
  return metadata.get(REQUEST_ACCEPT_ENCODING_KEY).some((value) =>
    String(value)
      .split(",")
      .some((a) => a.trim() === "gzip"),
  );
}

/** The message as it leaves on a compressed call: gzip-compressed unless it is small (or, should zlib fail, as it is). */
export async function compressed<M>(message: M, bytes: Uint8Array): Promise<M | CompressedMessage> {
  if (bytes.length < MIN_COMPRESSED_BYTES) return message;
  try {
    return new CompressedMessage(await gzipAsync(bytes, { level: LEVEL }));
  } catch {
    return message;
  }
}
