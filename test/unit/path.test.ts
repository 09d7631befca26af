import { describe, expect, it } from 'vitest';
import { buildPath, describeHop } from '../../services/correlator/path.js';
import { latencyReport } from '../../services/correlator/report.js';
import type { TimelineRow } from '../../services/correlator/timeline.js';
import { Hook, Kind } from '../../services/shared/record.js';

const C = { addr: '10.10.1.2', port: 40000 };
const VIP = { addr: '10.96.0.10', port: 80 };
const POD = { addr: '10.10.3.2', port: 8080 };
const LB = { addr: '10.10.2.1', port: 61000 };

interface Point {
  node: string;
  netns: string;
  ino: number;
  ifname: string;
  hook: number;
  /** Which tuple the packet has here: before or after the LB's NAT. */
  side: 'client' | 'server';
  /** ns from the previous point on the forward path. */
  gap: number;
}

/** Forward path: client pod -> node-a -> node-lb (DNAT, netem in its qdisc) -> node-c -> server pod. */
function forwardPoints(netemNs: number): Point[] {
  return [
    { node: 'node-a', netns: 'pod-client', ino: 1, ifname: 'eth0', hook: Hook.NET_DEV_QUEUE, side: 'client', gap: 0 },
    { node: 'node-a', netns: 'node-a', ino: 2, ifname: 'to-lb', hook: Hook.NET_DEV_QUEUE, side: 'client', gap: 20_000 },
    { node: 'node-lb', netns: 'node-lb', ino: 3, ifname: 'to-a', hook: Hook.NETIF_RECEIVE, side: 'client', gap: 30_000 },
    { node: 'node-lb', netns: 'node-lb', ino: 3, ifname: 'to-c', hook: Hook.NET_DEV_QUEUE, side: 'server', gap: 15_000 },
    { node: 'node-lb', netns: 'node-lb', ino: 3, ifname: 'to-c', hook: Hook.NET_DEV_XMIT, side: 'server', gap: 1_000 + netemNs },
    { node: 'node-c', netns: 'node-c', ino: 4, ifname: 'to-lb', hook: Hook.NETIF_RECEIVE, side: 'server', gap: 30_000 },
    { node: 'node-c', netns: 'pod-server', ino: 5, ifname: 'eth0', hook: Hook.NETIF_RECEIVE, side: 'server', gap: 20_000 },
  ];
}

/** Reverse path: the same points backwards, egress where the forward path has ingress. */
function reversePoints(): Point[] {
  const f = forwardPoints(0);
  const flip = (h: number) => (h === Hook.NETIF_RECEIVE ? Hook.NET_DEV_QUEUE : Hook.NETIF_RECEIVE);
  return f
    .filter((p) => p.hook !== Hook.NET_DEV_XMIT)
    .reverse()
    .map((p, i) => ({ ...p, hook: flip(p.hook), gap: i === 0 ? 0 : 25_000 }));
}

interface FlowOpts {
  snat?: boolean;
  netemNs?: number;
  skewNs?: Record<string, number>;
  withIsn?: boolean;
  skipNode?: string;
}

/** Rows of a short connection: handshake, a request and a response, FIN exchange. */
function flowRows(o: FlowOpts = {}): TimelineRow[] {
  const rows: TimelineRow[] = [];
  const isnC = 1_000_000;
  const isnS = 7_000_000;
  const serverSideClient = o.snat ? LB : C;
  let t = 1_800_000_000_000_000_000n;
  let seq = 0;
  const pkts: [boolean, number, number, number, number][] = [
    [true, 0x02, isnC, 0, 0],
    [false, 0x12, isnS, isnC + 1, 0],
    [true, 0x10, isnC + 1, isnS + 1, 0],
    [true, 0x18, isnC + 1, isnS + 1, 100],
    [false, 0x10, isnS + 1, isnC + 101, 0],
    [false, 0x18, isnS + 1, isnC + 101, 500],
    [true, 0x10, isnC + 101, isnS + 501, 0],
    [true, 0x11, isnC + 101, isnS + 501, 0],
    [false, 0x11, isnS + 501, isnC + 102, 0],
    [true, 0x10, isnC + 102, isnS + 502, 0],
  ];
  for (const [fwd, flags, tcpSeq, tcpAck, len] of pkts) {
    t += 1_000_000n;
    let ts = t;
    for (const p of fwd ? forwardPoints(o.netemNs ?? 0) : reversePoints()) {
      ts += BigInt(p.gap);
      if (p.node === o.skipNode) continue;
      const [src, dst] = p.side === 'client' ? [C, VIP] : [serverSideClient, POD];
      const [s, d] = fwd ? [src, dst] : [dst, src];
      rows.push({
        wall_ts_ns: (ts + BigInt(o.skewNs?.[p.node] ?? 0)).toString(),
        agent: p.node,
        boot: 1,
        seq: seq++,
        node: p.node,
        netns_ino: p.ino,
        netns: p.netns,
        pod: '',
        ifindex: p.ino,
        ifname: p.ifname,
        hook: p.hook,
        kind: Kind.PACKET,
        family: 2,
        proto: 6,
        dir: s.addr < d.addr ? 0 : 1,
        saddr: s.addr,
        daddr: d.addr,
        sport: s.port,
        dport: d.port,
        tcp_seq: tcpSeq,
        tcp_ack: tcpAck,
        tcp_flags: flags,
        tcp_window: 100,
        payload_len: len,
        ip_id: 0,
        flags: 0,
        ct_id: 0,
        ct_status: 0,
        ct_info: 0,
        reply_saddr: '',
        reply_daddr: '',
        reply_sport: 0,
        reply_dport: 0,
        reason: 0,
        sk_state: 0,
        isn_c: o.withIsn === false ? 0 : isnC,
        isn_s: o.withIsn === false ? 0 : isnS,
      });
    }
  }
  // The LB's conntrack entry, as the agent there reports it.
  if (o.skipNode !== 'node-lb') {
    rows.push({
      ...rows[0]!,
      seq: seq++,
      agent: 'node-lb',
      node: 'node-lb',
      netns_ino: 3,
      netns: 'node-lb',
      kind: Kind.CT,
      saddr: C.addr,
      sport: C.port,
      daddr: VIP.addr,
      dport: VIP.port,
      reply_saddr: POD.addr,
      reply_sport: POD.port,
      reply_daddr: serverSideClient.addr,
      reply_dport: serverSideClient.port,
    });
  }
  return rows;
}

const seg = (p: ReturnType<typeof buildPath>, dir: string, from: RegExp, to: RegExp) => p.segments.find((s) => s.direction === dir && from.test(s.from) && to.test(s.to));

describe('flow path across NAT', () => {
  it.each([
    ['DNAT only', false, 'DNAT 10.96.0.10:80 -> 10.10.3.2:8080'],
    ['DNAT and SNAT', true, 'DNAT 10.96.0.10:80 -> 10.10.3.2:8080, SNAT 10.10.1.2:40000 -> 10.10.2.1:61000'],
  ])('%s: every hop in order, the NAT where it happens, conntrack evidence on the LB', (_n, snat, nat) => {
    const p = buildPath(flowRows({ snat }));
    expect(p.paths.forward.map((h) => `${h.node} ${h.ifname} ${h.hook}`)).toEqual([
      'node-a eth0 net_dev_queue',
      'node-a to-lb net_dev_queue',
      'node-lb to-a netif_receive',
      'node-lb to-c net_dev_queue',
      'node-lb to-c net_dev_xmit',
      'node-c to-lb netif_receive',
      'node-c eth0 netif_receive',
    ]);
    expect(p.paths.forward.map((h) => h.nat)).toEqual([null, null, null, nat, null, null, null]);
    expect(p.paths.forward[3]!.conntrack).toEqual([nat]);
    expect(p.paths.forward[3]!.evidence).toEqual(['isn', 'conntrack']);
    expect(p.paths.reverse).toHaveLength(6);
    expect(p.client).toEqual(C);
    expect(p.server).toEqual(POD);
    expect(p.packets).toBe(10);
  });

  it('joins without the LB agent: the client and server sides still form one path', () => {
    const p = buildPath(flowRows({ skipNode: 'node-lb' }));
    expect(p.paths.forward.map((h) => h.node)).toEqual(['node-a', 'node-a', 'node-c', 'node-c']);
    expect(p.paths.forward[2]!.nat).toBe('DNAT 10.96.0.10:80 -> 10.10.3.2:8080');
    expect(p.paths.forward.every((h) => h.evidence[0] === 'isn')).toBe(true);
  });

  it('puts netem delay on the LB qdisc segment and nowhere else', () => {
    const p = buildPath(flowRows({ netemNs: 20_000_000 }));
    expect(seg(p, 'forward', /node-lb.*net_dev_queue/, /node-lb.*net_dev_xmit/)!.p50Us).toBeCloseTo(20_001, 0);
    for (const s of p.segments) if (!/net_dev_xmit/.test(s.to)) expect(s.p99Us).toBeLessThan(100);
  });

  it('corrects a +50 ms clock offset on the server node', () => {
    const plain = buildPath(flowRows({ netemNs: 20_000_000 }));
    const skewed = buildPath(flowRows({ netemNs: 20_000_000, skewNs: { 'node-c': 50_000_000 } }));
    expect(Math.abs(skewed.clock.find((c) => c.node === 'node-c')!.offsetUs - 50_000)).toBeLessThan(100);
    for (const s of plain.segments) {
      const t = skewed.segments.find((x) => x.direction === s.direction && x.from === s.from && x.to === s.to)!;
      expect(Math.abs(t.p50Us - s.p50Us)).toBeLessThan(1_000);
    }
  });

  it('without ISNs (handshake not seen), hops join by tuple only', () => {
    const p = buildPath(flowRows({ withIsn: false, skipNode: 'node-lb' }).filter((r) => r.node === 'node-a'));
    expect(p.paths.forward.every((h) => h.evidence.join() === 'tuple')).toBe(true);
  });

  it('describes a hop in one line', () => {
    const p = buildPath(flowRows());
    expect(describeHop(p.paths.forward[3]!)).toBe('node-lb/node-lb to-c net_dev_queue: 10.10.1.2:40000 -> 10.10.3.2:8080  [DNAT 10.96.0.10:80 -> 10.10.3.2:8080]  (conntrack: DNAT 10.96.0.10:80 -> 10.10.3.2:8080)  joined by isn+conntrack');
  });
});

describe('latency report', () => {
  it('pools flows: netem on the LB qdisc stands out, clocks corrected, nothing else comparable', () => {
    const flows = [1, 2, 3].map(() => flowRows({ netemNs: 20_000_000, skewNs: { 'node-c': 50_000_000 } }));
    const r = latencyReport(flows);
    expect(r.flows).toBe(3);
    expect(r.segments[0]!.from).toMatch(/node-lb.*to-c net_dev_queue/);
    expect(r.segments[0]!.to).toMatch(/node-lb.*to-c net_dev_xmit/);
    expect(r.segments[0]!.p50Us).toBeGreaterThan(19_000);
    expect(r.segments[1]!.p99Us).toBeLessThan(100);
    expect(Math.abs(r.clock.find((c) => c.node === 'node-c')!.offsetUs - 50_000)).toBeLessThan(100);
  });
});
