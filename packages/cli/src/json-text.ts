/**
 * The CLI's `--output json` text, written in one pass from the decoded messages. The mapping is
 * protobuf's JSON mapping with every field (lowerCamelCase names, fields in number order,
 * timestamps as RFC 3339), made readable for scripts: enum values lose their shared prefix and are
 * lower case ("incr", "succeeded", not "BACKUP_TYPE_INCR"), like the tables print them; 64-bit
 * integers (sizes, counts) are JSON numbers while they fit in 2^53 and decimal strings beyond, so
 * no value is ever rounded; fields that are strings in the proto (LSNs such as "0/16B3748",
 * labels) stay strings. The text is `JSON.stringify`'s with two-space indentation, byte for byte.
 * NATS events keep canonical protobuf JSON (docs/events.md); this is the CLI's view.
 *
 * Why not `toJson` then `JSON.stringify`: at 10,000 clusters that built a JSON object tree,
 * rewrote its enums and int64s in a second walk, then one 18 MB string (docs/performance.md,
 * "CLI commands at fleet scale"); here each message is written straight to text, and the text
 * goes out in chunks as it is made.
 */
import {
  ScalarType,
  toJson,
  type DescEnum,
  type DescField,
  type DescMessage,
  type MessageShape,
} from '@bufbuild/protobuf';
import { base64Encode } from '@bufbuild/protobuf/wire';

/** Where text goes: an appender that hands out chunks of about CHUNK characters, or keeps it all. */
export class JsonText {
  private buf = '';
  constructor(private readonly flush?: (chunk: string) => void) {}

  push(s: string): void {
    this.buf += s;
    if (this.flush !== undefined && this.buf.length >= CHUNK) {
      this.flush(this.buf);
      this.buf = '';
    }
  }

  /** Hands out what is left (with a flush), or returns the whole text (without). */
  end(): string {
    const rest = this.buf;
    this.buf = '';
    if (this.flush !== undefined && rest !== '') this.flush(rest);
    return rest;
  }
}

/** Large enough that a write is cheap against what it carries, small enough to stay in memory. */
const CHUNK = 1 << 16;

type Writer = (out: JsonText, value: unknown, indent: string) => void;

/** The strings around an object's or array's members at one indentation, made once per indentation. */
interface Layout {
  inner: string;
  open: string; // '{' and the first member's line start
  next: string; // ',' and the next member's line start
  close: string; // the closing line start, without the '}' or ']'
}
const layouts = new Map<string, Layout>();
function layout(indent: string): Layout {
  let l = layouts.get(indent);
  if (l === undefined) {
    const inner = `${indent}  `;
    l = { inner, open: `{\n${inner}`, next: `,\n${inner}`, close: `\n${indent}` };
    layouts.set(indent, l);
  }
  return l;
}

/** A message, or a list of them, as the CLI's JSON text (without a newline after it). */
export function jsonText<D extends DescMessage>(schema: D, msg: MessageShape<D> | readonly MessageShape<D>[]): string {
  const out = new JsonText();
  writeJson(out, schema, msg, '');
  return out.end();
}

/** Writes a message, or a list of them, at `indent` (the indentation of the line it starts on). */
export function writeJson<D extends DescMessage>(
  out: JsonText,
  schema: D,
  msg: MessageShape<D> | readonly MessageShape<D>[],
  indent: string,
): void {
  const write = messageWriter(schema);
  if (Array.isArray(msg)) listText(out, msg, indent, write);
  else write(out, msg, indent);
}

function listText(out: JsonText, items: readonly unknown[], indent: string, write: Writer): void {
  if (items.length === 0) {
    out.push('[]');
    return;
  }
  const { inner, next, close } = layout(indent);
  out.push(`[\n${inner}`);
  for (let i = 0; i < items.length; i++) {
    if (i > 0) out.push(next);
    write(out, items[i], inner);
  }
  out.push(`${close}]`);
}

/**
 * A list written in parts (a page at a time): the same text as writeJson of the whole list.
 * `add` writes some items, `end` closes the list.
 */
export function jsonList<D extends DescMessage>(
  out: JsonText,
  schema: D,
  indent: string,
): { add(items: readonly MessageShape<D>[]): void; end(): void } {
  const write = messageWriter(schema);
  const { inner, next, close } = layout(indent);
  let any = false;
  return {
    add(items) {
      for (const item of items) {
        out.push(any ? next : `[\n${inner}`);
        any = true;
        write(out, item, inner);
      }
    },
    end() {
      out.push(any ? `${close}]` : '[]');
    },
  };
}

const writers = new WeakMap<DescMessage, Writer>();

function messageWriter(desc: DescMessage): Writer {
  let w = writers.get(desc);
  if (w === undefined) w = compileMessage(desc);
  return w;
}

// Presence as protobuf-es descriptors number it (FeatureSet.FieldPresence).
const IMPLICIT = 2;

/** A field's writer: writes `"key": value` after `sep` when the field is present, and says whether it did. */
type FieldWriter = (out: JsonText, msg: Record<string, unknown>, sep: string, inner: string) => boolean;

function compileMessage(desc: DescMessage): Writer {
  const wkt = wellKnownWriter(desc);
  if (wkt !== undefined) {
    writers.set(desc, wkt);
    return wkt;
  }
  const fields: FieldWriter[] = [];
  const w: Writer = (out, value, indent) => {
    const msg = value as Record<string, unknown>;
    const { inner, open, next, close } = layout(indent);
    let any = false;
    for (let i = 0; i < fields.length; i++) {
      if (fields[i]!(out, msg, any ? next : open, inner)) any = true;
    }
    out.push(any ? `${close}}` : '{}');
  };
  // Registered before the fields are compiled, so a recursive message type finds this writer.
  writers.set(desc, w);
  // protobuf's JSON writes fields in field-number order.
  for (const f of [...desc.fields].sort((a, b) => a.number - b.number)) fields.push(compileField(f));
  return w;
}

/** google.protobuf.* messages: Timestamp written here, the rest as protobuf-es writes their JSON. */
function wellKnownWriter(desc: DescMessage): Writer | undefined {
  if (!desc.typeName.startsWith('google.protobuf.')) return undefined;
  if (desc.typeName === 'google.protobuf.Timestamp') return timestampWriter(desc);
  return (out, value, indent) => out.push(indented(toJson(desc, value as MessageShape<DescMessage>), indent));
}

function indented(json: unknown, indent: string): string {
  const text = JSON.stringify(json, null, 2);
  return indent === '' ? text : text.replaceAll('\n', `\n${indent}`);
}

// 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z, the range protobuf's JSON allows.
const TIMESTAMP_MS_MIN = -62135596800000;
const TIMESTAMP_MS_MAX = 253402300799000;

/** "YYYY-MM-DDT" of a day since the epoch (negative before 1970). */
const days = new Map<number, string>();
const TWO = Array.from({ length: 60 }, (_, i) => String(i).padStart(2, '0'));

function timestampWriter(desc: DescMessage): Writer {
  return (out, value, indent) => {
    const t = value as { seconds: bigint; nanos: number };
    const ms = Number(t.seconds) * 1000;
    const nanos = t.nanos;
    if (ms >= TIMESTAMP_MS_MIN && ms <= TIMESTAMP_MS_MAX && nanos >= 0 && nanos <= 999_999_999) {
      // protobuf's "2026-03-01T12:00:00Z", with 3, 6 or 9 digits of fraction when there is one.
      // A status has a dozen timestamps per cluster, mostly of a few days: the date is made once
      // per day (toISOString's), the time of day by arithmetic.
      const seconds = ms / 1000;
      const day = Math.floor(seconds / 86_400);
      let date = days.get(day);
      if (date === undefined) {
        date = new Date(day * 86_400_000).toISOString().slice(0, 11);
        days.set(day, date);
      }
      const s = seconds - day * 86_400;
      out.push(
        `"${date}${TWO[Math.floor(s / 3600)]}:${TWO[Math.floor(s / 60) % 60]}:${TWO[s % 60]}${fraction(nanos)}Z"`,
      );
      return;
    }
    // Out-of-range values: protobuf-es's own writer (which throws its error).
    out.push(indented(toJson(desc, value as MessageShape<DescMessage>), indent));
  };
}

function fraction(nanos: number): string {
  if (nanos === 0) return '';
  const digits = String(nanos + 1_000_000_000).slice(1);
  if (digits.endsWith('000000')) return `.${digits.slice(0, 3)}`;
  if (digits.endsWith('000')) return `.${digits.slice(0, 6)}`;
  return `.${digits}`;
}

function compileField(f: DescField): FieldWriter {
  const key = `${JSON.stringify(f.jsonName)}: `;
  const local = f.localName;
  const write = valueWriter(f);
  if (f.oneof !== undefined) {
    const oneof = f.oneof.localName;
    return (out, msg, sep, inner) => {
      const o = msg[oneof] as { case: string | undefined; value: unknown };
      if (o.case !== local) return false;
      out.push(sep + key);
      write(out, o.value, inner);
      return true;
    };
  }
  if (f.fieldKind === 'list' || f.fieldKind === 'map' || f.presence === IMPLICIT) {
    // Every field, zero or not (protobuf's alwaysEmitImplicit).
    return (out, msg, sep, inner) => {
      out.push(sep + key);
      write(out, msg[local], inner);
      return true;
    };
  }
  // Explicit presence (messages, `optional`): only when set.
  return (out, msg, sep, inner) => {
    const v = msg[local];
    if (v === undefined || !Object.prototype.hasOwnProperty.call(msg, local)) return false;
    out.push(sep + key);
    write(out, v, inner);
    return true;
  };
}

function valueWriter(f: DescField): Writer {
  switch (f.fieldKind) {
    case 'scalar':
      return scalarWriter(f.scalar);
    case 'enum':
      return enumWriter(f.enum);
    case 'message':
      return singularMessageWriter(f.message, f.oneof === undefined);
    case 'list': {
      const item = itemWriter(f.listKind, f);
      return (out, v, indent) => listText(out, v as unknown[], indent, item);
    }
    case 'map': {
      const item = itemWriter(f.mapKind, f);
      return (out, v, indent) => {
        const record = v as Record<string, unknown>;
        const keys = Object.keys(record);
        if (keys.length === 0) {
          out.push('{}');
          return;
        }
        const { inner, open, next, close } = layout(indent);
        for (let i = 0; i < keys.length; i++) {
          out.push(`${i === 0 ? open : next}${JSON.stringify(keys[i])}: `);
          item(out, record[keys[i]!], inner);
        }
        out.push(`${close}}`);
      };
    }
  }
}

/** The writer of a list's items or a map's values. */
function itemWriter(
  kind: 'scalar' | 'enum' | 'message',
  f: { scalar?: ScalarType; enum?: DescEnum; message?: DescMessage },
): Writer {
  if (kind === 'scalar') return scalarWriter(f.scalar!);
  if (kind === 'enum') return enumWriter(f.enum!);
  return singularMessageWriter(f.message!, false);
}

/**
 * A message-typed value. protobuf-es keeps a singular wrapper field (google.protobuf.Int64Value
 * and the like, outside a oneof) as its bare value; it is boxed again for the wrapper's JSON.
 */
function singularMessageWriter(desc: DescMessage, unwrapped: boolean): Writer {
  if (unwrapped && WRAPPERS.has(desc.typeName)) {
    return (out, v, indent) =>
      out.push(indented(toJson(desc, { $typeName: desc.typeName, value: v } as MessageShape<DescMessage>), indent));
  }
  // Looked up on use: a message's writer may still be compiling (recursive types).
  let w: Writer | undefined;
  return (out, v, indent) => (w ??= messageWriter(desc))(out, v, indent);
}

const WRAPPERS = new Set(
  ['Double', 'Float', 'Int64', 'UInt64', 'Int32', 'UInt32', 'Bool', 'String', 'Bytes'].map(
    (t) => `google.protobuf.${t}Value`,
  ),
);

const quote = (s: string): string => JSON.stringify(s);

function scalarWriter(t: ScalarType): Writer {
  switch (t) {
    case ScalarType.STRING:
      return (out, v) => out.push(quote(v as string));
    case ScalarType.BOOL:
      return (out, v) => out.push(v ? 'true' : 'false');
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return (out, v) => out.push(doubleText(v as number));
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return (out, v) => out.push(int64Text(v as bigint | string | number));
    case ScalarType.BYTES:
      return (out, v) => out.push(quote(base64Encode(v as Uint8Array)));
    default:
      // 32-bit integers: numbers. String() of a finite number is JSON.stringify's text (-0 too).
      return (out, v) => out.push(String(v));
  }
}

/** Doubles as protobuf's JSON has them: NaN and the infinities as strings, the rest as numbers. */
function doubleText(v: number): string {
  if (Number.isFinite(v)) return String(v);
  return Number.isNaN(v) ? '"NaN"' : v > 0 ? '"Infinity"' : '"-Infinity"';
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A 64-bit integer: a JSON number while it is exact as one, its decimal string beyond 2^53. */
export function int64Text(v: bigint | string | number): string {
  if (typeof v === 'bigint') return v <= MAX_SAFE && v >= -MAX_SAFE ? v.toString() : `"${v}"`;
  const s = v.toString();
  if (!/^-?\d+$/.test(s)) return quote(s);
  const n = Number(s);
  return Number.isSafeInteger(n) ? String(n) : quote(s);
}

/** "BACKUP_TYPE_INCR" as "incr": the value's JSON name without the enum's shared prefix, lower case. */
export function enumValueText(e: DescEnum, name: string): string {
  // protobuf-es keeps the prefix in lower snake case ("job_state_"), as its generated TS names do.
  const lower = name.toLowerCase();
  const p = e.sharedPrefix?.toLowerCase();
  return p && lower.startsWith(p) && lower.length > p.length ? lower.slice(p.length) : lower;
}

function enumWriter(e: DescEnum): Writer {
  if (e.typeName === 'google.protobuf.NullValue') return (out) => out.push('null');
  const texts = new Map(e.values.map((v) => [v.number, quote(enumValueText(e, v.jsonName))]));
  // A number this CLI does not know (a newer controller) stays a number.
  return (out, v) => out.push(texts.get(v as number) ?? String(v));
}
