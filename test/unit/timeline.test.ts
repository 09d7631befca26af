import { describe, expect, it } from 'vitest';
import { buildTimeline, hookName, isoNs, kindName, nsToUs, tcpFlagNames, tcpStateName, type TimelineRow } from '../../services/correlator/timeline.js';
import { Hook, Kind, TcpState } from '../../services/shared/record.js';
import { flowRows, PLAIN_PACKET } from './fixtures/flows.js';

const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const PSH = 0x08;
const ACK = 0x10;

const T0 = 1_714_564_800_000_000_000n; // 2024-05-01T12:00:00Z
const CLIENT = { addr: '10.0.0.9', port: 40000 };
const SERVER = { addr: '10.0.0.2', port: 8080 }; // canonically first: 10.0.0.2 < 10.0.0.9

let autoSeq = 0;

/**
 * A hop_events row. `dt` is ns after T0; `from` says who sent it. dir follows the
 * correlator: 0 when the source is the canonical first endpoint (the server here).
 */
function row(dt: number, from: 'client' | 'server', o: Partial<TimelineRow> = {}): TimelineRow {
  const [src, dst] = from === 'client' ? [CLIENT, SERVER] : [SERVER, CLIENT];
  return {
    wall_ts_ns: (T0 + BigInt(dt)).toString(),
    agent: 'agent-a',
    boot: '1',
    seq: String(autoSeq++),
    node: 'node-a',
    netns_ino: 4026531840,
    netns: 'host',
    pod: '',
    ifindex: 2,
    ifname: 'eth0',
    hook: Hook.NET_DEV_QUEUE,
    kind: Kind.PACKET,
    family: 2,
    proto: 6,
    dir: from === 'client' ? 1 : 0,
    saddr: src.addr,
    daddr: dst.addr,
    sport: src.port,
    dport: dst.port,
    tcp_seq: 0,
    tcp_ack: 0,
    tcp_flags: ACK,
    tcp_window: 64240,
    payload_len: 0,
    ...PLAIN_PACKET,
    ...o,
  };
}

describe('names', () => {
  it.each([
    [Kind.PACKET, 'packet'],
    [Kind.RST_SENT, 'rst_sent'],
    [Kind.SOCK_STATE, 'sock_state'],
    [99, 'unknown(99)'],
  ])('kind %i is %s', (k, name) => expect(kindName(k)).toBe(name));

  it.each([
    [Hook.NETIF_RECEIVE, 'netif_receive'],
    [Hook.TC_EGRESS, 'tc_egress'],
    [Hook.TCP_SEND_RESET, 'tcp_send_reset'],
    [200, 'unknown(200)'],
  ])('hook %i is %s', (h, name) => expect(hookName(h)).toBe(name));

  it.each([
    [0, ''],
    [SYN, 'SYN'],
    [SYN | ACK, 'SYN|ACK'],
    [PSH | ACK, 'PSH|ACK'],
    [FIN | ACK, 'FIN|ACK'],
    [RST, 'RST'],
    [0xff, 'FIN|SYN|RST|PSH|ACK|URG|ECE|CWR'],
  ])('tcp flags %i are %s', (f, name) => expect(tcpFlagNames(f)).toBe(name));

  it.each([
    [TcpState.UNSPECIFIED, ''],
    [TcpState.LISTEN, 'LISTEN'],
    [TcpState.ESTABLISHED, 'ESTABLISHED'],
    [TcpState.NEW_SYN_RECV, 'NEW_SYN_RECV'],
    [42, 'unknown(42)'],
  ])('tcp state %i is %s', (s, name) => expect(tcpStateName(s)).toBe(name));

  it.each([
    [0n, '1970-01-01T00:00:00.000000000Z'],
    [T0 + 123_456_789n, '2024-05-01T12:00:00.123456789Z'],
    [T0 + 1n, '2024-05-01T12:00:00.000000001Z'],
  ])('isoNs(%s) = %s', (ns, iso) => expect(isoNs(ns)).toBe(iso));

  it('µs keep ns precision', () => {
    expect(nsToUs(1_234_567n)).toBe(1234.567);
    expect(nsToUs(1n)).toBe(0.001);
  });
});

describe('buildTimeline', () => {
  it('returns null for no rows', () => expect(buildTimeline([])).toBeNull());

  interface Case {
    name: string;
    rows: TimelineRow[];
    /** Event order, as seq values. */
    order?: string[];
    from?: { addr: string; port: number };
    orientation?: 'syn' | 'canonical';
    directions?: ('forward' | 'reverse')[];
    sinceStartUs?: number[];
    sincePrevUs?: number[];
    duplicates?: number;
    /** Per packet: event indexes of its hops. */
    packets?: number[][];
    deltas?: (number | null)[][];
  }

  const handshake = () => {
    autoSeq = 0;
    return [row(0, 'client', { tcp_flags: SYN, tcp_seq: 100 }), row(1_500, 'server', { tcp_flags: SYN | ACK, tcp_seq: 900, tcp_ack: 101 }), row(2_250, 'client', { tcp_seq: 101, tcp_ack: 901 })];
  };

  const cases: Case[] = [
    {
      name: 'handshake in order: client from the SYN, deltas in µs with ns precision',
      rows: handshake(),
      order: ['0', '1', '2'],
      from: CLIENT,
      orientation: 'syn',
      directions: ['forward', 'reverse', 'forward'],
      sinceStartUs: [0, 1.5, 2.25],
      sincePrevUs: [0, 1.5, 0.75],
    },
    {
      name: 'rows out of order are sorted by time',
      rows: handshake().reverse(),
      order: ['0', '1', '2'],
      sinceStartUs: [0, 1.5, 2.25],
    },
    {
      name: 'only the SYN-ACK seen: its destination is the initiator',
      rows: (() => {
        autoSeq = 0;
        return [row(10, 'server', { tcp_flags: SYN | ACK }), row(20, 'client', { tcp_flags: ACK })];
      })(),
      from: CLIENT,
      orientation: 'syn',
      directions: ['reverse', 'forward'],
    },
    {
      name: 'no SYN: canonical a->b (the server is a here)',
      rows: (() => {
        autoSeq = 0;
        return [row(10, 'client', { tcp_flags: PSH | ACK, payload_len: 10 }), row(20, 'server')];
      })(),
      from: SERVER,
      orientation: 'canonical',
      directions: ['reverse', 'forward'],
    },
    {
      name: 'equal timestamps: tie broken by agent, then boot, then seq (numerically)',
      rows: [
        row(5, 'client', { agent: 'b', boot: '1', seq: '1' }),
        row(5, 'client', { agent: 'a', boot: '2', seq: '1' }),
        row(5, 'client', { agent: 'a', boot: '1', seq: '10' }),
        row(5, 'client', { agent: 'a', boot: '1', seq: '9' }),
      ],
      order: ['9', '10', '1', '1'],
      sincePrevUs: [0, 0, 0, 0],
    },
    {
      name: 'redelivered rows (same event id) count once',
      rows: (() => {
        const h = handshake();
        return [...h, ...h.map((r) => ({ ...r }))];
      })(),
      order: ['0', '1', '2'],
      duplicates: 3,
    },
    {
      name: 'one packet at four hooks on two nodes: hops in order with the latency of each',
      rows: (() => {
        autoSeq = 0;
        const p = { tcp_flags: PSH | ACK, tcp_seq: 500, tcp_ack: 77, payload_len: 100, ip_id: 4242 };
        return [
          row(3_000, 'client', { ...p, node: 'node-b', hook: Hook.NETIF_RECEIVE, ifname: 'eth0' }),
          row(0, 'client', { ...p, node: 'node-a', hook: Hook.TC_EGRESS, ifname: 'veth1' }),
          row(1_000, 'client', { ...p, node: 'node-a', hook: Hook.NET_DEV_XMIT, ifname: 'eth0' }),
          row(3_500, 'client', { ...p, node: 'node-b', hook: Hook.NET_DEV_QUEUE, ifname: 'veth9' }),
        ];
      })(),
      packets: [[0, 1, 2, 3]],
      deltas: [[null, 1, 2, 0.5]],
    },
    {
      name: 'different packets stay apart (seq, direction, flags)',
      rows: (() => {
        autoSeq = 0;
        return [
          row(0, 'client', { tcp_seq: 1, payload_len: 10, tcp_flags: PSH | ACK, hook: Hook.TC_EGRESS }),
          row(1, 'client', { tcp_seq: 11, payload_len: 10, tcp_flags: PSH | ACK, hook: Hook.TC_EGRESS }),
          row(2, 'client', { tcp_seq: 1, payload_len: 10, tcp_flags: PSH | ACK, hook: Hook.NET_DEV_XMIT }),
          row(3, 'server', { tcp_seq: 1, payload_len: 10, tcp_flags: PSH | ACK, hook: Hook.NETIF_RECEIVE }),
          row(4, 'client', { tcp_seq: 1, payload_len: 10, tcp_flags: FIN | ACK, hook: Hook.TC_EGRESS }),
        ];
      })(),
      packets: [[0, 2], [1], [3], [4]],
    },
    {
      name: 'IP ID splits same-looking packets when nonzero, and a zero IP ID joins either',
      rows: (() => {
        autoSeq = 0;
        return [
          row(0, 'client', { ip_id: 7, hook: Hook.TC_EGRESS }),
          row(1, 'client', { ip_id: 8, hook: Hook.NET_DEV_XMIT }),
          row(2, 'client', { ip_id: 0, hook: Hook.NETIF_RECEIVE, node: 'node-b' }),
        ];
      })(),
      packets: [[0], [1, 2]],
    },
    {
      name: 'a retransmission revisiting a hop is another packet, and keeps its own hops',
      rows: (() => {
        autoSeq = 0;
        const p = { tcp_flags: PSH | ACK, tcp_seq: 1000, payload_len: 50 };
        return [
          row(0, 'client', { ...p, hook: Hook.NET_DEV_XMIT }), // original, lost on the wire
          row(200_000_000, 'client', { ...p, hook: Hook.NET_DEV_XMIT }), // RTO retransmission
          row(200_040_000, 'client', { ...p, hook: Hook.NETIF_RECEIVE, node: 'node-b' }),
        ];
      })(),
      packets: [[0], [1, 2]],
      deltas: [[null], [null, 40]],
    },
    {
      name: 'a dropped packet ends there; the retransmission starts a new packet',
      rows: (() => {
        autoSeq = 0;
        const p = { tcp_flags: PSH | ACK, tcp_seq: 1000, payload_len: 50 };
        return [
          row(0, 'client', { ...p, hook: Hook.NET_DEV_XMIT }),
          row(10_000, 'client', { ...p, kind: Kind.DROP, hook: Hook.KFREE_SKB, node: 'node-b', reason: 2 }),
          row(300_000_000, 'client', { ...p, hook: Hook.NETIF_RECEIVE, node: 'node-b' }),
        ];
      })(),
      packets: [[0, 1], [2]],
      deltas: [[null, 10], [null]],
    },
    {
      name: 'non-packet kinds (reset, socket state, conntrack) are events but not hops',
      rows: (() => {
        autoSeq = 0;
        return [
          row(0, 'client', { tcp_flags: PSH | ACK, tcp_seq: 5, payload_len: 1 }),
          row(1, 'server', { kind: Kind.RST_SENT, hook: Hook.TCP_SEND_RESET, sk_state: TcpState.LISTEN, reason: 2 }),
          row(2, 'client', { kind: Kind.CT, hook: Hook.NET_DEV_QUEUE, ct_id: 9 }),
          row(3, 'server', { kind: Kind.SOCK_STATE, hook: Hook.SOCK_SET_STATE, sk_state: TcpState.CLOSE }),
        ];
      })(),
      packets: [[0]],
    },
  ];

  it.each(cases)('$name', (c) => {
    const t = buildTimeline(c.rows)!;
    expect(t).not.toBeNull();
    if (c.order) expect(t.events.map((e) => e.seq)).toEqual(c.order);
    if (c.from) expect(t.from).toEqual(c.from);
    if (c.orientation) expect(t.orientation).toBe(c.orientation);
    if (c.directions) expect(t.events.map((e) => e.direction)).toEqual(c.directions);
    if (c.sinceStartUs) expect(t.events.map((e) => e.sinceStartUs)).toEqual(c.sinceStartUs);
    if (c.sincePrevUs) expect(t.events.map((e) => e.sincePrevUs)).toEqual(c.sincePrevUs);
    expect(t.duplicates).toBe(c.duplicates ?? 0);
    if (c.packets) expect(t.packets.map((p) => p.hops.map((h) => h.event))).toEqual(c.packets);
    if (c.deltas) expect(t.packets.map((p) => p.hops.map((h) => h.deltaUs))).toEqual(c.deltas);
    // Invariants that hold for every input.
    t.events.forEach((e, i) => {
      expect(e.index).toBe(i);
      expect(e.sincePrevUs).toBeGreaterThanOrEqual(0);
      if (e.packet !== null) expect(t.packets[e.packet]!.hops.some((h) => h.event === i)).toBe(true);
    });
    for (const p of t.packets) for (const h of p.hops) expect(t.events[h.event]!.packet).toBe(p.index);
  });

  it('keeps one packet across a DNAT that flips the tuple\'s canonical order, by the ISNs', () => {
    // 10.50.0.1 sorts before the VIP (10.96.0.10) and after the pod (10.10.3.2): the stored
    // dir of the same packet is 0 before node-lb's DNAT and 1 after it.
    const rows = flowRows({ client: { addr: '10.50.0.1', port: 40000 } }).filter((r) => r.kind === Kind.PACKET);
    expect(new Set(rows.filter((r) => r.tcp_flags === SYN).map((r) => r.dir))).toEqual(new Set([0, 1]));
    const t = buildTimeline(rows)!;
    expect(t.packets).toHaveLength(10);
    expect(t.packets.map((p) => [p.direction, p.hops.length])).toEqual(
      [true, false, true, true, false, false, true, true, false, true].map((fwd) => (fwd ? ['forward', 7] : ['reverse', 6])),
    );
    expect(t.packets[0]!.hops.map((h) => h.node)).toEqual(['node-a', 'node-a', 'node-lb', 'node-lb', 'node-lb', 'node-c', 'node-c']);
  });

  it('describes each event: names, endpoints, conntrack, times', () => {
    autoSeq = 0;
    const t = buildTimeline([
      row(0, 'client', { tcp_flags: SYN, tcp_seq: 100 }),
      row(7, 'server', {
        kind: Kind.RST_SENT,
        hook: Hook.TCP_SEND_RESET,
        tcp_flags: RST,
        sk_state: TcpState.LISTEN,
        reason: 3,
        ct_id: 77,
        ct_status: 0x1a,
        ct_info: 2,
        reply_saddr: '10.0.0.2',
        reply_daddr: '10.0.0.9',
        reply_sport: 15006,
        reply_dport: 40000,
      }),
    ])!;
    expect(t.startNs).toBe(T0.toString());
    expect(t.endNs).toBe((T0 + 7n).toString());
    expect(t.durationUs).toBe(0.007);
    expect(t.nodes).toEqual(['node-a']);
    expect(t.events[1]).toMatchObject({
      tsNs: (T0 + 7n).toString(),
      time: '2024-05-01T12:00:00.000000007Z',
      kind: 'rst_sent',
      hook: 'tcp_send_reset',
      tcpFlags: 'RST',
      skState: 'LISTEN',
      reason: 3,
      direction: 'reverse',
      src: SERVER,
      dst: CLIENT,
      ct: { id: 77, status: 0x1a, info: 2, reply: { src: { addr: '10.0.0.2', port: 15006 }, dst: { addr: '10.0.0.9', port: 40000 } } },
      packet: null,
    });
    expect(t.events[0]!.ct).toBeNull();
  });

  it('handles UInt64 event ids and timestamps beyond 2^53 exactly', () => {
    const big = '18446744073709551615';
    const t = buildTimeline([row(0, 'client', { boot: big, seq: big, wall_ts_ns: '18446744073709551614' }), row(0, 'client', { boot: big, seq: '1', wall_ts_ns: '18446744073709551615' })])!;
    expect(t.events.map((e) => e.tsNs)).toEqual(['18446744073709551614', '18446744073709551615']);
    expect(t.events[0]!.boot).toBe(big);
    expect(t.events[1]!.sincePrevUs).toBe(0.001);
  });
});
