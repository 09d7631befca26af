/**
 * A flow's cross-node path and per-hop latency: pure, no I/O.
 *
 * 1. Sightings of one packet are grouped across hooks and nodes by what NAT keeps:
 *    direction (client->server or back, from the connection's ISNs), TCP seq, ack,
 *    payload length and flags. Within a node, a second visit to the same hook point
 *    starts another instance (a retransmission).
 * 2. Node clocks disagree. For each pair of nodes a packet crossed, the minimum
 *    one-way delay in each direction gives the offset (NTP's estimate: it assumes the
 *    fastest packets take as long each way). Which node comes first on the forward
 *    path is decided by comparing the two directions' medians, which does not depend
 *    on the offset. Delay added on purpose in a qdisc (netem) is seen between
 *    net_dev_queue and net_dev_start_xmit on the sending node, on one clock, so it
 *    does not bias the estimate when both hooks are captured.
 * 3. With offsets applied, each packet's sightings are ordered; the path of a
 *    direction is its most common sequence of hook points; each hop shows the tuple
 *    as seen there, the NAT between it and the previous hop, and the evidence that
 *    joined it to the flow; each segment gets per-packet latencies and p50/p99.
 */
import { percentile } from '../shared/stats.js';
import { Hook, Kind } from '../shared/record.js';
import { directionOf, hookName, isnC, type Direction, type Endpoint, type TimelineRow } from './timeline.js';

/**
 * Drop reasons that are the stack's normal work, not incidents: a closing socket purging
 * its queues, duplicates and old segments TCP discards by design, the catch-all
 * NOT_SPECIFIED that normal teardown produces (seen on every short connection in the lab),
 * frames addressed to another host's MAC that a device in promiscuous mode or a packet
 * socket also saw (OTHERHOST: the copy meant for this host went on), and segments a
 * TIME_WAIT socket refuses by timestamp (TCP_RFC7323_TW_PAWS, as designed).
 */
export const BENIGN_DROPS: ReadonlySet<string> = new Set(['NOT_SPECIFIED', 'QUEUE_PURGE', 'OTHERHOST', 'TCP_RFC7323_TW_PAWS', 'TCP_OLD_DATA', 'TCP_OLD_SEQUENCE', 'TCP_ZEROWINDOW', 'TCP_OFOMERGE', 'SOCKET_CLOSE', 'TCP_CLOSE', 'SKB_CONSUMED', 'TCP_OLD_ACK']);

/** How a hop was joined to the flow. */
export type Evidence = 'isn' | 'tuple' | 'conntrack';

export interface PathHop {
  node: string;
  netns: string;
  pod: string;
  ifname: string;
  hook: string;
  src: Endpoint;
  dst: Endpoint;
  /** Address translation between the previous hop and this one, as the tuples show it. */
  nat: string | null;
  /** NAT that conntrack on this hop's node and namespace records for this tuple (e.g. a REDIRECT). */
  conntrack: string[];
  evidence: Evidence[];
  /** Packets of this direction seen at this hop. */
  packets: number;
}

export interface Segment {
  direction: Direction;
  from: string;
  to: string;
  crossNode: boolean;
  samples: number;
  minUs: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

export interface ClockOffset {
  node: string;
  /** Estimated clock offset of this node relative to the reference node, µs (subtracted from its times). */
  offsetUs: number;
  /** Node pair and packets the estimate came from; null for the reference node. */
  from: { peer: string; packets: number } | null;
}

/**
 * The flow's first request and response (its first data each way), timed at the two ends:
 * each figure is a difference of times on one node's clock, so no clock offset enters it.
 */
export interface Exchange {
  /** From the request leaving the client (the path's first hop) to the response reaching it (the way back's last), µs. */
  clientWaitUs: number;
  /** From the request reaching the server (the path's last hop) to the response leaving it (the way back's first), µs. */
  serverUs: number;
  /** The rest of the client's wait: the network, both ways, µs. */
  networkUs: number;
}

export interface FlowPath {
  client: Endpoint | null;
  server: Endpoint | null;
  paths: Record<Direction, PathHop[]>;
  segments: Segment[];
  clock: ClockOffset[];
  packets: number;
  /** null without a request and a response seen at both ends. */
  exchange: Exchange | null;
}

const SYN = 0x02;
/** Sightings of one packet on different nodes lie within this much of each other (clock offsets included). */
const MATCH_WINDOW_NS = 500_000_000n;
/** Within a node, consecutive sightings of one packet further apart than this are two copies (a retransmission). */
const VISIT_GAP_NS = 250_000_000n;
const ACK = 0x10;

interface Sighting {
  r: TimelineRow;
  ts: bigint;
  point: string;
}

export interface PacketInstance {
  dir: Direction;
  sightings: Sighting[];
}

/** Tuple orientation for flows without ISNs: the SYN's sender is the client. */
function tupleForwardDir(rows: readonly TimelineRow[]): number {
  for (const r of rows) if (r.proto === 6 && r.tcp_flags & SYN) return r.tcp_flags & ACK ? 1 - r.dir : r.dir;
  return 0;
}

const pointOf = (r: TimelineRow) => `${r.node}\u0000${r.netns_ino}\u0000${r.ifindex}\u0000${r.hook}`;

export function labelOf(r: TimelineRow): string {
  const where = r.pod || r.netns || (r.netns_ino ? `netns:${r.netns_ino}` : '');
  // Socket events, and drops before a device was set, have no device: ifindex 0.
  const dev = r.ifname || (r.ifindex ? `if${r.ifindex}` : '');
  return `${r.node}${where ? `/${where}` : ''}${dev ? ` ${dev}` : ''} ${hookName(r.hook)}`;
}

function dedupe(rows: readonly TimelineRow[]): TimelineRow[] {
  const seen = new Set<string>();
  return rows.filter((r) => {
    const id = `${r.agent}\u0000${r.boot}\u0000${r.seq}`;
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

/** Groups packet sightings into instances of one packet crossing the path. */
export function packetInstances(rows: readonly TimelineRow[]): PacketInstance[] {
  const forwardDir = tupleForwardDir(rows);
  // key -> node -> sightings in time order (one node's clock orders its own sightings).
  const byKey = new Map<string, { dir: Direction; nodes: Map<string, Sighting[]> }>();
  for (const r of dedupe(rows)) {
    // A benign drop (a socket purging its queue at close...) ends no path: not a hop.
    if (r.kind !== Kind.PACKET && (r.kind !== Kind.DROP || BENIGN_DROPS.has(r.reason_name ?? ''))) continue;
    const dir = directionOf(r, forwardDir);
    // NAT keeps the IP ID: it tells apart packets whose TCP headers repeat (window updates, duplicate ACKs).
    const key = `${dir}|${r.tcp_seq}|${r.tcp_ack}|${r.payload_len}|${r.tcp_flags}|${r.ip_id}`;
    let k = byKey.get(key);
    if (!k) byKey.set(key, (k = { dir, nodes: new Map() }));
    let list = k.nodes.get(r.node);
    if (!list) k.nodes.set(r.node, (list = []));
    list.push({ r, ts: BigInt(r.wall_ts_ns), point: pointOf(r) });
  }
  const out: PacketInstance[] = [];
  for (const { dir, nodes } of byKey.values()) {
    // One node's visits: a second sighting at the same hook point, or a long pause, starts another copy of the packet.
    const visits: { node: string; start: bigint; sightings: Sighting[] }[] = [];
    for (const [node, list] of nodes) {
      list.sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
      let cur: Sighting[] = [];
      let seen = new Set<string>();
      for (const s of list) {
        if (seen.has(s.point) || (cur.length && s.ts - cur[cur.length - 1]!.ts > VISIT_GAP_NS)) {
          visits.push({ node, start: cur[0]!.ts, sightings: cur });
          cur = [];
          seen = new Set();
        }
        seen.add(s.point);
        cur.push(s);
      }
      visits.push({ node, start: cur[0]!.ts, sightings: cur });
    }
    // Copies on different nodes are the same instance when close in time (node clocks may
    // disagree, by much less than MATCH_WINDOW) and each node contributes one visit.
    visits.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    const open: { start: bigint; nodes: Set<string>; inst: PacketInstance }[] = [];
    for (const v of visits) {
      const fit = open.find((o) => !o.nodes.has(v.node) && v.start - o.start <= MATCH_WINDOW_NS);
      if (fit) {
        fit.nodes.add(v.node);
        fit.inst.sightings.push(...v.sightings);
      } else {
        const inst = { dir, sightings: [...v.sightings] };
        open.push({ start: v.start, nodes: new Set([v.node]), inst });
        out.push(inst);
      }
    }
  }
  return out;
}

/** Per node pair (a < b by name): one-way delays of packets that went a->b and b->a, offset included. */
export interface PairStats {
  a: string;
  b: string;
  /** tin(b) - tout(a) of packets that crossed a then b: delay + (clock b - clock a). */
  ab: bigint[];
  /** tin(a) - tout(b) of packets that crossed b then a: delay - (clock b - clock a). */
  ba: bigint[];
}

const median = (xs: bigint[]) => [...xs].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))[xs.length >> 1]!;
/**
 * The smallest delay that is not an outlier: a packet matched to the wrong copy on the
 * other node gives a delay off by up to MATCH_WINDOW; samples farther from the median
 * than 5 MADs (and 1 ms) are set aside before taking the minimum.
 */
function robustMin(xs: bigint[]): bigint {
  const sorted = [...xs].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const med = sorted[sorted.length >> 1]!;
  const dev = sorted.map((x) => (x > med ? x - med : med - x)).sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const mad = dev[dev.length >> 1]!;
  const limit = 5n * mad > 1_000_000n ? 5n * mad : 1_000_000n;
  for (const x of sorted) if (med - x <= limit) return x;
  return med;
}

/**
 * Adds one flow's packets to the pair statistics. Which of a pair a flow's forward
 * packets cross first is decided within the flow, by comparing the median of
 * tin(b) - tin(a) over its forward packets with that over its reverse packets (the
 * offset cancels out), so flows going either way between two nodes can be pooled.
 */
export function collectPairs(instances: readonly PacketInstance[], into = new Map<string, PairStats>()): Map<string, PairStats> {
  const local = new Map<string, { a: string; b: string; samples: { dir: Direction; inDiff: bigint; ab: bigint; ba: bigint }[] }>();
  for (const inst of instances) {
    const span = new Map<string, { tin: bigint; tout: bigint }>();
    for (const s of inst.sightings) {
      const x = span.get(s.r.node);
      if (!x) span.set(s.r.node, { tin: s.ts, tout: s.ts });
      else {
        if (s.ts < x.tin) x.tin = s.ts;
        if (s.ts > x.tout) x.tout = s.ts;
      }
    }
    const nodes = [...span.keys()].sort();
    for (let i = 0; i < nodes.length; i++) {
      for (let j = i + 1; j < nodes.length; j++) {
        const a = nodes[i]!;
        const b = nodes[j]!;
        const key = `${a}\u0000${b}`;
        let l = local.get(key);
        if (!l) local.set(key, (l = { a, b, samples: [] }));
        const sa = span.get(a)!;
        const sb = span.get(b)!;
        l.samples.push({ dir: inst.dir, inDiff: sb.tin - sa.tin, ab: sb.tin - sa.tout, ba: sa.tin - sb.tout });
      }
    }
  }
  for (const [key, l] of local) {
    const fwd = l.samples.filter((x) => x.dir === 'forward');
    const rev = l.samples.filter((x) => x.dir === 'reverse');
    if (!fwd.length || !rev.length) continue;
    const aFirst = median(fwd.map((x) => x.inDiff)) > median(rev.map((x) => x.inDiff));
    let p = into.get(key);
    if (!p) into.set(key, (p = { a: l.a, b: l.b, ab: [], ba: [] }));
    for (const x of aFirst ? fwd : rev) p.ab.push(x.ab);
    for (const x of aFirst ? rev : fwd) p.ba.push(x.ba);
  }
  return into;
}

/**
 * Clock offsets from pair statistics: clock(b) - clock(a) = (min a->b delay - min b->a delay) / 2.
 * The reference (offset 0) is the node that sends first most often (the client side);
 * offsets spread along the pairs with the shortest round trip (min a->b + min b->a does
 * not depend on the offset): neighbours, not pairs whose path crosses a third node's queues.
 */
export function estimateOffsets(pairs: Map<string, PairStats>): { offsets: Map<string, bigint>; clock: ClockOffset[] } {
  const edges: { a: string; b: string; theta: bigint; rtt: bigint; n: number }[] = [];
  const leads = new Map<string, number>();
  const nodes = new Set<string>();
  for (const p of pairs.values()) {
    nodes.add(p.a).add(p.b);
    if (!p.ab.length || !p.ba.length) continue;
    const ab = robustMin(p.ab);
    const ba = robustMin(p.ba);
    edges.push({ a: p.a, b: p.b, theta: (ab - ba) / 2n, rtt: ab + ba, n: p.ab.length + p.ba.length });
    leads.set(p.a, (leads.get(p.a) ?? 0) + p.ab.length);
    leads.set(p.b, (leads.get(p.b) ?? 0) + p.ba.length);
  }
  const offsets = new Map<string, bigint>();
  const clock: ClockOffset[] = [];
  const order = [...nodes].sort((x, y) => (leads.get(y) ?? 0) - (leads.get(x) ?? 0) || x.localeCompare(y));
  edges.sort((x, y) => (x.rtt < y.rtt ? -1 : x.rtt > y.rtt ? 1 : y.n - x.n));
  for (const root of order) {
    if (offsets.has(root)) continue;
    offsets.set(root, 0n);
    clock.push({ node: root, offsetUs: 0, from: null });
    // Prim's algorithm: always extend by the shortest round trip from the nodes placed so far.
    for (let grew = true; grew; ) {
      grew = false;
      for (const e of edges) {
        const known = offsets.has(e.a) ? (offsets.has(e.b) ? null : e.a) : offsets.has(e.b) ? e.b : null;
        if (!known) continue;
        const other = known === e.a ? e.b : e.a;
        const off = known === e.a ? offsets.get(known)! + e.theta : offsets.get(known)! - e.theta;
        offsets.set(other, off);
        clock.push({ node: other, offsetUs: Number(off) / 1000, from: { peer: known, packets: e.n } });
        grew = true;
        break;
      }
    }
  }
  return { offsets, clock };
}

/** Per-packet latencies of consecutive hops, keyed by segment, with offsets applied. */
export function segmentSamples(instances: readonly PacketInstance[], offsets: Map<string, bigint>, into = new Map<string, { seg: Omit<Segment, 'samples' | 'minUs' | 'p50Us' | 'p99Us' | 'maxUs'>; us: number[] }>()) {
  for (const inst of instances) {
    const ordered = correctedOrder(inst, offsets);
    for (let i = 1; i < ordered.length; i++) {
      const x = ordered[i - 1]!;
      const y = ordered[i]!;
      const from = labelOf(x.s.r);
      const to = labelOf(y.s.r);
      const key = `${inst.dir}|${from}|${to}`;
      let e = into.get(key);
      if (!e) into.set(key, (e = { seg: { direction: inst.dir, from, to, crossNode: x.s.r.node !== y.s.r.node }, us: [] }));
      e.us.push(Number(y.t - x.t) / 1000);
    }
  }
  return into;
}

export function summarizeSegments(samples: ReturnType<typeof segmentSamples>): Segment[] {
  return [...samples.values()].map(({ seg, us }) => {
    const s = [...us].sort((a, b) => a - b);
    return { ...seg, samples: s.length, minUs: s[0]!, p50Us: percentile(s, 0.5), p99Us: percentile(s, 0.99), maxUs: s[s.length - 1]! };
  });
}

/**
 * An instance's sightings in corrected time order. A drop that the packet outlived (a
 * clone freed, e.g. a packet socket's copy of a frame) is not a hop: only a final drop is.
 */
function correctedOrder(inst: PacketInstance, offsets: Map<string, bigint>) {
  const ordered = inst.sightings.map((s, i) => ({ s, i, t: s.ts - (offsets.get(s.r.node) ?? 0n) })).sort((x, y) => (x.t < y.t ? -1 : x.t > y.t ? 1 : x.i - y.i));
  return ordered.filter((o, k) => o.s.r.kind !== Kind.DROP || k === ordered.length - 1);
}

const ep = (addr: string, port: number): Endpoint => ({ addr, port });
/** `addr:port`, IPv6 in brackets. */
export const fmt = (e: Endpoint) => (e.addr.includes(':') ? `[${e.addr}]:${e.port}` : `${e.addr}:${e.port}`);
export const same = (x: Endpoint, y: Endpoint) => x.addr === y.addr && x.port === y.port;

/** Translation between two consecutive hops; on replies it is the reverse of the connection's NAT. */
function natBetween(prev: PathHop, cur: Pick<PathHop, 'src' | 'dst'>, dir: Direction): string | null {
  const parts: string[] = [];
  if (!same(prev.dst, cur.dst)) parts.push(`${dir === 'forward' ? 'DNAT' : 'reverse SNAT'} ${fmt(prev.dst)} -> ${fmt(cur.dst)}`);
  if (!same(prev.src, cur.src)) parts.push(`${dir === 'forward' ? 'SNAT' : 'reverse DNAT'} ${fmt(prev.src)} -> ${fmt(cur.src)}`);
  return parts.length ? parts.join(', ') : null;
}

/** NAT that a CT record describes: ORIGINAL tuple vs the REPLY tuple reversed. */
export function ctNat(r: TimelineRow): string | null {
  if (!r.reply_saddr) return null;
  const parts: string[] = [];
  const origDst = ep(r.daddr, r.dport);
  const origSrc = ep(r.saddr, r.sport);
  const replySrc = ep(r.reply_saddr, r.reply_sport);
  const replyDst = ep(r.reply_daddr, r.reply_dport);
  if (!same(origDst, replySrc)) parts.push(`DNAT ${fmt(origDst)} -> ${fmt(replySrc)}`);
  if (!same(origSrc, replyDst)) parts.push(`SNAT ${fmt(origSrc)} -> ${fmt(replyDst)}`);
  return parts.length ? parts.join(', ') : null;
}

/** The hop's tuple is one of the four a conntrack entry describes: ORIGINAL or REPLY, either way round. */
function ctCovers(ct: TimelineRow, hop: Pick<PathHop, 'src' | 'dst'>): boolean {
  const os = ep(ct.saddr, ct.sport);
  const od = ep(ct.daddr, ct.dport);
  const rs = ep(ct.reply_saddr, ct.reply_sport);
  const rd = ep(ct.reply_daddr, ct.reply_dport);
  const is = (s: Endpoint, d: Endpoint) => same(hop.src, s) && same(hop.dst, d);
  return is(os, od) || is(od, os) || is(rs, rd) || is(rd, rs);
}

/** The flow's path per direction, segments and clock offsets. `offsets` overrides the flow's own estimate. */
export function buildPath(rows: readonly TimelineRow[], offsets?: Map<string, bigint>): FlowPath {
  const instances = packetInstances(rows);
  const est = estimateOffsets(collectPairs(instances));
  const use = offsets ?? est.offsets;
  const cts = dedupe(rows).filter((r) => r.kind === Kind.CT);
  const paths: Record<Direction, PathHop[]> = { forward: [], reverse: [] };
  for (const dir of ['forward', 'reverse'] as const) {
    // The most common sequence of hook points, preferring longer ones on ties.
    const counts = new Map<string, { n: number; inst: PacketInstance; order: ReturnType<typeof correctedOrder> }>();
    const seenAt = new Map<string, number>();
    for (const inst of instances) {
      if (inst.dir !== dir) continue;
      const order = correctedOrder(inst, use);
      for (const o of order) seenAt.set(o.s.point, (seenAt.get(o.s.point) ?? 0) + 1);
      const sig = order.map((o) => o.s.point).join('\u0001');
      const c = counts.get(sig);
      if (c) c.n++;
      else counts.set(sig, { n: 1, inst, order });
    }
    const best = [...counts.values()].sort((x, y) => y.n - x.n || y.order.length - x.order.length)[0];
    if (!best) continue;
    for (const { s } of best.order) {
      const r = s.r;
      const hop: PathHop = {
        node: r.node,
        netns: r.netns,
        pod: r.pod,
        ifname: r.ifname,
        hook: hookName(r.hook),
        src: ep(r.saddr, r.sport),
        dst: ep(r.daddr, r.dport),
        nat: null,
        conntrack: [],
        evidence: [isnC(r) !== 0 ? 'isn' : 'tuple'],
        packets: seenAt.get(s.point) ?? 0,
      };
      const prev = paths[dir].at(-1);
      if (prev) hop.nat = natBetween(prev, hop, dir);
      for (const ct of cts) {
        if (ct.node !== r.node || ct.netns_ino !== r.netns_ino) continue;
        const nat = ctNat(ct);
        if (nat && ctCovers(ct, hop) && !hop.conntrack.includes(nat)) hop.conntrack.push(nat);
      }
      if (hop.conntrack.length && !hop.evidence.includes('conntrack')) hop.evidence.push('conntrack');
      if (prev && hop.nat && prev.node === hop.node && !prev.conntrack.length && hop.conntrack.length) prev.evidence.push('conntrack');
      paths[dir].push(hop);
    }
  }
  const syn = instances.find((i) => i.dir === 'forward' && i.sightings.some((s) => (s.r.tcp_flags & (SYN | ACK)) === SYN));
  const first = syn ? correctedOrder(syn, use)[0]!.s.r : undefined;
  const last = syn ? correctedOrder(syn, use).at(-1)!.s.r : undefined;
  return {
    client: first ? ep(first.saddr, first.sport) : null,
    server: last ? ep(last.daddr, last.dport) : null,
    paths,
    segments: summarizeSegments(segmentSamples(instances, use)),
    clock: offsets ? [...offsets].map(([node, off]) => ({ node, offsetUs: Number(off) / 1000, from: null })) : est.clock,
    packets: instances.length,
    exchange: firstExchange(instances, use),
  };
}

/** A hop's place as labelOf names a row's. */
export function hopLabel(h: PathHop): string {
  return `${h.node}${h.pod || h.netns ? `/${h.pod || h.netns}` : ''} ${h.ifname} ${h.hook}`;
}

/** Hooks where a packet enters a namespace; a packet record at any other device hook is leaving one. */
const ENTERING: ReadonlySet<number> = new Set([Hook.NETIF_RECEIVE, Hook.TC_INGRESS]);
/** Whether row `r` is a packet entering its namespace, or one leaving it. */
export const entering = (r: TimelineRow) => r.kind === Kind.PACKET && ENTERING.has(r.hook);
export const leaving = (r: TimelineRow) => r.kind === Kind.PACKET && !ENTERING.has(r.hook);

/**
 * The first request and response of the flow, timed at its ends (Exchange): where the
 * request was first and last seen (corrected order: `offsets`) and the response last and
 * first. null unless each end is one namespace that the request leaves and the response
 * enters (the client's) or the other way round (the server's): a path that stops at a
 * middle node has no server time to give. Used per flow by the latency report, so it
 * reads the instances, not the path.
 */
export function firstExchange(instances: readonly PacketInstance[], offsets: Map<string, bigint>): Exchange | null {
  const firstTs = (i: PacketInstance) => i.sightings.reduce((m, x) => (x.ts < m ? x.ts : m), i.sightings[0]!.ts);
  const data = (dir: Direction) => instances.filter((i) => i.dir === dir && i.sightings.some((x) => x.r.kind === Kind.PACKET && x.r.payload_len > 0)).sort((a, b) => (firstTs(a) < firstTs(b) ? -1 : 1));
  const request = data('forward')[0];
  const response = request && data('reverse').find((i) => firstTs(i) > firstTs(request));
  if (!request || !response) return null;
  const ends = (i: PacketInstance) => {
    const o = correctedOrder(i, offsets);
    return [o[0]!.s, o.at(-1)!.s] as const;
  };
  const [sent, arrived] = ends(request);
  const [answered, received] = ends(response);
  const place = (x: Sighting) => `${x.r.node}/${x.r.pod || x.r.netns || x.r.netns_ino}`;
  if (place(sent) !== place(received) || place(arrived) !== place(answered) || !leaving(sent.r) || !entering(received.r) || !entering(arrived.r) || !leaving(answered.r)) return null;
  const clientWaitUs = Number(received.ts - sent.ts) / 1000;
  const serverUs = Number(answered.ts - arrived.ts) / 1000;
  return { clientWaitUs, serverUs, networkUs: clientWaitUs - serverUs };
}

/** One line per hop, for terminals and reports. */
export function describeHop(h: PathHop): string {
  const nat = h.nat ? `  [${h.nat}]` : '';
  const ct = h.conntrack.length ? `  (conntrack: ${h.conntrack.join('; ')})` : '';
  return `${h.node}${h.pod || h.netns ? `/${h.pod || h.netns}` : ''} ${h.ifname} ${h.hook}: ${fmt(h.src)} -> ${fmt(h.dst)}${nat}${ct}  joined by ${h.evidence.join('+')}`;
}

