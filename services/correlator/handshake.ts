/**
 * The two flows of a connection whose SYN-ACK did not reach every node.
 *
 * A node's records of a TCP connection carry (client ISN, server ISN) once the SYN-ACK
 * passed that node, and the client ISN alone (server ISN 0) when it never did
 * (agent/connections.ts). When the SYN-ACK is lost on its way back, the nodes it reached
 * and those it did not (the client's) put one connection in two flows: connFlowId(C, S)
 * and connFlowId(C, 0). Flow ids are per record, so the correlator cannot join them; a
 * lookup of either finds the other:
 *
 *   - the client side (records with C and no server ISN): flows with the client's
 *     endpoint (its SYN's source: unchanged on every node before an SNAT, and at the SNAT
 *     node's own ingress) within the flow's time, whose records carry C and a server ISN;
 *   - the server side (C and S, and no client ACK of the SYN-ACK anywhere): the flow
 *     connFlowId(C, 0), whose records carry C alone.
 *
 * A completed handshake means every node that saw the connection saw the SYN-ACK pass
 * (the client's ACK followed it), and a SYN answered by a reset had no SYN-ACK: either
 * way there is no other flow, and nothing is read. The API reads both flows for a
 * timeline, path or explanation; the judge judges the client side with the server's
 * records (judge.ts).
 */
import type { FlowStore } from '../api/queries.js';
import { connFlowId } from '../shared/flowkey.js';
import { Kind } from '../shared/record.js';
import { inEventOrder, isnC, isnS, type Endpoint, type TimelineRow } from './timeline.js';

const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;
const TCP = 6;
/** How far around a client-side flow's own span its other side is looked for (hold times, clock offsets). */
const MARGIN_NS = 60_000_000_000n;
/** Most candidate flows read for a client-side flow (a client port is reused over time, rarely within a minute). */
const MAX_CANDIDATES = 8;

export interface Handshake {
  isnC: number;
  /** 0: no record of the flow carries the server's ISN. */
  isnS: number;
  /** The SYN's source, when a SYN is among the records. */
  client: Endpoint | null;
  /** Whether a client ACK of the SYN-ACK is among the records. */
  completed: boolean;
  /** Whether a reset is among the records (a refused SYN's answer). */
  reset: boolean;
}

/** The store reads a join needs (api/queries.ts FlowStore). */
export type FlowReads = Pick<FlowStore, 'listFlows' | 'flowEvents'>;

/** The handshake the flow's TCP records show; null when they carry no client ISN (not seen) or several. */
export function handshakeOf(events: readonly TimelineRow[]): Handshake | null {
  let c = 0;
  let s = 0;
  let client: Endpoint | null = null;
  let reset = false;
  for (const r of events) {
    if (r.proto !== TCP) continue;
    reset ||= r.kind === Kind.RST_SENT || r.kind === Kind.RST_RECV || (r.kind === Kind.PACKET && (r.tcp_flags & RST) !== 0);
    if (isnC(r) === 0) continue;
    if (c !== 0 && isnC(r) !== c) return null;
    c = isnC(r);
    if (isnS(r) !== 0) s = isnS(r);
    if (!client && r.kind === Kind.PACKET && (r.tcp_flags & (SYN | ACK)) === SYN) client = { addr: r.saddr, port: r.sport };
  }
  if (c === 0) return null;
  const ackOfSynAck = (s + 1) >>> 0;
  const completed = s !== 0 && events.some((r) => r.kind === Kind.PACKET && r.proto === TCP && (r.tcp_flags & (SYN | ACK)) === ACK && r.tcp_ack === ackOfSynAck && r.tcp_seq === ((c + 1) >>> 0));
  return { isnC: c, isnS: s, client, completed, reset };
}

/** Whether a flow with handshake `h` may have another flow to read (a completed or refused one has none). */
export function mayHaveOtherSide(h: Handshake | null): h is Handshake {
  return h !== null && !h.completed && (h.isnS !== 0 || (h.client !== null && !h.reset));
}

const wall = (r: TimelineRow) => BigInt(r.wall_ts_ns);

/**
 * The other flow of the connection of flow `id` (events `events`, handshake `h` when the
 * caller has it), if its handshake left one: its id and events, merged with `events` in
 * event order (at most `limit` in all).
 */
export async function joinHandshakeSides(store: FlowReads, id: bigint, events: TimelineRow[], limit: number, h = handshakeOf(events)): Promise<{ joined: string[]; events: TimelineRow[] }> {
  const none = { joined: [], events };
  if (!mayHaveOtherSide(h) || events.length === 0) return none;
  let candidates: bigint[];
  if (h.isnS === 0) {
    if (!h.client) return none;
    const times = events.map(wall);
    const first = times.reduce((a, b) => (a < b ? a : b));
    const last = times.reduce((a, b) => (a > b ? a : b));
    const flows = await store.listFlows({ addr: h.client.addr, port: h.client.port, proto: TCP, sinceNs: first > MARGIN_NS ? first - MARGIN_NS : 0n, untilNs: last + MARGIN_NS, limit: MAX_CANDIDATES + 1 });
    candidates = flows.map((f) => BigInt(f.flowId));
  } else {
    candidates = [BigInt(connFlowId(h.isnC, 0))];
  }
  const joined: string[] = [];
  let merged = events;
  for (const other of candidates.filter((x) => x !== id)) {
    const rows = await store.flowEvents(other, limit, 'summary');
    // The same connection: its client ISN, and the server's where this side has none (or none where it has it).
    const same = rows.some((r) => isnC(r) === h.isnC && (h.isnS === 0 ? isnS(r) !== 0 : isnS(r) === 0));
    if (!same) continue;
    joined.push(other.toString());
    merged = [...merged, ...rows];
  }
  if (!joined.length) return none;
  return { joined, events: inEventOrder(merged).slice(0, limit) };
}
