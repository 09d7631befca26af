/**
 * TCP on the real kernel, between namespaces the test creates: packets on both
 * sides with tuples, seq/ack and direction; a reset for a closed port; and
 * nothing at all from namespaces the agent does not own.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Flag, Hook, Kind, type HopRecord } from '../../services/shared/record.js';
import { Registry } from 'prom-client';
import { resetReasonName, dropReasonName, registerLiveMetrics } from '../../services/agent/live/index.js';
import { describePrivileged } from './preflight.js';
import { bpftool, Lab, TCP_CLIENT, TCP_ECHO_SERVER, TCP_HOLD_CLIENT, waitLine, type Link, type Ns } from './netns.js';
import { atEgress, atIngress, eventually, startCapture, type Capture } from './capture.js';

const SYN = 0x02;
const ACK = 0x10;
const RST = 0x04;
const PSH = 0x08;

describePrivileged('live capture: TCP between namespaces', () => {
  const lab = new Lab();
  let cli: Ns;
  let srv: Ns;
  let out1: Ns;
  let out2: Ns;
  let link: Link;
  let outLink: Link;
  let cap: Capture;

  beforeAll(() => {
    cli = lab.ns('cli');
    srv = lab.ns('srv');
    out1 = lab.ns('out1');
    out2 = lab.ns('out2');
    link = lab.link(cli, srv);
    outLink = lab.link(out1, out2);
    cap = startCapture({ netns: [cli.name, srv.name], node: 'test-node', queueIdleMs: 3000 });
  });

  afterAll(async () => {
    await cap?.stop();
    lab.cleanup();
  });

  /** One TCP exchange: client sends msg, server echoes it, both close. */
  async function exchange(c: Ns, s: Ns, serverAddr: string, port: number, msg: string): Promise<number> {
    const server = s.spawn('node', ['-e', TCP_ECHO_SERVER, serverAddr, String(port)]);
    await waitLine(server, /listening/);
    const res = JSON.parse(c.run('node', ['-e', TCP_CLIENT, serverAddr, String(port), msg]).trim()) as { local: number; got: string };
    expect(res.got).toBe(msg);
    server.kill();
    return res.local;
  }

  const isFlow = (r: HopRecord, a: string, ap: number, b: string, bp: number): boolean =>
    r.tuple.saddr === a && r.tuple.sport === ap && r.tuple.daddr === b && r.tuple.dport === bp;

  it('reports an IPv4 exchange on both sides with tuples, seq/ack and direction', async () => {
    const port = 18080;
    const msg = 'hello hoptrace';
    const cport = await exchange(cli, srv, link.addrB, port, msg);
    const c2s = (r: HopRecord) => r.kind === Kind.PACKET && isFlow(r, link.addrA, cport, link.addrB, port);
    const s2c = (r: HopRecord) => r.kind === Kind.PACKET && isFlow(r, link.addrB, port, link.addrA, cport);

    // SYN leaves the client's device, then enters the server's: same skb, same seq.
    const [synOut] = await cap.waitFor((r) => c2s(r) && r.tcpFlags === SYN && atEgress(r), { what: 'client SYN egress' });
    const [synIn] = await cap.waitFor((r) => c2s(r) && r.tcpFlags === SYN && atIngress(r), { what: 'server SYN ingress' });
    expect(synOut).toMatchObject({ netnsIno: cli.inode, ifname: link.a, family: 2, l4proto: 6 });
    expect(synOut!.flags & Flag.EGRESS).toBeTruthy();
    expect(synIn).toMatchObject({ netnsIno: srv.inode, ifname: link.b, seq: synOut!.seq, skbId: synOut!.skbId });
    expect(synIn!.flags & Flag.INGRESS).toBeTruthy();
    expect(synIn!.tsNs).toBeGreaterThanOrEqual(synOut!.tsNs);
    expect(synOut!.ipId).toBe(synIn!.ipId);

    // SYN-ACK acknowledges the client's ISN + 1, on both sides.
    const synAcks = await cap.waitFor((r) => s2c(r) && r.tcpFlags === (SYN | ACK), { min: 2, what: 'SYN-ACK on both sides' });
    for (const r of synAcks) expect(r.ack).toBe((synOut!.seq + 1) >>> 0);
    const sa = synAcks.find((r) => atEgress(r))!;
    expect(sa).toMatchObject({ netnsIno: srv.inode, ifname: link.b });
    expect(synAcks.find((r) => atIngress(r))).toMatchObject({ netnsIno: cli.inode, ifname: link.a });

    // The data segment: seq = ISN + 1, payload length = message length, seen on both sides.
    const data = await cap.waitFor((r) => c2s(r) && (r.tcpFlags & PSH) !== 0 && r.payloadLen === msg.length, { min: 2, what: 'client data on both sides' });
    for (const r of data) {
      expect(r.seq).toBe((synOut!.seq + 1) >>> 0);
      expect(r.ack).toBe((sa.seq + 1) >>> 0);
    }
    // The echo comes back with the server's ISN + 1 and acknowledges the data.
    const echo = await cap.waitFor((r) => s2c(r) && r.payloadLen === msg.length, { min: 2, what: 'echo on both sides' });
    for (const r of echo) {
      expect(r.seq).toBe((sa.seq + 1) >>> 0);
      expect(r.ack).toBe((synOut!.seq + 1 + msg.length) >>> 0);
    }

    // The kernel stamps each packet with the connection's ISNs (HOP_F_CONN, aux[1..2]) from the
    // handshake: the SYN with the client's alone, everything from the SYN-ACK on with both.
    const isnC = synOut!.seq;
    const isnS = sa.seq;
    await cap.settle();
    const packets = cap.records.filter((r) => c2s(r) || s2c(r));
    expect(packets.length).toBeGreaterThanOrEqual(12);
    for (const r of packets) {
      expect(r.flags & Flag.CONN, `HOP_F_CONN on hook ${r.hook} flags 0x${r.tcpFlags.toString(16)} seq ${r.seq}`).toBeTruthy();
      expect(r.aux.slice(1)).toEqual(r.tcpFlags === SYN ? [isnC, 0] : [isnC, isnS]);
    }

    // Socket state changes of both ends (local -> remote tuples).
    await cap.waitFor((r) => r.kind === Kind.SOCK_STATE && r.netnsIno === srv.inode && r.skState === 1 && isFlow(r, link.addrB, port, link.addrA, cport), { what: 'server ESTABLISHED' });
    await cap.waitFor((r) => r.kind === Kind.SOCK_STATE && r.netnsIno === cli.inode && r.skState === 1 && isFlow(r, link.addrA, cport, link.addrB, port), { what: 'client ESTABLISHED' });
  });

  it('links net_dev_start_xmit only while an owned device queues; then one record per packet behind the qdisc, none on veth (noqueue)', async () => {
    const xmitOf = (cport: number, port: number) => (r: HopRecord) =>
      r.kind === Kind.PACKET && r.hook === Hook.NET_DEV_XMIT && (isFlow(r, link.addrA, cport, link.addrB, port) || isFlow(r, link.addrB, port, link.addrA, cport));
    // The kernel's own view: a link of this capture's start_xmit program (prog id from its fd).
    const xmit = cap.source.status().attached.find((a) => a.tracepoint === 'net_dev_start_xmit')!;
    const progId = Number(/^prog_id:\s+(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${xmit.fd}`, 'utf8'))![1]);
    const linked = () => bpftool('link', 'show').some((l) => l.prog_id === progId);
    const linkedSaid = () => cap.source.status().onDemand?.find((d) => d.tracepoint === 'net_dev_start_xmit')?.linked;

    // Only veth (noqueue) devices owned: unlinked once the start's grace is over.
    expect(await eventually(() => !linked(), 5000)).toBe(true);
    expect(linkedSaid()).toBe(false);
    const bare = await exchange(cli, srv, link.addrB, 18082, 'no queue');
    await cap.waitFor((r) => r.kind === Kind.PACKET && atEgress(r) && isFlow(r, link.addrB, 18082, link.addrA, bare) && r.payloadLen > 0, { what: 'echo egress' });
    await cap.settle();
    expect(cap.records.filter(xmitOf(bare, 18082))).toEqual([]);
    expect(linked()).toBe(false);

    cli.run('tc', ['qdisc', 'add', 'dev', link.a, 'root', 'pfifo']);
    try {
      // The first packets through the queue have it linked, within a check (100 ms) and a drain.
      await exchange(cli, srv, link.addrB, 18084, 'wake');
      expect(await eventually(linked, 3000)).toBe(true);
      expect(linkedSaid()).toBe(true);
      const queued = await exchange(cli, srv, link.addrB, 18083, 'queued');
      const [syn] = await cap.waitFor((r) => xmitOf(queued, 18083)(r) && r.tcpFlags === SYN, { what: 'client SYN after the qdisc' });
      const [synQueued] = await cap.waitFor((r) => r.kind === Kind.PACKET && atEgress(r) && r.tcpFlags === SYN && isFlow(r, link.addrA, queued, link.addrB, 18083), { what: 'client SYN queued' });
      expect(syn).toMatchObject({ netnsIno: cli.inode, ifname: link.a, skbId: synQueued!.skbId, seq: synQueued!.seq });
      expect(syn!.tsNs).toBeGreaterThanOrEqual(synQueued!.tsNs);
      await cap.settle();
      // every client packet of the exchange, once each; the server's side kept its noqueue root: nothing there
      const egress = cap.records.filter((r) => r.kind === Kind.PACKET && atEgress(r) && isFlow(r, link.addrA, queued, link.addrB, 18083));
      expect(cap.records.filter(xmitOf(queued, 18083)).map((r) => r.skbId).sort()).toEqual(egress.map((r) => r.skbId).sort());
      expect(cap.records.filter(xmitOf(queued, 18083)).filter((r) => r.netnsIno !== cli.inode)).toEqual([]);
    } finally {
      cli.run('tc', ['qdisc', 'del', 'dev', link.a, 'root']);
    }
    // No queue left: unlinked again queueIdleMs (3 s here) after the last queued packet.
    expect(await eventually(() => !linked(), 8000)).toBe(true);
    expect(cap.source.stats()).toMatchObject({ xmit_links: 1, xmit_unlinks: 2, xmit_link_failed: 0 });
    const registry = new Registry();
    registerLiveMetrics(registry, cap.source);
    const text = await registry.metrics();
    expect(text).toContain('hoptrace_live_xmit_links_total{event="linked"} 1');
    expect(text).toContain('hoptrace_live_xmit_links_total{event="unlinked"} 2');
    expect(text).toContain('hoptrace_live_programs{state="unlinked"} 1');
  });

  it('reports an IPv6 exchange', async () => {
    const a6 = link.addr6A;
    const b6 = link.addr6B;
    const port = 18081;
    const cport = await exchange(cli, srv, b6, port, 'v6');
    const recs = await cap.waitFor((r) => r.kind === Kind.PACKET && r.family === 10 && isFlow(r, a6, cport, b6, port) && r.tcpFlags === SYN, { min: 2, what: 'IPv6 SYN on both sides' });
    expect(new Set(recs.map((r) => r.netnsIno))).toEqual(new Set([cli.inode, srv.inode]));
    expect(recs[0]!.seq).toBe(recs[1]!.seq);
  });

  it('reports tcp_send_reset with NO_SOCKET in the server namespace for a closed port', async () => {
    const port = 18999;
    const res = JSON.parse(cli.run('node', ['-e', TCP_CLIENT, link.addrB, String(port), 'x']).trim()) as { error?: string };
    expect(res.error).toBe('ECONNREFUSED');
    const [rst] = await cap.waitFor((r) => r.kind === Kind.RST_SENT && r.tuple.sport === port, { what: 'RST_SENT' });
    expect(rst).toMatchObject({ netnsIno: srv.inode, hook: Hook.TCP_SEND_RESET, ifname: link.b, skState: 0 });
    expect(resetReasonName(rst!.reason)).toBe('NO_SOCKET');
    // local -> remote: the server's closed port towards the client
    expect(rst!.tuple).toMatchObject({ saddr: link.addrB, daddr: link.addrA, sport: port });
    // seq/ack/flags are those of the SYN that triggered it; the skb is the one that came in.
    const [syn] = await cap.waitFor((r) => r.kind === Kind.PACKET && atIngress(r) && r.tuple.dport === port && r.tuple.sport === rst!.tuple.dport, { what: 'SYN ingress' });
    expect(rst!.tcpFlags).toBe(SYN);
    expect(rst!.seq).toBe(syn!.seq);
    expect(rst!.skbId).toBe(syn!.skbId);
    // The RST itself on the wire, and its receipt by the client socket.
    const [wire] = await cap.waitFor((r) => r.kind === Kind.PACKET && atEgress(r) && r.tuple.sport === port && (r.tcpFlags & RST) !== 0, { what: 'RST egress' });
    expect(wire!.ack).toBe((syn!.seq + 1) >>> 0);
    await cap.waitFor((r) => r.kind === Kind.RST_RECV && r.netnsIno === cli.inode && r.tuple.dport === port && r.skState === 2, { what: 'RST_RECV in SYN_SENT' });
    // The kernel also drops the SYN itself, with its own reason.
    const [drop] = await cap.waitFor((r) => r.kind === Kind.DROP && r.skbId === syn!.skbId, { what: 'DROP of the SYN' });
    expect(drop!.netnsIno).toBe(srv.inode);
    expect(dropReasonName(drop!.reason)).toBe('NO_SOCKET');
  });

  it('reports retransmissions with the segment that was resent', async () => {
    const port = 18090;
    const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, link.addrB, String(port)]);
    await waitLine(server, /listening/);
    const client = cli.spawn('node', ['-e', TCP_HOLD_CLIENT, link.addrB, String(port), 'a', 'lost']);
    const { local } = JSON.parse(await waitLine(client, /local/)) as { local: number };
    // From now on the server's namespace drops the flow: the next write is retransmitted.
    // (It waits for the rule: a fixed 200 ms delay lost the race once on a loaded machine.)
    srv.run('iptables', ['-A', 'INPUT', '-p', 'tcp', '--dport', String(port), '-j', 'DROP']);
    client.kill('SIGUSR2');
    const [syn] = await cap.waitFor((r) => r.kind === Kind.PACKET && r.tuple.sport === local && r.tcpFlags === SYN, { what: 'SYN' });
    const [re] = await cap.waitFor((r) => r.kind === Kind.RETRANS && r.tuple.sport === local, { what: 'retransmission', timeoutMs: 5000 });
    expect(re).toMatchObject({ netnsIno: cli.inode, hook: Hook.TCP_RETRANSMIT, skState: 1, payloadLen: 4 });
    expect(re!.tuple).toEqual({ saddr: link.addrA, daddr: link.addrB, sport: local, dport: port });
    expect(re!.seq).toBe((syn!.seq + 2) >>> 0); // after the SYN and 'a'
    expect(re!.tcpFlags & PSH).toBeTruthy();
    client.kill();
    server.kill();
  });

  it('never reports namespaces outside its set', async () => {
    const before = cap.source.kernelCounters().netns_filtered;
    await exchange(out1, out2, outLink.addrB, 18082, 'outsider');
    JSON.parse(out1.run('node', ['-e', TCP_CLIENT, outLink.addrB, '18998', 'x']).trim());
    // Owned traffic after it: once this is seen, anything from the outsiders would have been too.
    const cport = await exchange(cli, srv, link.addrB, 18083, 'marker');
    await cap.waitFor((r) => r.kind === Kind.PACKET && r.tuple.sport === cport && atIngress(r), { what: 'marker' });
    await cap.settle();
    const owned = new Set([cli.inode, srv.inode]);
    const strays = cap.records.filter((r) => !owned.has(r.netnsIno));
    expect(strays).toEqual([]);
    expect(cap.records.some((r) => r.tuple.saddr === outLink.addrA || r.tuple.daddr === outLink.addrA)).toBe(false);
    expect(cap.source.kernelCounters().netns_filtered).toBeGreaterThan(before);
  });
});
