// The one protobuf wire reader of the hand decoders: varints, doubles, strings and length-delimited fields within bounds, giving up on anything malformed.

/** Thrown where the hand-written decoders stop and `fromBinary` takes over (one object: nothing is built per throw). */
export const GIVE_UP = new Error("left to fromBinary");

/**
 * A reader of protobuf wire bytes within `pos`..`end` of a Buffer: varints,
 * fixed64 doubles and length-delimited fields, giving up (`GIVE_UP`) on
 * anything malformed.
 */
export class Reader {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly end: number,
  ) {}

  more(): boolean {
    return this.pos < this.end;
  }

  /** A field's tag: field number << 3 | wire type. */
  tag(): number {
    return this.uint32();
  }

  /** A varint's low 32 bits, unsigned (the rest of a longer varint is read and dropped, as protobuf does for 32-bit fields). */
  uint32(): number {
    const buf = this.buf;
    let pos = this.pos;
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      if (shift === 70) throw GIVE_UP; // more than 10 bytes
      const b = buf[pos++]!;
      if (shift < 32) value |= (b & 0x7f) << shift; // bits past 32 fall off the shift
      if (b < 0x80) break;
    }
    if (pos > this.end) throw GIVE_UP;
    this.pos = pos;
    return value >>> 0;
  }

  int32(): number {
    return this.uint32() | 0;
  }

  /** A varint of up to 64 bits, unsigned. */
  uint64(): bigint {
    const buf = this.buf;
    let pos = this.pos;
    let low = 0;
    let high = 0;
    let b = 0x80;
    for (let shift = 0; shift < 28 && b >= 0x80; shift += 7) {
      b = buf[pos++]!;
      low |= (b & 0x7f) << shift;
    }
    if (b >= 0x80) {
      b = buf[pos++]!;
      low |= (b & 0x0f) << 28;
      high = (b & 0x7f) >> 4;
      for (let shift = 3; shift < 32 && b >= 0x80; shift += 7) {
        b = buf[pos++]!;
        high |= (b & 0x7f) << shift;
      }
      if (b >= 0x80) throw GIVE_UP;
    }
    if (pos > this.end) throw GIVE_UP;
    this.pos = pos;
    return high === 0 ? BigInt(low >>> 0) : (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
  }

  int64(): bigint {
    return BigInt.asIntN(64, this.uint64());
  }

  /** A bool: true if any of its varint's 64 bits is set, as protobuf reads it (rare in results: not worth a faster path). */
  bool(): boolean {
    return this.uint64() !== 0n;
  }

  double(): number {
    if (this.pos + 8 > this.end) throw GIVE_UP;
    const value = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return value;
  }

  /** The bounds of a length-delimited field's bytes, as a reader of them; this reader moves past them. */
  sub(): Reader {
    const length = this.uint32();
    const start = this.pos;
    const end = start + length;
    if (end > this.end) throw GIVE_UP;
    this.pos = end;
    return new Reader(this.buf, start, end);
  }

  /** Moves past a length-delimited field. */
  skip(): void {
    const length = this.uint32();
    if (this.pos + length > this.end) throw GIVE_UP;
    this.pos += length;
  }

  string(): string {
    const length = this.uint32();
    const start = this.pos;
    const end = start + length;
    if (end > this.end) throw GIVE_UP;
    this.pos = end;
    return length === 0 ? "" : utf8(this.buf, start, end);
  }
}

/**
 * A Buffer's bytes as UTF-8 text through Buffer's own `utf8Slice` (in every
 * Node.js, though undeclared): `toString` checks its arguments and looks the
 * encoding up before calling it, a fifth of the time per short value.
 */
export function utf8(buf: Buffer, start: number, end: number): string {
  return (buf as Buffer & { utf8Slice(start: number, end: number): string }).utf8Slice(start, end);
}
