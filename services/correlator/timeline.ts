/**
 * Timeline assembly for one flow: pure, no I/O.
 *
 * Input is the flow's hop-event rows as stored in ClickHouse (`hop_events`, column
 * names kept), in any order, possibly with redelivered copies. Output is:
 *  - every event in time order (ties broken by event id: agent, boot, seq), with the
 *    time since the previous event and since the flow's first event, and its
 *    direction relative to the flow's initiator (from the connection's ISNs when
 *    known, which NAT keeps; the stored `dir` is the tuple's canonical order as seen
 *    at that hop, which a DNAT or SNAT can flip);
 *  - a per-packet view: the same packet seen at several hooks or nodes, identified by
 *    (direction, tcp seq, tcp ack, payload length, tcp flags, and IP ID where nonzero),
 *    with its hops in order and the time between consecutive hops (that hop's latency).
 *
 * Times are ns on the recording node's clock. Deltas between hops on different nodes
 * include the clock offset between those nodes (not corrected yet): such hops are
 * marked `crossNode`.
 */
import { sentByClient } from '../shared/flowkey.js';
import { Hook, Kind, TcpState } from '../shared/record.js';
import type { HopFields } from './rows.js';

/** ClickHouse returns UInt64 as a decimal string (JSON); tests may pass numbers or bigints. */
export type U64 = string | number | bigint;

/** A hop_events row as the timeline reads it (column names kept; a subset of correlator/rows.ts HopEventRow). */
export interface TimelineRow extends HopFields {
  wall_ts_ns: U64;
  agent: string;
  boot: U64;
  seq: U64;
  sk_state: number;
  /** Kernel names of the reason and of a drop's freeing function; aux words (bpf/events.h). Optional: older callers omit them. */
  reason_name?: string;
  location?: string;
  aux0?: number;
  aux1?: number;
  aux2?: number;
  /** The connection's client and server ISNs (0 = unknown); absent in rows from before they were stored. */
  isn_c?: number;
  isn_s?: number;
}

/** The fields the timeline reads (TimelineRow): hop_events columns or, for the packed ones, ALIAS columns (shared/stored-events.ts). The services read EVENT_READ_COLUMNS instead. */
export const EVENT_COLUMNS: readonly (keyof TimelineRow)[] = [
  'wall_ts_ns', 'agent', 'boot', 'seq', 'node', 'netns_ino', 'netns', 'pod', 'ifindex', 'ifname',
  'hook', 'kind', 'family', 'proto', 'dir', 'saddr', 'daddr', 'sport', 'dport',
  'tcp_seq', 'tcp_ack', 'tcp_flags', 'tcp_window', 'payload_len', 'ip_id', 'flags',
  'ct_id', 'ct_status', 'ct_info', 'reply_saddr', 'reply_daddr', 'reply_sport', 'reply_dport',
  'reason', 'sk_state', 'isn_c', 'isn_s', 'reason_name', 'location', 'aux0', 'aux1', 'aux2',
];

export interface Endpoint {
  addr: string;
  port: number;
}

/** `forward` = sent by the flow's initiator (`Timeline.from`), `reverse` = towards it. */
export type Direction = 'forward' | 'reverse';

export const isnC = (r: TimelineRow) => Number(r.isn_c ?? 0);
export const isnS = (r: TimelineRow) => Number(r.isn_s ?? 0);

/**
 * Forward = sent by the client: from the ISNs when known (the same on every side of a
 * NAT), else from the tuple's canonical order at this hop against `forwardDir`, the
 * initiator's.
 */
export function directionOf(r: TimelineRow, forwardDir: number): Direction {
  const c = isnC(r);
  if (c === 0) return r.dir === forwardDir ? 'forward' : 'reverse';
  return sentByClient(r.tcp_seq, r.tcp_ack, r.tcp_flags, c, isnS(r)) ? 'forward' : 'reverse';
}

export interface TimelineEvent {
  /** Position in `Timeline.events`. */
  index: number;
  /** Wall-clock time on the recording node, ns since the Unix epoch (decimal string). */
  tsNs: string;
  /** The same time, RFC 3339 UTC with ns precision. */
  time: string;
  /** µs since the flow's first event (ns precision: three decimals). */
  sinceStartUs: number;
  /** µs since the previous event of the flow (0 for the first). */
  sincePrevUs: number;
  /** Globally unique event id. */
  agent: string;
  boot: string;
  seq: string;
  node: string;
  netns: string;
  netnsIno: number;
  pod: string;
  ifindex: number;
  ifname: string;
  /** Hook point name (lower case hop_hook name, e.g. `netif_receive`). */
  hook: string;
  /** Event kind name (lower case hop_kind name, e.g. `packet`, `rst_sent`). */
  kind: string;
  direction: Direction;
  src: Endpoint;
  dst: Endpoint;
  /** TCP flags as `SYN|ACK`, empty when none. */
  tcpFlags: string;
  tcpSeq: number;
  tcpAck: number;
  tcpWindow: number;
  /** L4 payload bytes. */
  payloadLen: number;
  ipId: number;
  /** Socket state name (e.g. `LISTEN`), empty when not known. */
  skState: string;
  /** Drop reason (kfree_skb) or reset reason (tcp_send_reset), kernel enum value; 0 = none. */
  reason: number;
  /** Conntrack entry seen with the event, or null. */
  ct: { id: number; status: number; info: number; reply: { src: Endpoint; dst: Endpoint } | null } | null;
  /** Index into `Timeline.packets` when this event is a hop of a packet, else null. */
  packet: number | null;
}

export interface PacketHop {
  /** Index into `Timeline.events`. */
  event: number;
  tsNs: string;
  node: string;
  netns: string;
  ifname: string;
  hook: string;
  kind: string;
  /** µs since the packet's previous hop (null for the first hop): that hop's latency. */
  deltaUs: number | null;
  /** The previous hop was on another node: deltaUs includes the clock offset between them. */
  crossNode: boolean;
}

export interface PacketPath {
  /** Position in `Timeline.packets`. */
  index: number;
  direction: Direction;
  tcpFlags: string;
  tcpSeq: number;
  tcpAck: number;
  payloadLen: number;
  /** First nonzero IP ID seen for the packet, 0 when none. */
  ipId: number;
  hops: PacketHop[];
  /** µs from the first hop to the last. */
  totalUs: number;
  /** The packet's last hop is a drop. */
  dropped: boolean;
}

export interface Timeline {
  /** The flow's initiator: the SYN's sender when seen, else the canonical first endpoint. */
  from: Endpoint;
  to: Endpoint;
  /** How `from` was chosen: `syn` (a SYN or SYN-ACK was seen) or `canonical` (a->b order). */
  orientation: 'syn' | 'canonical';
  startNs: string;
  endNs: string;
  durationUs: number;
  /** Nodes in order of first appearance. */
  nodes: string[];
  /** Input rows dropped as copies of an event id already seen (redelivery). */
  duplicates: number;
  events: TimelineEvent[];
  packets: PacketPath[];
}

/** TCP header flag bits (RFC 9293, RFC 3168): a wire format, not the kernel record ABI. */
const TCP_FLAG_BITS: readonly (readonly [number, string])[] = [
  [0x01, 'FIN'],
  [0x02, 'SYN'],
  [0x04, 'RST'],
  [0x08, 'PSH'],
  [0x10, 'ACK'],
  [0x20, 'URG'],
  [0x40, 'ECE'],
  [0x80, 'CWR'],
];
const TCP_SYN = 0x02;
const TCP_ACK = 0x10;
const IPPROTO_TCP = 6;

function invert(o: Record<string, number>, lower: boolean): Map<number, string> {
  return new Map(Object.entries(o).map(([k, v]) => [v, lower ? k.toLowerCase() : k]));
}
const KIND_NAMES = invert(Kind, true);
const HOOK_NAMES = invert(Hook, true);
const STATE_NAMES = invert(TcpState, false);

export function kindName(kind: number): string {
  return KIND_NAMES.get(kind) ?? `unknown(${kind})`;
}

export function hookName(hook: number): string {
  return HOOK_NAMES.get(hook) ?? `unknown(${hook})`;
}

/** `LISTEN`, `ESTABLISHED`...; empty for 0 (unknown). */
export function tcpStateName(state: number): string {
  if (state === TcpState.UNSPECIFIED) return '';
  return STATE_NAMES.get(state) ?? `unknown(${state})`;
}

/** `SYN|ACK`; empty for 0. */
export function tcpFlagNames(flags: number): string {
  return TCP_FLAG_BITS.filter(([bit]) => (flags & bit) !== 0)
    .map(([, name]) => name)
    .join('|');
}

/** ns -> µs keeping ns precision (exact below 2^53 ns, about 104 days). */
export function nsToUs(ns: bigint): number {
  return Number(ns) / 1000;
}

/** RFC 3339 UTC with nine fractional digits, from ns since the epoch. */
export function isoNs(ns: bigint): string {
  const ms = ns / 1_000_000n;
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0');
  return `${new Date(Number(ms)).toISOString().slice(0, 19)}.${frac}Z`;
}

/** Kinds whose record describes a packet (an skb), so they can be hops of one. */
const PACKET_KINDS: ReadonlySet<number> = new Set([Kind.PACKET, Kind.DROP]);

interface Sorted {
  row: TimelineRow;
  ts: bigint;
  boot: bigint;
  seq: bigint;
}

function compareEvents(x: Sorted, y: Sorted): number {
  if (x.ts !== y.ts) return x.ts < y.ts ? -1 : 1;
  if (x.row.agent !== y.row.agent) return x.row.agent < y.row.agent ? -1 : 1;
  if (x.boot !== y.boot) return x.boot < y.boot ? -1 : 1;
  if (x.seq !== y.seq) return x.seq < y.seq ? -1 : 1;
  return 0;
}

/** `rows` in the order the store reads events: time, then event id (agent, boot, seq). */
export function inEventOrder(rows: readonly TimelineRow[]): TimelineRow[] {
  return rows.map((row) => ({ row, ts: BigInt(row.wall_ts_ns), boot: BigInt(row.boot), seq: BigInt(row.seq) })).sort(compareEvents).map((x) => x.row);
}

/** Which `dir` value is the initiator's, and who the initiator is. */
function orient(events: Sorted[]): { forwardDir: number; from: Endpoint; to: Endpoint; orientation: 'syn' | 'canonical' } {
  for (const { row: r } of events) {
    if (r.proto !== IPPROTO_TCP || (r.tcp_flags & TCP_SYN) === 0) continue;
    const src = { addr: r.saddr, port: r.sport };
    const dst = { addr: r.daddr, port: r.dport };
    // A SYN is sent by the initiator; a SYN-ACK towards it.
    if ((r.tcp_flags & TCP_ACK) === 0) return { forwardDir: r.dir, from: src, to: dst, orientation: 'syn' };
    return { forwardDir: 1 - r.dir, from: dst, to: src, orientation: 'syn' };
  }
  const first = events[0]!.row;
  const src = { addr: first.saddr, port: first.sport };
  const dst = { addr: first.daddr, port: first.dport };
  return first.dir === 0
    ? { forwardDir: 0, from: src, to: dst, orientation: 'canonical' }
    : { forwardDir: 0, from: dst, to: src, orientation: 'canonical' };
}

interface OpenPacket {
  path: PacketPath;
  /** Hop points already visited: a second visit is another packet (retransmit, dup ACK). */
  visited: Set<string>;
  lastTs: bigint;
  lastNode: string;
}

/**
 * Assembles the timeline of one flow. Returns null for no rows. Rows that repeat an
 * event id (agent, boot, seq) already seen are dropped and counted.
 */
export function buildTimeline(rows: readonly TimelineRow[]): Timeline | null {
  const seen = new Set<string>();
  const sorted: Sorted[] = [];
  let duplicates = 0;
  for (const row of rows) {
    const boot = BigInt(row.boot);
    const seq = BigInt(row.seq);
    const id = `${row.agent}\u0000${boot}\u0000${seq}`;
    if (seen.has(id)) {
      duplicates++;
      continue;
    }
    seen.add(id);
    sorted.push({ row, ts: BigInt(row.wall_ts_ns), boot, seq });
  }
  if (sorted.length === 0) return null;
  sorted.sort(compareEvents);

  const { forwardDir, from, to, orientation } = orient(sorted);
  const start = sorted[0]!.ts;
  const end = sorted[sorted.length - 1]!.ts;
  const nodes: string[] = [];
  const events: TimelineEvent[] = [];
  const packets: PacketPath[] = [];
  const open = new Map<string, OpenPacket[]>();

  let prev = start;
  for (const [index, { row: r, ts, boot, seq }] of sorted.entries()) {
    if (!nodes.includes(r.node)) nodes.push(r.node);
    const direction = directionOf(r, forwardDir);
    const ev: TimelineEvent = {
      index,
      tsNs: ts.toString(),
      time: isoNs(ts),
      sinceStartUs: nsToUs(ts - start),
      sincePrevUs: nsToUs(ts - prev),
      agent: r.agent,
      boot: boot.toString(),
      seq: seq.toString(),
      node: r.node,
      netns: r.netns,
      netnsIno: r.netns_ino,
      pod: r.pod,
      ifindex: r.ifindex,
      ifname: r.ifname,
      hook: hookName(r.hook),
      kind: kindName(r.kind),
      direction,
      src: { addr: r.saddr, port: r.sport },
      dst: { addr: r.daddr, port: r.dport },
      tcpFlags: tcpFlagNames(r.tcp_flags),
      tcpSeq: r.tcp_seq,
      tcpAck: r.tcp_ack,
      tcpWindow: r.tcp_window,
      payloadLen: r.payload_len,
      ipId: r.ip_id,
      skState: tcpStateName(r.sk_state),
      reason: r.reason,
      ct:
        r.kind === Kind.CT || r.ct_id !== 0
          ? {
              id: r.ct_id,
              status: r.ct_status,
              info: r.ct_info,
              reply: r.reply_saddr
                ? { src: { addr: r.reply_saddr, port: r.reply_sport }, dst: { addr: r.reply_daddr, port: r.reply_dport } }
                : null,
            }
          : null,
      packet: null,
    };
    prev = ts;
    events.push(ev);
    if (PACKET_KINDS.has(r.kind)) ev.packet = addHop(r, ev, ts, direction, open, packets);
  }

  return {
    from,
    to,
    orientation,
    startNs: start.toString(),
    endNs: end.toString(),
    durationUs: nsToUs(end - start),
    nodes,
    duplicates,
    events,
    packets,
  };
}

/**
 * Attaches a packet-like event to the packet it is a hop of, opening a new packet when
 * none fits. Among open packets with the same key, the newest one that has not yet
 * visited this hop point wins: same-key packets are retransmissions or duplicate ACKs,
 * and a retransmission that takes the path its lost original did not finish must not
 * be credited to the original (which would report an RTO as a hop's latency).
 */
function addHop(r: TimelineRow, ev: TimelineEvent, ts: bigint, direction: Direction, open: Map<string, OpenPacket[]>, packets: PacketPath[]): number {
  const key = `${direction}|${r.tcp_seq}|${r.tcp_ack}|${r.payload_len}|${r.tcp_flags}`;
  const point = `${r.node}\u0000${r.netns_ino}\u0000${r.ifindex}\u0000${r.hook}`;
  const candidates = open.get(key) ?? [];
  let pkt: OpenPacket | undefined;
  for (let i = candidates.length - 1; i >= 0; i--) {
    const c = candidates[i]!;
    const ipIdFits = r.ip_id === 0 || c.path.ipId === 0 || c.path.ipId === r.ip_id;
    if (ipIdFits && !c.visited.has(point)) {
      pkt = c;
      break;
    }
  }
  if (!pkt) {
    pkt = {
      visited: new Set(),
      lastTs: ts,
      lastNode: r.node,
      path: {
        index: packets.length,
        direction,
        tcpFlags: ev.tcpFlags,
        tcpSeq: r.tcp_seq,
        tcpAck: r.tcp_ack,
        payloadLen: r.payload_len,
        ipId: 0,
        hops: [],
        totalUs: 0,
        dropped: false,
      },
    };
    packets.push(pkt.path);
    candidates.push(pkt);
    open.set(key, candidates);
  }
  const first = pkt.path.hops.length === 0;
  pkt.path.hops.push({
    event: ev.index,
    tsNs: ev.tsNs,
    node: r.node,
    netns: r.netns,
    ifname: r.ifname,
    hook: ev.hook,
    kind: ev.kind,
    deltaUs: first ? null : nsToUs(ts - pkt.lastTs),
    crossNode: !first && pkt.lastNode !== r.node,
  });
  if (!first) pkt.path.totalUs = nsToUs(ts - BigInt(pkt.path.hops[0]!.tsNs));
  if (pkt.path.ipId === 0) pkt.path.ipId = r.ip_id;
  pkt.visited.add(point);
  pkt.lastTs = ts;
  pkt.lastNode = r.node;
  if (r.kind === Kind.DROP) {
    // A dropped packet goes no further: later same-key hops belong to a retransmission.
    pkt.path.dropped = true;
    candidates.splice(candidates.indexOf(pkt), 1);
  }
  return pkt.path.index;
}
