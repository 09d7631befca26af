import { describe, expect, it } from 'vitest';
import type { TimelineRow } from '../../services/correlator/timeline.js';
import { judgeFlow } from '../../services/correlator/verdicts.js';
import { Flag, Hook, Kind, TcpState } from '../../services/shared/record.js';
import { C, flowRows, POD } from './fixtures/flows.js';

const PROXY = 15006;

/** Events the server node's agent adds when an out-of-window segment escapes the pod's REDIRECT. */
function natBypass(rows: TimelineRow[]): TimelineRow[] {
  const last = rows.filter((r) => r.kind === Kind.PACKET).at(-1)!;
  const t = BigInt(last.wall_ts_ns) + 1_000_000n;
  const pod = { ...last, node: 'node-c', agent: 'node-c', netns: 'pod-server', netns_ino: 5, ifname: 'eth0', ifindex: 5 };
  const outOfWindow = (1_000_102 + 0x40000000) >>> 0;
  let seq = 10_000;
  const at = (dt: bigint, o: Partial<TimelineRow>): TimelineRow => ({ ...pod, seq: seq++, wall_ts_ns: (t + dt).toString(), ...o });
  return [
    ...rows,
    // The pod's conntrack entry: C -> POD:8080 redirected to POD:15006.
    at(-500_000_000n, { kind: Kind.CT, hook: Hook.NET_DEV_QUEUE, saddr: C.addr, sport: C.port, daddr: POD.addr, dport: POD.port, reply_saddr: POD.addr, reply_sport: PROXY, reply_daddr: C.addr, reply_dport: C.port, ct_status: 0x1be }),
    // The injected segment arriving at the pod, untranslated.
    at(0n, { kind: Kind.PACKET, hook: Hook.NETIF_RECEIVE, saddr: C.addr, sport: C.port, daddr: POD.addr, dport: POD.port, tcp_seq: outOfWindow, tcp_ack: 7_000_502, tcp_flags: 0x18, payload_len: 4 }),
    // tcp_send_reset from the app's LISTEN socket: tuple local -> remote, seq/ack of the trigger.
    at(20_000n, { kind: Kind.RST_SENT, hook: Hook.TCP_SEND_RESET, saddr: POD.addr, sport: POD.port, daddr: C.addr, dport: C.port, tcp_seq: outOfWindow, tcp_ack: 7_000_502, tcp_flags: 0x18, payload_len: 4, sk_state: TcpState.LISTEN, reason: 5, reason_name: 'TCP_FLAGS' }),
    // The RST on the wire, with no conntrack entry (INVALID).
    at(30_000n, { kind: Kind.PACKET, hook: Hook.NET_DEV_QUEUE, saddr: POD.addr, sport: POD.port, daddr: C.addr, dport: C.port, tcp_seq: 7_000_502, tcp_ack: 0, tcp_flags: 0x04, payload_len: 0, flags: Flag.CT_MISSING | Flag.EGRESS }),
    // And the client socket receiving it.
    at(200_000n, { node: 'node-a', agent: 'node-a', netns: 'pod-client', netns_ino: 1, kind: Kind.RST_RECV, hook: Hook.TCP_RECEIVE_RESET, saddr: C.addr, sport: C.port, daddr: '10.96.0.10', dport: 80, sk_state: TcpState.ESTABLISHED }),
  ];
}

describe('verdicts', () => {
  it('normal traffic: no verdict', () => {
    expect(judgeFlow(flowRows())).toEqual([]);
    expect(judgeFlow(flowRows({ snat: true, netemNs: 20_000_000 }))).toEqual([]);
  });

  it('NAT bypass reset: names node, pod, LISTEN, reason, trigger, the chain and the fix', () => {
    const v = judgeFlow(natBypass(flowRows()));
    expect(v).toHaveLength(1);
    const [n] = v;
    expect(n).toMatchObject({ kind: 'nat_bypass_reset', node: 'node-c', netns: 'pod-server', skState: 'LISTEN', reasonName: 'TCP_FLAGS' });
    expect(n!.trigger).toMatchObject({ src: C, dst: POD, seq: (1_000_102 + 0x40000000) >>> 0 });
    expect(n!.title).toContain('skipped 10.10.3.2:8080 -> 10.10.3.2:15006');
    const chain = n!.evidence.join('\n');
    expect(chain).toMatch(/established/);
    expect(chain).toMatch(/DNAT 10\.96\.0\.10:80 -> 10\.10\.3\.2:8080 at node-lb/);
    expect(chain).toMatch(/1073741824 bytes ahead/);
    expect(chain).toMatch(/INVALID/);
    expect(chain).toMatch(/LISTEN socket on 10\.10\.3\.2:8080/);
    expect(chain).toMatch(/tcp_receive_reset/);
    expect(n!.fix).toMatch(/ctstate INVALID -j DROP/);
    expect(n!.fix).toMatch(/nf_conntrack_tcp_be_liberal=1/);
  });

  it('NAT bypass reset at the load balancer: a listener on the VIP answers a segment DNAT skipped', () => {
    const rows = flowRows();
    const last = rows.filter((r) => r.kind === Kind.PACKET).at(-1)!;
    const t = BigInt(last.wall_ts_ns) + 1_000_000n;
    const lb = { ...last, node: 'node-lb', agent: 'node-lb', netns: 'node-lb', netns_ino: 3, ifname: 'to-a', ifindex: 3 };
    const seq = (1_000_102 + 0x40000000) >>> 0;
    const v = judgeFlow([
      ...rows,
      { ...lb, seq: 20_000, wall_ts_ns: t.toString(), kind: Kind.PACKET, hook: Hook.NETIF_RECEIVE, saddr: C.addr, sport: C.port, daddr: '10.96.0.10', dport: 80, tcp_seq: seq, tcp_ack: 7_000_502, tcp_flags: 0x18, payload_len: 4 },
      { ...lb, seq: 20_001, wall_ts_ns: (t + 10_000n).toString(), kind: Kind.RST_SENT, hook: Hook.TCP_SEND_RESET, saddr: '10.96.0.10', sport: 80, daddr: C.addr, dport: C.port, tcp_seq: seq, tcp_ack: 7_000_502, tcp_flags: 0x18, payload_len: 4, sk_state: TcpState.LISTEN, reason_name: 'TCP_FLAGS' },
    ]);
    expect(v.map((x) => x.kind)).toEqual(['nat_bypass_reset']);
    expect(v[0]).toMatchObject({ node: 'node-lb', skState: 'LISTEN' });
    expect(v[0]!.title).toContain('skipped 10.96.0.10:80 -> 10.10.3.2:8080');
    expect(v[0]!.fix).toMatch(/in node-lb\/node-lb/);
  });

  it('is stable: judging again gives the same keys', () => {
    const rows = natBypass(flowRows());
    expect(judgeFlow(rows).map((v) => v.key)).toEqual(judgeFlow([...rows].reverse()).map((v) => v.key));
  });

  const rst = (o: Partial<TimelineRow>) => {
    // The connection before its FIN exchange: a reset then is not teardown.
    const rows = flowRows().filter((r) => !(r.tcp_flags & 0x01) && !(r.tcp_seq === 1_000_102 && r.tcp_ack === 7_000_502));
    const last = rows.filter((r) => r.kind === Kind.PACKET).at(-1)!;
    return [...rows, { ...last, seq: 9999, node: 'node-c', agent: 'node-c', netns: 'pod-server', kind: Kind.RST_SENT, hook: Hook.TCP_SEND_RESET, saddr: POD.addr, sport: POD.port, daddr: C.addr, dport: C.port, wall_ts_ns: (BigInt(last.wall_ts_ns) + 1000n).toString(), ...o }];
  };

  it.each([
    ['application abort, unread data', { sk_state: TcpState.ESTABLISHED, reason_name: 'TCP_ABORT_ON_CLOSE' }, 'reset_app_abort', /closed the socket with data still unread/],
    ['application abort, linger 0', { sk_state: TcpState.FIN_WAIT1, reason_name: 'TCP_ABORT_ON_LINGER' }, 'reset_app_abort', /SO_LINGER set to 0/],
    ['no socket on an established connection', { sk_state: 0, reason_name: 'NO_SOCKET' }, 'reset_no_socket', /found no socket/],
    ['something else', { sk_state: TcpState.ESTABLISHED, reason_name: 'TCP_INVALID_ACK_SEQUENCE' }, 'reset_other', /TCP_INVALID_ACK_SEQUENCE/],
  ] as const)('tells resets apart: %s', (_n, o, kind, title) => {
    const [v] = judgeFlow(rst(o));
    expect(v!.kind).toBe(kind);
    expect(v!.title).toMatch(title);
  });

  it('connection refused: a SYN to a closed port', () => {
    const rows = flowRows().slice(0, 3);
    const syn = rows[0]!;
    const v = judgeFlow([...rows, { ...syn, seq: 500, kind: Kind.RST_SENT, hook: Hook.TCP_SEND_RESET, node: 'node-c', saddr: POD.addr, sport: POD.port, daddr: C.addr, dport: C.port, sk_state: 0, reason_name: 'NO_SOCKET' }]);
    expect(v.map((x) => x.kind)).toEqual(['reset_refused']);
    expect(v[0]!.title).toMatch(/nothing listens on 10\.10\.3\.2:8080/);
  });

  it('a late segment finding no socket after this side closed is teardown, not an incident', () => {
    const rows = flowRows();
    const last = rows.filter((r) => r.kind === Kind.PACKET).at(-1)!;
    const late = { ...last, seq: 4242, node: 'node-c', kind: Kind.RST_SENT, hook: Hook.TCP_SEND_RESET, saddr: POD.addr, sport: POD.port, daddr: C.addr, dport: C.port, sk_state: 0, reason_name: 'NO_SOCKET', wall_ts_ns: (BigInt(last.wall_ts_ns) + 1000n).toString() };
    expect(judgeFlow([...rows, late])).toEqual([]);
    // nor is the drop of that segment (kfree_skb NO_SOCKET): seen once in lab-e2e as a spurious drop verdict
    const freed = { ...late, seq: 4243, kind: Kind.DROP, hook: Hook.KFREE_SKB, saddr: C.addr, sport: C.port, daddr: POD.addr, dport: POD.port, sk_state: 0, reason: 2 };
    expect(judgeFlow([...rows, late, freed])).toEqual([]);
    // a drop that triggered no reset is still one
    expect(judgeFlow([...rows, { ...freed, tcp_seq: (late.tcp_seq + 1) >>> 0 }]).map((v) => v.kind)).toEqual(['drop']);
  });

  it('a reset received that no watched node sent', () => {
    const rows = flowRows();
    const last = rows.at(-2)!;
    const [v] = judgeFlow([...rows, { ...last, seq: 777, kind: Kind.RST_RECV, hook: Hook.TCP_RECEIVE_RESET, sk_state: TcpState.ESTABLISHED }]);
    expect(v!.kind).toBe('reset_received');
  });

  it('a reset that a watched node made without a socket (a firewall REJECT): named, with where to look', () => {
    const rows = flowRows().slice(0, 3); // the SYN, up to node-lb's ingress
    const syn = rows[2]!;
    const t = BigInt(syn.wall_ts_ns);
    // node-lb answers the SYN itself: a RST leaves it toward the client and reaches the client's socket
    const rst = { saddr: '10.96.0.10', sport: 80, daddr: syn.saddr, dport: syn.sport, tcp_flags: 0x14, tcp_seq: 0, tcp_ack: syn.tcp_seq + 1, payload_len: 0 };
    const out = { ...syn, ...rst, seq: 901, hook: Hook.NET_DEV_QUEUE, wall_ts_ns: (t + 10_000n).toString() };
    const inA = { ...rows[1]!, ...rst, seq: 902, hook: Hook.NETIF_RECEIVE, wall_ts_ns: (t + 50_000n).toString() };
    const recv = { ...rows[0]!, seq: 903, kind: Kind.RST_RECV, hook: Hook.TCP_RECEIVE_RESET, sk_state: TcpState.SYN_SENT, wall_ts_ns: (t + 60_000n).toString() };
    const [v] = judgeFlow([...rows, out, inA, recv]);
    expect(v).toMatchObject({ kind: 'reset_received', node: 'node-a', fix: expect.stringMatching(/iptables-save \| grep -i reject .* in node-lb/) });
    expect(v!.title).toMatch(/node-lb\/node-lb sent it without a socket \(a firewall REJECT, most likely\)$/);
    expect(v!.evidence[1]).toMatch(/first seen leaving node-lb\/node-lb .*never arriving there/);
    // first seen arriving somewhere (it came from outside what is watched): not a watched node's
    const [w] = judgeFlow([...rows, inA, recv]);
    expect(w!.title).toMatch(/no watched node sent it$/);
    expect(w!.fix).toBeNull();
  });

  it('drops: reason and place, grouped; benign reasons ignored', () => {
    const rows = flowRows();
    const p = rows.find((r) => r.node === 'node-lb' && r.hook === Hook.NETIF_RECEIVE)!;
    const drop = (seq: number, reason_name: string) => ({ ...p, seq, kind: Kind.DROP, hook: Hook.KFREE_SKB, reason: 12, reason_name, location: 'nft_do_chain', aux2: 3 });
    const v = judgeFlow([...rows, drop(9001, 'NETFILTER_DROP'), drop(9002, 'NETFILTER_DROP'), drop(9003, 'TCP_OLD_DATA')]);
    expect(v).toHaveLength(1);
    expect(v[0]).toMatchObject({ kind: 'drop', node: 'node-lb', reasonName: 'NETFILTER_DROP' });
    expect(v[0]!.title).toBe('2 packets dropped at node-lb/node-lb to-a FORWARD: NETFILTER_DROP (a netfilter (iptables/nftables) rule dropped it)');
    expect(v[0]!.evidence[0]).toMatch(/freed in nft_do_chain/);
  });

  it('retransmission burst: the last hop where the lost segment was seen', () => {
    const rows = flowRows();
    // The response (server -> client, seq 7_000_001) was lost after node-c's host interface.
    const lost = rows.filter((r) => r.tcp_seq === 7_000_001 && r.payload_len === 500);
    const kept = rows.filter((r) => !lost.includes(r) || r.node === 'node-c');
    const rt = lost[0]!;
    const retrans = [1, 2, 3].map((i) => ({ ...rt, seq: 8000 + i, kind: Kind.RETRANS, hook: Hook.TCP_RETRANSMIT, wall_ts_ns: (BigInt(rt.wall_ts_ns) + BigInt(i) * 200_000_000n).toString() }));
    const v = judgeFlow([...kept, ...retrans]);
    expect(v.map((x) => x.kind)).toEqual(['retrans_burst']);
    expect(v[0]!.title).toMatch(/3 retransmissions from 10\.10\.3\.2:8080; the lost segment was last seen at node-c\/node-c to-lb net_dev_queue/);
  });

  describe('retransmission of a segment that arrived: what went missing is its acknowledgement', () => {
    const rows = flowRows();
    const rt = rows.find((r) => r.tcp_seq === 7_000_001 && r.payload_len === 500)!;
    const retrans = [1, 2, 3].map((i) => ({ ...rt, seq: 8000 + i, kind: Kind.RETRANS, hook: Hook.TCP_RETRANSMIT, wall_ts_ns: (BigInt(rt.wall_ts_ns) + BigInt(i) * 200_000_000n).toString() }));
    const acking = (r: (typeof rows)[number]) => r.dir === 0 && r.tcp_ack >= 7_000_501;

    it('lost on its way back: where it was last seen', () => {
      // the client's ACK left node-a and never reached node-lb
      const kept = rows.filter((r) => !(acking(r) && r.node !== 'node-a'));
      const [v] = judgeFlow([...kept, ...retrans]);
      expect(v!.title).toBe('3 retransmissions from 10.10.3.2:8080; the segment arrived, its acknowledgement was lost after node-a/node-a to-lb net_dev_queue');
      expect(v!.evidence.slice(1)).toEqual(['the original segment seq 7000001 reached node-a/pod-client eth0 netif_receive, the last hop of its way', 'its acknowledgement (ack 7000501) was last seen at node-a/node-a to-lb net_dev_queue and nowhere after it']);
    });

    it('dropped on its way back: where, and why', () => {
      const kept = rows.filter((r) => !(acking(r) && r.node !== 'node-a'));
      const atLb = rows.find((r) => acking(r) && r.node === 'node-lb')!;
      const drop = { ...atLb, seq: 9100, kind: Kind.DROP, hook: Hook.KFREE_SKB, reason: 12, reason_name: 'NETFILTER_DROP', location: 'nft_do_chain' };
      const v = judgeFlow([...kept, drop, ...retrans]).find((x) => x.kind === 'retrans_burst')!;
      expect(v.title).toBe('3 retransmissions from 10.10.3.2:8080; the segment arrived, its acknowledgement was dropped at node-lb/node-lb to-a kfree_skb: NETFILTER_DROP');
      expect(v.evidence[2]).toBe('its acknowledgement (ack 7000501) was dropped at node-lb/node-lb to-a kfree_skb (kfree_skb, reason NETFILTER_DROP, in nft_do_chain)');
    });

    it('never sent', () => {
      const [v] = judgeFlow([...rows.filter((r) => !acking(r)), ...retrans]);
      expect(v!.title).toBe('3 retransmissions from 10.10.3.2:8080; the segment reached node-a/pod-client, which did not acknowledge it');
    });

    it('both arrived: the sender resent it anyway', () => {
      const [v] = judgeFlow([...rows, ...retrans]);
      expect(v!.title).toMatch(/the segment and its acknowledgement both arrived \(the sender resent it anyway/);
    });
  });
});
