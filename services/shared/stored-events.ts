/**
 * How hop_events stores an event (migration 5), and the one reader of its rows.
 *
 * ClickHouse keeps a file per column per part. A lookup of one flow reads each column it
 * selects once in every part, and with a cold page cache each of those is a random disk
 * read (bench/timeline-lookup.ts: ~one per column per part); inserts and merges also pay
 * per column. So the table keeps as columns only what is sorted, filtered or grouped on:
 * the sorting key (flow_id, wall_ts_ns, agent, boot, seq), the names (node, netns, pod,
 * reason_name, location) and kind. The other 35 fields sit in one String of fixed layout,
 * `packed` (PACKED_FIELDS, little endian, addresses as their 16 wire bytes). ALIAS columns
 * under the old names decode it in SQL, so ad-hoc queries (`WHERE saddr = ...`,
 * `SELECT tcp_seq`) read as before; the services select `packed` itself in RowBinary and
 * decode it here, which also spares ClickHouse the JSON.
 */
import type { ClickHouseClient } from '@clickhouse/client';
import type { TimelineRow } from '../correlator/timeline.js';
import { AF_INET, cstring, formatAddr, Kind, putAddr } from './record.js';

type PackedType = 'UInt8' | 'UInt16' | 'UInt32' | 'UInt64' | 'Addr' | 'Name';

/** The layout of `packed`, in byte order. Append-only: a stored row's bytes never move. */
export const PACKED_FIELDS = [
  ['kernel_ts_ns', 'UInt64'], ['skb_id', 'UInt64'],
  ['netns_ino', 'UInt32'], ['ifindex', 'UInt32'], ['tcp_seq', 'UInt32'], ['tcp_ack', 'UInt32'], ['ct_id', 'UInt32'],
  ['ct_status', 'UInt32'], ['mark', 'UInt32'], ['aux0', 'UInt32'], ['aux1', 'UInt32'], ['aux2', 'UInt32'],
  ['isn_c', 'UInt32'], ['isn_s', 'UInt32'],
  ['sport', 'UInt16'], ['dport', 'UInt16'], ['tcp_window', 'UInt16'], ['payload_len', 'UInt16'], ['ip_id', 'UInt16'],
  ['flags', 'UInt16'], ['reply_sport', 'UInt16'], ['reply_dport', 'UInt16'], ['reason', 'UInt16'],
  ['hook', 'UInt8'], ['family', 'UInt8'], ['proto', 'UInt8'], ['dir', 'UInt8'], ['tcp_flags', 'UInt8'], ['ct_info', 'UInt8'],
  ['sk_state', 'UInt8'],
  // reply_*: kind CT only ('' otherwise); ifname: Latin-1, NUL-padded ('' for CT).
  ['saddr', 'Addr'], ['daddr', 'Addr'], ['reply_saddr', 'Addr'], ['reply_daddr', 'Addr'], ['ifname', 'Name'],
] as const satisfies readonly (readonly [string, PackedType])[];

export type PackedField = (typeof PACKED_FIELDS)[number][0];

const WIDTH: Record<PackedType, number> = { UInt8: 1, UInt16: 2, UInt32: 4, UInt64: 8, Addr: 16, Name: 16 };

/** Byte offset of each field in `packed`. */
export const PACKED_AT = {} as Record<PackedField, number>;
let size = 0;
for (const [name, type] of PACKED_FIELDS) {
  PACKED_AT[name] = size;
  size += WIDTH[type];
}
export const PACKED_SIZE = size;

/** The real columns, in insert order (correlator/encode.ts HOP_EVENT_COLUMNS lists their types). */
export const STORED_COLUMNS = ['event_date', 'flow_id', 'wall_ts_ns', 'agent', 'boot', 'seq', 'node', 'netns', 'pod', 'kind', 'reason_name', 'location', 'packed'] as const;

// ---------------------------------------------------------------- SQL

function aliasSql(name: PackedField, type: PackedType): string {
  const at = PACKED_AT[name] + 1;
  const sub = (n: number) => `substring(packed, ${at}, ${n})`;
  if (type === 'Name') return `${name} String ALIAS replaceAll(${sub(16)}, '\\0', '')`;
  if (type !== 'Addr') return `${name} ${type} ALIAS reinterpretAs${type}(${sub(WIDTH[type])})`;
  // family spelled out: 18.16 cannot expand an ALIAS that names another in a WHERE.
  const family = `reinterpretAsUInt8(substring(packed, ${PACKED_AT.family + 1}, 1))`;
  const text = `if(${family} = ${AF_INET}, IPv4NumToString(reinterpretAsUInt32(reverse(${sub(4)}))), IPv6NumToString(toFixedString(${sub(16)}, 16)))`;
  return `${name} String ALIAS ${name.startsWith('reply_') ? `if(kind = ${Kind.CT}, ${text}, '')` : text}`;
}

/**
 * hop_events' partitions: one per UTC day of wall_ts_ns (the day event_date holds). An
 * expression of wall_ts_ns rather than event_date itself because ClickHouse keeps, with
 * each part, the min and max of every column in the partition key: a lookup bounded in
 * wall_ts_ns (api/queries.ts flowEventsSql) then skips the parts of its day that hold
 * other hours without reading a byte of them. A day as filled is several parts, each the
 * merge of inserts made one after another, so each covers a stretch of the day; by
 * event_date every part of the day was read for a granule (about half the cold lookup's
 * time with 8 parts, bench/timeline-compaction.ts). Parts of such a key have no
 * min_date/max_date in system.parts (correlator/compact.ts).
 */
export const HOP_EVENTS_PARTITION = "toDate(toDateTime(intDiv(wall_ts_ns, 1000000000), 'UTC'))";

/**
 * hop_events in its latest layout (migrations 5 and 7 build it from older ones). The
 * sorting key starts with flow_id (the lookup) and ends with the event id, so a
 * redelivered event collapses onto its first copy. flow_id is the connection's (isn_c,
 * isn_s) identity when the agent saw its handshake, so the hops on both sides of NAT
 * share it; otherwise the 5-tuple's. `partitionBy`: only a test building migration 5's
 * table (by event_date) passes another.
 */
export const storedEventsTableSql = (table: string, partitionBy = HOP_EVENTS_PARTITION) => `CREATE TABLE IF NOT EXISTS ${table} (
  event_date Date,
  flow_id UInt64,
  wall_ts_ns UInt64,
  agent String,
  boot UInt64,
  seq UInt64,
  node String,
  netns String,
  pod String,
  kind UInt8,
  reason_name String,
  location String,
  packed String,
  ${PACKED_FIELDS.map(([n, t]) => aliasSql(n, t)).join(',\n  ')}
) ENGINE = ReplacingMergeTree()
PARTITION BY ${partitionBy}
ORDER BY (flow_id, wall_ts_ns, agent, boot, seq)`;

/**
 * SQL building `packed` from one SQL expression per field (the old table's columns, the
 * bench's generated ones). Addresses are their text, as formatAddr writes it.
 */
export function packSql(expr: (field: PackedField) => string): string {
  return `concat(${PACKED_FIELDS.map(([name, type]) => {
    const e = expr(name);
    switch (type) {
      case 'Addr':
        return `if(${expr('family')} = ${AF_INET}, concat(reverse(toFixedString(reinterpretAsString(IPv4StringToNum(${e})), 4)), toFixedString('', 12)), IPv6StringToNum(${e}))`;
      case 'Name':
        return `toFixedString(substring(${e}, 1, 16), 16)`;
      default:
        return `toFixedString(reinterpretAsString(to${type}(${e})), ${WIDTH[type]})`;
    }
  }).join(',\n  ')})`;
}

// ---------------------------------------------------------------- JS

/** The packed fields of a row object (correlator/rows.ts HopEventRow): UInt64 as decimal strings or numbers. */
export type PackedInput = { [K in PackedField]: K extends 'saddr' | 'daddr' | 'reply_saddr' | 'reply_daddr' | 'ifname' ? string : number | string };

/** `packed` of a row object: what binary-rows.ts writes straight from a record. */
export function packEvent(r: PackedInput, out: Buffer = Buffer.alloc(PACKED_SIZE)): Buffer {
  out.fill(0, 0, PACKED_SIZE);
  const family = Number(r.family);
  for (const [name, type] of PACKED_FIELDS) {
    const at = PACKED_AT[name];
    const v = r[name];
    switch (type) {
      case 'UInt8':
        out.writeUInt8(Number(v), at);
        break;
      case 'UInt16':
        out.writeUInt16LE(Number(v), at);
        break;
      case 'UInt32':
        out.writeUInt32LE(Number(v), at);
        break;
      case 'UInt64':
        out.writeBigUInt64LE(BigInt(v), at);
        break;
      case 'Addr':
        if (v !== '') putAddr(out, at, family, String(v));
        break;
      case 'Name':
        out.write(String(v).slice(0, 16), at, 'latin1');
    }
  }
  return out;
}

/** Columns the services read, after an optional leading `flow_id AS fid`. */
export const EVENT_READ_COLUMNS = 'wall_ts_ns, agent, boot, seq, node, netns, pod, kind, reason_name, location, packed';

/** The packed fields a TimelineRow has (the others, kernel_ts_ns, skb_id and mark, stay unread), with their offsets; `reply`: '' unless kind CT. */
const READ_FIELDS = PACKED_FIELDS.filter(([n]) => n !== 'kernel_ts_ns' && n !== 'skb_id' && n !== 'mark').map(([name, type]) => ({ name, type, at: PACKED_AT[name], reply: name.startsWith('reply_') }));

export class MalformedRowsError extends Error {}

const TWO32 = 0x1_0000_0000;

/** Decodes RowBinary rows of ([fid UInt64,] EVENT_READ_COLUMNS) into TimelineRows; UInt64 as decimal strings, as JSON gives them. */
export function decodeEventRows(buf: Buffer, withFid: false): TimelineRow[];
export function decodeEventRows(buf: Buffer, withFid: true): (TimelineRow & { fid: string })[];
export function decodeEventRows(buf: Buffer, withFid: boolean): TimelineRow[] {
  const out: TimelineRow[] = [];
  let p = 0;
  const need = (n: number) => {
    if (p + n > buf.length) throw new MalformedRowsError(`RowBinary event rows cut short at byte ${p} of ${buf.length}`);
  };
  const u64 = () => {
    need(8);
    const lo = buf.readUInt32LE(p);
    const hi = buf.readUInt32LE(p + 4);
    p += 8;
    return hi < 0x20_0000 ? String(hi * TWO32 + lo) : ((BigInt(hi) << 32n) | BigInt(lo)).toString();
  };
  /** A String's LEB128 length, its bytes checked to be there. */
  const len = () => {
    let n = 0;
    let shift = 0;
    for (;;) {
      need(1);
      const b = buf[p++]!;
      n += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
      shift += 7;
    }
    need(n);
    return n;
  };
  const text = () => {
    const n = len();
    p += n;
    return buf.toString('utf8', p - n, p);
  };
  while (p < buf.length) {
    const fid = withFid ? u64() : undefined;
    const r = { wall_ts_ns: u64() } as Record<string, unknown>;
    if (fid !== undefined) r.fid = fid;
    r.agent = text();
    r.boot = u64();
    r.seq = u64();
    r.node = text();
    r.netns = text();
    r.pod = text();
    need(1);
    const kind = buf[p++]!;
    r.kind = kind;
    r.reason_name = text();
    r.location = text();
    const n = len();
    if (n !== PACKED_SIZE) throw new MalformedRowsError(`packed is ${n} bytes, not ${PACKED_SIZE}`);
    const at = p;
    p += n;
    const family = buf[at + PACKED_AT.family]!;
    for (const { name, type, at: fieldAt, reply } of READ_FIELDS) {
      const o = at + fieldAt;
      switch (type) {
        case 'UInt8':
          r[name] = buf[o];
          break;
        case 'UInt16':
          r[name] = buf.readUInt16LE(o);
          break;
        case 'UInt32':
          r[name] = buf.readUInt32LE(o);
          break;
        case 'Addr':
          r[name] = reply && kind !== Kind.CT ? '' : formatAddr(buf, o, family);
          break;
        case 'Name':
          r[name] = cstring(buf, o, 16);
      }
    }
    out.push(r as unknown as TimelineRow);
  }
  return out;
}

/**
 * Runs a SELECT of ([flow_id AS fid,] EVENT_READ_COLUMNS) and decodes its rows.
 * wait_end_of_query: an error half way through would otherwise arrive as text after a
 * 200 and bytes already sent.
 */
export async function queryEventRows(ch: ClickHouseClient, query: string, withFid: true): Promise<(TimelineRow & { fid: string })[]>;
export async function queryEventRows(ch: ClickHouseClient, query: string, withFid: false): Promise<TimelineRow[]>;
export async function queryEventRows(ch: ClickHouseClient, query: string, withFid: boolean): Promise<TimelineRow[]> {
  const r = await ch.exec({ query: `${query}\nFORMAT RowBinary`, clickhouse_settings: { wait_end_of_query: 1 } });
  const chunks: Buffer[] = [];
  for await (const c of r.stream) chunks.push(c as Buffer);
  return decodeEventRows(Buffer.concat(chunks), withFid as true);
}
