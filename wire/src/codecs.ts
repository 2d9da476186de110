// The one place that picks, per message type, the hand codec or protobuf-es's toBinary/fromBinary: for the server's requests, the SDK's requests and its results.
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { requestDecoders } from "./request-decoding.js";
import { requestEncoders } from "./request-encoding.js";
import { resultDecoders } from "./result-decoding.js";

/**
 * The hand decoders by message type: the requests the server reads on its hot
 * paths (QueryStreamRequest, QueryManyRequest) and the results the SDK reads
 * (the responses that carry rows). Each gives the very object `fromBinary`
 * gives, or throws where it was not written for the bytes (an unknown field,
 * an unexpected wire type, a singular message twice, malformed bytes); then
 * `fromBinary` decodes the message instead: the same result or the same
 * error, only slower.
 */
const DECODERS: ReadonlyMap<string, (bytes: Uint8Array) => object> = new Map([...requestDecoders, ...resultDecoders]);

/** The hand encoders by message type, from a message's init shape: the bytes `toBinary` writes for the message. */
const ENCODERS: ReadonlyMap<string, (init: object) => Uint8Array> = requestEncoders;

/** The decoder of `schema`'s messages: by hand where there is one, else `fromBinary`. */
export function decoderFor<S extends DescMessage>(schema: S): (bytes: Uint8Array) => MessageShape<S> {
  const byHand = DECODERS.get(schema.typeName);
  if (byHand === undefined) return (bytes) => fromBinary(schema, bytes);
  return (bytes) => (tryByHand(byHand, bytes) as MessageShape<S> | undefined) ?? fromBinary(schema, bytes);
}

/** A message decoded by hand, or undefined where it is left to `fromBinary` (no hand decoder for the type, or one that gave up). */
export function decodeByHand(typeName: string, bytes: Uint8Array): object | undefined {
  const byHand = DECODERS.get(typeName);
  return byHand === undefined ? undefined : tryByHand(byHand, bytes);
}

function tryByHand(decode: (bytes: Uint8Array) => object, bytes: Uint8Array): object | undefined {
  try {
    return decode(bytes);
  } catch {
    return undefined;
  }
}

/**
 * The encoder of a request message from its init shape: by hand where there
 * is one (then `byHand` is true and the init shape need not be made into a
 * message first), else protobuf-es's `toBinary` of the message.
 */
export function encoderFor(schema: DescMessage): { byHand: boolean; encode: (message: object) => Uint8Array } {
  const byHand = ENCODERS.get(schema.typeName);
  if (byHand !== undefined) return { byHand: true, encode: byHand };
  return { byHand: false, encode: (message) => toBinary(schema, message as never) };
}
