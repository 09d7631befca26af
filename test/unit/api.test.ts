import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { app } from '../../services/api/app.js';
import { clickhouseError, flowEventsSql, flowSql, listFlowsSql, redactUrl, reportEventsSql, type FlowFilter, type FlowSpan, type FlowStore, type FlowSummary, type PingResult, type ReportFilter } from '../../services/api/queries.js';
import { buildPath } from '../../services/correlator/path.js';
import { latencyReport } from '../../services/correlator/report.js';
import { parseTime } from '../../services/api/time.js';
import { buildTimeline, type TimelineRow } from '../../services/correlator/timeline.js';
import { HopError } from '../../services/shared/errors.js';
import { Hook, Kind } from '../../services/shared/record.js';
import { str } from '../../services/shared/sql.js';

const NOW = Date.UTC(2024, 4, 1, 12, 0, 0); // 2024-05-01T12:00:00Z
const NOW_NS = BigInt(NOW) * 1_000_000n;
const MAX_ROWS = 500;

const summary: FlowSummary = {
  flowId: '4503599627370495',
  proto: 6,
  protoName: 'tcp',
  a: { addr: '10.0.0.2', port: 8080 },
  b: { addr: '10.0.0.9', port: 40000 },
  firstTsNs: NOW_NS.toString(),
  lastTsNs: (NOW_NS + 2_000n).toString(),
  first: '2024-05-01T12:00:00.000000000Z',
  last: '2024-05-01T12:00:00.000002000Z',
  durationUs: 2,
  events: 2,
  packets: 2,
  bytes: 120,
  drops: 0,
  resets: 1,
  retrans: 0,
  nodes: ['node-a', 'node-b'],
};

function ev(dt: number, o: Partial<TimelineRow> = {}): TimelineRow {
  return {
    wall_ts_ns: (NOW_NS + BigInt(dt)).toString(),
    agent: 'agent-a', boot: '1', seq: String(dt), node: 'node-a', netns_ino: 1, netns: 'client', pod: '', ifindex: 2, ifname: 'eth0',
    hook: Hook.NET_DEV_QUEUE, kind: Kind.PACKET, family: 2, proto: 6, dir: 1,
    saddr: '10.0.0.9', daddr: '10.0.0.2', sport: 40000, dport: 8080,
    tcp_seq: 100, tcp_ack: 0, tcp_flags: 0x02, tcp_window: 1000, payload_len: 0, ip_id: 1, flags: 0,
    ct_id: 0, ct_status: 0, ct_info: 0, reply_saddr: '', reply_daddr: '', reply_sport: 0, reply_dport: 0, reason: 0, sk_state: 0,
    ...o,
  };
}

const events: TimelineRow[] = [
  ev(0),
  ev(2_000, { node: 'node-b', hook: Hook.NETIF_RECEIVE }),
  ev(3_000, { node: 'node-b', kind: Kind.CT, ct_id: 5, reply_saddr: '10.0.0.2', reply_daddr: '10.0.0.9', reply_sport: 15006, reply_dport: 40000 }),
];

/** A FlowStore that records the filters it was given. */
class FakeStore implements FlowStore {
  where = 'http://127.0.0.1:18123';
  filters: FlowFilter[] = [];
  flows: FlowSummary[] = [summary];
  down: HopError | null = null;

  async ping(): Promise<PingResult> {
    return this.down ? { ok: false, error: 'connect ECONNREFUSED 127.0.0.1:18123' } : { ok: true };
  }
  async listFlows(f: FlowFilter) {
    if (this.down) throw this.down;
    this.filters.push(f);
    listFlowsSql(f); // the SQL builder must accept whatever the routes let through
    return this.flows.slice(0, f.limit);
  }
  async getFlow(id: bigint) {
    if (this.down) throw this.down;
    flowSql(id);
    return id.toString() === summary.flowId ? summary : null;
  }
  async flowEvents(id: bigint, limit: number, span: FlowSpan) {
    if (this.down) throw this.down;
    flowEventsSql(id, limit, span);
    return id.toString() === summary.flowId ? events.slice(0, limit) : [];
  }
  reports: ReportFilter[] = [];
  async reportEvents(f: ReportFilter) {
    if (this.down) throw this.down;
    this.reports.push(f);
    reportEventsSql(f);
    return { flows: [events], truncated: false };
  }
}

let store: FakeStore;
let f: FastifyInstance;

beforeEach(async () => {
  store = new FakeStore();
  f = Fastify({ logger: false });
  await f.register(app, { store, cfg: { apiMaxRows: MAX_ROWS }, now: () => NOW });
  await f.ready();
});
afterEach(async () => {
  await f.close();
});

async function get(url: string) {
  const r = await f.inject({ method: 'GET', url });
  return { status: r.statusCode, body: r.json() as Record<string, unknown> };
}

describe('GET /api/v1/flows', () => {
  it('lists flows with every summary field served', async () => {
    const r = await get('/api/v1/flows');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ flows: [summary], count: 1, limit: 100, truncated: false });
    expect(store.filters[0]).toEqual({ limit: 101 });
  });

  it('says when more flows match than the limit', async () => {
    store.flows = [summary, { ...summary, flowId: '1' }, { ...summary, flowId: '2' }];
    const r = await get('/api/v1/flows?limit=2');
    expect(r.body).toMatchObject({ count: 2, limit: 2, truncated: true });
  });

  const ok: [string, Partial<FlowFilter>][] = [
    ['addr=10.0.0.9', { addr: '10.0.0.9' }],
    ['addr=2001:DB8:0:0::1', { addr: '2001:db8::1' }],
    ['addr=::ffff:10.0.0.1', { addr: '::ffff:a00:1' }],
    ['port=0', { port: 0 }],
    ['port=65535', { port: 65535 }],
    ['node=node-a.example', { node: 'node-a.example' }],
    ['proto=tcp', { proto: 6 }],
    ['proto=udp', { proto: 17 }],
    ['proto=132', { proto: 132 }],
    ['since=15m', { sinceNs: NOW_NS - 15n * 60_000_000_000n }],
    ['since=1h30m', { sinceNs: NOW_NS - 90n * 60_000_000_000n }],
    ['since=500ms', { sinceNs: NOW_NS - 500_000_000n }],
    ['since=now', { sinceNs: NOW_NS }],
    [`since=${NOW}`, { sinceNs: NOW_NS }],
    ['since=2024-05-01T12:00:00Z', { sinceNs: NOW_NS }],
    ['since=2024-05-01T14:00:00.000000001%2B02:00', { sinceNs: NOW_NS + 1n }],
    ['since=2024-05-01T11:59:59.5-00:00', { sinceNs: NOW_NS - 500_000_000n }],
    ['until=2h', { untilNs: NOW_NS - 2n * 3_600_000_000_000n }],
    ['since=2h&until=1h', { sinceNs: NOW_NS - 7_200_000_000_000n, untilNs: NOW_NS - 3_600_000_000_000n }],
    [`limit=${MAX_ROWS}`, { limit: MAX_ROWS + 1 }],
  ];
  it.each(ok)('accepts %s', async (qs, want) => {
    const r = await get(`/api/v1/flows?${qs}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(store.filters[0]).toEqual({ limit: 101, ...want });
  });

  // Each bad parameter gets 400 and a message that names the field.
  const bad: [string, string][] = [
    ['port=65536', 'querystring/port must be <= 65535'],
    ['port=-1', 'querystring/port must be >= 0'],
    ['port=80.5', 'querystring/port must be integer'],
    ['port=http', 'querystring/port must be integer'],
    ['port=1%20OR%201%3D1', 'querystring/port must be integer'],
    ['port=99999999999999999999999', 'querystring/port must be <= 65535'],
    ['port=1e400', 'querystring/port must be integer'],
    ['port=Infinity', 'querystring/port must be integer'],
    ['port=0x50', 'querystring/port must be integer'],
    ['port=%2080', 'querystring/port must be integer'],
    ['port=', 'querystring/port must be integer'],
    [`limit=1${'0'.repeat(400)}`, `querystring/limit must be <= ${MAX_ROWS}`],
    [`limit=-1${'0'.repeat(400)}`, 'querystring/limit must be >= 1'],
    ['port=80&port=81', 'querystring/port must be integer'],
    ['limit=0', 'querystring/limit must be >= 1'],
    [`limit=${MAX_ROWS + 1}`, `querystring/limit must be <= ${MAX_ROWS}`],
    ['addr=10.0.0.256', 'querystring/addr must be an IPv4 or IPv6 address'],
    ['addr=010.0.0.1', 'querystring/addr must be an IPv4 or IPv6 address'],
    ["addr=10.0.0.1'%20OR%20'1'%3D'1", 'querystring/addr must be an IPv4 or IPv6 address'],
    ['addr=fe80::1%25eth0', 'querystring/addr must be an IPv4 or IPv6 address'],
    ['addr=', 'querystring/addr must be an IPv4 or IPv6 address'],
    ['node=node%27%3B%20DROP%20TABLE%20hop_events', 'querystring/node must be a node name'],
    ['node=n%5C', 'querystring/node must be a node name'],
    ['node=%C3%BCnicode', 'querystring/node must be a node name'],
    ['node=a%00b', 'querystring/node must be a node name'],
    [`node=${'x'.repeat(300)}`, 'querystring/node must NOT have more than 253 characters'],
    ['proto=tcp%27', 'querystring/proto must be tcp, udp, icmp, icmpv6, sctp or a protocol number'],
    ['proto=300', 'querystring/proto must be <= 255'],
    ['since=yesterday', 'querystring/since must be an RFC 3339 time'],
    ['since=2024-02-30T00:00:00Z', 'querystring/since must be an RFC 3339 time'],
    ['since=2024-05-01T25:00:00Z', 'querystring/since must be an RFC 3339 time'],
    ['since=9999-12-31T23:59:59Z', 'querystring/since must be an RFC 3339 time'],
    ['since=999999999999999', 'querystring/since must be an RFC 3339 time'],
    ['since=999999999w', 'querystring/since must be an RFC 3339 time'],
    ['until=1%20OR%201%3D1', 'querystring/until must be an RFC 3339 time'],
    ['since=1h&until=2h', 'querystring/until must not be before querystring/since'],
    ['prot=tcp', 'querystring/prot is not a known parameter'],
    ['node[a]=1', 'querystring/node[a] is not a known parameter'],
    ["%27%22=1", `querystring/'" is not a known parameter`],
    ['addr=10.0.0.1&__proto__=x', 'querystring/__proto__ is not a known parameter'],
  ];
  it.each(bad)('rejects %s', async (qs, message) => {
    const r = await get(`/api/v1/flows?${qs}`);
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ statusCode: 400, code: 'HOP_BAD_REQUEST', error: 'Bad Request' });
    expect(String(r.body.message)).toContain(message);
    expect(JSON.stringify(r.body)).not.toMatch(/at .*\.(ts|js):\d+/); // no stack
    expect(store.filters).toHaveLength(0);
  });
});

describe('GET /api/v1/flows/:flowId/timeline', () => {
  it('returns the summary and the timeline exactly as built', async () => {
    const r = await get(`/api/v1/flows/${summary.flowId}/timeline`);
    expect(r.status).toBe(200);
    // Schema drift check: nothing the code built was dropped by the response schema.
    expect(r.body).toEqual({ flow: summary, timeline: JSON.parse(JSON.stringify(buildTimeline(events))), truncated: false, eventLimit: MAX_ROWS, joined: [] });
    const t = r.body.timeline as { packets: { hops: { crossNode: boolean; deltaUs: number | null }[] }[]; events: { ct: unknown }[] };
    expect(t.packets[0]!.hops.map((h) => [h.deltaUs, h.crossNode])).toEqual([[null, false], [2, true]]);
    expect(t.events[2]!.ct).toEqual({ id: 5, status: 0, info: 0, reply: { src: { addr: '10.0.0.2', port: 15006 }, dst: { addr: '10.0.0.9', port: 40000 } } });
  });

  it('404 names the flow when unknown', async () => {
    const r = await get('/api/v1/flows/12345/timeline');
    expect(r.status).toBe(404);
    expect(r.body).toEqual({ statusCode: 404, code: 'HOP_NOT_FOUND', error: 'Not Found', message: 'flow 12345 not found' });
  });

  it.each([
    ['abc', 'params/flowId must be a flow id'],
    ['-1', 'params/flowId must be a flow id'],
    ['1%27%20OR%201%3D1', 'params/flowId must be a flow id'],
    ['18446744073709551616', 'params/flowId must be below 2^64'],
    ['123456789012345678901', 'params/flowId must NOT have more than 20 characters'],
    ['%F0%9F%92%A5', 'params/flowId must be a flow id'],
  ])('rejects flow id %s', async (id, message) => {
    const r = await get(`/api/v1/flows/${id}/timeline`);
    expect(r.status).toBe(400);
    expect(String(r.body.message)).toContain(message);
  });

  it('a malformed URL is a 400, not a crash', async () => {
    const r = await get('/api/v1/flows/%E0%A4%A/timeline');
    expect(r.status).toBe(400);
  });

  it('accepts the largest UInt64', async () => {
    const r = await get('/api/v1/flows/18446744073709551615/timeline');
    expect(r.status).toBe(404);
  });
});

describe('ClickHouse down', () => {
  const down = clickhouseError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:18123'), { code: 'ECONNREFUSED' }), 'http://127.0.0.1:18123', 'list flows');

  it.each(['/api/v1/flows', `/api/v1/flows/${summary.flowId}/timeline`])('%s answers 503 naming ClickHouse and where, no stack', async (url) => {
    store.down = down;
    const r = await get(url);
    expect(r.status).toBe(503);
    expect(r.body).toEqual({
      statusCode: 503,
      code: 'HOP_CLICKHOUSE_UNREACHABLE',
      error: 'Service Unavailable',
      message: 'ClickHouse at http://127.0.0.1:18123 is unreachable: connect ECONNREFUSED 127.0.0.1:18123',
    });
  });

  it('/healthz says which and where', async () => {
    expect(await get('/healthz')).toEqual({ status: 200, body: { status: 'ok', clickhouse: { reachable: true, url: 'http://127.0.0.1:18123' } } });
    store.down = down;
    const r = await get('/healthz');
    expect(r.status).toBe(503);
    expect(r.body).toEqual({
      status: 'unavailable',
      clickhouse: { reachable: false, url: 'http://127.0.0.1:18123', error: 'ClickHouse at http://127.0.0.1:18123 is unreachable: connect ECONNREFUSED 127.0.0.1:18123' },
    });
  });

  it('a ClickHouse error answers 502 with its first line, not the SQL or a stack', async () => {
    store.down = clickhouseError(new Error("Code: 60, e.displayText() = DB::Exception: Table hoptrace.flow_parts doesn't exist., e.what() = DB::Exception\nstack..."), 'http://127.0.0.1:18123', 'list flows');
    const r = await get('/api/v1/flows');
    expect(r.status).toBe(502);
    expect(r.body.message).toBe("ClickHouse at http://127.0.0.1:18123: list flows failed: Code: 60, DB::Exception: Table hoptrace.flow_parts doesn't exist. (has the correlator created the schema yet?)");
  });

  it('an unexpected error is a bare 500', async () => {
    store.down = new HopError('HOP_BATCH_INVALID', 'secret internals');
    const r = await get('/api/v1/flows');
    expect(r.status).toBe(500);
    expect(r.body).toEqual({ statusCode: 500, code: 'HOP_BATCH_INVALID', error: 'Internal Server Error', message: 'internal error' });
  });
});

describe('SQL rendering', () => {
  it('escapes every string value and renders numbers as integers', () => {
    const sql = listFlowsSql({ addr: "1.2.3.4' OR '1'='1", node: "n\\' OR 1=1 --", port: 80, proto: 6, sinceNs: 5n, untilNs: 18446744073709551615n, limit: 10 });
    expect(sql).toContain(`a_addr = ${str("1.2.3.4' OR '1'='1")}`);
    expect(sql).toContain("has(nodes, 'n\\\\\\' OR 1=1 --')");
    expect(sql).toContain('last_ts_ns >= 5');
    expect(sql).toContain('HAVING min(first_ts_ns) <= 18446744073709551615');
    expect(sql).toContain('LIMIT 10');
    // Outside string literals, nothing of the inputs remains.
    const outside = sql.replace(/'(?:[^'\\]|\\.)*'/g, "''");
    expect(outside).not.toMatch(/OR 1=1|OR '1'/);
  });

  it.each([
    ['negative limit', { limit: -1 }],
    ['fractional limit', { limit: 1.5 }],
    ['NaN port', { limit: 10, port: Number.NaN }],
    ['negative time', { limit: 10, sinceNs: -1n }],
    ['time beyond UInt64', { limit: 10, sinceNs: 1n << 64n }],
  ])('refuses %s', (_name, f) => {
    expect(() => listFlowsSql(f as FlowFilter)).toThrow(HopError);
  });

  it('reads rows with FINAL so redelivered rows count once', () => {
    expect(listFlowsSql({ limit: 1 })).toMatch(/FROM flow_parts FINAL/);
    // Conditions on flow_id (the sorting key's first column) as PREWHERE: 18.16 keeps a FINAL query's WHERE where it is.
    expect(listFlowsSql({ limit: 1, port: 80 })).toMatch(/FROM flow_parts FINAL\s+PREWHERE flow_id IN \(SELECT flow_id FROM flow_parts WHERE \(a_port = 80 OR b_port = 80\)\)/);
    expect(reportEventsSql({ maxFlows: 5, maxRows: 10, port: 80 })).toMatch(/FROM hop_events FINAL\s+PREWHERE flow_id IN \(/);
    expect(flowSql(1n)).toMatch(/FROM flow_parts FINAL/);
    expect(flowEventsSql(1n, 5, 'all')).toMatch(/FROM hop_events FINAL\s+PREWHERE flow_id = 1\s+ORDER BY wall_ts_ns, agent, boot, seq\s+LIMIT 5/);
    // The flow's span from its summary rows, an hour wider each side (what they return and what they read: test/integration/api.test.ts).
    expect(flowEventsSql(1n, 5, 'summary')).toMatch(
      /PREWHERE flow_id = 1\s+WHERE wall_ts_ns BETWEEN \(SELECT .*min\(first_ts_ns\).* FROM flow_parts PREWHERE flow_id = 1\) AND \(SELECT .*max\(last_ts_ns\) \+ 3600000000000.* FROM flow_parts PREWHERE flow_id = 1\)\s+ORDER BY/,
    );
  });

  it('redacts credentials from the ClickHouse URL', () => {
    expect(redactUrl('http://user:pw@127.0.0.1:18123/?password=x')).toBe('http://127.0.0.1:18123');
  });
});

describe('parseTime', () => {
  it.each([
    ['now', NOW_NS],
    ['0', 0n],
    ['1w', NOW_NS - 7n * 86_400_000_000_000n],
    ['2024-05-01 12:00:00z', NOW_NS],
    ['1970-01-01T00:00:00Z', 0n],
    ['1970-01-01T00:00:00+01:00', null],
    ['2024-05-01T12:00:00+24:00', null],
    ['2023-02-29T00:00:00Z', null],
    ['2024-02-29T00:00:00Z', BigInt(Date.UTC(2024, 1, 29)) * 1_000_000n],
    ['1000000w', null],
  ])('%s', (raw, want) => expect(parseTime(raw, NOW)).toBe(want));
});

describe('GET /api/v1/flows/:flowId/path', () => {
  it('serves the path exactly as buildPath made it', async () => {
    const r = await get(`/api/v1/flows/${summary.flowId}/path`);
    expect(r.status).toBe(200);
    expect(r.body).toEqual(JSON.parse(JSON.stringify({ flow: summary, path: buildPath(events), truncated: false, joined: [] })));
  });
  it.each([
    ['/api/v1/flows/12x/path', 400, /params\/flowId/],
    ['/api/v1/flows/99999999999999999999/path', 400, /params\/flowId must be below 2\^64/],
    ['/api/v1/flows/5/path', 404, /flow 5 not found/],
  ])('%s -> %i', async (url, status, msg) => {
    const r = await get(url);
    expect(r.status).toBe(status);
    expect(String(r.body.message)).toMatch(msg);
  });
});

describe('GET /api/v1/reports/latency', () => {
  it('serves the report and passes a validated filter', async () => {
    const r = await get('/api/v1/reports/latency?service=10.96.0.10&port=80&pod=hopt-pod-server&node=node-b&since=15m&maxFlows=50');
    expect(r.status).toBe(200);
    expect(r.body).toEqual(JSON.parse(JSON.stringify({ ...latencyReport([events]), truncated: false })));
    expect(store.reports[0]).toMatchObject({ service: '10.96.0.10', port: 80, pod: 'hopt-pod-server', node: 'node-b', maxFlows: 50, sinceNs: BigInt(NOW - 15 * 60_000) * 1_000_000n });
  });
  it.each([
    ['service=10.0.0.300', /querystring\/service/],
    ["service=1' OR 1=1", /querystring\/service/],
    ["pod=a'b", /querystring\/pod/],
    ['maxFlows=0', /querystring\/maxFlows must be >= 1/],
    ['since=yesterday', /querystring\/since/],
    ['vip=10.0.0.1', /querystring\/vip is not a known parameter/],
  ])('rejects %s naming the field', async (qs, msg) => {
    const r = await get(`/api/v1/reports/latency?${qs}`);
    expect(r.status).toBe(400);
    expect(String(r.body.message)).toMatch(msg);
  });
});
