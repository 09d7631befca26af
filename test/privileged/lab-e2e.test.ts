/**
 * The whole system on the namespace lab: live agents per node -> real Kafka -> the
 * correlator -> real ClickHouse, checked against node-lb's own conntrack events
 * (services/lab/check.ts). Issue 4's measures (joins across NAT with and without the
 * load balancer's agent, delay on one link, a skewed node clock, two correlators with
 * one killed) and issue 5's (verdicts for exactly the injected incidents).
 *
 * Needs root, eBPF, namespaces, and the Kafka and ClickHouse the test command starts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { joinHandshakeSides } from '../../services/correlator/handshake.js';
import { createFlowStore } from '../../services/api/queries.js';
import { judgeFlow } from '../../services/correlator/verdicts.js';
import { startCorrelator } from '../../services/correlator/main.js';
import { labAgentPlans, startAgents, stopAgents } from '../../services/lab/agents.js';
import { runCheck } from '../../services/lab/check.js';
import { dropClear, dropRule, injectOow, labDown, labUp, netem, runRequests, setClockOffset } from '../../services/lab/index.js';
import { createClickHouse, type ClickHouseClient } from '../../services/shared/clickhouse.js';
import type { Config } from '../../services/shared/config.js';
import { EVENT_COLUMNS, type TimelineRow } from '../../services/correlator/timeline.js';
import { Kind } from '../../services/shared/record.js';
import { dropDatabase, isolatedConfig, quietLog, waitFor } from '../integration/env.js';
import { describePrivileged, REPO } from './preflight.js';

const cli = join(REPO, 'dist', 'services', 'cli', 'main.js');

function envOf(cfg: Config): NodeJS.ProcessEnv {
  return { ...process.env, HOPTRACE_HOPS_TOPIC: cfg.hopsTopic, HOPTRACE_CLICKHOUSE_DB: cfg.clickhouseDatabase, HOPTRACE_GROUP_ID: cfg.groupId };
}

async function agents(cfg: Config, except: string[] = []) {
  await stopAgents();
  await startAgents(labAgentPlans(except), envOf(cfg));
}

const pct = (x: number) => `${(x * 100).toFixed(3)}%`;

describePrivileged('lab end to end', () => {
  let cfg: Config;
  let ch: ClickHouseClient;
  let correlator: Awaited<ReturnType<typeof startCorrelator>> | undefined;
  const extra: ChildProcess[] = [];

  beforeAll(async () => {
    cfg = isolatedConfig({ judgeSettleMs: 1_500 });
    await labUp({});
    correlator = await startCorrelator(cfg);
    ch = createClickHouse(cfg);
  });

  afterAll(async () => {
    for (const c of extra) c.kill('SIGKILL');
    await stopAgents();
    await correlator?.close();
    await ch?.close();
    await labDown();
    if (cfg) await dropDatabase(cfg);
  });

  it('2,000 requests client -> VIP (DNAT): every hop joined, in order, right NAT', async () => {
    await agents(cfg);
    const { requests, report } = await runCheck(cfg, ch, 2000, { lbAgent: true });
    // The lab's client may lose a request or two to its own timeout on a loaded machine; the joins are what is measured.
    expect(requests.ok, JSON.stringify(requests.errors)).toBeGreaterThanOrEqual(1990);
    // A port reused within one conntrack poll leaves a request out of the ground truth (check.ts): a few, not more.
    expect(report.requests).toBeGreaterThanOrEqual(1950);
    expect(report.precision, pct(report.precision)).toBeGreaterThanOrEqual(0.999);
    expect(report.recall, pct(report.recall)).toBeGreaterThanOrEqual(0.999);
    expect(report.pathMistakes, report.mistakes.join('\n')).toBeLessThanOrEqual(2);
    expect(report.pathUnverified, report.mistakes.join('\n')).toBeLessThanOrEqual(2); // without SNAT every last hop is a known client tuple
  });

  it('with SNAT and the load balancer running no agent, client and server sides still join', async () => {
    await labUp({ snat: true });
    await agents(cfg, ['node-lb']);
    const { report } = await runCheck(cfg, ch, 2000, { lbAgent: false });
    // The truth is node-lb's conntrack table, polled every 150 ms, and its event stream. With
    // --random-fully SNAT and the client's 8 concurrent connections, some SYNs go out again on a new
    // mapping that neither sees (gone within a poll, its events lost to ENOBUFS): their events have
    // no truth, although their ISNs join them, and their paths end on a tuple the truth never saw
    // (pathUnverified, not counted as mistakes). On a loaded 2-core machine that reached 21 requests
    // of 2,000 and a precision of 99.68% (lab check weakness, README).
    expect(report.precision, pct(report.precision)).toBeGreaterThanOrEqual(0.995);
    expect(report.recall, pct(report.recall)).toBeGreaterThanOrEqual(0.999);
    expect(report.pathMistakes, report.mistakes.join('\n')).toBeLessThanOrEqual(2);
    expect(report.pathUnverified, report.mistakes.join('\n')).toBeLessThanOrEqual(40);
  });

  it('20 ms delay on the LB -> server link: 20 +- 2 ms on that segment, nothing comparable elsewhere', async () => {
    await labUp({});
    await agents(cfg);
    await netem('lb-c', { delayMs: 20 });
    try {
      const { report } = await runCheck(cfg, ch, 300, { lbAgent: true });
      const slow = report.latency.segments.filter((s) => s.samples >= 20 && s.p50Us > 2_000);
      expect(slow.map((s) => `${s.direction} ${s.from} -> ${s.to}`)).toEqual([expect.stringMatching(/^forward node-lb\/hopt-lab-wire-lb-c .* -> node-lb\/hopt-lab-wire-lb-c /)]);
      expect(Math.abs(slow[0]!.p50Us - 20_000), `p50 ${slow[0]!.p50Us} us`).toBeLessThanOrEqual(2_000);
    } finally {
      await netem('lb-c', null);
    }
  });

  it('+50 ms clock offset on the server node: per-hop latencies within 1 ms of the unskewed run', async () => {
    const base = (await runCheck(cfg, ch, 1000, { lbAgent: true })).report;
    setClockOffset('node-c', 50);
    try {
      await agents(cfg);
      const skewed = (await runCheck(cfg, ch, 1000, { lbAgent: true })).report;
      expect(skewed.pathMistakes + skewed.pathUnverified, skewed.mistakes.join('\n')).toBeLessThanOrEqual(1);
      const before = new Map(base.latency.segments.map((s) => [`${s.direction}|${s.from}|${s.to}`, s]));
      let compared = 0;
      for (const s of skewed.latency.segments) {
        const b = before.get(`${s.direction}|${s.from}|${s.to}`);
        if (!b || s.samples < 50) continue;
        compared++;
        expect(Math.abs(s.p50Us - b.p50Us), `${s.from} -> ${s.to}`).toBeLessThanOrEqual(1_000);
      }
      expect(compared).toBeGreaterThan(20);
      expect(Math.abs(skewed.latency.clock.find((c) => c.node === 'node-c')!.offsetUs - 50_000)).toBeLessThan(1_000);
    } finally {
      setClockOffset('node-c', 0);
      await agents(cfg);
    }
  });

  it('two correlators on 6 partitions, one killed mid-run: the same result as one', async () => {
    const two = isolatedConfig();
    try {
      await agents(two);
      const spawnOne = () => spawn(process.execPath, [cli, 'correlator'], { env: envOf(two), stdio: 'ignore' });
      const a = spawnOne();
      const b = spawnOne();
      extra.push(a, b);
      const two_ch = createClickHouse(two);
      try {
        const { report } = await runCheck(two, two_ch, 2000, {
          lbAgent: true,
          during: async () => {
            await new Promise((r) => setTimeout(r, 1500));
            a.kill('SIGKILL');
          },
        });
        expect(report.precision, pct(report.precision)).toBeGreaterThanOrEqual(0.999);
        expect(report.recall, pct(report.recall)).toBeGreaterThanOrEqual(0.999);
        const rs = await two_ch.query({ query: 'SELECT count() AS n, uniqExact(agent, boot, seq) AS d FROM hop_events FINAL', format: 'JSONEachRow' });
        const [c] = await rs.json<{ n: string; d: string }>();
        expect(c!.n).toBe(c!.d);
      } finally {
        await two_ch.close();
        b.kill('SIGTERM');
      }
    } finally {
      await agents(cfg);
      await dropDatabase(two);
    }
  });

  it('verdicts for exactly the injected incidents, none for normal traffic', async () => {
    const since = BigInt(Date.now()) * 1_000_000n;
    await runRequests(200);
    const oow = await injectOow({});
    await dropRule('node-lb');
    await runRequests(3, { timeoutMs: 1500 }).catch(() => undefined);
    await dropClear({ where: 'node-lb' });
    await runRequests(200);
    // Incidents are judged after the settle time; wait until the drop verdicts are in.
    const incidents = await waitFor(async () => {
      const rs = await ch.query({ query: `SELECT kind, node, netns, sk_state, reason_name, toString(flow_id) AS fid FROM incidents FINAL WHERE ts_ns >= ${since} AND retracted = 0`, format: 'JSONEachRow' });
      const rows = await rs.json<{ kind: string; node: string; netns: string; sk_state: string; reason_name: string; fid: string }>();
      return rows.some((r) => r.kind === 'drop') && rows.some((r) => r.kind === 'nat_bypass_reset') ? rows : undefined;
    }, 60_000, 1000);
    expect(incidents, 'no incidents stored').toBeDefined();
    const kinds = new Set(incidents!.map((i) => i.kind));
    expect([...kinds].sort()).toEqual(['drop', 'nat_bypass_reset']);
    const reset = incidents!.filter((i) => i.kind === 'nat_bypass_reset');
    expect(reset).toEqual([expect.objectContaining({ node: 'node-c', netns: 'hopt-pod-server', sk_state: 'LISTEN', reason_name: 'TCP_FLAGS' })]);
    const flowEvents = async (fid: string) => {
      const rs = await ch.query({ query: `SELECT ${EVENT_COLUMNS.join(', ')} FROM hop_events FINAL WHERE flow_id = ${fid}`, format: 'JSONEachRow', clickhouse_settings: { output_format_json_quote_64bit_integers: 1 } });
      return rs.json<TimelineRow>();
    };
    for (const d of incidents!.filter((i) => i.kind === 'drop')) {
      expect(d).toMatchObject({ node: 'node-lb', netns: 'hopt-node-lb', reason_name: 'NETFILTER_DROP' });
      // The drop (after node-lb's DNAT, on the translated tuple) is in the connection the client
      // made: its flow holds the client's SYNs on node-a and node-lb's NAT entry.
      const events = await flowEvents(d.fid);
      expect(events.some((e) => e.node === 'node-a' && e.kind === Kind.PACKET && (e.tcp_flags & 0x02) !== 0 && e.dport === 80), `flow ${d.fid}: no client SYN`).toBe(true);
      expect(events.some((e) => e.node === 'node-lb' && e.kind === Kind.CT && e.dport === 80), `flow ${d.fid}: no NAT entry`).toBe(true);
    }
    // The reset verdict is on the injected connection, seen from the client.
    const events = await flowEvents(reset[0]!.fid);
    expect(events.some((e) => e.node === 'node-a' && e.sport === oow.client.sport)).toBe(true);
    expect(oow.reset).toBe(true);
    expect(judgeFlow(events).map((v) => v.kind)).toEqual(['nat_bypass_reset']);
  });

  it('a SYN-ACK dropped on its way back through node-lb: the client\'s flow and the server side\'s are read together', async () => {
    const since = BigInt(Date.now()) * 1_000_000n;
    const state = await labUp({});
    await agents(cfg);
    const backend = state.backends[0]!;
    const rule = await dropRule('node-lb', { proto: 'tcp', src: backend.ip, sport: backend.port });
    try {
      // long enough for the client to send its SYN 3 more times (1, 3, 7 s): a retransmission burst
      await runRequests(1, { timeoutMs: 8000 }).catch(() => undefined);
    } finally {
      await dropClear({ id: rule.id });
    }
    // The server side (node-lb, node-c: they saw the SYN-ACK) is judged for the drop.
    const drop = await waitFor(async () => {
      const rs = await ch.query({ query: `SELECT toString(flow_id) AS fid FROM incidents FINAL WHERE ts_ns >= ${since} AND kind = 'drop' AND retracted = 0`, format: 'JSONEachRow' });
      return (await rs.json<{ fid: string }>())[0];
    }, 60_000, 1000);
    expect(drop, 'no drop incident for the SYN-ACK').toBeDefined();
    const store = createFlowStore(ch, cfg.clickhouseUrl);
    const read = async (fid: string) => joinHandshakeSides(store, BigInt(fid), await store.flowEvents(BigInt(fid), 10_000, 'all'), 10_000);
    // The client node's records (no server ISN) are released after the agent's hold: wait for them.
    const fromServer = await waitFor(async () => ((await read(drop!.fid)).joined.length ? read(drop!.fid) : undefined), 30_000, 500);
    expect(fromServer, 'the client side was never joined').toBeDefined();
    const [clientSide] = fromServer!.joined;
    expect(fromServer!.events.some((e) => e.node === 'node-a' && e.kind === Kind.PACKET && e.tcp_flags === 0x02)).toBe(true);
    const fromClient = await read(clientSide!);
    expect(fromClient.joined).toEqual([drop!.fid]);
    expect(judgeFlow(fromClient.events).map((v) => [v.kind, v.node])).toContainEqual(['drop', 'node-lb']);
    // The judge gives the client side its SYNs' retransmissions, judged with the server side's
    // records: the SYN got to the server, and its answer was dropped on node-lb.
    const burst = await waitFor(async () => {
      const rs = await ch.query({ query: `SELECT node, title FROM incidents FINAL WHERE flow_id = ${clientSide} AND kind = 'retrans_burst' AND retracted = 0`, format: 'JSONEachRow' });
      return (await rs.json<{ node: string; title: string }>())[0];
    }, 30_000, 1000);
    expect(burst, 'no retransmission verdict on the client side').toBeDefined();
    expect(burst).toMatchObject({ node: 'node-a', title: expect.stringMatching(/; the segment arrived, its acknowledgement was dropped at node-lb\/hopt-node-lb .* kfree_skb: NETFILTER_DROP$/) });
  });

  it('a REJECT with tcp-reset on node-lb: the client\'s reset is put down to node-lb, not to an unwatched peer', async () => {
    const state = await labUp({});
    await agents(cfg);
    const backend = state.backends[0]!;
    const since = BigInt(Date.now()) * 1_000_000n;
    const rule = await dropRule('node-lb', { proto: 'tcp', dst: backend.ip, dport: backend.port, reject: true });
    let result;
    try {
      result = await runRequests(1, { timeoutMs: 1500 });
    } finally {
      await dropClear({ id: rule.id });
    }
    expect(result.failed, 'the request should have been refused').toBe(1);
    const verdict = await waitFor(async () => {
      const rs = await ch.query({ query: `SELECT node, title, fix, toString(flow_id) AS fid FROM incidents FINAL WHERE ts_ns >= ${since} AND kind = 'reset_received' AND retracted = 0`, format: 'JSONEachRow' });
      return (await rs.json<{ node: string; title: string; fix: string; fid: string }>())[0];
    }, 60_000, 1000);
    expect(verdict, 'no reset verdict').toBeDefined();
    expect(verdict).toMatchObject({ node: 'node-a', title: expect.stringMatching(/node-lb\/hopt-node-lb sent it without a socket/), fix: expect.stringMatching(/in node-lb\/hopt-node-lb$/) });
  });
});
