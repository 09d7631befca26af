/**
 * Turns one agent batch into ClickHouse rows: a hop_events row per record and a
 * flow_parts partial summary per flow in the batch. Pure and deterministic: the
 * same batch always yields the same rows, which is what makes redelivery harmless.
 */
import type { DecodedBatch } from '../shared/batch.js';
import { connFlowId, direction, flowId, sentByClient } from '../shared/flowkey.js';
import { checkRecord, decodeRecord, Kind, RECORD_SIZE, type CorruptReason } from '../shared/record.js';

export interface HopEventRow {
  event_date: string;
  flow_id: number;
  wall_ts_ns: string;
  kernel_ts_ns: string;
  agent: string;
  boot: number;
  seq: number;
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
  reason: CorruptReason;
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

interface Acc {
  row: FlowPartRow;
  /** a/b set from a packet's direction (client first) rather than canonical order. */
  oriented: boolean;
  first: bigint;
  last: bigint;
  nodes: Set<string>;
}

function reasonName(b: DecodedBatch, kind: number, reason: number): string {
  if (kind === Kind.DROP) return b.dropReasonNames?.get(reason) ?? '';
  if (kind === Kind.RST_SENT) return b.resetReasonNames?.get(reason) ?? '';
  return '';
}

export function batchToRows(b: DecodedBatch): BatchRows {
  const events: HopEventRow[] = [];
  const bad: BadRecord[] = [];
  const flows = new Map<number, Acc>();
  const partKey = `${b.agent}:${b.boot}:${b.firstSeq}`;
  for (let i = 0; i < b.count; i++) {
    const off = i * RECORD_SIZE;
    const reason = checkRecord(b.records, off);
    if (reason) {
      bad.push({ index: i, reason });
      continue;
    }
    const r = decodeRecord(b.records, off);
    const isnC = b.isnC(i);
    const isnS = b.isnS(i);
    const fid = isnC !== 0 ? connFlowId(isnC, isnS) : flowId(b.records, off);
    const dir = direction(b.records, off);
    const wall = r.tsNs + b.clockOffsetNs;
    const wallStr = wall.toString();
    const date = eventDate(wall);
    events.push({
      event_date: date,
      flow_id: fid,
      wall_ts_ns: wallStr,
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
    // A TCP socket event before the port is bound (connect's first state change) names no flow.
    if (r.l4proto === 6 && (r.tuple.sport === 0 || r.tuple.dport === 0)) continue;
    let acc = flows.get(fid);
    if (!acc) {
      const [aAddr, aPort, bAddr, bPort] = dir === 0 ? [r.tuple.saddr, r.tuple.sport, r.tuple.daddr, r.tuple.dport] : [r.tuple.daddr, r.tuple.dport, r.tuple.saddr, r.tuple.sport];
      acc = {
        row: { event_date: date, flow_id: fid, part_key: partKey, proto: r.l4proto, a_addr: aAddr, a_port: aPort, b_addr: bAddr, b_port: bPort, first_ts_ns: '', last_ts_ns: '', events: 0, packets: 0, bytes: 0, drops: 0, resets: 0, retrans: 0, nodes: [] },
        oriented: false,
        first: wall,
        last: wall,
        nodes: new Set(),
      };
      flows.set(fid, acc);
    }
    if (!acc.oriented && isnC !== 0 && r.kind === Kind.PACKET) {
      // Client endpoint first, as this node saw the tuple.
      const t = r.tuple;
      const client = sentByClient(r.seq, r.ack, r.tcpFlags, isnC, isnS);
      Object.assign(acc.row, client ? { a_addr: t.saddr, a_port: t.sport, b_addr: t.daddr, b_port: t.dport } : { a_addr: t.daddr, a_port: t.dport, b_addr: t.saddr, b_port: t.sport });
      acc.oriented = true;
    }
    const row = acc.row;
    row.events++;
    if (wall < acc.first) {
      acc.first = wall;
      row.event_date = date;
    }
    if (wall > acc.last) acc.last = wall;
    acc.nodes.add(b.node);
    switch (r.kind) {
      case Kind.PACKET:
        row.packets++;
        row.bytes += r.payloadLen;
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
  const parts: FlowPartRow[] = [];
  for (const acc of flows.values()) {
    acc.row.first_ts_ns = acc.first.toString();
    acc.row.last_ts_ns = acc.last.toString();
    acc.row.nodes = [...acc.nodes].sort();
    parts.push(acc.row);
  }
  return { events, parts, bad };
}
