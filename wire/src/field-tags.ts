// Field numbers and tags taken from the generated descriptors, so that the hand codecs follow proto/ instead of restating its numbers.
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";

/** Every map entry's key and value fields: numbered by the protobuf language itself, not by a .proto file. */
export const MAP_ENTRY_KEY = 1;
export const MAP_ENTRY_VALUE = 2;

/** The descriptor of `schema`'s field `localName` (a oneof member too); a field renamed or removed in proto/ fails at load. */
function fieldOf(schema: DescMessage, localName: string): DescField {
  const field = schema.field[localName];
  if (field === undefined) throw new Error(`${schema.typeName} has no field ${localName}`);
  return field;
}

/** The number of `schema`'s field `localName`. */
export function numberOf(schema: DescMessage, localName: string): number {
  return fieldOf(schema, localName).number;
}

/**
 * The tag (`number << 3 | wire type`) that `schema`'s field `localName` is
 * written with. Called once per field at module load: the codecs keep the
 * results as constants.
 */
export function tagOf(schema: DescMessage, localName: string): number {
  const field = fieldOf(schema, localName);
  return ((field.number << 3) | wireTypeOf(field)) >>> 0;
}

/**
 * `tagOf` for a field that the writer writes with a one-byte tag (field
 * number < 16): a proto/ change that makes it longer fails at load, not on the wire.
 */
export function oneByteTag(schema: DescMessage, localName: string): number {
  const tag = tagOf(schema, localName);
  if (tag > 0x7f) throw new Error(`${schema.typeName}.${localName}: a field number over 15 needs a tag of more than one byte`);
  return tag;
}

/** The wire type a field is written with (repeated scalars packed, as proto3 writes them). */
function wireTypeOf(field: DescField): WireType {
  switch (field.fieldKind) {
    case "message":
    case "map":
      return WireType.LengthDelimited;
    case "enum":
      return WireType.Varint;
    case "scalar":
      return scalarWireType(field.scalar);
    case "list":
      if (field.listKind === "message" || field.packed) return WireType.LengthDelimited;
      return field.listKind === "enum" ? WireType.Varint : scalarWireType(field.scalar);
  }
}

function scalarWireType(scalar: ScalarType): WireType {
  switch (scalar) {
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return WireType.LengthDelimited;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return WireType.Bit64;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return WireType.Bit32;
    default:
      return WireType.Varint;
  }
}
