/**
 * One flow's timeline from a large store: GET /api/v1/flows/:id/timeline latency with
 * >= 100 million events in hop_events (issue target: p99 <= 50 ms).
 *
 *   npm run build && node dist/bench/timeline-lookup.js [--events 100000000] [--lookups 500] [--runs 3]
 *       [--keep] [--refill] [--compact] [--idle 90] [--drop-caches] [--db hoptrace_bench_timeline] [--per-flow 100] [--days 4] [--chunk 10000000]
 *
 * Fill (skipped when the database already holds >= --events events and their flow_parts):
 * the production schema (shared/clickhouse.ts migrate()) in a database of its own, filled
 * server-side by `INSERT ... SELECT ... FROM numbers()`, --chunk events per statement.
 * Flows of --per-flow events (a TCP connection: SYN, SYN-ACK, request/response rounds,
 * FINs; every packet seen at 4 hops: node-a egress, node-lb in and out across a DNAT with
 * its conntrack entry, node-c ingress), one flow starting every (--days / flows) so the
 * events spread over --days daily partitions, 53-bit flow ids spread like real ones
 * (cityHash64 of the flow number), and one flow_parts row per (flow, node), aggregated from
 * the same generated events so the summaries match them exactly. The tables are measured
 * as filled: whatever parts the background merges have reached (printed); --compact first
 * merges each closed partition into one part, as the correlator does (correlator/compact.ts;
 * every day the fill writes is in the past), which cannot be undone short of --refill.
 * Without --keep the database is dropped at the end; with it, the next run skips the fill.
 *
 * Measure, --runs times over --lookups random existing flows each (sequential, after a
 * warm-up):
 * - the real API in this process (services/api startApi) over HTTP (fetch to 127.0.0.1,
 *   body read in full), first on flows not looked up before (their granules wherever the OS
 *   left them: on these VMs a DAMON pageout scheme evicts page cache left idle for a
 *   minute), then on the same flows again, their data cached, as for every row after it;
 * - the two store calls the route awaits (getFlow beside flowEvents over the flow's days,
 *   JSON parsed, no HTTP or timeline assembly);
 * - each of their SQL statements alone, and variants (all days; every field as a column
 *   through the ALIAS columns; without FINAL; with a database filled before hop_events was
 *   packed, which the fill then migrates, the old tables as the route read them: hop_events_v1
 *   unpacked, flow_parts_v1 partitioned by day).
 * Medians over runs of each percentile. Then, once each:
 * - cold-ish: the first lookups after SYSTEM DROP MARK CACHE (the OS page cache is left
 *   alone: the machine is shared);
 * - idle (unless --idle 0): --idle seconds (90) with nothing read, then the first lookups of
 *   flows picked before it: what a lookup meets on a quiet system here; with hop_events_v1
 *   there, the events statement on each layout too, interleaved with the API's lookups;
 * - cold (--drop-caches, root): the same interleaved lookups, the machine's page cache and
 *   ClickHouse's caches dropped before each one: every lookup from disk;
 * - the two `before: ... WHERE flow_id` variants (the route's SQL before it used PREWHERE),
 *   over fewer flows: each reads 16-65 MiB per lookup, which would push the route's data out
 *   of the page cache;
 * - where ClickHouse's time goes: rows and bytes read per statement and the server's own
 *   elapsed time, from clickhouse-client's server log lines (18.16 has no query_log here).
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { dropCaches, median, numArg, percentile, strArg } from './common.js';
import { startApi } from '../services/api/server.js';
import { compactClosed } from '../services/correlator/compact.js';
import { createFlowStore, flowEventsSql, flowSql } from '../services/api/queries.js';
import { EVENT_COLUMNS } from '../services/correlator/timeline.js';
import { createClickHouse, migrate, type ClickHouseClient } from '../services/shared/clickhouse.js';
import { loadConfig, type Config } from '../services/shared/config.js';
import { ident, str, uint } from '../services/shared/sql.js';
import { packSql, queryEventRows, STORED_COLUMNS } from '../services/shared/stored-events.js';

const EVENTS = numArg('events', 100_000_000);
const LOOKUPS = numArg('lookups', 500);
const RUNS = numArg('runs', 3);
const PER_FLOW = numArg('per-flow', 100);
const DAYS = numArg('days', 4);
const CHUNK = numArg('chunk', 10_000_000);
const WARMUP = 20;
const COLD = 20;
/** Seconds with nothing read before the idle pass (0 skips it): these VMs page out page cache left idle for a minute. */
const IDLE_S = numArg('idle', 90);
const IDLE_LOOKUPS = 40;
const SAMPLE = 30;
/** Lookups of each `before: ... WHERE` variant, one pass after everything else: each reads tens of MiB and would empty the page cache the route's lookups rely on. */
const HEAVY_LOOKUPS = 50;
const KEEP = process.argv.includes('--keep');
const REFILL = process.argv.includes('--refill');
const COMPACT = process.argv.includes('--compact');
/** Root only: empties the whole machine's page cache before each lookup of the cold pass. */
const DROP_CACHES = process.argv.includes('--drop-caches');
const DB = strArg('db', 'hoptrace_bench_timeline');
const TCP_PORT = process.env.HOPTRACE_CLICKHOUSE_TCP_PORT ?? '19000';

if (PER_FLOW % 4 !== 0 || PER_FLOW < 16) throw new Error('--per-flow must be a multiple of 4, at least 16');
if (CHUNK % PER_FLOW !== 0) throw new Error('--chunk must be a multiple of --per-flow');
const FLOWS = Math.floor(EVENTS / PER_FLOW);
const PACKETS = PER_FLOW / 4;
/** 2026-11-01T00:00:00Z in ns: fixed, so fills are reproducible. */
const T0 = BigInt(Date.UTC(2026, 10, 1)) * 1_000_000n;
const SPACING_NS = (BigInt(DAYS) * 86_400_000_000_000n) / BigInt(FLOWS);

// ---------------------------------------------------------------- fill

/**
 * Events number [start, start + count), one row per event, with helper columns (f: flow
 * number, p: packet, hop, fwd: client to server, node_i) besides the hop_events columns.
 * A packet crosses hop 0..3: fwd node-a xmit, node-lb receive (eth0, VIP), node-lb xmit
 * (eth1, after DNAT to the backend), node-c receive; the reply the other way round.
 */
function eventsSql(start: number, count: number): string {
  const u32 = (x: string) => `toUInt32((${x}) % 4294967296)`;
  return `SELECT
  number AS n,
  intDiv(n, ${PER_FLOW}) AS f,
  n % ${PER_FLOW} AS k,
  intDiv(k, 4) AS p,
  k % 4 AS hop,
  p % 2 = 0 AS fwd,
  if(fwd, hop >= 2, hop < 2) AS server_side,
  if(fwd, [0, 1, 1, 2][hop + 1], [2, 1, 1, 0][hop + 1]) AS node_i,
  intDiv(p, 2) AS round,
  toUInt64(greatest(round, 1) - 1) AS prev_rounds,
  bitAnd(cityHash64(f), 9007199254740991) AS flow_id,
  ${T0} + f * ${SPACING_NS} + p * 200000 + hop * 15000 + cityHash64(n) % 5000 AS wall_ts_ns,
  toDate(toDateTime(intDiv(wall_ts_ns, 1000000000))) AS event_date,
  toUInt64(wall_ts_ns - ${T0} + (node_i + 1) * 604800000000000) AS kernel_ts_ns,
  ['node-a', 'node-lb', 'node-c'][node_i + 1] AS node,
  node AS agent,
  toUInt64(1000 + node_i) AS boot,
  n AS seq,
  toUInt32(4026532000 + node_i * 100 + f % 8) AS netns_ino,
  [concat('client-', toString(f % 8)), 'lb', concat('server-', toString(f % 4))][node_i + 1] AS netns,
  '' AS pod,
  toUInt32(if(node_i = 1 AND server_side, 3, 2)) AS ifindex,
  if(node_i = 1 AND server_side, 'eth1', 'eth0') AS ifname,
  toUInt8(if(hop % 2 = 0, 3, 1)) AS hook,
  toUInt8(1) AS kind,
  toUInt8(2) AS family,
  toUInt8(6) AS proto,
  toUInt8(if(fwd, 1 - server_side, server_side)) AS dir,
  concat('10.244.', toString(1 + f % 199), '.', toString(2 + intDiv(f, 199) % 250)) AS cli_addr,
  toUInt16(32768 + intDiv(f, 49750) % 28000) AS cli_port,
  concat('10.244.200.', toString(10 + f % 4)) AS backend,
  if(server_side, backend, '10.96.0.10') AS srv_addr,
  toUInt16(if(server_side, 8080, 80)) AS srv_port,
  if(fwd, cli_addr, srv_addr) AS saddr,
  if(fwd, srv_addr, cli_addr) AS daddr,
  if(fwd, cli_port, srv_port) AS sport,
  if(fwd, srv_port, cli_port) AS dport,
  ${u32('cityHash64(f, 1)')} AS isn_c,
  ${u32('cityHash64(f, 2)')} AS isn_s,
  ${u32(`multiIf(p = 0, isn_c, p = 1, isn_s, fwd, isn_c + 1 + 180 * prev_rounds, isn_s + 1 + 1448 * prev_rounds)`)} AS tcp_seq,
  ${u32(`multiIf(p = 0, 0, p = 1, isn_c + 1, fwd, isn_s + 1 + 1448 * prev_rounds, isn_c + 1 + 180 * round)`)} AS tcp_ack,
  toUInt8(multiIf(p = 0, 2, p = 1, 18, p >= ${PACKETS - 2}, 17, 24)) AS tcp_flags,
  toUInt16(if(p < 2, 64240, if(fwd, 502, 501))) AS tcp_window,
  toUInt16(if(p < 2 OR p >= ${PACKETS - 2}, 0, if(fwd, 180, 1448))) AS payload_len,
  toUInt16(cityHash64(f, p) % 65536) AS ip_id,
  toUInt16(if(hop % 2 = 0, 16, 8) + if(node_i = 1, 1, 0)) AS flags,
  toUInt32(if(node_i = 1, cityHash64(f, 3) % 4294967296, 0)) AS ct_id,
  toUInt32(if(node_i = 1, if(p = 0, 392, 398), 0)) AS ct_status,
  toUInt8(if(node_i = 1, if(p = 0, 2, if(fwd, 0, 3)), 0)) AS ct_info,
  if(node_i = 1, backend, '') AS reply_saddr,
  if(node_i = 1, cli_addr, '') AS reply_daddr,
  toUInt16(if(node_i = 1, 8080, 0)) AS reply_sport,
  toUInt16(if(node_i = 1, cli_port, 0)) AS reply_dport,
  toUInt16(0) AS reason,
  '' AS reason_name,
  '' AS location,
  toUInt8(0) AS sk_state,
  cityHash64(f, p, node_i) AS skb_id,
  toUInt32(0) AS mark,
  toUInt32(0) AS aux0,
  toUInt32(0) AS aux1,
  toUInt32(0) AS aux2
FROM numbers(${start}, ${count})`;
}

const storedColumns = STORED_COLUMNS.filter((c) => c !== 'packed');
const insertEventsSql = (start: number, count: number) =>
  `INSERT INTO hop_events (${storedColumns.join(', ')}, packed) SELECT ${storedColumns.join(', ')}, ${packSql((f) => f)} FROM (${eventsSql(start, count)})`;

/** One partial summary per (flow, node), as the correlator writes one per (flow, agent batch); a/b = client endpoint first, as that node saw the tuple. */
const insertPartsSql = (start: number, count: number) => `INSERT INTO flow_parts
  (event_date, flow_id, part_key, proto, a_addr, a_port, b_addr, b_port, first_ts_ns, last_ts_ns, events, packets, bytes, drops, resets, retrans, nodes)
SELECT min(event_date), any(flow_id), concat(any(agent), ':', toString(any(boot)), ':', toString(min(seq))), any(proto),
  argMin(if(fwd, saddr, daddr), wall_ts_ns), argMin(if(fwd, sport, dport), wall_ts_ns),
  argMin(if(fwd, daddr, saddr), wall_ts_ns), argMin(if(fwd, dport, sport), wall_ts_ns),
  min(wall_ts_ns), max(wall_ts_ns), count(), countIf(kind = 1), sumIf(payload_len, kind = 1),
  toUInt64(0), toUInt64(0), toUInt64(0), [any(node)]
FROM (${eventsSql(start, count)})
GROUP BY f, node_i`;

async function scalar(ch: ClickHouseClient, query: string): Promise<number> {
  const rs = await ch.query({ query, format: 'TabSeparated' });
  return Number((await rs.text()).trim());
}

async function stored(ch: ClickHouseClient): Promise<{ events: number; parts: number }> {
  try {
    return { events: await scalar(ch, 'SELECT count() FROM hop_events'), parts: await scalar(ch, 'SELECT count() FROM flow_parts') };
  } catch {
    return { events: 0, parts: 0 };
  }
}

/** A client for statements that answer only when done (a chunk's INSERT ... SELECT, OPTIMIZE): far beyond createClickHouse's 60 s timeout. */
const slowClient = (cfg: Config) => createClickHouse(cfg, DB, 3_600_000);

async function fill(cfg: Config): Promise<void> {
  const ch = createClickHouse(cfg);
  const have = await stored(ch);
  await ch.close();
  if (!REFILL && have.events >= EVENTS && have.parts >= FLOWS * 3) {
    console.error(`fill: ${DB} already holds ${have.events.toLocaleString('en-US')} events, ${have.parts.toLocaleString('en-US')} flow_parts rows: skipped (--refill forces)`);
    // A database filled before hop_events was packed: migration 5 copies it, and keeps the old table (hop_events_v1) the bench compares with.
    const t0 = performance.now();
    await migrate(cfg, DB, 7_200_000);
    console.error(`migrate: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    return;
  }
  const root = createClickHouse(cfg, 'default');
  await root.command({ query: `DROP DATABASE IF EXISTS ${ident(DB)}` });
  await root.close();
  await migrate(cfg, DB);
  const slow = slowClient(cfg);
  const t0 = performance.now();
  try {
    for (let start = 0; start < FLOWS * PER_FLOW; start += CHUNK) {
      const count = Math.min(CHUNK, FLOWS * PER_FLOW - start);
      const t1 = performance.now();
      await slow.command({ query: insertEventsSql(start, count) });
      const t2 = performance.now();
      await slow.command({ query: insertPartsSql(start, count) });
      const t3 = performance.now();
      const done = start + count;
      const s = (performance.now() - t0) / 1000;
      console.error(`fill: ${done.toLocaleString('en-US')}/${(FLOWS * PER_FLOW).toLocaleString('en-US')} events (${((100 * done) / (FLOWS * PER_FLOW)).toFixed(0)}%), ${s.toFixed(0)} s, ${Math.round(done / s).toLocaleString('en-US')} events/s (this chunk: hop_events ${((t2 - t1) / 1000).toFixed(1)} s, flow_parts ${((t3 - t2) / 1000).toFixed(1)} s)`);
    }
  } finally {
    await slow.close();
  }
}

async function compact(cfg: Config): Promise<void> {
  const slow = slowClient(cfg);
  try {
    const t0 = performance.now();
    const r = await compactClosed(slow, { quietMs: 0 });
    if (r.failed.length) throw new Error(`compact: ${r.failed.map((f) => `${f.partition.table} ${f.partition.partitionId}: ${f.error}`).join('; ')}`);
    console.error(`compact: ${r.compacted.map((p) => `${p.table} ${p.partitionId} (${p.parts} parts)`).join(', ') || 'nothing due'} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  } finally {
    await slow.close();
  }
}

interface TableState {
  table: string;
  rows: number;
  partitions: number;
  parts: number;
  maxPartsPerPartition: number;
  bytesOnDisk: number;
  marks: number;
}

async function tableStates(ch: ClickHouseClient): Promise<TableState[]> {
  const rs = await ch.query({
    query: `SELECT table, sum(rows) AS r, uniqExact(partition) AS np, count() AS parts, sum(bytes_on_disk) AS b, sum(marks) AS m
FROM system.parts WHERE database = ${str(DB)} AND active AND table IN ('hop_events', 'hop_events_v1', 'flow_parts', 'flow_parts_v1') GROUP BY table ORDER BY table DESC`,
    format: 'JSONEachRow',
  });
  const per = await ch.query({
    query: `SELECT table, max(c) AS mx FROM (SELECT table, partition, count() AS c FROM system.parts WHERE database = ${str(DB)} AND active GROUP BY table, partition) GROUP BY table`,
    format: 'JSONEachRow',
  });
  const mx = new Map((await per.json<{ table: string; mx: string }>()).map((r) => [r.table, Number(r.mx)]));
  return (await rs.json<{ table: string; r: string; np: string; parts: string; b: string; m: string }>()).map((r) => ({
    table: r.table,
    rows: Number(r.r),
    partitions: Number(r.np),
    parts: Number(r.parts),
    maxPartsPerPartition: mx.get(r.table) ?? 0,
    bytesOnDisk: Number(r.b),
    marks: Number(r.m),
  }));
}

// ---------------------------------------------------------------- measure

type Stats = { p50: number; p90: number; p99: number; max: number };

function stats(ms: number[]): Stats {
  const s = [...ms].sort((a, b) => a - b);
  return { p50: percentile(s, 0.5), p90: percentile(s, 0.9), p99: percentile(s, 0.99), max: s[s.length - 1]! };
}

async function time(ids: string[], one: (id: string) => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (const id of ids) {
    const t = performance.now();
    await one(id);
    out.push(performance.now() - t);
  }
  return out;
}

async function randomFlows(ch: ClickHouseClient, n: number): Promise<string[]> {
  const rs = await ch.query({ query: `SELECT toString(flow_id) AS id FROM (SELECT DISTINCT flow_id FROM flow_parts) ORDER BY rand() LIMIT ${uint(n)}`, format: 'JSONEachRow' });
  return (await rs.json<{ id: string }>()).map((r) => r.id);
}

interface Variant {
  sql: (id: string) => string;
  /** events: RowBinary through the services' decoder; json: JSONEachRow parsed (the summary, the old layout). */
  read: 'events' | 'json';
}

/** The route's own SQL and variants of the events statement, to separate what costs what. */
function variants(oldLayout: boolean, dailyParts: boolean): Record<string, Variant> {
  const summarySpan = (id: string) => flowEventsSql(BigInt(id), 10_001, 'summary');
  const events = (sql: Variant['sql']): Variant => ({ sql, read: 'events' });
  const json = (sql: Variant['sql']): Variant => ({ sql, read: 'json' });
  // The events statement as it was before hop_events was packed: every field a column, JSON.
  const columns = (id: string, table: string) => summarySpan(id).replace(/^SELECT [^\n]*\nFROM hop_events/, `SELECT ${EVENT_COLUMNS.join(', ')}\nFROM ${table}`);
  return {
    'route: summary (flow_parts FINAL PREWHERE flow_id)': json((id) => flowSql(BigInt(id))),
    ...(dailyParts ? { 'before: summary from flow_parts by day (flow_parts_v1)': json((id) => flowSql(BigInt(id)).replace('FROM flow_parts', 'FROM flow_parts_v1')) } : {}),
    'route: events, the span its summary covers (subqueries), beside the summary': events(summarySpan),
    'events, all days (the route\'s SQL for a flow with no summary)': events((id) => flowEventsSql(BigInt(id), 10_001, 'all')),
    ...(oldLayout ? { 'before: events from the unpacked table (hop_events_v1: 42 columns, JSON)': json((id) => columns(id, 'hop_events_v1')) } : {}),
    'variant: events as 42 columns through the ALIAS columns (JSON)': json((id) => columns(id, 'hop_events')),
    'before: summary with WHERE flow_id': json((id) => flowSql(BigInt(id)).replace(/\bPREWHERE flow_id/, 'WHERE flow_id')),
    'before: events with WHERE flow_id': events((id) => flowEventsSql(BigInt(id), 10_001, 'all').replace(/\bPREWHERE flow_id/, 'WHERE flow_id')),
    'variant: events, route without FINAL (lower bound)': events((id) => summarySpan(id).replace('FROM hop_events FINAL', 'FROM hop_events')),
  };
}

const isHeavy = (variant: string) => /^before: .* WHERE flow_id/.test(variant);

/** Runs one statement through clickhouse-client and reads the server's "Read N rows, X MiB in T sec." log line. */
function serverSide(query: string): Promise<{ rows: number; mib: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const c = spawn('clickhouse-client', ['--host', '127.0.0.1', '--port', TCP_PORT, '-d', DB, '--send_logs_level=information', '-q', `${query} FORMAT Null`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', reject);
    c.on('close', (code) => {
      // Several lines when a subquery runs first (its own Read line): the last is the whole statement's.
      const all = [...err.matchAll(/executeQuery: Read (\d+) rows, ([\d.]+) (B|KiB|MiB|GiB) in ([\d.]+) sec/g)];
      const m = all[all.length - 1];
      if (code !== 0 || !m) return reject(new Error(`clickhouse-client exited ${code}: ${err.slice(0, 500)}`));
      const unit = { B: 1 / 1048576, KiB: 1 / 1024, MiB: 1, GiB: 1024 }[m[3] as 'B' | 'KiB' | 'MiB' | 'GiB'];
      resolve({ rows: Number(m[1]), mib: Number(m[2]) * unit, ms: Number(m[4]) * 1000 });
    });
  });
}

const f1 = (x: number) => (Number.isNaN(x) ? '-' : x < 10 ? x.toFixed(2) : x.toFixed(1));
const n0 = (x: number) => Math.round(x).toLocaleString('en-US');

async function main() {
  const cfg = loadConfig({ clickhouseDatabase: DB, apiHost: '127.0.0.1', apiPort: 0, logLevel: 'warn', metricsPort: 0 });
  await fill(cfg);
  if (COMPACT) await compact(cfg);
  const ch = createClickHouse(cfg);
  const store = createFlowStore(ch, cfg.clickhouseUrl);
  const api = await startApi(cfg, { handleSignals: false });
  const results: Record<string, Stats[]> = {};
  const add = (name: string, ms: number[]) => (results[name] ??= []).push(stats(ms));
  const states = await tableStates(ch);
  const oldLayout = states.some((t) => t.table === 'hop_events_v1');
  const dailyParts = states.some((t) => t.table === 'flow_parts_v1');
  const sql = variants(oldLayout, dailyParts);
  const rowsOf = async (v: Variant, id: string): Promise<unknown[]> => {
    if (v.read === 'events') return queryEventRows(ch, v.sql(id), false);
    const rs = await ch.query({ query: v.sql(id), format: 'JSONEachRow', clickhouse_settings: { output_format_json_quote_64bit_integers: 1 } });
    return rs.json();
  };
  const sqlLookup = (v: Variant) => async (id: string) => void (await rowsOf(v, id));
  const lookup = async (id: string) => {
    const res = await fetch(`${api.address}/api/v1/flows/${id}/timeline`);
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`flow ${id}: HTTP ${res.status}`);
  };
  try {
    const warm = await randomFlows(ch, WARMUP);
    for (const id of warm) {
      const res = await fetch(`${api.address}/api/v1/flows/${id}/timeline`);
      const body = (await res.json()) as { flow: { events: number } | null; timeline: { events: unknown[]; packets: unknown[] } | null };
      if (res.status !== 200 || body.timeline?.events.length !== PER_FLOW || body.flow?.events !== PER_FLOW) {
        throw new Error(`flow ${id}: status ${res.status}, ${body.timeline?.events.length} events (${body.flow?.events} in summary); expected ${PER_FLOW}`);
      }
    }
    // Every variant must return the flow: all its events (the summary: one row).
    for (const id of warm.slice(0, 5)) {
      for (const [name, v] of Object.entries(sql)) {
        const n = (await rowsOf(v, id)).length;
        if (n !== (/^[a-z]+: summary/.test(name) ? 1 : PER_FLOW)) throw new Error(`${name}: ${n} rows for flow ${id}`);
      }
    }
    for (let run = 0; run < RUNS; run++) {
      const ids = await randomFlows(ch, LOOKUPS);
      // First touch: what a user looking up a flow after an incident meets. Then the same flows again, their data cached; the rows below are warm too.
      add('API: GET /api/v1/flows/:id/timeline over HTTP, first lookup of each flow', await time(ids, lookup));
      add('API: the same flows again (their data in the page cache)', await time(ids, lookup));
      add('store: getFlow beside flowEvents over the span of its summary (what the route awaits)', await time(ids, async (id) => {
        await Promise.all([store.getFlow(BigInt(id)), store.flowEvents(BigInt(id), cfg.apiMaxRows + 1, 'summary')]);
      }));
      for (const [name, v] of Object.entries(sql)) if (!isHeavy(name)) add(`SQL ${name}`, await time(ids, sqlLookup(v)));
      console.error(`run ${run + 1}/${RUNS} done`);
    }
    // Cold-ish: the mark cache emptied, then the first lookups of flows not looked up yet.
    const coldIds = await randomFlows(ch, COLD);
    await ch.command({ query: 'SYSTEM DROP MARK CACHE' });
    const cold = await time(coldIds, lookup);
    // The API's lookups and, with the unpacked table beside it, the events statement on both layouts, interleaved, each on flows of its own.
    const passes: [string, (id: string) => Promise<void>][] = [[`API lookups`, lookup]];
    if (oldLayout) {
      passes.push(['events statement, packed (hop_events)', sqlLookup(sql['route: events, the span its summary covers (subqueries), beside the summary']!)]);
      passes.push(['events statement, unpacked (hop_events_v1)', sqlLookup(sql['before: events from the unpacked table (hop_events_v1: 42 columns, JSON)']!)]);
    }
    if (dailyParts) {
      passes.push(['summary statement, flow_parts by month', sqlLookup(sql['route: summary (flow_parts FINAL PREWHERE flow_id)']!)]);
      passes.push(['summary statement, flow_parts by day (flow_parts_v1)', sqlLookup(sql['before: summary from flow_parts by day (flow_parts_v1)']!)]);
    }
    const interleaved = async (label: string, before: () => Promise<void>, each: () => Promise<void>) => {
      // The flows picked first (picking reads flow_parts), then `before`, then their first lookups, `each` before every one.
      const ids = await randomFlows(ch, IDLE_LOOKUPS * passes.length);
      console.error(`${label}: ${IDLE_LOOKUPS} first lookups of each of: ${passes.map(([n]) => n).join('; ')}`);
      await before();
      const ms: number[][] = passes.map(() => []);
      for (let i = 0; i < IDLE_LOOKUPS; i++) {
        for (const [k, [, one]] of passes.entries()) {
          await each();
          ms[k]!.push(...(await time([ids[i * passes.length + k]!], one)));
        }
      }
      return Object.fromEntries(passes.map(([name], k) => [name, stats(ms[k]!)]));
    };
    const nothing = async () => undefined;
    const idle = IDLE_S > 0 ? await interleaved(`idle ${IDLE_S} s`, () => new Promise((r) => setTimeout(r, IDLE_S * 1000)), nothing) : {};
    const dropped = DROP_CACHES ? await interleaved('page cache dropped before each', nothing, () => dropCaches(ch)) : {};
    const heavyIds = await randomFlows(ch, HEAVY_LOOKUPS);
    for (const [name, v] of Object.entries(sql)) if (isHeavy(name)) add(`SQL ${name} (${HEAVY_LOOKUPS} flows, one pass, last)`, await time(heavyIds, sqlLookup(v)));
    // Where ClickHouse's time goes, per statement (server-side numbers).
    const sampleIds = await randomFlows(ch, SAMPLE);
    const after = new Map((await tableStates(ch)).map((t) => [t.table, t.parts]));
    const server: { name: string; rows: number; mib: number; ms: number; msP90: number }[] = [];
    for (const [name, v] of Object.entries(sql)) {
      const r = [];
      for (const id of sampleIds) r.push(await serverSide(v.sql(id)));
      const ms = r.map((x) => x.ms).sort((a, b) => a - b);
      server.push({ name, rows: median(r.map((x) => x.rows)), mib: median(r.map((x) => x.mib)), ms: percentile(ms, 0.5), msP90: percentile(ms, 0.9) });
    }

    console.log(`\n${DB}: one flow's timeline, ${PER_FLOW} events per flow, ${LOOKUPS} random flows per run, median of ${RUNS} runs, node ${process.version}, 2 shared cores\n`);
    console.log('| table | rows | partitions | active parts at start (max per partition) | active parts at end | marks | on disk |');
    console.log('|---|---:|---:|---:|---:|---:|---:|');
    for (const s of states) console.log(`| ${s.table} | ${n0(s.rows)} | ${s.partitions} | ${s.parts} (${s.maxPartsPerPartition}) | ${after.get(s.table) ?? '-'} | ${n0(s.marks)} | ${(s.bytesOnDisk / 2 ** 30).toFixed(2)} GiB |`);
    const compacted = states.filter((t) => t.table === 'hop_events' || t.table === 'flow_parts').every((t) => t.maxPartsPerPartition === 1);
    const state = COMPACT ? 'closed partitions compacted into one part each now (--compact, as the correlator does)' : compacted ? 'one part per partition (compacted by an earlier --compact, as the correlator does)' : 'as filled (background merges as far as they got; not compacted)';
    console.log(`\nState: ${state}.\n`);
    console.log('| lookup | p50 ms | p90 ms | p99 ms | max ms | p99 of each run |');
    console.log('|---|---:|---:|---:|---:|---:|');
    for (const [name, rs] of Object.entries(results)) {
      const m = (k: keyof Stats) => f1(median(rs.map((r) => r[k])));
      console.log(`| ${name} | ${m('p50')} | ${m('p90')} | ${m('p99')} | ${m('max')} | ${rs.map((r) => f1(r.p99)).join(', ')} |`);
    }
    const c = stats(cold);
    console.log(`| cold-ish: first ${COLD} API lookups after SYSTEM DROP MARK CACHE (one pass) | ${f1(c.p50)} | ${f1(c.p90)} | - | ${f1(c.max)} | |`);
    for (const [name, i] of Object.entries(idle)) console.log(`| idle: first ${IDLE_LOOKUPS} ${name} after ${IDLE_S} s with nothing read (one pass, interleaved) | ${f1(i.p50)} | ${f1(i.p90)} | ${f1(i.p99)} | ${f1(i.max)} | |`);
    for (const [name, i] of Object.entries(dropped)) console.log(`| cold: ${IDLE_LOOKUPS} ${name}, the OS page cache and ClickHouse's caches dropped before each (one pass, interleaved) | ${f1(i.p50)} | ${f1(i.p90)} | ${f1(i.p99)} | ${f1(i.max)} | |`);
    console.log(`\nServer side (clickhouse-client log line "Read N rows, X MiB in T sec", ${SAMPLE} other random flows, median):\n`);
    console.log('| statement | rows read | MiB read (uncompressed) | server ms p50 | server ms p90 |');
    console.log('|---|---:|---:|---:|---:|');
    for (const s of server) console.log(`| ${s.name} | ${n0(s.rows)} | ${f1(s.mib)} | ${f1(s.ms)} | ${f1(s.msP90)} |`);
  } finally {
    await api.close();
    await ch.close();
    if (!KEEP) {
      const root = createClickHouse(cfg, 'default');
      await root.command({ query: `DROP DATABASE IF EXISTS ${ident(DB)}` });
      await root.close();
      console.error(`dropped ${DB} (--keep keeps it and skips the next fill)`);
    }
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
