import { describe, expect, it } from 'vitest';
import { createConnTracker, type AnnotatedChunk } from '../../services/agent/connections.js';
import { Flag, Kind } from '../../services/shared/record.js';
import { pack, pkt } from './helpers.js';

const SYN = 0x02;
const ACK = 0x10;
const C = ['10.0.0.1', 40000] as const;
const VIP = ['10.96.0.10', 80] as const;
const POD = ['10.244.1.5', 8080] as const;

function chunk(recs: Buffer[], firstSeq = 0) {
  return { buf: pack(recs), count: recs.length, firstSeq, clockOffsetNs: 0n };
}
/** (seq, isnC, isnS) per record of annotated chunks. */
function ids(out: AnnotatedChunk[]) {
  return out.flatMap((c) => Array.from(c.seqs, (s, i) => [s, c.conn.readUInt32LE(8 * i), c.conn.readUInt32LE(8 * i + 4)]));
}

describe('connection tracker', () => {
  it('stamps every record of a connection with (client ISN, server ISN), holding the SYN until the SYN-ACK', () => {
    const t = createConnTracker();
    const first = t.process(chunk([pkt(...C, ...VIP, { tcpFlags: SYN, seq: 1000, tsNs: 1n })], 0), 0);
    expect(ids(first)).toEqual([]);
    expect(t.held).toBe(1);
    const second = t.process(chunk([pkt(...VIP, ...C, { tcpFlags: SYN | ACK, seq: 5000, ack: 1001, tsNs: 2n }), pkt(...C, ...VIP, { tcpFlags: ACK, seq: 1001, ack: 5001, tsNs: 3n })], 1), 1);
    expect(ids(second).sort()).toEqual([[0, 1000, 5000], [1, 1000, 5000], [2, 1000, 5000]]);
    expect(t.held).toBe(0);
  });

  it('the same ISNs on the other side of a DNAT give the same identity (what joins hops across NAT)', () => {
    const client = createConnTracker();
    const server = createConnTracker();
    const hs = (a: readonly [string, number], b: readonly [string, number]) =>
      chunk([pkt(...a, ...b, { tcpFlags: SYN, seq: 77 }), pkt(...b, ...a, { tcpFlags: SYN | ACK, seq: 99, ack: 78 }), pkt(...a, ...b, { tcpFlags: ACK, seq: 78, ack: 100, payloadLen: 10 })]);
    const x = ids(client.process(hs(C, VIP), 0)).map((r) => r.slice(1));
    const y = ids(server.process(hs(C, POD), 0)).map((r) => r.slice(1));
    expect(x).toEqual([[77, 99], [77, 99], [77, 99]]);
    expect(y).toEqual(x);
  });

  it('a CT record earlier in the chunk than its SYN is stamped too', () => {
    const t = createConnTracker();
    const ct = pkt(...C, ...VIP, { kind: Kind.CT, reply: { saddr: POD[0], sport: POD[1], daddr: C[0], dport: C[1] } });
    const out = t.process(chunk([ct, pkt(...C, ...VIP, { tcpFlags: SYN, seq: 10 }), pkt(...VIP, ...C, { tcpFlags: SYN | ACK, seq: 20, ack: 11 })]), 0);
    expect(ids(out).sort()).toEqual([[0, 10, 20], [1, 10, 20], [2, 10, 20]]);
  });

  it('an unanswered SYN is released after the hold, with the server ISN unknown', () => {
    const t = createConnTracker({ holdMs: 100, holdNs: 10n ** 12n });
    expect(t.process(chunk([pkt(...C, ...VIP, { tcpFlags: SYN, seq: 10 })]), 0)).toEqual([]);
    expect(t.expire(50)).toEqual([]);
    expect(ids(t.expire(100))).toEqual([[0, 10, 0]]);
    expect(t.stats().releasedUnanswered).toBe(1);
  });

  it('an unanswered SYN joins its connection when the retransmitted SYN left on another tuple (new SNAT port) and was answered', () => {
    const t = createConnTracker({ holdMs: 100, holdNs: 10n ** 12n });
    const B = ['10.244.3.2', 8080] as const;
    t.process(chunk([pkt('10.10.2.1', 23456, ...B, { tcpFlags: SYN, seq: 77 })], 0), 0);
    const answered = t.process(chunk([pkt('10.10.2.1', 31000, ...B, { tcpFlags: SYN, seq: 77 }), pkt(...B, '10.10.2.1', 31000, { tcpFlags: SYN | ACK, seq: 99, ack: 78 })], 1), 10);
    expect(ids(answered).map((r) => r.slice(1))).toEqual([[77, 99], [77, 99]]);
    expect(ids(t.expire(200))).toEqual([[0, 77, 99]]);
  });

  it('a packet translated and then dropped on this node joins the connection its SYN came in on, through the CT record beside the drop', () => {
    const t = createConnTracker({ holdMs: 100, holdNs: 10n ** 12n });
    const nat = { reply: { saddr: POD[0], sport: POD[1], daddr: C[0], dport: C[1] } };
    // The SYN came in to the VIP; DNAT sent it on to the pod, where a FORWARD rule dropped it.
    const drop = pkt(...C, ...POD, { kind: Kind.DROP, tcpFlags: SYN, seq: 10 });
    expect(t.process(chunk([pkt(...C, ...VIP, { tcpFlags: SYN, seq: 10 }), drop, pkt(...C, ...VIP, { kind: Kind.CT, ...nat })]), 0)).toEqual([]);
    expect(t.stats()).toMatchObject({ held: 3, natAliases: 1 });
    // Never answered: all three leave with the client ISN, as the client node's records of it do.
    expect(ids(t.expire(100)).sort()).toEqual([[0, 10, 0], [1, 10, 0], [2, 10, 0]]);
    // Answered later (the SYN sent again once the rule was gone): the drop of the same tuple joins the whole connection.
    t.process(chunk([pkt(...C, ...VIP, { tcpFlags: SYN, seq: 10 }), pkt(...C, ...VIP, { kind: Kind.CT, ...nat }), pkt(...C, ...POD, { kind: Kind.DROP, tcpFlags: SYN, seq: 10 })], 3), 200);
    const answered = t.process(chunk([pkt(...VIP, ...C, { tcpFlags: SYN | ACK, seq: 20, ack: 11 })], 6), 210);
    expect(ids(answered).sort()).toEqual([[3, 10, 20], [4, 10, 20], [5, 10, 20], [6, 10, 20]]);
  });

  it('a CT record without NAT aliases nothing', () => {
    const t = createConnTracker();
    t.process(chunk([pkt(...C, ...POD, { kind: Kind.CT, reply: { saddr: POD[0], sport: POD[1], daddr: C[0], dport: C[1] } })]), 0);
    expect(t.stats().natAliases).toBe(0);
  });

  it('records of connections whose handshake was not seen, and non-TCP, pass with no identity', () => {
    const t = createConnTracker();
    const out = t.process(chunk([pkt(...C, ...VIP, { tcpFlags: ACK, seq: 5 }), pkt(...C, ...VIP, { l4proto: 17 })]), 0);
    expect(ids(out)).toEqual([[0, 0, 0], [1, 0, 0]]);
  });

  it('a new SYN on a reused tuple starts a new connection', () => {
    const t = createConnTracker();
    const conn = (isnC: number, isnS: number) => chunk([pkt(...C, ...VIP, { tcpFlags: SYN, seq: isnC }), pkt(...VIP, ...C, { tcpFlags: SYN | ACK, seq: isnS, ack: isnC + 1 }), pkt(...C, ...VIP, { tcpFlags: ACK, seq: isnC + 1 })]);
    expect(ids(t.process(conn(100, 200), 0)).map((r) => r.slice(1))).toEqual([[100, 200], [100, 200], [100, 200]]);
    expect(ids(t.process(conn(300, 400), 0)).map((r) => r.slice(1))).toEqual([[300, 400], [300, 400], [300, 400]]);
  });

  it('takes the ISNs the kernel stamped on a packet (HOP_F_CONN) without having seen the handshake', () => {
    const t = createConnTracker();
    const stamped = pkt(...C, ...VIP, { tcpFlags: ACK, seq: 5, flags: Flag.CONN, aux: [1500, 41, 42] });
    const unstamped = pkt(...C, ...VIP, { tcpFlags: ACK, seq: 6, aux: [1500, 41, 42] });
    expect(ids(t.process(chunk([stamped, unstamped]), 0))).toEqual([[0, 41, 42], [1, 0, 0]]);
  });

  it('holds a stamped SYN (server ISN 0) until the SYN-ACK, then gives it the pair', () => {
    const t = createConnTracker();
    const syn = pkt(...C, ...VIP, { tcpFlags: SYN, seq: 1000, flags: Flag.CONN, aux: [60, 1000, 0] });
    expect(ids(t.process(chunk([syn], 0), 0))).toEqual([]);
    const synack = pkt(...VIP, ...C, { tcpFlags: SYN | ACK, seq: 5000, ack: 1001, flags: Flag.CONN, aux: [60, 1000, 5000] });
    expect(ids(t.process(chunk([synack], 1), 1)).sort()).toEqual([[0, 1000, 5000], [1, 1000, 5000]]);
  });

  it('notes where a chunk holds a drop or a reset sent (records the agent names), held ones included', () => {
    const t = createConnTracker();
    const named = (out: AnnotatedChunk[]) => out.map((c) => c.named);
    expect(named(t.process(chunk([pkt('10.0.0.9', 1, '10.0.0.8', 2), pkt(...C, ...VIP, { kind: Kind.RST_RECV })]), 0))).toEqual([[]]);
    expect(named(t.process(chunk([pkt('10.0.0.9', 1, '10.0.0.8', 2), pkt(...C, ...VIP, { kind: Kind.RST_SENT })]), 0))).toEqual([[1]]);
    // a SYN and its drop wait for the SYN-ACK; released, they come out as a chunk of their own
    expect(named(t.process(chunk([pkt(...C, ...VIP, { tcpFlags: SYN, seq: 5 }), pkt(...C, ...VIP, { kind: Kind.DROP, tcpFlags: SYN, seq: 5 })]), 0))).toEqual([]);
    expect(t.held).toBe(2);
    // the drop after a held record: its index is where compaction put it
    const later = [pkt('10.0.0.7', 5555, ...VIP, { tcpFlags: SYN, seq: 7 }), pkt('10.0.0.9', 3, '10.0.0.8', 4), pkt('10.0.0.9', 3, '10.0.0.8', 4, { kind: Kind.DROP })];
    expect(named(t.process(chunk(later), 0))).toEqual([[1]]);
    const out = t.process(chunk([pkt(...VIP, ...C, { tcpFlags: SYN | ACK, seq: 9, ack: 6 })]), 0);
    expect(named(out)).toContainEqual([1]); // the released SYN and drop
    expect(named(out)).toContainEqual([]); // the SYN-ACK's own chunk
  });

  it('bounds what it holds', () => {
    const t = createConnTracker({ maxHeld: 5 });
    const syns = Array.from({ length: 10 }, (_, i) => pkt('10.0.0.1', 1000 + i, ...VIP, { tcpFlags: SYN, seq: i + 1 }));
    const out = t.process(chunk(syns), 0);
    expect(t.held).toBeLessThanOrEqual(5);
    expect(ids(out).length + t.held).toBe(10);
    expect(t.stats().releasedEarly).toBe(5);
  });
});
