import { describe, expect, it } from 'vitest';
import { buildPath, describeHop, labelOf } from '../../services/correlator/path.js';
import { Hook, Kind } from '../../services/shared/record.js';
import { latencyReport } from '../../services/correlator/report.js';
import { C, flowRows, POD } from './fixtures/flows.js';

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

  it('times the first request and response at the two ends: the server\'s share, the network\'s', () => {
    // The fixture sends a packet each ms, 116 µs on the way there and 125 back: the request (4th
    // packet) reaches the server pod 116 µs after leaving the client, the response (6th) leaves
    // the server 2 ms after the request left the client, and reaches the client 125 µs later.
    const x = buildPath(flowRows()).exchange!;
    expect(x).toEqual({ clientWaitUs: 2125, serverUs: 1884, networkUs: 241 });
    // each figure is read on one node's clock: a server node 50 ms off changes nothing
    expect(buildPath(flowRows({ skewNs: { 'node-c': 50_000_000 } })).exchange).toEqual(x);
    // without the server's node, its share is unknown
    expect(buildPath(flowRows().filter((r) => r.node !== 'node-c')).exchange).toBeNull();
  });

  it('describes a hop in one line', () => {
    const p = buildPath(flowRows());
    expect(describeHop(p.paths.forward[3]!)).toBe('node-lb/node-lb to-c net_dev_queue: 10.10.1.2:40000 -> 10.10.3.2:8080  [DNAT 10.96.0.10:80 -> 10.10.3.2:8080]  (conntrack: DNAT 10.96.0.10:80 -> 10.10.3.2:8080)  joined by isn+conntrack');
  });

  it('names a device only where there is one: a socket event\'s place is its namespace and hook', () => {
    const [r] = flowRows();
    expect(labelOf(r!)).toBe('node-a/pod-client eth0 net_dev_queue');
    expect(labelOf({ ...r!, kind: Kind.RST_SENT, hook: Hook.TCP_SEND_RESET, ifname: '', ifindex: 0 })).toBe('node-a/pod-client tcp_send_reset');
    expect(labelOf({ ...r!, ifname: '', ifindex: 7 })).toBe('node-a/pod-client if7 net_dev_queue');
  });
});

describe('latency report', () => {
  it('splits the flows\' first requests and responses into the server\'s share and the network\'s', () => {
    expect(latencyReport([1, 2, 3].map(() => flowRows())).exchanges).toEqual({ flows: 3, clientWaitUs: { p50: 2125, p99: 2125 }, serverUs: { p50: 1884, p99: 1884 }, networkUs: { p50: 241, p99: 241 } });
    // no flow with its server's node watched: nothing to split
    expect(latencyReport([flowRows().filter((r) => r.node !== 'node-c')]).exchanges).toBeNull();
  });

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
