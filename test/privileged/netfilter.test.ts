/**
 * Netfilter and conntrack on the real kernel: an iptables DROP is reported with
 * the kernel's netfilter drop reason at the namespace and hook that dropped it;
 * DNAT shows up as CT records whose tuples are those `conntrack -L` lists; and
 * the design note's story: an out-of-window segment that conntrack marks
 * INVALID escapes a REDIRECT, reaches the listener, and is answered with a
 * reset that the record shows as such (LISTEN, no conntrack entry).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Flag, Hook, Kind, Stage, type HopRecord, type Tuple } from '../../services/shared/record.js';
import { dropReasonName, resetReasonName } from '../../services/agent/live/index.js';
import { dropLocation, kernelSymbol } from '../../services/agent/live/ksyms.js';
import { describePrivileged } from './preflight.js';
import { Lab, RAW_TCP_SEGMENT, TCP_CLIENT, TCP_ECHO_SERVER, TCP_HOLD_CLIENT, waitLine, type Link, type Ns } from './netns.js';
import { atEgress, atIngress, startCapture, type Capture } from './capture.js';

const IPS_DST_NAT = 0x20;
const IPS_CONFIRMED = 0x08;
const TCP_LISTEN = 10;

/** `conntrack -L` lines as original and reply tuples. */
function conntrackList(ns: Ns, ...filter: string[]): { orig: Tuple; reply: Tuple; line: string }[] {
  const out = ns.run('conntrack', ['-L', ...filter]);
  return out
    .split('\n')
    .filter((l) => l.includes('src='))
    .map((line) => {
      const kv = [...line.matchAll(/(src|dst|sport|dport)=(\S+)/g)].map((m) => m[2]!);
      const t = (i: number): Tuple => ({ saddr: kv[i]!, daddr: kv[i + 1]!, sport: Number(kv[i + 2]), dport: Number(kv[i + 3]) });
      return { orig: t(0), reply: t(4), line };
    });
}

describePrivileged('live capture: netfilter and conntrack', () => {
  const lab = new Lab();
  let cli: Ns;
  let srv: Ns;
  let link: Link;
  let cap: Capture;

  beforeAll(() => {
    cli = lab.ns('cli');
    srv = lab.ns('srv');
    link = lab.link(cli, srv);
    cap = startCapture({ netns: [cli.name, srv.name], protocols: ['tcp'] });
  });

  afterAll(async () => {
    await cap?.stop();
    lab.cleanup();
  });

  const connect = (port: number, timeoutMs = 300) =>
    JSON.parse(cli.run('node', ['-e', TCP_CLIENT, link.addrB, String(port), 'x', String(timeoutMs)]).trim()) as { error?: string };

  it.each([
    { table: 'filter', chain: 'INPUT', port: 17777, stage: Stage.INPUT },
    { table: 'raw', chain: 'PREROUTING', port: 17778, stage: Stage.PREROUTING },
  ])('reports an iptables DROP in $table/$chain with the netfilter reason, namespace and hook', async ({ table, chain, port, stage }) => {
    srv.run('iptables', ['-t', table, '-A', chain, '-p', 'tcp', '--dport', String(port), '-j', 'DROP']);
    expect(connect(port).error).toBe('ETIMEDOUT');
    const [drop] = await cap.waitFor((r) => r.kind === Kind.DROP && r.tuple.dport === port, { what: 'DROP' });
    expect(dropReasonName(drop!.reason)).toBe('NETFILTER_DROP');
    expect(drop).toMatchObject({ netnsIno: srv.inode, hook: Hook.KFREE_SKB, ifname: link.b, tcpFlags: 0x02 });
    expect(drop!.tuple).toMatchObject({ saddr: link.addrA, daddr: link.addrB });
    expect(drop!.flags & Flag.INGRESS).toBeTruthy();
    expect(drop!.aux[2]).toBe(stage);
    // The code that freed it is netfilter's (null only when kptr_restrict hides kallsyms).
    const sym = kernelSymbol(dropLocation(drop!.aux));
    if (sym !== null) expect(['nf_hook_slow', 'nft_do_chain', 'ipt_do_table']).toContain(sym);
    // The client side saw its SYN leave; nothing was dropped there.
    expect(cap.records.some((r) => r.kind === Kind.DROP && r.netnsIno === cli.inode && r.tuple.dport === port)).toBe(false);
  });

  // Entries are read in place where the kernel's BTF has nf_conn, else copied out (conntrack as a module): both here.
  it.each([
    { conntrackInPlace: true, vipHost: 1 },
    { conntrackInPlace: false, vipHost: 2 },
  ])('reports DNAT as CT records whose original and reply tuples match conntrack -L (conntrackInPlace $conntrackInPlace)', async ({ conntrackInPlace, vipHost }) => {
    const cap = startCapture({ netns: [cli.name, srv.name], protocols: ['tcp'], conntrackInPlace });
    try {
      await dnatCase(cap, vipHost);
    } finally {
      await cap.stop();
    }
  });

  async function dnatCase(cap: Capture, vipHost: number): Promise<void> {
    const vip = link.addrB.replace(/\.\d+\.2$/, `.200.${vipHost}`); // a service address routed to srv
    cli.run('ip', ['route', 'add', `${vip}/32`, 'via', link.addrB]);
    const port = 8080 + vipHost;
    srv.run('iptables', ['-t', 'nat', '-A', 'PREROUTING', '-d', vip, '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `${link.addrB}:${port}`]);
    const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, link.addrB, String(port)]);
    await waitLine(server, /listening/);
    const res = JSON.parse(cli.run('node', ['-e', TCP_CLIENT, vip, '80', 'through the NAT']).trim()) as { local: number; got: string };
    expect(res.got).toBe('through the NAT');

    const entries = conntrackList(srv, '-p', 'tcp', '--orig-dst', vip);
    const entry = entries.find((e) => e.orig.sport === res.local);
    expect(entry, `conntrack -L in ${srv.name}: ${entries.map((e) => e.line).join('\n')}`).toBeDefined();
    expect(entry!.reply).toEqual({ saddr: link.addrB, daddr: link.addrA, sport: port, dport: res.local });

    const cts = await cap.waitFor((r) => r.kind === Kind.CT && r.tuple.sport === res.local && r.tuple.daddr === vip, { what: 'CT record' });
    for (const ct of cts) {
      expect(ct.tuple).toEqual(entry!.orig);
      expect(ct.reply).toEqual(entry!.reply);
      expect(ct.netnsIno).toBe(srv.inode);
      expect(ct.ctStatus & IPS_DST_NAT).toBeTruthy();
      expect(ct.ctStatus & IPS_CONFIRMED).toBeTruthy();
    }
    // Deduplicated in the kernel: one record per status, not one per packet.
    expect(new Set(cts.map((c) => c.ctStatus)).size).toBe(cts.length);
    // Packets leaving the NAT namespace carry the same entry; the reply is un-NATed to the VIP.
    const out = await cap.waitFor(
      (r) => r.kind === Kind.PACKET && atEgress(r) && r.netnsIno === srv.inode && r.tuple.dport === res.local,
      { what: 'NATed reply' },
    );
    for (const p of out) {
      expect(p.flags & Flag.CT).toBeTruthy();
      expect(p.ctId).toBe(cts[0]!.ctId);
      expect(p.tuple).toMatchObject({ saddr: vip, sport: 80 });
    }
    server.kill();
  }

  it('writes the NAT entry of a packet dropped after its DNAT beside the drop: the tuple it came in on', async () => {
    const vip = link.addrB.replace(/\.\d+\.2$/, '.200.3');
    const port = 8093;
    cli.run('ip', ['route', 'add', `${vip}/32`, 'via', link.addrB]);
    srv.run('iptables', ['-t', 'nat', '-A', 'PREROUTING', '-d', vip, '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `${link.addrB}:${port}`]);
    srv.run('iptables', ['-A', 'INPUT', '-p', 'tcp', '--dport', String(port), '-j', 'DROP']);
    expect(JSON.parse(cli.run('node', ['-e', TCP_CLIENT, vip, '80', 'x', '300']).trim()).error).toBeDefined();

    const [drop] = await cap.waitFor((r) => r.kind === Kind.DROP && r.netnsIno === srv.inode && r.tuple.dport === port, { what: 'DROP after DNAT' });
    expect(drop!.tuple).toMatchObject({ saddr: link.addrA, daddr: link.addrB });
    expect(drop!.flags & Flag.CT).toBeTruthy();
    const [ct] = await cap.waitFor((r) => r.kind === Kind.CT && r.skbId === drop!.skbId && r.hook === Hook.KFREE_SKB, { what: 'CT record of the dropped packet' });
    expect(ct!.tuple).toEqual({ saddr: link.addrA, daddr: vip, sport: drop!.tuple.sport, dport: 80 });
    expect(ct!.reply).toEqual({ saddr: link.addrB, daddr: link.addrA, sport: port, dport: drop!.tuple.sport });
    expect(ct).toMatchObject({ netnsIno: srv.inode, ctId: drop!.ctId, tsNs: drop!.tsNs });
    expect(ct!.ctStatus & IPS_DST_NAT).toBeTruthy();
    // A drop without NAT gets no CT record (the INPUT DROP test above): only translated entries.
    expect(cap.records.some((r) => r.kind === Kind.CT && r.hook === Hook.KFREE_SKB && r.tuple.daddr === link.addrB)).toBe(false);
  });

  it('shows an INVALID segment that escaped a REDIRECT and was reset by the listener', async () => {
    const appPort = 9080;
    const proxyPort = 15006;
    srv.run('sysctl', ['-q', '-w', 'net.netfilter.nf_conntrack_tcp_be_liberal=0']);
    srv.run('iptables', ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', String(appPort), '-j', 'REDIRECT', '--to-ports', String(proxyPort)]);
    const app = srv.spawn('node', ['-e', TCP_ECHO_SERVER, link.addrB, String(appPort)]);
    const proxy = srv.spawn('node', ['-e', TCP_ECHO_SERVER, link.addrB, String(proxyPort)]);
    await Promise.all([waitLine(app, /listening/), waitLine(proxy, /listening/)]);
    const client = cli.spawn('node', ['-e', TCP_HOLD_CLIENT, link.addrB, String(appPort), 'a']);
    const { local } = JSON.parse(await waitLine(client, /local/)) as { local: number };

    // The client's ISN and the proxy's, from the capture itself.
    const toSrv = (r: HopRecord) => r.kind === Kind.PACKET && r.tuple.sport === local && r.tuple.dport === appPort;
    const [syn] = await cap.waitFor((r) => toSrv(r) && r.tcpFlags === 0x02 && atEgress(r), { what: 'client SYN' });
    const [synAck] = await cap.waitFor((r) => r.kind === Kind.PACKET && r.tuple.dport === local && r.tcpFlags === 0x12 && atIngress(r), { what: 'SYN-ACK' });
    const outOfWindow = (syn!.seq + 2 + 0x40000000) >>> 0;
    cli.run('python3', ['-c', RAW_TCP_SEGMENT, link.addrA, link.addrB, String(local), String(appPort), String(outOfWindow), String((synAck!.seq + 2) >>> 0), String(0x18), 'late']);

    // NAT skipped it (conntrack called it INVALID), so the application's listener got it and reset it.
    const [rst] = await cap.waitFor((r) => r.kind === Kind.RST_SENT && r.tuple.dport === local, { what: 'RST_SENT' });
    expect(rst).toMatchObject({ netnsIno: srv.inode, skState: TCP_LISTEN, seq: outOfWindow });
    expect(rst!.tuple).toEqual({ saddr: link.addrB, daddr: link.addrA, sport: appPort, dport: local });
    expect(resetReasonName(rst!.reason)).toBe('TCP_FLAGS');
    // The reset on the wire comes from the application port, not the proxy's, and conntrack has no entry for it.
    const [wire] = await cap.waitFor(
      (r) => r.kind === Kind.PACKET && atEgress(r) && r.netnsIno === srv.inode && r.tuple.dport === local && (r.tcpFlags & 0x04) !== 0,
      { what: 'RST on the wire' },
    );
    expect(wire!.tuple.sport).toBe(appPort);
    expect(wire!.flags & Flag.CT_MISSING).toBeTruthy();
    expect(wire!.flags & Flag.CT).toBeFalsy();
    // While the flow's conntrack entry says it is redirected to the proxy.
    const [ct] = await cap.waitFor((r) => r.kind === Kind.CT && r.tuple.sport === local && r.tuple.dport === appPort, { what: 'CT of the flow' });
    expect(ct!.reply).toMatchObject({ sport: proxyPort, dport: local });
    for (const p of [client, app, proxy]) p.kill();
  });
});
