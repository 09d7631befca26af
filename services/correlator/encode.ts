/**
 * Row encoders for ClickHouse inserts in formats cheaper than JSONEachRow.
 *
 * Each table's columns are listed once with their ClickHouse type; from that list a
 * specialised encoder is generated per format (one straight-line function per table,
 * no per-field dispatch). Inserts name their columns, so the encoders do not depend on
 * the table's column order.
 *
 * - RowBinary: little-endian fixed-width integers, Date as UInt16 days, String as
 *   LEB128 length + UTF-8 bytes, Array as LEB128 count + elements. Nothing to escape,
 *   nothing for ClickHouse to parse as text.
 * - TabSeparated: text, strings escaped (\\ \t \n \r \0 and, inside arrays, \'),
 *   arrays as ['a','b'].
 * - Packed (hop_events' `packed`, shared/stored-events.ts): packEvent's bytes, as a
 *   String in either format.
 *
 * Both store the same values for the same rows (test/integration/insert-formats.test.ts).
 */
import type { RejectedRow } from './correlator.js';
import { packEvent, PACKED_SIZE } from '../shared/stored-events.js';
import type { FlowPartRow, HopEventRow } from './rows.js';

/** JSONEachRow is gone: JSON strings cannot carry hop_events' binary `packed` column. */
export type InsertFormat = 'TabSeparated' | 'RowBinary';
export const INSERT_FORMATS: readonly InsertFormat[] = ['TabSeparated', 'RowBinary'];

/** Packed: a String built from the whole row by packEvent (hop_events only). */
type ColType = 'Date' | 'UInt8' | 'UInt16' | 'UInt32' | 'UInt64' | 'String' | 'Array(String)' | 'Packed';
type Columns<R> = readonly (readonly [(keyof R & string) | 'packed', ColType])[];

/** hop_events' real columns (shared/stored-events.ts): `packed` holds the row's other fields. */
export const HOP_EVENT_COLUMNS = [
  ['event_date', 'Date'], ['flow_id', 'UInt64'], ['wall_ts_ns', 'UInt64'], ['agent', 'String'], ['boot', 'UInt64'],
  ['seq', 'UInt64'], ['node', 'String'], ['netns', 'String'], ['pod', 'String'], ['kind', 'UInt8'],
  ['reason_name', 'String'], ['location', 'String'], ['packed', 'Packed'],
] as const satisfies Columns<HopEventRow>;

export const FLOW_PART_COLUMNS = [
  ['event_date', 'Date'], ['flow_id', 'UInt64'], ['part_key', 'String'], ['proto', 'UInt8'], ['a_addr', 'String'],
  ['a_port', 'UInt16'], ['b_addr', 'String'], ['b_port', 'UInt16'], ['first_ts_ns', 'UInt64'], ['last_ts_ns', 'UInt64'],
  ['events', 'UInt64'], ['packets', 'UInt64'], ['bytes', 'UInt64'], ['drops', 'UInt64'], ['resets', 'UInt64'],
  ['retrans', 'UInt64'], ['nodes', 'Array(String)'],
] as const satisfies Columns<FlowPartRow>;

export const REJECTED_COLUMNS = [
  ['received_date', 'Date'], ['origin', 'String'], ['reason', 'String'], ['payload', 'String'],
] as const satisfies Columns<RejectedRow>;

export const columnNames = (cols: Columns<unknown>) => cols.map(([n]) => n);

// ---------------------------------------------------------------- RowBinary

/** Little-endian UInt16 at p; returns the position after it (no bounds check: the caller reserved room). */
export function putU16(o: Buffer, p: number, v: number): number {
  o[p] = v;
  o[p + 1] = v >>> 8;
  return p + 2;
}

/** Little-endian UInt32 at p; returns the position after it. */
export function putU32(o: Buffer, p: number, v: number): number {
  o[p] = v;
  o[p + 1] = v >>> 8;
  o[p + 2] = v >>> 16;
  o[p + 3] = v >>> 24;
  return p + 4;
}

/** A growable byte buffer with the few writes RowBinary needs. */
export class BinWriter {
  buf: Buffer;
  pos = 0;
  constructor(size = 1 << 20) {
    this.buf = Buffer.allocUnsafe(size);
  }
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  u8(v: number): void {
    this.buf[this.pos++] = v;
  }
  u16(v: number): void {
    this.pos = putU16(this.buf, this.pos, v);
  }
  u32(v: number): void {
    this.pos = putU32(this.buf, this.pos, v);
  }
  /** UInt64 from a safe integer or a decimal string (timestamps, skb ids). */
  u64(v: number | string): void {
    if (typeof v === 'string') {
      // Decimal digits into two 32-bit halves, no BigInt: hi * 2^32 + lo.
      const n = v.length;
      if (n === 0 || n > 20) throw new RangeError(`not a UInt64: ${v}`);
      let lo = 0;
      let hi = 0;
      for (let i = 0; i < n; i++) {
        const d = v.charCodeAt(i) - 48;
        if (d < 0 || d > 9) throw new RangeError(`not a UInt64: ${v}`);
        lo = lo * 10 + d;
        const carry = Math.floor(lo / 0x1_0000_0000);
        lo -= carry * 0x1_0000_0000;
        hi = hi * 10 + carry;
        if (hi > 0xffff_ffff) throw new RangeError(`not a UInt64: ${v}`);
      }
      this.u32(lo);
      this.u32(hi);
      return;
    }
    if (!(v >= 0 && v <= Number.MAX_SAFE_INTEGER) || v % 1 !== 0) throw new RangeError(`not a UInt64: ${v}`);
    this.u32(v >>> 0);
    this.u32(Math.floor(v / 0x1_0000_0000));
  }
  /** Text already known to be ASCII-safe or any string (UTF-8), no length prefix (TabSeparated). */
  text(s: string): void {
    const n = s.length;
    this.ensure(n * 3 + 1);
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        this.pos += this.buf.write(s, this.pos, 'utf8');
        return;
      }
      b[p++] = c;
    }
    this.pos = p;
  }
  varint(n: number): void {
    while (n >= 0x80) {
      this.buf[this.pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
  }
  /** String: LEB128 byte length, UTF-8 bytes (what JSON text decodes to). */
  str(s: string): void {
    const n = s.length;
    if (n < 128) {
      // Fast path: ASCII, one length byte.
      const b = this.buf;
      const start = this.pos + 1;
      let p = start;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        b[p++] = c;
      }
      if (i === n) {
        b[this.pos] = n;
        this.pos = p;
        return;
      }
    }
    const len = Buffer.byteLength(s, 'utf8');
    this.varint(len);
    this.ensure(len);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }
  take(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

const LAST_TEXT_DAY = 49_672; // 2105-12-31
const dayNumbers = new Map<string, number>();
/** Days since 1970-01-01 of a 'YYYY-MM-DD' date (ClickHouse Date in RowBinary). */
export function dayNumber(date: string): number {
  let d = dayNumbers.get(date);
  if (d === undefined) {
    const ms = Date.parse(`${date}T00:00:00Z`);
    if (!/^\d{4}-\d{2}-\d{2}$/.test(date) || Number.isNaN(ms)) throw new RangeError(`not a Date: ${date}`);
    d = ms / 86_400_000;
    // ClickHouse 18.16 parses a text Date outside 1970-01-01..2105-12-31 as 0000-00-00 (day 0);
    // RowBinary would wrap instead, so clamp the same way to store what JSONEachRow stored.
    if (d < 0 || d > LAST_TEXT_DAY) d = 0;
    if (dayNumbers.size > 4096) dayNumbers.clear();
    dayNumbers.set(date, d);
  }
  return d;
}

/** Upper bound of the bytes one row needs besides its strings. */
const FIXED: Record<ColType, number> = { Date: 2, UInt8: 1, UInt16: 2, UInt32: 4, UInt64: 8, String: 0, 'Array(String)': 0, Packed: PACKED_SIZE + 2 };

function binaryEncoder<R>(cols: Columns<R>): (rows: readonly R[], w?: BinWriter) => Buffer {
  // Fixed-width writes do not check the buffer's end (a Buffer silently drops writes past
  // it): the row reserves room for all of them, and each string reserves room for itself
  // plus all of them again, since it eats into what the row reserved.
  const fixed = cols.reduce((s, [, t]) => s + FIXED[t], 0);
  const lines = cols.map(([name, type]) => {
    const v = `r[${JSON.stringify(name)}]`;
    switch (type) {
      case 'Date':
        return `w.u16(dayNumber(${v}));`;
      case 'UInt8':
        return `w.u8(${v});`;
      case 'UInt16':
        return `w.u16(${v});`;
      case 'UInt32':
        return `w.u32(${v});`;
      case 'UInt64':
        return `w.u64(${v});`;
      case 'String':
        return `w.ensure(${v}.length * 3 + ${fixed + 10}); w.str(${v});`;
      case 'Array(String)':
        return `{ const a = ${v}; w.ensure(${fixed + 10}); w.varint(a.length); for (const s of a) { w.ensure(s.length * 3 + ${fixed + 10}); w.str(s); } }`;
      case 'Packed':
        return `w.varint(${PACKED_SIZE}); packEvent(r, packed); packed.copy(w.buf, w.pos); w.pos += ${PACKED_SIZE};`;
    }
  });
  const body = `return function encode(rows, w) {
    w = w || new BinWriter(Math.max(1024, rows.length * ${fixed + 64}));
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      w.ensure(${fixed});
      ${lines.join('\n      ')}
    }
    return w.take();
  };`;
  return new Function('BinWriter', 'dayNumber', 'packEvent', 'packed', body)(BinWriter, dayNumber, packEvent, Buffer.alloc(PACKED_SIZE));
}

// ---------------------------------------------------------------- TabSeparated

const TSV_SPECIAL = /[\\\t\n\r\0]/;
const TSV_ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\0', "'": "\\'" };
/** A String field in TabSeparated: backslash escapes. */
export function tsvString(s: string): string {
  return TSV_SPECIAL.test(s) ? s.replace(/[\\\t\n\r\0]/g, (c) => TSV_ESCAPES[c]!) : s;
}
/** An Array(String) field in TabSeparated: ['a','b'] with quoted, escaped elements. */
export function tsvStringArray(a: readonly string[]): string {
  return `[${a.map((s) => `'${s.replace(/[\\\t\n\r\0']/g, (c) => TSV_ESCAPES[c]!)}'`).join(',')}]`;
}

/** Per byte: the letter after a backslash that TabSeparated needs for it, 0 for none. */
const TSV_BYTE_ESCAPES = new Uint8Array(256);
for (const [c, e] of [[0x5c, 0x5c], [0x09, 0x74], [0x0a, 0x6e], [0x0d, 0x72], [0x00, 0x30]] as const) TSV_BYTE_ESCAPES[c] = e;
/** Bytes as a TabSeparated String field: the escapes, every other byte as itself. */
function tsvBytes(w: BinWriter, b: Buffer): void {
  w.ensure(b.length * 2);
  const o = w.buf;
  let p = w.pos;
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    const e = TSV_BYTE_ESCAPES[c]!;
    if (e) {
      o[p++] = 0x5c;
      o[p++] = e;
    } else o[p++] = c;
  }
  w.pos = p;
}

const DIGITS = /^\d{1,20}$/;
function checkUInt(v: number | string, max: number): string {
  // Everything written as text must be a plain decimal integer in range: no exponent, sign or fraction.
  if (typeof v === 'string') {
    if (!DIGITS.test(v) || (v.length === 20 && BigInt(v) > 0xffff_ffff_ffff_ffffn)) throw new RangeError(`not a UInt64: ${v}`);
    return v;
  }
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`not an unsigned integer <= ${max}: ${v}`);
  return String(v);
}

function tsvEncoder<R>(cols: Columns<R>): (rows: readonly R[]) => Buffer {
  const MAX: Record<string, number> = { UInt8: 0xff, UInt16: 0xffff, UInt32: 0xffff_ffff, UInt64: Number.MAX_SAFE_INTEGER };
  const fields = cols.map(([name, type], i) => {
    const v = `r[${JSON.stringify(name)}]`;
    const sep = i === cols.length - 1 ? 10 : 9;
    let text: string;
    switch (type) {
      case 'Date':
        text = `(DATE.test(${v}) ? ${v} : bad(${v}))`;
        break;
      case 'String':
        text = `tsvString(${v})`;
        break;
      case 'Array(String)':
        text = `tsvStringArray(${v})`;
        break;
      case 'Packed':
        return `tsvBytes(w, packEvent(r)); w.u8(${sep});`;
      case 'UInt64':
        text = `(typeof ${v} === 'number' ? checkUInt(${v}, ${MAX[type]}) : (${v}.length < 20 && DIGITS.test(${v}) ? ${v} : checkUInt(${v}, 0)))`;
        break;
      default:
        text = `((${v} >>> 0) === ${v} && ${v} <= ${MAX[type]} ? '' + ${v} : checkUInt(${v}, ${MAX[type]}))`;
    }
    return `w.text(${text}); w.u8(${sep});`;
  });
  const body = `const DATE = /^\\d{4}-\\d{2}-\\d{2}$/;
  const DIGITS = /^\\d{1,20}$/;
  const bad = (v) => { throw new RangeError('not a Date: ' + v); };
  return function encode(rows) {
    const w = new BinWriter(Math.max(1024, rows.length * 300));
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      ${fields.join('\n      ')}
    }
    return w.take();
  };`;
  return new Function('BinWriter', 'tsvString', 'tsvStringArray', 'checkUInt', 'tsvBytes', 'packEvent', body)(BinWriter, tsvString, tsvStringArray, checkUInt, tsvBytes, packEvent);
}

// ---------------------------------------------------------------- per table

export interface TableEncoder<R> {
  columns: string[];
  RowBinary: (rows: readonly R[]) => Buffer;
  TabSeparated: (rows: readonly R[]) => Buffer;
}

function tableEncoder<R>(cols: Columns<R>): TableEncoder<R> {
  return { columns: columnNames(cols as Columns<unknown>), RowBinary: binaryEncoder(cols), TabSeparated: tsvEncoder(cols) };
}

export const hopEventEncoder = tableEncoder<HopEventRow>(HOP_EVENT_COLUMNS);
export const flowPartEncoder = tableEncoder<FlowPartRow>(FLOW_PART_COLUMNS);
export const rejectedEncoder = tableEncoder<RejectedRow>(REJECTED_COLUMNS);
