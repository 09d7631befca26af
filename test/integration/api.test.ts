// The query API against a real ClickHouse (HOPTRACE_CLICKHOUSE_URL): rows written the
// way the correlator writes them, some of them twice, read back through the routes
// (inject), the real HTTP server, and the CLI.
import { createServer } from 'node:net';
import { Command } from 'commander';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { app } from '../../services/api/app.js';
import { createFlowStore, flowEventsSql, type FlowStore, type FlowSummary } from '../../services/api/queries.js';
import { startApi } from '../../services/api/server.js';
import { registerQueryCommands } from '../../services/cli/query.js';
import { insertRows } from '../../services/correlator/correlator.js';
import { hopEventEncoder } from '../../services/correlator/encode.js';
import type { Timeline } from '../../services/correlator/timeline.js';
import type { FlowPartRow, HopEventRow } from '../../services/correlator/rows.js';
import { createClickHouse, migrate, type ClickHouseClient } from '../../services/shared/clickhouse.js';
import { loadConfig, type Config } from '../../services/shared/config.js';
import { Hook, Kind, TcpState } from '../../services/shared/record.js';
import { dropDatabase, isolatedConfig } from './env.js';

const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;
const PSH = 0x08;

const NOW = Date.now();
const NOW_NS = BigInt(NOW) * 1_000_000n;
const MIN_NS = 60_000_000_000n;
const date = (ns: bigint) => new Date(Number(ns / 1_000_000n)).toISOString().slice(0, 10);

/** Flow 1: client 10.0.0.9:40000 -> server 10.0.0.2:8080 (a = server), across two nodes, 5 minutes ago, reset by a LISTEN socket. */
const F1 = '4503599627370495';
/** Flow 2: IPv6, one node, 3 hours ago; id above 2^53 to check UInt64 handling. */
const F2 = '18446744073709551557';
/** Flow 3: UDP DNS on node-c, 30 minutes ago; its node name needs escaping. */
const F3 = '77';
const ODD_NODE = "node-c'\\ü";

/** A loopback port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as { port: number };
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

let seq = 0;
function hop(flow: string, ns: bigint, o: Partial<HopEventRow>): HopEventRow {
  return {
    event_date: date(ns), flow_id: flow as unknown as number, wall_ts_ns: ns.toString(), kernel_ts_ns: ns.toString(),
    agent: 'agent-a', boot: 1, seq: seq++, node: 'node-a', netns_ino: 4026531840, netns: 'client', pod: '', ifindex: 2, ifname: 'eth0',
    hook: Hook.NET_DEV_QUEUE, kind: Kind.PACKET, family: 2, proto: 6, dir: 1,
    saddr: '10.0.0.9', daddr: '10.0.0.2', sport: 40000, dport: 8080,
    tcp_seq: 0, tcp_ack: 0, tcp_flags: ACK, tcp_window: 64240, payload_len: 0, ip_id: 0, flags: 0,
    ct_id: 0, ct_status: 0, ct_info: 0, reply_saddr: '', reply_daddr: '', reply_sport: 0, reply_dport: 0,
    reason: 0, reason_name: '', location: '', sk_state: 0, skb_id: '0', mark: 0, aux0: 0, aux1: 0, aux2: 0, isn_c: 0, isn_s: 0,
    ...o,
  };
}

const t1 = NOW_NS - 5n * MIN_NS;
const server = { saddr: '10.0.0.2', daddr: '10.0.0.9', sport: 8080, dport: 40000, dir: 0 };
const f1Events = [
  hop(F1, t1, { tcp_flags: SYN, tcp_seq: 100, ip_id: 11, hook: Hook.NET_DEV_XMIT }),
  hop(F1, t1 + 40_000n, { tcp_flags: SYN, tcp_seq: 100, ip_id: 11, node: 'node-b', agent: 'agent-b', hook: Hook.NETIF_RECEIVE, netns: 'server' }),
  hop(F1, t1 + 90_000n, { ...server, tcp_flags: SYN | ACK, tcp_seq: 900, tcp_ack: 101, node: 'node-b', agent: 'agent-b', hook: Hook.NET_DEV_XMIT, netns: 'server' }),
  hop(F1, t1 + 130_000n, { ...server, tcp_flags: SYN | ACK, tcp_seq: 900, tcp_ack: 101, hook: Hook.NETIF_RECEIVE }),
  hop(F1, t1 + 150_000n, { tcp_flags: PSH | ACK, tcp_seq: 101, tcp_ack: 901, payload_len: 100, ip_id: 12, hook: Hook.NET_DEV_XMIT }),
  hop(F1, t1 + 190_000n, { tcp_flags: PSH | ACK, tcp_seq: 101, tcp_ack: 901, payload_len: 100, ip_id: 12, node: 'node-b', agent: 'agent-b', hook: Hook.NETIF_RECEIVE, netns: 'server' }),
  hop(F1, t1 + 200_000n, { ...server, kind: Kind.RST_SENT, hook: Hook.TCP_SEND_RESET, tcp_flags: RST, sk_state: TcpState.LISTEN, reason: 2, node: 'node-b', agent: 'agent-b', netns: 'server' }),
];
const f1Parts: FlowPartRow[] = [
  { event_date: date(t1), flow_id: F1 as unknown as number, part_key: 'agent-a:1:0', proto: 6, a_addr: '10.0.0.2', a_port: 8080, b_addr: '10.0.0.9', b_port: 40000, first_ts_ns: t1.toString(), last_ts_ns: (t1 + 150_000n).toString(), events: 3, packets: 3, bytes: 100, drops: 0, resets: 0, retrans: 0, nodes: ['node-a'] },
  { event_date: date(t1), flow_id: F1 as unknown as number, part_key: 'agent-b:1:0', proto: 6, a_addr: '10.0.0.2', a_port: 8080, b_addr: '10.0.0.9', b_port: 40000, first_ts_ns: (t1 + 40_000n).toString(), last_ts_ns: (t1 + 200_000n).toString(), events: 4, packets: 3, bytes: 100, drops: 0, resets: 1, retrans: 0, nodes: ['node-b'] },
];

const t2 = NOW_NS - 180n * MIN_NS;
const v6 = { family: 10, saddr: '2001:db8::1', daddr: '2001:db8::2', sport: 5000, dport: 443, dir: 0, node: 'node-c', agent: 'agent-c' };
const f2Events = [hop(F2, t2, { ...v6, tcp_flags: SYN }), hop(F2, t2 + 1_000n, { ...v6, tcp_flags: SYN, hook: Hook.NET_DEV_XMIT })];
const f2Parts: FlowPartRow[] = [
  { event_date: date(t2), flow_id: F2 as unknown as number, part_key: 'agent-c:1:0', proto: 6, a_addr: '2001:db8::1', a_port: 5000, b_addr: '2001:db8::2', b_port: 443, first_ts_ns: t2.toString(), last_ts_ns: (t2 + 1_000n).toString(), events: 2, packets: 2, bytes: 0, drops: 0, resets: 0, retrans: 0, nodes: ['node-c'] },
];

const t3 = NOW_NS - 30n * MIN_NS;
const f3Events = [hop(F3, t3, { proto: 17, saddr: '10.0.0.5', daddr: '10.0.0.53', sport: 3333, dport: 53, dir: 0, tcp_flags: 0, node: ODD_NODE, agent: 'agent-c' })];
const f3Parts: FlowPartRow[] = [
  { event_date: date(t3), flow_id: F3 as unknown as number, part_key: 'agent-c:1:9', proto: 17, a_addr: '10.0.0.5', a_port: 3333, b_addr: '10.0.0.53', b_port: 53, first_ts_ns: t3.toString(), last_ts_ns: t3.toString(), events: 1, packets: 1, bytes: 0, drops: 0, resets: 0, retrans: 0, nodes: [ODD_NODE] },
];

describe('query API on a real ClickHouse', () => {
  let cfg: Config;
  let ch: ClickHouseClient;
  let store: FlowStore;
  let api: FastifyInstance;

  beforeAll(async () => {
    cfg = isolatedConfig({ apiMaxRows: 1000 });
    await migrate(cfg);
    ch = createClickHouse(cfg);
    // Everything twice, in separate inserts, as a redelivered batch would be.
    for (let i = 0; i < 2; i++) {
      await insertRows(ch, 'hop_events', [...f1Events, ...f2Events, ...f3Events], hopEventEncoder);
      await ch.insert({ table: 'flow_parts', values: [...f1Parts, ...f2Parts, ...f3Parts], format: 'JSONEachRow' });
    }
    store = createFlowStore(ch, cfg.clickhouseUrl);
    api = Fastify({ logger: false });
    await api.register(app, { store, cfg });
    await api.ready();
  });

  afterAll(async () => {
    await api?.close();
    await ch?.close();
    if (cfg) await dropDatabase(cfg);
  });

  async function get<T = Record<string, unknown>>(url: string) {
    const r = await api.inject({ method: 'GET', url });
    return { status: r.statusCode, body: r.json() as T };
  }
  const ids = (b: { flows: FlowSummary[] }) => b.flows.map((f) => f.flowId);

  it('lists each flow once, newest first, partials summed once despite redelivery', async () => {
    const r = await get<{ flows: FlowSummary[]; count: number; truncated: boolean }>('/api/v1/flows');
    expect(r.status).toBe(200);
    expect(ids(r.body)).toEqual([F1, F3, F2]);
    expect(r.body.flows[0]).toEqual({
      flowId: F1,
      proto: 6,
      protoName: 'tcp',
      a: { addr: '10.0.0.2', port: 8080 },
      b: { addr: '10.0.0.9', port: 40000 },
      firstTsNs: t1.toString(),
      lastTsNs: (t1 + 200_000n).toString(),
      first: expect.stringMatching(/Z$/),
      last: expect.stringMatching(/Z$/),
      durationUs: 200,
      events: 7,
      packets: 6,
      bytes: 200,
      drops: 0,
      resets: 1,
      retrans: 0,
      nodes: ['node-a', 'node-b'],
    });
    expect(r.body.flows[2]!.flowId).toBe(F2);
  });

  it.each([
    ['addr=10.0.0.9', [F1]],
    ['addr=2001:DB8:0:0:0:0:0:1', [F2]],
    ['port=8080', [F1]],
    ['port=53', [F3]],
    ['port=1', []],
    ['node=node-b', [F1]],
    ['node=node-c', [F2]],
    ['proto=udp', [F3]],
    ['proto=tcp&addr=10.0.0.2&port=8080&node=node-a', [F1]],
    ['since=10m', [F1]],
    ['since=1h', [F1, F3]],
    ['until=1h', [F2]],
    ['since=4h&until=20m', [F3, F2]],
    [`since=${NOW - 6 * 60_000}&until=${NOW - 4 * 60_000}`, [F1]],
    [`since=${new Date(NOW - 181 * 60_000).toISOString()}&until=${new Date(NOW - 179 * 60_000).toISOString()}`, [F2]],
    ['limit=1', [F1]],
  ])('filters %s', async (qs, want) => {
    const r = await get<{ flows: FlowSummary[] }>(`/api/v1/flows?${qs}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(ids(r.body)).toEqual(want);
  });

  it('escapes values that reach ClickHouse (store called directly, past route validation)', async () => {
    expect((await store.listFlows({ node: ODD_NODE, limit: 10 })).map((f) => f.flowId)).toEqual([F3]);
    expect((await store.listFlows({ node: ODD_NODE, limit: 10 }))[0]!.nodes).toEqual([ODD_NODE]);
    for (const hostile of ["x' OR 1=1 --", "x\\' OR 1=1 --", "'); DROP TABLE hop_events; --", 'x\u0000y', "\\'", '\\']) {
      expect(await store.listFlows({ node: hostile, addr: hostile, limit: 10 })).toEqual([]);
    }
    expect((await store.listFlows({ limit: 10 })).length).toBe(3); // still there
  });

  it('rejects hostile parameters before SQL', async () => {
    for (const qs of ["node=x'%20OR%201%3D1", 'addr=1%20OR%201%3D1', 'port=1;DROP', 'since=1%27']) {
      const r = await get<{ message: string }>(`/api/v1/flows?${qs}`);
      expect(r.status).toBe(400);
      expect(r.body.message).toMatch(/^querystring\/\w+ /);
    }
  });

  it('serves one timeline: events once, in order, with per-packet hops', async () => {
    const r = await get<{ flow: FlowSummary; timeline: Timeline; truncated: boolean }>(`/api/v1/flows/${F1}/timeline`);
    expect(r.status).toBe(200);
    expect(r.body.flow.events).toBe(7);
    const t = r.body.timeline;
    expect(t.duplicates).toBe(0); // FINAL already collapsed the redelivered copies
    expect(t.events.map((e) => e.tsNs)).toEqual(f1Events.map((e) => e.wall_ts_ns));
    expect(t.from).toEqual({ addr: '10.0.0.9', port: 40000 });
    expect(t.orientation).toBe('syn');
    expect(t.events.map((e) => e.direction)).toEqual(['forward', 'forward', 'reverse', 'reverse', 'forward', 'forward', 'reverse']);
    expect(t.events.map((e) => e.sincePrevUs)).toEqual([0, 40, 50, 40, 20, 40, 10]);
    expect(t.events[6]).toMatchObject({ kind: 'rst_sent', hook: 'tcp_send_reset', skState: 'LISTEN', tcpFlags: 'RST', node: 'node-b', packet: null });
    expect(t.packets.map((p) => [p.tcpFlags, p.hops.map((h) => `${h.node}/${h.hook}`), p.hops.map((h) => h.deltaUs)])).toEqual([
      ['SYN', ['node-a/net_dev_xmit', 'node-b/netif_receive'], [null, 40]],
      ['SYN|ACK', ['node-b/net_dev_xmit', 'node-a/netif_receive'], [null, 40]],
      ['PSH|ACK', ['node-a/net_dev_xmit', 'node-b/netif_receive'], [null, 40]],
    ]);
    expect(r.body.truncated).toBe(false);
  });

  it('latency report: the filters pick the flows whose events it reads, each event once', async () => {
    type Report = { flows: number; packets: number; truncated: boolean };
    const all = await get<Report>('/api/v1/reports/latency?since=1h');
    expect(all.status).toBe(200);
    expect(all.body).toMatchObject({ flows: 2, packets: 4, truncated: false }); // F1 (three packets, each seen on two nodes) and F3 (one); F2 is 3 h old
    expect((await get<Report>('/api/v1/reports/latency?service=10.0.0.2&port=8080&pod=server&node=node-b')).body).toMatchObject({ flows: 1, packets: 3 });
    expect((await get<Report>('/api/v1/reports/latency?service=10.0.0.53')).body).toMatchObject({ flows: 1, packets: 1 });
    expect((await get<Report>('/api/v1/reports/latency?pod=nowhere')).body).toMatchObject({ flows: 0, packets: 0 });
  });

  it('serves a UInt64 flow id beyond 2^53 exactly', async () => {
    const r = await get<{ flow: FlowSummary; timeline: Timeline }>(`/api/v1/flows/${F2}/timeline`);
    expect(r.status).toBe(200);
    expect(r.body.flow.flowId).toBe(F2);
    expect(r.body.timeline.events).toHaveLength(2);
  });

  it('404 for an unknown flow', async () => {
    const r = await get<{ message: string }>('/api/v1/flows/123/timeline');
    expect(r.status).toBe(404);
    expect(r.body.message).toBe('flow 123 not found');
  });

  it('healthz: 200 when ClickHouse answers', async () => {
    expect(await get('/healthz')).toEqual({ status: 200, body: { status: 'ok', clickhouse: { reachable: true, url: expect.stringMatching(/^http/) } } });
  });

  it('503 naming ClickHouse and where when it is unreachable', async () => {
    const deadUrl = `http://127.0.0.1:${await closedPort()}`;
    const deadCfg = loadConfig({ clickhouseUrl: deadUrl });
    const dead = createClickHouse(deadCfg);
    const f = Fastify({ logger: false });
    await f.register(app, { store: createFlowStore(dead, deadCfg.clickhouseUrl), cfg });
    try {
      for (const url of ['/healthz', '/api/v1/flows', `/api/v1/flows/${F1}/timeline`]) {
        const r = await f.inject({ method: 'GET', url });
        expect(r.statusCode, url).toBe(503);
        expect(r.body, url).toContain(`ClickHouse at ${deadUrl}`);
        expect(r.body, url).toContain('ECONNREFUSED');
        expect(r.body, url).not.toMatch(/\.(ts|js):\d+/);
      }
    } finally {
      await f.close();
      await dead.close();
    }
  });

  it('a missing schema is a 502 that says so', async () => {
    const otherCfg = loadConfig({ clickhouseUrl: cfg.clickhouseUrl, clickhouseDatabase: 'hoptrace_test_absent_schema' });
    const other = createClickHouse(otherCfg, 'default');
    const f = Fastify({ logger: false });
    await f.register(app, { store: createFlowStore(other, otherCfg.clickhouseUrl), cfg });
    try {
      const r = await f.inject({ method: 'GET', url: '/api/v1/flows' });
      expect(r.statusCode).toBe(502);
      expect(r.json().message).toMatch(/^ClickHouse at .*: list flows failed: .*flow_parts.*\(has the correlator created the schema yet\?\)$/);
    } finally {
      await f.close();
      await other.close();
    }
  });

  it('the HTTP server and the CLI: table and --json', async () => {
    const running = await startApi(loadConfig({ ...cfg, apiHost: '127.0.0.1', apiPort: 0, logLevel: 'warn' }), { handleSignals: false });
    const deadApi = `http://127.0.0.1:${await closedPort()}`;
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out.push(String(chunk));
      return true;
    });
    const run = async (...args: string[]) => {
      out.length = 0;
      const program = new Command('hoptrace').exitOverride();
      registerQueryCommands(program, () => cfg);
      await program.parseAsync(['node', 'hoptrace', ...args]);
      return out.join('');
    };
    try {
      const health = await fetch(`${running.address}/healthz`);
      expect(health.status).toBe(200);

      const json = JSON.parse(await run('flows', '--api', running.address, '--json', '--node', 'node-b')) as { flows: FlowSummary[] };
      expect(json.flows.map((f) => f.flowId)).toEqual([F1]);

      const table = await run('flows', '--api', running.address);
      const lines = table.trim().split('\n');
      expect(lines[0]).toMatch(/^FLOW\s+PROTO\s+A\s+B\s+FIRST \(UTC\)\s+DURATION\s+EVENTS/);
      expect(lines[1]).toContain(F1);
      expect(lines[1]).toContain('10.0.0.2:8080');
      expect(table).toContain('[2001:db8::1]:5000');
      expect(table).toContain("node-c'\\ü"); // printed as stored, no escapes obeyed
      expect(lines.at(-1)).toBe('3 flow(s)');

      const tl = await run('timeline', F1, '--api', running.address);
      expect(tl).toContain(`flow ${F1}  tcp  10.0.0.9:40000 -> 10.0.0.2:8080`);
      expect(tl).toMatch(/tcp_send_reset\s+rst_sent\s+<-\s+RST.*state=LISTEN reason=2/);
      expect(tl).toContain('+40 µs* node-b/eth0 netif_receive');

      await expect(run('flows', '--api', running.address, '--port', '70000')).rejects.toThrow('--port must be <= 65535');
      await expect(run('timeline', '999', '--api', running.address)).rejects.toThrow('flow 999 not found');
      await expect(run('timeline', "1' OR 1=1", '--api', running.address)).rejects.toThrow('<flowId> must be a flow id');
      await expect(run('flows', '--api', deadApi)).rejects.toThrow(`cannot reach the hoptrace API at ${deadApi}: connect ECONNREFUSED`);
    } finally {
      spy.mockRestore();
      await running.close();
    }
  });
});

describe('a timeline reads the span its summary covers', () => {
  let cfg: Config;
  let ch: ClickHouseClient;
  let api: FastifyInstance;
  // Flow 5: from 0.5 ms after a UTC midnight, summed in one partial; a socket event 1 ms
  // before its first packet, the day before, counts in no summary. Flow 6: events, no summary.
  const midnight = (BigInt(Math.floor(NOW / 86_400_000)) - 2n) * 86_400_000_000_000n;
  const F5 = '55';
  const F6 = '66';
  const first = midnight + 500_000n;
  const last = first + 30n * MIN_NS;
  const socket = hop(F5, first - 1_000_000n, { kind: Kind.SOCK_STATE, hook: Hook.SOCK_SET_STATE, sport: 0, sk_state: TcpState.SYN_SENT });
  const f5Events = [socket, hop(F5, first, { tcp_flags: SYN }), hop(F5, last, { tcp_flags: ACK })];
  // The same id three days before: outside the summary's span by far, so not read.
  const stray = hop(F5, first - 3n * 1440n * MIN_NS, { tcp_flags: ACK });
  const f5Parts: FlowPartRow[] = [
    { event_date: date(first), flow_id: F5 as unknown as number, part_key: 'agent-a:1:100', proto: 6, a_addr: '10.0.0.9', a_port: 40000, b_addr: '10.0.0.2', b_port: 8080, first_ts_ns: first.toString(), last_ts_ns: last.toString(), events: 2, packets: 2, bytes: 0, drops: 0, resets: 0, retrans: 0, nodes: ['node-a'] },
  ];
  const f6Events = [hop(F6, first, { tcp_flags: SYN }), hop(F6, last + 3n * 1440n * MIN_NS, { tcp_flags: ACK })];
  // Flow 7, at noon of flow 5's day, written as one part among four of other flows written at
  // other hours of that day (merges stopped: a day as filled), FILLER rows each.
  const F7 = '77777';
  const noon = midnight + 720n * MIN_NS;
  const FILLER = 1000;
  const f7Events = [hop(F7, noon, { tcp_flags: SYN }), hop(F7, noon + MIN_NS, { tcp_flags: ACK })];
  const f7Parts: FlowPartRow[] = [{ ...f5Parts[0]!, flow_id: F7 as unknown as number, part_key: 'agent-a:1:700', first_ts_ns: noon.toString(), last_ts_ns: (noon + MIN_NS).toString() }];
  // Ids below and above F7's in every part, so that the sorting key alone excludes none of them.
  const filler = (hour: bigint) => Array.from({ length: FILLER }, (_, i) => hop(String(i * 200 + Number(hour)), midnight + hour * 60n * MIN_NS + BigInt(i), {}));

  beforeAll(async () => {
    cfg = isolatedConfig({ apiMaxRows: 1000 });
    await migrate(cfg);
    ch = createClickHouse(cfg);
    await insertRows(ch, 'hop_events', [...f5Events, stray, ...f6Events], hopEventEncoder);
    await ch.insert({ table: 'flow_parts', values: [...f5Parts, ...f7Parts], format: 'JSONEachRow' });
    await ch.command({ query: `SYSTEM STOP MERGES ${cfg.clickhouseDatabase}.hop_events` });
    for (const hour of [2n, 6n, 18n, 22n]) await insertRows(ch, 'hop_events', filler(hour), hopEventEncoder);
    await insertRows(ch, 'hop_events', [...f7Events, ...filler(12n)], hopEventEncoder);
    api = Fastify({ logger: false });
    await api.register(app, { store: createFlowStore(ch, cfg.clickhouseUrl), cfg });
    await api.ready();
  });

  afterAll(async () => {
    await api?.close();
    await ch?.close();
    if (cfg) await dropDatabase(cfg);
  });

  const timeline = async (id: string) => {
    const r = await api.inject({ method: 'GET', url: `/api/v1/flows/${id}/timeline` });
    return { status: r.statusCode, body: r.json() as { flow: FlowSummary | null; timeline: Timeline } };
  };

  it('with the event just before the span, across midnight, that no summary counts', async () => {
    const r = await timeline(F5);
    expect(r.status).toBe(200);
    expect(date(BigInt(socket.wall_ts_ns))).not.toBe(date(first));
    expect(r.body.timeline.events.map((e) => e.tsNs)).toEqual(f5Events.map((e) => e.wall_ts_ns));
  });

  it('reading only the parts of its day whose time meets that span', async () => {
    const [n] = await (await ch.query({ query: `SELECT count() AS n FROM system.parts WHERE active AND database = currentDatabase() AND table = 'hop_events' AND partition = '${date(noon)}'`, format: 'JSONEachRow' })).json<{ n: string }>();
    expect(Number(n!.n)).toBeGreaterThanOrEqual(5);
    // Each part here is one granule (8,192 rows by default), and ClickHouse counts the rows a statement is to read in
    // granules before reading: a limit of 1.5 granules fails the statement if it would read two parts. 18.16 checks the
    // limit only without FINAL, which does not change which parts are picked.
    const read = async (span: 'summary' | 'all') =>
      (await ch.query({ query: flowEventsSql(BigInt(F7), 100, span).replace(' FINAL', ''), format: 'JSONEachRow', clickhouse_settings: { max_rows_to_read: String(1.5 * 8192) } })).json<{ wall_ts_ns: string }>();
    expect((await read('summary')).map((e) => e.wall_ts_ns)).toEqual(f7Events.map((e) => e.wall_ts_ns));
    await expect(read('all')).rejects.toThrow(/Limit for rows/);
    expect((await timeline(F7)).body.timeline.events.map((e) => e.tsNs)).toEqual(f7Events.map((e) => e.wall_ts_ns));
  });

  it('every day for a flow with events and no summary', async () => {
    const r = await timeline(F6);
    expect(r.status).toBe(200);
    expect(r.body.flow).toBeNull();
    expect(r.body.timeline.events.map((e) => e.tsNs)).toEqual(f6Events.map((e) => e.wall_ts_ns));
  });
});
