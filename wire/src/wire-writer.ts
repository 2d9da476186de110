// The protobuf wire writer of the result encoders: varints, and fields with one-byte tags (see field-tags.ts), written into a buffer sized beforehand (the request codecs use protobuf-es's own BinaryWriter and BinaryReader, as toBinary and fromBinary do).

/** Bytes of `n` (an integer, 0 ≤ n < 2^53) as a varint. */
export function varintSize(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x200000) return 3;
  if (n < 0x10000000) return 4;
  let size = 4;
  for (n = Math.floor(n / 0x10000000); n > 0; n = Math.floor(n / 0x80)) size++;
  return size;
}

/** Writes `n` (an integer, 0 ≤ n < 2^53) as a varint at `at`; returns the end. */
export function writeVarint(out: Uint8Array, at: number, n: number): number {
  while (n > 0x7fffffff) {
    out[at++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[at++] = n;
  return at;
}

/** A negative int32 as protobuf writes it: the ten-byte varint of its 64-bit two's complement. */
const negativeInt32s = new Map<number, Uint8Array>();
function negativeInt32(n: number): Uint8Array {
  let bytes = negativeInt32s.get(n);
  if (bytes === undefined) {
    bytes = new Uint8Array(10);
    let v = BigInt.asUintN(64, BigInt(n));
    for (let i = 0; i < 10; i++, v >>= 7n) bytes[i] = Number(v & 0x7fn) | (i < 9 ? 0x80 : 0);
    if (negativeInt32s.size < 1_000) negativeInt32s.set(n, bytes);
  }
  return bytes;
}

/** Bytes of an int32 value as a varint (a negative one takes ten). */
export function int32Size(n: number): number {
  return n < 0 ? 10 : varintSize(n);
}

/** Writes an int32 value as a varint at `at`; returns the end. */
export function writeInt32(out: Uint8Array, at: number, n: number): number {
  if (n >= 0) return writeVarint(out, at, n);
  out.set(negativeInt32(n), at);
  return at + 10;
}

/** Writes a varint field with its one-byte `tag` (`oneByteTag`), holding `n` (0 ≤ n < 2^53); returns the end. */
export function writeVarintField(out: Uint8Array, at: number, tag: number, n: number): number {
  out[at] = tag;
  return writeVarint(out, at + 1, n);
}

/** Writes an int32 field with its one-byte `tag`; returns the end. */
export function writeInt32Field(out: Uint8Array, at: number, tag: number, n: number): number {
  out[at] = tag;
  return writeInt32(out, at + 1, n);
}

/** Writes a string field with its one-byte `tag`, whose UTF-8 encoding is `utf8Length` bytes; returns the end. */
export function writeStringField(out: Buffer, at: number, tag: number, value: string, utf8Length: number): number {
  out[at++] = tag;
  at = writeVarint(out, at, utf8Length);
  return at + out.write(value, at, utf8Length, "utf8");
}

/** Writes a length-delimited field with its one-byte `tag`, holding `bytes`; returns the end. */
export function writeBytesField(out: Uint8Array, at: number, tag: number, bytes: Uint8Array): number {
  out[at++] = tag;
  at = writeVarint(out, at, bytes.length);
  out.set(bytes, at);
  return at + bytes.length;
}

/** A message of one length-delimited field, with its one-byte `tag`, holding `bytes` (e.g. QueryResponse { result }). */
export function encodeBytesField(tag: number, bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(lengthDelimitedSize(bytes.length));
  writeBytesField(out, 0, tag, bytes);
  return out;
}

/** Bytes of a length-delimited field with a one-byte tag whose content is `length` bytes. */
export function lengthDelimitedSize(length: number): number {
  return 1 + varintSize(length) + length;
}
