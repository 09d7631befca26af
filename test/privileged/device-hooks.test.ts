/**
 * The two kinds of device hook on the real kernel: tracepoints (netif_receive_skb,
 * net_dev_queue) and tcx links on the owned namespaces' devices. Two live sources
 * capture the same traffic at once, one of each kind, and must report the same
 * packets with the same fields, and the same conntrack mappings; tcx follows devices
 * that appear after the start, and leaves no link behind.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Flag, Hook, Kind, type HopRecord } from '../../services/shared/record.js';
import { describeLiveStatus } from '../../services/agent/live/index.js';
import { netnsHome } from '../../services/agent/live/filters.js';
import { NETNS_PROBES, NETNS_SLOTS } from '../../services/agent/live/kernel-abi.js';
import { describePrivileged } from './preflight.js';
import { bpftool, bpftoolJson, Lab, sh, TCP_CLIENT, TCP_ECHO_SERVER, waitLine, type Link, type Ns } from './netns.js';
import { packetFields as fields, startCapture, type Capture } from './capture.js';

/** Ids of the programs behind the machine's tcx links (bpftool 7.1 prints the type as 11, BPF_LINK_TYPE_TCX). */
const tcxLinkedProgs = (): number[] => bpftool('link', 'show').flatMap((l) => ((l.type === 'tcx' || l.type === 11) && l.prog_id !== undefined ? [l.prog_id] : []));

/** tcx links of hoptrace's programs on this machine. */
function hopTcxLinks(): number {
  const ours = new Set(bpftool('prog', 'show').filter((p) => p.name?.startsWith('hop_tc_')).map((p) => p.id));
  return tcxLinkedProgs().filter((id) => ours.has(id)).length;
}

describePrivileged('device hooks: tcx links and tracepoints see the same packets', () => {
  const lab = new Lab();
  let cli: Ns;
  let srv: Ns;
  let link: Link;
  let tp: Capture;
  let tc: Capture;

  beforeAll(() => {
    cli = lab.ns('cli');
    srv = lab.ns('srv');
    link = lab.link(cli, srv);
    // A REDIRECT, as a sidecar has: conntrack entries with a NAT mapping on the server side.
    srv.run('iptables', ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '18190', '-j', 'REDIRECT', '--to-ports', '18191']);
    tp = startCapture({ netns: [cli.name, srv.name], deviceHooks: 'tracepoint', node: 'tp' });
    tc = startCapture({ netns: [cli.name, srv.name], deviceHooks: 'tc', node: 'tc' });
  });

  afterAll(async () => {
    await tp?.stop();
    await tc?.stop();
    lab.cleanup();
  });

  it('links every device of the owned namespaces (lo and the veth end in each)', () => {
    expect(tc.source.stats().tcx_devices).toBe(4);
    expect(tp.source.stats().tcx_devices).toBe(0);
    expect(tc.source.status().attached.map((a) => a.tracepoint)).toEqual(expect.arrayContaining(['tcx/ingress', 'tcx/egress', 'net_dev_start_xmit']));
    expect(tc.source.status().attached.map((a) => a.tracepoint)).not.toContain('netif_receive_skb');
    expect(tp.source.status().attached.map((a) => a.tracepoint)).not.toContain('tcx/ingress');
    expect(tc.source.status().devices).toEqual({ hooks: 'tc', linked: 4, failed: [] });
    expect(describeLiveStatus(tc.source.status())).toContain('(tcx on 4 device(s))');
    expect(tp.source.status().devices).toEqual({ hooks: 'tracepoint', linked: 0, failed: [] });
  });

  it('reports the same packets, fields and conntrack mappings through a REDIRECT', async () => {
    const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, '0.0.0.0', '18191']);
    await waitLine(server, /listening/);
    const msg = 'same packets either way';
    const res = JSON.parse(cli.run('node', ['-e', TCP_CLIENT, link.addrB, '18190', msg]).trim()) as { local: number; got: string };
    expect(res.got).toBe(msg);
    server.kill();
    const ours = (r: HopRecord) => r.tuple.sport === res.local || r.tuple.dport === res.local;
    const echoes = (c: Capture) => c.waitFor((r) => r.kind === Kind.PACKET && ours(r) && r.payloadLen === msg.length && r.tuple.dport === res.local, { min: 2, what: 'echo on both sides' });
    await Promise.all([echoes(tp), echoes(tc)]);
    await tp.settle(300);

    const packets = (c: Capture) => c.records.filter((r) => r.kind === Kind.PACKET && ours(r) && r.hook !== Hook.NET_DEV_XMIT);
    const tpPackets = packets(tp);
    const tcPackets = packets(tc);
    expect(tpPackets.every((r) => r.hook === Hook.NETIF_RECEIVE || r.hook === Hook.NET_DEV_QUEUE)).toBe(true);
    expect(tcPackets.every((r) => r.hook === Hook.TC_INGRESS || r.hook === Hook.TC_EGRESS)).toBe(true);
    expect(tcPackets.length).toBeGreaterThanOrEqual(16); // handshake, data, echo, teardown, on both sides
    expect(tcPackets.map(fields).sort()).toEqual(tpPackets.map(fields).sort());
    // the server side saw the REDIRECT: conntrack on its egress, a CT record with the mapping
    expect(tcPackets.some((r) => r.netnsIno === srv.inode && r.flags & Flag.CT && r.tuple.sport === 18190)).toBe(true);
    const mappings = (c: Capture) =>
      c.records
        .filter((r) => r.kind === Kind.CT && ours(r))
        .map((r) => `${r.netnsIno} ${r.tuple.saddr}:${r.tuple.sport}>${r.tuple.daddr}:${r.tuple.dport} reply ${JSON.stringify(r.reply)} ${r.ctStatus}`)
        .sort();
    expect(mappings(tc)).toEqual(mappings(tp));
    expect(mappings(tc).some((m) => m.includes(':18190') && m.includes('18191'))).toBe(true);
  });

  it('links a device that appears after the start, within a refresh, and unlinks it when it goes', async () => {
    const late = lab.link(cli, srv);
    const until = async (n: number) => {
      const end = Date.now() + 6000;
      while (tc.source.stats().tcx_devices !== n && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      return tc.source.stats().tcx_devices;
    };
    expect(await until(6)).toBe(6);
    const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, late.addrB, '18192']);
    await waitLine(server, /listening/);
    const res = JSON.parse(cli.run('node', ['-e', TCP_CLIENT, late.addrB, '18192', 'late']).trim()) as { local: number; got: string };
    server.kill();
    await tc.waitFor((r) => r.kind === Kind.PACKET && r.ifname === late.b && r.tuple.sport === res.local && r.hook === Hook.TC_INGRESS, { what: 'SYN on the late device' });
    cli.run('ip', ['link', 'del', late.a]); // and its peer with it
    expect(await until(4)).toBe(4);
  });

  it('checks ownership in the kernel for what a tcx link keeps, even while the link outlives it', async () => {
    // The tcx programs check the namespace only for packets they keep (the link says the rest).
    // A link that outlives its namespace's ownership is a race in the agent; here it is made on
    // purpose: cli's inode leaves this capture's kernel table while cli's devices stay linked.
    const tcxProgs = new Set(tcxLinkedProgs());
    const progs = bpftool('prog', 'show');
    // this capture's maps: those of its linked tcx programs, and of every program sharing one of them
    const linked = new Set(progs.filter((p) => p.name === 'hop_tc_ingress' && tcxProgs.has(p.id)).flatMap((p) => p.map_ids ?? []));
    const mapIds = new Set(progs.filter((p) => p.map_ids?.some((m) => linked.has(m))).flatMap((p) => p.map_ids ?? []));
    const netnsMap = bpftool('map', 'show').filter((m) => m.name === 'hop_netns' && mapIds.has(m.id));
    expect(netnsMap).toHaveLength(1); // tp's capture links nothing with tcx
    const id = String(netnsMap[0]!.id);
    const le32 = (n: number) => [0, 8, 16, 24].map((s) => String((n >>> s) & 0xff));
    let removed = 0;
    for (const base of [0, NETNS_SLOTS]) {
      for (let i = 0; i < NETNS_PROBES; i++) {
        const key = le32(base + ((netnsHome(cli.inode) + i) & (NETNS_SLOTS - 1)));
        const got = bpftoolJson<{ value: string[] | number; formatted?: { value: number } }>('map', 'lookup', 'id', id, 'key', ...key);
        const value = got.formatted?.value ?? (Array.isArray(got.value) ? Buffer.from(got.value.map((b) => Number(b))).readUInt32LE(0) : got.value);
        if (value !== cli.inode) continue;
        sh('bpftool', ['map', 'update', 'id', id, 'key', ...key, 'value', ...le32(1)]); // no namespace's inode; later probes go on past it
        removed++;
      }
    }
    expect(removed).toBeGreaterThan(0);
    // Records written before the update can still be on their way (a kernel run waits up to its
    // flush period): only those written after it count. The programs' clock is CLOCK_MONOTONIC,
    // as process.hrtime's is. (npm test once failed on an IPv6 neighbour discovery packet of cli's.)
    const updated = process.hrtime.bigint();
    const before = tc.source.kernelCounters().netns_filtered;
    const n = tc.records.length;
    const server = srv.spawn('node', ['-e', TCP_ECHO_SERVER, link.addrB, '18193']);
    await waitLine(server, /listening/);
    const res = JSON.parse(cli.run('node', ['-e', TCP_CLIENT, link.addrB, '18193', 'orphan link']).trim()) as { local: number };
    server.kill();
    await tc.waitFor((r) => r.kind === Kind.PACKET && r.netnsIno === srv.inode && r.tuple.sport === res.local && r.hook === Hook.TC_INGRESS, { what: 'the exchange on the server side' });
    await tc.settle();
    const later = tc.records.slice(n).filter((r) => r.tsNs > updated);
    expect(later.filter((r) => r.netnsIno === cli.inode)).toEqual([]);
    expect(later.some((r) => r.netnsIno === srv.inode && r.hook === Hook.TC_EGRESS)).toBe(true);
    expect(tc.source.kernelCounters().netns_filtered).toBeGreaterThan(before);
  });

  it('leaves no tcx link behind once stopped', async () => {
    expect(hopTcxLinks()).toBeGreaterThanOrEqual(8);
    await tc.stop();
    expect(hopTcxLinks()).toBe(0);
  });
});
