// A connection whose SYN-ACK was dropped on its way back is stored as two flows: the client
// node's records (client ISN only) and those of the nodes the SYN-ACK reached (both ISNs).
// The API reads either with the other (correlator/handshake.ts), on a real ClickHouse.
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { app } from '../../services/api/app.js';
import { createJudge } from '../../services/correlator/judge.js';
import { createFlowStore } from '../../services/api/queries.js';
import { insertRows } from '../../services/correlator/correlator.js';
import { hopEventEncoder } from '../../services/correlator/encode.js';
import { eventDate, type FlowPartRow, type HopEventRow } from '../../services/correlator/rows.js';
import { createClickHouse, migrate, type ClickHouseClient } from '../../services/shared/clickhouse.js';
import type { Config } from '../../services/shared/config.js';
import { connFlowId } from '../../services/shared/flowkey.js';
import { Hook, Kind } from '../../services/shared/record.js';
import { dropDatabase, isolatedConfig, query, quietLog, waitFor } from './env.js';

const SYN = 0x02;
const ACK = 0x10;
const ISN_C = 1_000_000;
const ISN_S = 9_000_000;
const CLIENT_SIDE = String(connFlowId(ISN_C, 0));
const SERVER_SIDE = String(connFlowId(ISN_C, ISN_S));
/** An earlier connection from the same client port, a few seconds before: another client ISN. */
const EARLIER = String(connFlowId(555, 777));
/** A connection whose handshake completed: nothing else is read for it. */
const COMPLETE = String(connFlowId(42, 43));

const T = (BigInt(Date.now()) - 600_000n) * 1_000_000n;
const client = { saddr: '10.0.0.9', sport: 40001, daddr: '10.96.0.10', dport: 80 };
const natted = { ...client, daddr: '10.0.0.2', dport: 8080 };
const back = { saddr: '10.0.0.2', sport: 8080, daddr: '10.0.0.9', dport: 40001 };

let seq = 0;
function hop(flow: string, dtUs: number, node: string, o: Partial<HopEventRow>): HopEventRow {
  const ns = T + BigInt(dtUs) * 1000n;
  return {
    event_date: eventDate(ns), flow_id: flow as unknown as number, wall_ts_ns: ns.toString(), kernel_ts_ns: ns.toString(),
    agent: node, boot: 1, seq: seq++, node, netns_ino: 1, netns: node, pod: '', ifindex: 2, ifname: 'eth0',
    hook: Hook.TC_EGRESS, kind: Kind.PACKET, family: 2, proto: 6, dir: 0, ...client,
    tcp_seq: ISN_C, tcp_ack: 0, tcp_flags: SYN, tcp_window: 64240, payload_len: 0, ip_id: 1, flags: 0,
    ct_id: 0, ct_status: 0, ct_info: 0, reply_saddr: '', reply_daddr: '', reply_sport: 0, reply_dport: 0,
    reason: 0, reason_name: '', location: '', sk_state: 0, skb_id: '0', mark: 0, aux0: 0, aux1: 0, aux2: 0, isn_c: ISN_C, isn_s: 0,
    ...o,
  };
}

function part(flow: string, node: string, rows: HopEventRow[]): FlowPartRow {
  const ts = rows.map((r) => BigInt(r.wall_ts_ns));
  const [a, b] = [rows[0]!, rows[0]!];
  return {
    event_date: rows[0]!.event_date, flow_id: flow as unknown as number, part_key: `${node}:1:0`, proto: 6, a_addr: a.saddr, a_port: a.sport, b_addr: b.daddr, b_port: b.dport,
    first_ts_ns: ts.reduce((x, y) => (x < y ? x : y)).toString(), last_ts_ns: ts.reduce((x, y) => (x > y ? x : y)).toString(),
    events: rows.length, packets: rows.filter((r) => r.kind === Kind.PACKET).length, bytes: 0, drops: rows.filter((r) => r.kind === Kind.DROP).length, resets: 0, retrans: rows.filter((r) => r.kind === Kind.RETRANS).length, nodes: [node],
  };
}

// The client node: its SYN, sent again 3 times; the SYN-ACK never came.
const clientSide = [
  hop(CLIENT_SIDE, 0, 'node-a', {}),
  ...[1_000_000, 3_000_000, 7_000_000].flatMap((t, i) => [
    hop(CLIENT_SIDE, t, 'node-a', { ip_id: 2 + i }),
    hop(CLIENT_SIDE, t + 10, 'node-a', { kind: Kind.RETRANS, hook: Hook.TCP_RETRANSMIT }),
  ]),
];
// The load balancer (DNAT) and the server node: both SYNs arrived, each SYN-ACK was dropped on node-lb.
const lb = { agent: 'node-lb', netns: 'node-lb' };
const serverSide = [0, 1_000_000].flatMap((t, i) => [
  hop(SERVER_SIDE, t + 50, 'node-lb', { ...lb, hook: Hook.TC_INGRESS, ip_id: 1 + i, isn_s: ISN_S }),
  hop(SERVER_SIDE, t + 60, 'node-lb', { ...lb, ...natted, ip_id: 1 + i, isn_s: ISN_S }),
  hop(SERVER_SIDE, t + 100, 'node-c', { ...natted, hook: Hook.TC_INGRESS, ip_id: 1 + i, isn_s: ISN_S }),
  hop(SERVER_SIDE, t + 150, 'node-c', { ...back, tcp_flags: SYN | ACK, tcp_seq: ISN_S, tcp_ack: ISN_C + 1, ip_id: 0, isn_s: ISN_S }),
  hop(SERVER_SIDE, t + 200, 'node-lb', { ...lb, ...back, tcp_flags: SYN | ACK, tcp_seq: ISN_S, tcp_ack: ISN_C + 1, hook: Hook.TC_INGRESS, ip_id: 0, isn_s: ISN_S }),
  hop(SERVER_SIDE, t + 210, 'node-lb', { ...lb, ...back, tcp_flags: SYN | ACK, tcp_seq: ISN_S, tcp_ack: ISN_C + 1, kind: Kind.DROP, hook: Hook.KFREE_SKB, reason: 6, reason_name: 'NETFILTER_DROP', aux2: 3, ip_id: 0, isn_s: ISN_S }),
]);
// Another connection from the same client port, refused, 5 s before: not this one.
const earlier = [hop(EARLIER, -5_000_000, 'node-a', { tcp_seq: 555, isn_c: 555 })];
// A connection that completed, on other ports.
const done = { saddr: '10.0.0.9', sport: 40002, daddr: '10.0.0.2', dport: 8080 };
const complete = [
  hop(COMPLETE, 0, 'node-a', { ...done, tcp_seq: 42, isn_c: 42, isn_s: 43 }),
  hop(COMPLETE, 50, 'node-a', { saddr: done.daddr, sport: done.dport, daddr: done.saddr, dport: done.sport, tcp_flags: SYN | ACK, tcp_seq: 43, tcp_ack: 43, isn_c: 42, isn_s: 43 }),
  hop(COMPLETE, 60, 'node-a', { ...done, tcp_flags: ACK, tcp_seq: 43, tcp_ack: 44, isn_c: 42, isn_s: 43 }),
];

describe('the two flows of a connection whose SYN-ACK was lost, read together', () => {
  let cfg: Config;
  let ch: ClickHouseClient;
  let api: FastifyInstance;
  let reads: string[];

  beforeAll(async () => {
    cfg = isolatedConfig({ apiMaxRows: 1000 });
    await migrate(cfg);
    ch = createClickHouse(cfg);
    await insertRows(ch, 'hop_events', [...clientSide, ...serverSide, ...earlier, ...complete], hopEventEncoder);
    const parts = [part(CLIENT_SIDE, 'node-a', clientSide), part(SERVER_SIDE, 'node-lb', serverSide.filter((r) => r.node === 'node-lb')), part(SERVER_SIDE, 'node-c', serverSide.filter((r) => r.node === 'node-c')), part(EARLIER, 'node-a', earlier), part(COMPLETE, 'node-a', complete)];
    await ch.insert({ table: 'flow_parts', values: parts, format: 'JSONEachRow' });
    const store = createFlowStore(ch, cfg.clickhouseUrl);
    reads = [];
    const counted = { ...store, flowEvents: (id: bigint, limit: number, span: 'summary' | 'all') => (reads.push(String(id)), store.flowEvents(id, limit, span)) };
    api = Fastify({ logger: false });
    await api.register(app, { store: counted, cfg });
    await api.ready();
  });

  afterAll(async () => {
    await api?.close();
    await ch?.close();
    if (cfg) await dropDatabase(cfg);
  });

  const explain = async (id: string) => {
    const r = await api.inject({ method: 'GET', url: `/api/v1/flows/${id}/explain` });
    expect(r.statusCode).toBe(200);
    return r.json() as { joined: string[]; verdicts: { kind: string; node: string }[]; text: string[]; path: { paths: { forward: { node: string }[] } } };
  };

  it('from the client side: the drop of the SYN-ACK on node-lb, the path to the server', async () => {
    const e = await explain(CLIENT_SIDE);
    expect(e.joined).toEqual([SERVER_SIDE]);
    expect(e.verdicts.map((v) => [v.kind, v.node])).toEqual([['drop', 'node-lb'], ['retrans_burst', 'node-a']]);
    expect([...new Set(e.path.paths.forward.map((h) => h.node))]).toEqual(['node-a', 'node-lb', 'node-c']);
    expect(e.text.join('\n')).toContain(`read together with flow ${SERVER_SIDE}`);
  });

  it('from the server side: the client node\'s records', async () => {
    const e = await explain(SERVER_SIDE);
    expect(e.joined).toEqual([CLIENT_SIDE]);
    expect(e.path.paths.forward[0]!.node).toBe('node-a');
    const t = await api.inject({ method: 'GET', url: `/api/v1/flows/${SERVER_SIDE}/timeline` });
    expect((t.json() as { joined: string[] }).joined).toEqual([CLIENT_SIDE]);
  });

  it('a completed handshake reads nothing more', async () => {
    reads.length = 0;
    const e = await explain(COMPLETE);
    expect(e.joined).toEqual([]);
    expect(reads).toEqual([COMPLETE]);
  });

  it('the judge: each side keeps the verdicts of its own events, judged with the other\'s', async () => {
    const judge = createJudge({ ch, log: quietLog, settleMs: 50, lookbackMs: 1 });
    await judge.start();
    try {
      judge.notify([Number(CLIENT_SIDE), Number(SERVER_SIDE)]);
      const stored = () => query<{ f: string; kind: string; node: string; title: string }>(cfg, `SELECT toString(flow_id) AS f, kind, node, title FROM incidents FINAL WHERE retracted = 0 ORDER BY f, kind`);
      expect(await waitFor(async () => (await stored()).length === 2, 10_000)).toBe(true);
      const byFlow = Object.fromEntries((await stored()).map((r) => [r.f, r]));
      expect(byFlow[SERVER_SIDE]).toMatchObject({ kind: 'drop', node: 'node-lb' });
      // Not "last seen on node-a", as the client node's records alone would say: the SYN reached the server, the SYN-ACK was dropped.
      expect(byFlow[CLIENT_SIDE]).toMatchObject({ kind: 'retrans_burst', node: 'node-a', title: expect.stringMatching(/; the segment arrived, its acknowledgement was dropped at node-lb\/node-lb eth0 kfree_skb: NETFILTER_DROP$/) });
    } finally {
      await judge.stop();
    }
  });

  it('the judge reads other flows for at most 50 flows a round; the rest are judged alone, and counted', async () => {
    // 52 client sides of unanswered SYNs, each with its SYN sent again 3 times (an anomaly)
    const ids = Array.from({ length: 52 }, (_, i) => connFlowId(2000 + i, 0));
    const rows = ids.flatMap((id, i) => [0, 1_000_000, 3_000_000, 7_000_000].flatMap((t, k) => [
      hop(String(id), t, 'node-a', { sport: 41000 + i, tcp_seq: 2000 + i, isn_c: 2000 + i, ip_id: k }),
      ...(k ? [hop(String(id), t + 10, 'node-a', { sport: 41000 + i, tcp_seq: 2000 + i, isn_c: 2000 + i, kind: Kind.RETRANS, hook: Hook.TCP_RETRANSMIT })] : []),
    ]));
    await insertRows(ch, 'hop_events', rows, hopEventEncoder);
    let lookups = 0;
    const reads = { listFlows: async () => (lookups++, []), flowEvents: async () => [] };
    const judge = createJudge({ ch, log: quietLog, settleMs: 50, lookbackMs: 1, reads });
    await judge.start();
    try {
      judge.notify(ids);
      expect(await waitFor(async () => judge.stats().judged === 52, 10_000)).toBe(true);
      expect(judge.stats()).toMatchObject({ unjoined: 2, errors: 0 });
      expect(lookups).toBe(50);
    } finally {
      await judge.stop();
    }
  });
});
