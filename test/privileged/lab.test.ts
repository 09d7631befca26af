/**
 * The namespace lab, for real: topology and state file, traffic through the VIP in both
 * NAT modes, the sidecar REDIRECT, link delay, a drop rule, the out-of-window reset
 * incident (and its fixes), and a clean teardown. Needs root; see lab-preflight.ts.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ALL_NETNS,
  applyFix,
  dropClear,
  dropRule,
  injectOow,
  labDown,
  labStatus,
  labUp,
  netem,
  runRequests,
  setClockOffset,
  statePath,
  type LabState,
  type LabStatus,
} from '../../services/lab/index.js';
import { describeLab } from './lab-preflight.js';

const LAB_PREFIXES = ['hopt-node-', 'hopt-pod-', 'hopt-lab-'];

function netnsNames(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

/** Connections the sidecar proxies accepted and requests the apps served through them, summed over backends. */
function totals(st: LabStatus) {
  let accepted = 0;
  let viaProxy = 0;
  let direct = 0;
  const peers: Record<string, number> = {};
  const perBackend: Record<string, number> = {};
  for (const [pod, b] of Object.entries(st.backends)) {
    accepted += b.proxy?.accepted ?? 0;
    viaProxy += b.app?.viaLoopback ?? 0;
    direct += b.app?.direct ?? 0;
    perBackend[pod] = b.proxy?.accepted ?? 0;
    for (const [peer, n] of Object.entries(b.proxy?.byPeer ?? {})) peers[peer] = (peers[peer] ?? 0) + n;
  }
  return { accepted, viaProxy, direct, peers, perBackend };
}

function diffPeers(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0);
  return out;
}

describeLab('lab (network namespaces, root)', () => {
  afterAll(async () => {
    await labDown();
  });

  describe('direct mode: client IP preserved, one backend', () => {
    let state: LabState;
    beforeAll(async () => {
      state = await labUp({ snat: false, backends: 1, clockOffsetsMs: { 'node-c': 50 } });
    });

    it('builds the topology and records it in var/lab/state.json', () => {
      expect(existsSync(statePath)).toBe(true);
      const onDisk = JSON.parse(readFileSync(statePath, 'utf8')) as LabState;
      expect(onDisk).toEqual(state);
      expect(state.mode).toBe('direct');
      expect(state.vip).toMatchObject({ ip: '10.96.0.10', port: 80 });
      expect(state.backends).toEqual([{ pod: 'server', ip: '10.244.3.2', port: 8080, node: 'node-c' }]);
      expect(state.nodes['node-a'].namespaces).toEqual(['hopt-node-a', 'hopt-pod-client']);
      expect(state.nodes['node-lb'].namespaces).toEqual(['hopt-node-lb']);
      expect(state.nodes['node-c'].namespaces).toEqual(['hopt-node-c', 'hopt-pod-server']);
      expect(state.nodes['node-c'].clockOffsetMs).toBe(50);
      expect(state.pods.server?.sidecar).toMatchObject({ appPort: 8080, proxyPort: 15006 });
      const present = netnsNames();
      for (const [name, ns] of Object.entries(state.namespaces)) {
        expect(present).toContain(name);
        expect(ns.inode).toBe(statSync(`/run/netns/${name}`).ino);
        for (const i of ns.interfaces) expect(i.ifindex).toBeGreaterThan(0);
      }
      expect(state.namespaces['hopt-pod-server']!.sysctls['net.netfilter.nf_conntrack_tcp_be_liberal']).toBe('0');
      const lbc = state.links['lb-c']!;
      expect(lbc.from).toEqual({ netns: 'hopt-node-lb', ifname: 'eth-c' });
      expect(lbc.to).toEqual({ netns: 'hopt-node-c', ifname: 'eth-lb' });
      // Only lab namespaces, and nothing in the host's: no lab interface there.
      const hostLinks = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
      for (const ns of Object.values(state.namespaces)) for (const i of ns.interfaces.filter((x) => x.name !== 'eth0')) expect(hostLinks).not.toMatch(new RegExp(`^\\d+: ${i.name}[@:]`, 'm'));
    });

    it('serves 50 requests through the VIP, each through the sidecar REDIRECT', async () => {
      const before = totals(await labStatus());
      const r = await runRequests(50);
      expect(r.errors).toEqual({});
      expect(r.ok).toBe(50);
      expect(new Set(r.flows.map((f) => f.sport)).size).toBe(50); // a new connection each
      const after = totals(await labStatus());
      // Every connection landed on the proxy's port 15006 (the REDIRECT), none on the app directly.
      expect(after.accepted - before.accepted).toBe(50);
      expect(after.viaProxy - before.viaProxy).toBe(50);
      expect(after.direct - before.direct).toBe(0);
      expect(diffPeers(after.peers, before.peers)).toEqual({ '10.244.1.2': 50 });
    });

    it('adds delay on lb-c that shows in the round-trip time, and removes it', async () => {
      const base = await runRequests(20, { concurrency: 1 });
      await netem('lb-c', { delayMs: 20 });
      const slow = await runRequests(20, { concurrency: 1 });
      await netem('lb-c', null);
      const again = await runRequests(20, { concurrency: 1 });
      expect(slow.ok).toBe(20);
      // The handshake crosses lb-c once: at least half the configured delay more.
      expect(slow.connectMs!.p50 - base.connectMs!.p50).toBeGreaterThanOrEqual(10);
      expect(again.connectMs!.p50).toBeLessThan(slow.connectMs!.p50 - 10);
      expect((await labStatus()).state!.links['lb-c']!.netem).toBeNull();
    });

    it('drops VIP backend traffic on node-lb with a removable rule', async () => {
      const d = await dropRule('node-lb');
      expect(d.hook).toBe('FORWARD');
      const r = await runRequests(3, { timeoutMs: 800 });
      expect(r.ok).toBe(0);
      expect(r.errors.ETIMEDOUT).toBe(3);
      expect((await labStatus()).dropped[d.id]).toBeGreaterThanOrEqual(3);
      await dropClear({ where: 'node-lb' });
      expect((await runRequests(5)).ok).toBe(5);
    });

    it('inject-oow: the out-of-window segment escapes the REDIRECT and the listener resets the client', async () => {
      const r = await injectOow();
      expect(r.clientOutcome).toBe('ECONNRESET');
      expect(r.reset).toBe(true);
      // The connection went through the sidecar: the pod's conntrack redirects it to the proxy.
      expect(r.podConntrack?.orig).toMatchObject({ src: '10.244.1.2', dst: '10.244.3.2', dport: 8080 });
      expect(r.podConntrack?.reply).toMatchObject({ src: '10.244.3.2', sport: 15006 });
      // The pod's conntrack refused the segment, and the pod's stack sent a RST.
      expect(r.counters.podConntrackInvalid).toBeGreaterThanOrEqual(1);
      expect(r.counters.podOutRsts).toBeGreaterThanOrEqual(1);
      expect(r.counters.lbConntrackInvalid).toBe(0);
      // The RST reached the client from the VIP (node-lb un-DNATed it), with the sequence number the client expects.
      const rst = r.packets.find((p) => p.dir === 'in' && p.flags.includes('R'));
      expect(rst).toMatchObject({ src: `10.96.0.10:80`, dst: `10.244.1.2:${r.client.sport}`, seq: r.injected.ack });
      if (r.kernelTrace) expect(r.kernelTrace.some((l) => l.includes('tcp_send_reset') && l.includes('state=TCP_LISTEN'))).toBe(true);
    });

    it('the fixes (be_liberal=1, drop INVALID before NAT) each prevent the reset', async () => {
      for (const fix of ['be-liberal', 'drop-invalid'] as const) {
        await applyFix(fix);
        const r = await injectOow({ waitMs: 1000, trace: false });
        expect(r.reset, fix).toBe(false);
        expect(r.clientOutcome, fix).toBe('STILL_OPEN');
        expect(r.counters.podOutRsts, fix).toBe(0);
        await applyFix(fix, true);
      }
      expect((await injectOow({ waitMs: 2000, trace: false })).reset).toBe(true);
    });

    it('records clock offsets for the agent launcher', async () => {
      setClockOffset('node-a', -7);
      const s = (await labStatus()).state!;
      expect(s.nodes['node-a'].clockOffsetMs).toBe(-7);
      expect(s.nodes['node-c'].clockOffsetMs).toBe(50);
    });
  });

  describe('snat mode: masquerade on node-lb, two backends', () => {
    beforeAll(async () => {
      await labUp({ snat: true, backends: 2 }); // replaces the lab above: up is idempotent
    });

    it('serves 50 requests over both backends, which see node-lb as the client', async () => {
      const st = await labStatus();
      expect(st.up).toBe(true);
      expect(st.state!.nodes['node-c'].namespaces).toEqual(['hopt-node-c', 'hopt-pod-server', 'hopt-pod-server2']);
      const before = totals(st);
      const r = await runRequests(50);
      expect(r.ok).toBe(50);
      const after = totals(await labStatus());
      expect(after.accepted - before.accepted).toBe(50);
      expect(after.viaProxy - before.viaProxy).toBe(50);
      expect(diffPeers(after.peers, before.peers)).toEqual({ '10.10.2.1': 50 });
      // statistic random 0.5: both backends get some of 50 (all on one: p = 2^-49).
      for (const pod of ['server', 'server2']) expect(after.perBackend[pod]! - (before.perBackend[pod] ?? 0)).toBeGreaterThan(0);
    });

    it('inject-oow resets the client through SNAT too', async () => {
      const r = await injectOow();
      expect(r.reset).toBe(true);
      expect(r.lbConntrack?.reply.dst).toBe('10.10.2.1'); // masqueraded
      expect(r.podConntrack?.orig.src).toBe('10.10.2.1');
      expect(r.podConntrack?.reply.sport).toBe(15006);
      expect(r.counters.podOutRsts).toBeGreaterThanOrEqual(1);
    });
  });

  it('lab down removes every lab namespace and process, and is idempotent', async () => {
    const pids = (await labStatus()).processes.map((p) => p.pid);
    expect(pids.length).toBeGreaterThan(0);
    const r = await labDown();
    expect(r.removedNamespaces.length).toBeGreaterThan(0);
    expect(netnsNames().filter((n) => LAB_PREFIXES.some((p) => n.startsWith(p)))).toEqual([]);
    for (const n of ALL_NETNS) expect(existsSync(`/run/netns/${n}`)).toBe(false);
    for (const pid of pids) expect(existsSync(`/proc/${pid}`)).toBe(false);
    expect(existsSync(statePath)).toBe(false);
    expect(await labDown()).toEqual({ removedNamespaces: [], killedPids: [] });
  });
});
