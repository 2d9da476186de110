// Messages written again as protobuf-es never writes them, yet as every protobuf reader must read them: long varints, wide values, fields out of order, unknown fields, singular fields repeated.
import { ScalarType, type DescMessage } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { Random } from "./random-messages.js";

type RawField = { no: number; wireType: WireType; value: bigint | Uint8Array };

function readFields(bytes: Uint8Array): RawField[] {
  const reader = new BinaryReader(bytes);
  const fields: RawField[] = [];
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    const value =
      wireType === WireType.Varint
        ? BigInt(reader.uint64())
        : wireType === WireType.Bit64
          ? BigInt(reader.fixed64())
          : wireType === WireType.Bit32
            ? BigInt(reader.fixed32())
            : reader.bytes();
    fields.push({ no, wireType, value });
  }
  return fields;
}

export type Oddities = { longVarints: boolean; wideValues?: boolean; shuffled: boolean; unknown: boolean; repeated: boolean };

/** A varint of `n`, in `extra` more bytes than it needs (at most ten in all). */
function varint(out: number[], n: bigint, extra: number): void {
  const bytes: number[] = [];
  do {
    bytes.push(Number(n & 0x7fn) | (n > 0x7fn ? 0x80 : 0));
    n >>= 7n;
  } while (n > 0n);
  for (let i = 0; i < extra && bytes.length < 10; i++) {
    bytes[bytes.length - 1]! |= 0x80;
    bytes.push(0);
  }
  out.push(...bytes);
}

/** `bytes`, a message of `schema`, written again with `odd`'s oddities, in its nested messages too. */
export function rewrite(r: Random, schema: DescMessage, bytes: Uint8Array, odd: Oddities): Uint8Array {
  let fields = readFields(bytes).map((f) => {
    const field = schema.fields.find((d) => d.number === f.no);
    const nested = field?.fieldKind === "message" ? field.message : field?.fieldKind === "list" && field.listKind === "message" ? field.message : undefined;
    return nested !== undefined && f.value instanceof Uint8Array ? { ...f, value: rewrite(r, nested, f.value, odd) } : f;
  });
  if (odd.wideValues) {
    // 32-bit and bool values in 64-bit varints: the reader keeps the low 32 bits, and any bit set is true.
    fields = fields.map((f) => {
      const field = schema.fields.find((d) => d.number === f.no);
      if (f.wireType !== WireType.Varint || field === undefined || !r.chance(0.5)) return f;
      const value = f.value as bigint;
      if (field.fieldKind === "scalar" && field.scalar === ScalarType.BOOL) return { ...f, value: value === 0n ? 0n : r.pick([2n, 2n ** 32n, 2n ** 63n]) };
      const thirtyTwo = field.fieldKind === "enum" || (field.fieldKind === "scalar" && [ScalarType.INT32, ScalarType.UINT32].includes(field.scalar));
      return thirtyTwo ? { ...f, value: BigInt.asUintN(64, value + (r.pick([1n, 3n, 2n ** 31n]) << 32n)) } : f;
    });
  }
  if (odd.repeated) {
    // A singular field written twice: protobuf keeps the last scalar and merges messages.
    fields = fields.flatMap((f) => {
      const field = schema.fields.find((d) => d.number === f.no);
      if (field === undefined || field.fieldKind === "list" || field.fieldKind === "map" || !r.chance(0.3)) return [f];
      if (field.fieldKind === "message") return [f, f];
      const earlier =
        f.wireType === WireType.Varint
          ? r.u64()
          : f.wireType === WireType.LengthDelimited && field.fieldKind === "scalar" && field.scalar === ScalarType.STRING
            ? new TextEncoder().encode(r.text())
            : f.value;
      return [{ ...f, value: earlier }, f];
    });
  }
  if (odd.shuffled) {
    // Fields in another order; a repeated field's own elements keep theirs.
    const order = new Map([...new Set(fields.map((f) => f.no))].map((no) => [no, r.next()]));
    fields = fields
      .map((f, i) => ({ f, i }))
      .sort((a, b) => order.get(a.f.no)! - order.get(b.f.no)! || a.i - b.i)
      .map(({ f }) => f);
  }
  if (odd.unknown) {
    for (let n = r.int(3); n >= 0; n--) {
      let no = 0;
      while (no === 0 || schema.fields.some((d) => d.number === no)) no = 1 + r.int(2_000);
      const wireType = r.pick([WireType.Varint, WireType.Bit64, WireType.LengthDelimited, WireType.Bit32]);
      const value =
        wireType === WireType.LengthDelimited ? new Uint8Array(r.array(4, () => r.int(256))) : wireType === WireType.Bit32 ? BigInt(r.u32()) : r.u64();
      fields.splice(r.int(fields.length + 1), 0, { no, wireType, value });
    }
  }
  const out: number[] = [];
  const extra = () => (odd.longVarints && r.chance(0.5) ? 1 + r.int(3) : 0);
  for (const { no, wireType, value } of fields) {
    varint(out, BigInt((no << 3) | wireType), extra());
    if (wireType === WireType.Varint) varint(out, value as bigint, extra());
    else if (wireType === WireType.LengthDelimited) {
      varint(out, BigInt((value as Uint8Array).length), extra());
      out.push(...(value as Uint8Array));
    } else {
      const size = wireType === WireType.Bit64 ? 8 : 4;
      for (let i = 0; i < size; i++) out.push(Number(((value as bigint) >> BigInt(8 * i)) & 0xffn));
    }
  }
  return new Uint8Array(out);
}
