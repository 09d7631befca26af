/**
 * Turns one agent batch into ClickHouse rows: a hop_events row per record and a
 * flow_parts partial summary per flow in the batch. Pure and deterministic: the
 * same batch always yields the same rows, which is what makes redelivery harmless.
 */
import type { DecodedBatch } from '../shared/batch.js';
import { connFlowId, direction, flowId, sentByClient } from '../shared/flowkey.js';
import { checkRecord, decodeRecord, formatAddr, Kind, RECORD_SIZE, type CorruptReason } from '../shared/record.js';

/**
 * What a stored hop event says about its packet or socket: the columns that the stored row
 * (HopEventRow) and the timeline's reading of it (timeline.ts TimelineRow) share.
 */
export interface HopFields {
  node: string;
  netns_ino: number;
  netns: string;
  pod: string;
  ifindex: number;
  ifname: string;
  hook: number;
  kind: number;
  family: number;
  proto: number;
  /** 0 when saddr:sport is the canonical first endpoint of the flow, 1 otherwise. */
  dir: number;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  tcp_seq: number;
  tcp_ack: number;
  tcp_flags: number;
  tcp_window: number;
  payload_len: number;
  ip_id: number;
  flags: number;
  ct_id: number;
  ct_status: number;
  ct_info: number;
  reply_saddr: string;
  reply_daddr: string;
  reply_sport: number;
  reply_dport: number;
  reason: number;
}

export interface HopEventRow extends HopFields {
  event_date: string;
  flow_id: number;
  wall_ts_ns: string;
  kernel_ts_ns: string;
  agent: string;
  boot: number;
  seq: number;
  /** Kernel name of the drop or reset reason, from the capturing node's BTF ('' when unknown). */
  reason_name: string;
  /** Kernel function that freed a dropped skb ('' when unknown). */
  location: string;
  sk_state: number;
  skb_id: string;
  mark: number;
  /** Kind-specific words (bpf/events.h hop_pkt.aux). */
  aux0: number;
  aux1: number;
  aux2: number;
  isn_c: number;
  isn_s: number;
}

export interface FlowPartRow {
  event_date: string;
  flow_id: number;
  part_key: string;
  proto: number;
  a_addr: string;
  a_port: number;
  b_addr: string;
  b_port: number;
  first_ts_ns: string;
  last_ts_ns: string;
  events: number;
  packets: number;
  bytes: number;
  drops: number;
  resets: number;
  retrans: number;
  nodes: string[];
}

export interface BadRecord {
  index: number;
  reason: CorruptReason | 'wall_time_out_of_range';
}

export interface BatchRows {
  events: HopEventRow[];
  parts: FlowPartRow[];
  bad: BadRecord[];
}

const NS_PER_DAY = 86_400_000_000_000n;
const dayCache = new Map<bigint, string>();

/** 'YYYY-MM-DD' (UTC) of a Unix-epoch ns timestamp. */
export function eventDate(wallNs: bigint): string {
  const day = wallNs / NS_PER_DAY;
  let s = dayCache.get(day);
  if (s === undefined) {
    s = new Date(Number(day) * 86_400_000).toISOString().slice(0, 10);
    if (dayCache.size > 1024) dayCache.clear();
    dayCache.set(day, s);
  }
  return s;
}

/** Wall time (ns since the epoch) as two 32-bit halves, so the hot path needs no BigInt. */
export const wallBig = (hi: number, lo: number) => (BigInt(hi) << 32n) | BigInt(lo);

interface Acc {
  row: FlowPartRow;
  /** a/b set from a packet's direction (client first) rather than canonical order. */
  oriented: boolean;
  firstHi: number;
  firstLo: number;
  lastHi: number;
  lastLo: number;
}

/**
 * The flow_parts rows of one batch: per flow, its counters and time span. Kept per
 * batch (part_key names the batch) so a redelivered batch replaces, not adds.
 */
export class FlowParts {
  private readonly flows = new Map<number, Acc>();
  constructor(private readonly b: DecodedBatch) {}

  /** Counts the valid record at `off` into flow `fid`; wall time as hi/lo halves. */
  add(off: number, fid: number, dir: 0 | 1, wallHi: number, wallLo: number, isnC: number, isnS: number): void {
    const buf = this.b.records;
    const proto = buf[off + 28]!;
    const sport = buf.readUInt16LE(off + 80);
    const dport = buf.readUInt16LE(off + 82);
    // A TCP socket event before the port is bound (connect's first state change) names no flow.
    if (proto === 6 && (sport === 0 || dport === 0)) return;
    const kind = buf[off + 25]!;
    let acc = this.flows.get(fid);
    if (!acc) {
      const s = formatAddr(buf, off + 48, buf[off + 27]!);
      const d = formatAddr(buf, off + 64, buf[off + 27]!);
      const [aAddr, aPort, bAddr, bPort] = dir === 0 ? [s, sport, d, dport] : [d, dport, s, sport];
      acc = {
        row: { event_date: '', flow_id: fid, part_key: `${this.b.agent}:${this.b.boot}:${this.b.firstSeq}`, proto, a_addr: aAddr, a_port: aPort, b_addr: bAddr, b_port: bPort, first_ts_ns: '', last_ts_ns: '', events: 0, packets: 0, bytes: 0, drops: 0, resets: 0, retrans: 0, nodes: [this.b.node] },
        oriented: false,
        firstHi: wallHi,
        firstLo: wallLo,
        lastHi: wallHi,
        lastLo: wallLo,
      };
      this.flows.set(fid, acc);
    }
    const row = acc.row;
    if (!acc.oriented && isnC !== 0 && kind === Kind.PACKET) {
      // Client endpoint first, as this node saw the tuple.
      const client = sentByClient(buf.readUInt32LE(off + 84), buf.readUInt32LE(off + 88), buf[off + 29]!, isnC, isnS);
      const s = formatAddr(buf, off + 48, buf[off + 27]!);
      const d = formatAddr(buf, off + 64, buf[off + 27]!);
      Object.assign(row, client ? { a_addr: s, a_port: sport, b_addr: d, b_port: dport } : { a_addr: d, a_port: dport, b_addr: s, b_port: sport });
      acc.oriented = true;
    }
    row.events++;
    if (wallHi < acc.firstHi || (wallHi === acc.firstHi && wallLo < acc.firstLo)) {
      acc.firstHi = wallHi;
      acc.firstLo = wallLo;
    }
    if (wallHi > acc.lastHi || (wallHi === acc.lastHi && wallLo > acc.lastLo)) {
      acc.lastHi = wallHi;
      acc.lastLo = wallLo;
    }
    switch (kind) {
      case Kind.PACKET:
        row.packets++;
        row.bytes += buf.readUInt16LE(off + 44);
        break;
      case Kind.DROP:
        row.drops++;
        break;
      case Kind.RST_SENT:
      case Kind.RST_RECV:
        row.resets++;
        break;
      case Kind.RETRANS:
        row.retrans++;
        break;
    }
  }

  rows(): FlowPartRow[] {
    const out: FlowPartRow[] = [];
    for (const acc of this.flows.values()) {
      const first = wallBig(acc.firstHi, acc.firstLo);
      acc.row.event_date = eventDate(first);
      acc.row.first_ts_ns = first.toString();
      acc.row.last_ts_ns = wallBig(acc.lastHi, acc.lastLo).toString();
      out.push(acc.row);
    }
    return out;
  }
}

/** The batch's clock offset as [hi (signed), lo] 32-bit halves: offset = hi * 2^32 + lo. */
export function offsetHalves(b: DecodedBatch): [number, number] {
  return [Number(b.clockOffsetNs >> 32n), Number(b.clockOffsetNs & 0xffff_ffffn)];
}

/** High 32 bits of the record's wall time (kernel time + offset hi/lo); outside [0, 2^32) when the wall time is outside UInt64. */
export function wallHi(buf: Buffer, off: number, offHi: number, offLo: number): number {
  return buf.readUInt32LE(off + 4) + offHi + (buf.readUInt32LE(off) + offLo >= 0x1_0000_0000 ? 1 : 0);
}

/** Low 32 bits of the record's wall time. */
export function wallLo(buf: Buffer, off: number, offLo: number): number {
  return (buf.readUInt32LE(off) + offLo) % 0x1_0000_0000;
}

/**
 * Records the correlator cannot store, with why: corrupt ones (checkRecord) and those
 * whose wall time (kernel time + the batch's clock offset) falls outside UInt64.
 */
export function badRecords(b: DecodedBatch): BadRecord[] {
  const bad: BadRecord[] = [];
  const [offHi, offLo] = offsetHalves(b);
  for (let i = 0; i < b.count; i++) {
    const off = i * RECORD_SIZE;
    const reason = checkRecord(b.records, off);
    if (reason) {
      bad.push({ index: i, reason });
      continue;
    }
    const hi = wallHi(b.records, off, offHi, offLo);
    if (hi < 0 || hi > 0xffff_ffff) bad.push({ index: i, reason: 'wall_time_out_of_range' });
  }
  return bad;
}

/** Record i's flow: its connection (ISN pair) when known, else its 5-tuple. */
export function recordFlowId(b: DecodedBatch, i: number, isnC: number, isnS: number): number {
  return isnC !== 0 ? connFlowId(isnC, isnS) : flowId(b.records, i * RECORD_SIZE);
}

export function reasonName(b: DecodedBatch, kind: number, reason: number): string {
  if (kind === Kind.DROP) return b.dropReasonNames?.get(reason) ?? '';
  if (kind === Kind.RST_SENT) return b.resetReasonNames?.get(reason) ?? '';
  return '';
}

/** Row objects for a batch: for the text formats, the JSONEachRow fallback and tests (RowBinary goes through binary-rows.ts). */
export function batchToRows(b: DecodedBatch): BatchRows {
  const events: HopEventRow[] = [];
  const bad = badRecords(b);
  const skip = new Set(bad.map((x) => x.index));
  const parts = new FlowParts(b);
  for (let i = 0; i < b.count; i++) {
    if (skip.has(i)) continue;
    const off = i * RECORD_SIZE;
    const r = decodeRecord(b.records, off);
    const isnC = b.isnC(i);
    const isnS = b.isnS(i);
    const fid = recordFlowId(b, i, isnC, isnS);
    const dir = direction(b.records, off);
    const wall = r.tsNs + b.clockOffsetNs;
    events.push({
      event_date: eventDate(wall),
      flow_id: fid,
      wall_ts_ns: wall.toString(),
      kernel_ts_ns: r.tsNs.toString(),
      agent: b.agent,
      boot: b.boot,
      seq: b.seqOf(i),
      node: b.node,
      netns_ino: r.netnsIno,
      netns: b.netnsNames?.get(r.netnsIno) ?? '',
      pod: '',
      ifindex: r.ifindex,
      ifname: r.ifname,
      hook: r.hook,
      kind: r.kind,
      family: r.family,
      proto: r.l4proto,
      dir,
      saddr: r.tuple.saddr,
      daddr: r.tuple.daddr,
      sport: r.tuple.sport,
      dport: r.tuple.dport,
      tcp_seq: r.seq,
      tcp_ack: r.ack,
      tcp_flags: r.tcpFlags,
      tcp_window: r.window,
      payload_len: r.payloadLen,
      ip_id: r.ipId,
      flags: r.flags,
      ct_id: r.ctId,
      ct_status: r.ctStatus,
      ct_info: r.ctInfo,
      reply_saddr: r.reply?.saddr ?? '',
      reply_daddr: r.reply?.daddr ?? '',
      reply_sport: r.reply?.sport ?? 0,
      reply_dport: r.reply?.dport ?? 0,
      reason: r.reason,
      reason_name: reasonName(b, r.kind, r.reason),
      location: r.kind === Kind.DROP ? (b.symbols?.get((BigInt(r.aux[1]) << 32n) | BigInt(r.aux[0])) ?? '') : '',
      sk_state: r.skState,
      skb_id: r.skbId.toString(),
      mark: r.mark,
      aux0: r.aux[0],
      aux1: r.aux[1],
      aux2: r.aux[2],
      isn_c: isnC,
      isn_s: isnS,
    });
    parts.add(off, fid, dir, Number(wall >> 32n), Number(wall & 0xffff_ffffn), isnC, isnS);
  }
  return { events, parts: parts.rows(), bad };
}
