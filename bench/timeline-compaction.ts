/**
 * What compacting a closed day (correlator/compact.ts) does to a timeline lookup read from
 * disk. One day of the timeline bench's database (fill it with `npm run bench:timeline --
 * --keep`; compact it with `--compact`, as the correlator would) is copied, as filled, into a
 * database of its own: hop_events in --parts parts (8: what ClickHouse 18.16's background
 * merges leave of a day here), flow_parts in 3, background merges stopped on the copy.
 * `--split time` (the default) cuts the day into --parts stretches of time, as a day is
 * filled: inserts one after another, each merged with its neighbours. `--split flow` cuts it
 * by flow id instead, every part spanning the whole day: the worst case, as if every part
 * held late events from all of it. Then
 * the same lookups the API route awaits (getFlow beside flowEvents over the summary's span)
 * for flows of that day, alternately on the copy and on the compacted database, the OS page
 * cache and ClickHouse's caches dropped before each (root). Different flows on each side,
 * picked at random from the same day.
 *
 *   npm run build && node dist/bench/timeline-compaction.js [--lookups 40] [--runs 2] [--parts 8]
 *       [--split time|flow] [--day 2026-11-03] [--db hoptrace_bench_timeline] [--keep]
 *
 * The copy is dropped at the end unless --keep. Wait for the copy's writeback before timing:
 * dirty pages survive drop_caches, so the copy's first lookups after writing it would be
 * served from memory (the bench syncs first).
 */
import { execFileSync } from 'node:child_process';
import { createFlowStore } from '../services/api/queries.js';
import { createClickHouse, migrate, type ClickHouseClient } from '../services/shared/clickhouse.js';
import { loadConfig } from '../services/shared/config.js';
import { ident, str, uint } from '../services/shared/sql.js';
import { dropCaches, median, numArg, percentile, strArg } from './common.js';

const SRC = strArg('db', 'hoptrace_bench_timeline');
const DST = `${SRC}_asfilled`;
const DAY = strArg('day', '2026-11-03');
const LOOKUPS = numArg('lookups', 40);
const RUNS = numArg('runs', 2);
const PARTS = numArg('parts', 8);
const SPLIT = strArg('split', 'time');
if (SPLIT !== 'time' && SPLIT !== 'flow') throw new Error(`--split: time or flow, not ${SPLIT}`);
const KEEP = process.argv.includes('--keep');

async function partsOf(ch: ClickHouseClient, db: string, table: string): Promise<{ parts: number; rows: number }> {
  const rs = await ch.query({ query: `SELECT count() AS parts, sum(rows) AS rows FROM system.parts WHERE active AND database = ${str(db)} AND table = ${str(table)} AND partition_id IN (${str(DAY.replaceAll('-', ''))}, ${str(DAY.slice(0, 7).replace('-', ''))})`, format: 'JSONEachRow' });
  const [r] = await rs.json<{ parts: string; rows: string }>();
  return { parts: Number(r?.parts ?? 0), rows: Number(r?.rows ?? 0) };
}

async function copyAsFilled(slow: ClickHouseClient): Promise<void> {
  await slow.command({ query: `DROP DATABASE IF EXISTS ${ident(DST)}` });
  await migrate(loadConfig({ clickhouseDatabase: DST }));
  for (const t of ['hop_events', 'flow_parts']) await slow.command({ query: `SYSTEM STOP MERGES ${ident(DST)}.${t}` });
  // One part per INSERT: blocks as large as the whole chunk.
  const oneBlock = { max_insert_block_size: '1000000000', min_insert_block_size_rows: '1000000000', min_insert_block_size_bytes: '1000000000000' };
  const copy = async (table: string, n: number, part: (k: number) => string) => {
    for (let k = 0; k < n; k++) {
      await slow.command({ query: `INSERT INTO ${ident(DST)}.${table} SELECT * FROM ${ident(SRC)}.${table} WHERE event_date = ${str(DAY)} AND ${part(k)}`, clickhouse_settings: oneBlock });
    }
  };
  const byFlow = (n: number) => (k: number) => `cityHash64(flow_id) % ${uint(n)} = ${uint(k)}`;
  const dayStart = BigInt(Date.parse(`${DAY}T00:00:00Z`)) * 1_000_000n;
  const stretch = 86_400_000_000_000n / BigInt(PARTS) + 1n;
  const byTime = (k: number) => `wall_ts_ns >= ${uint(dayStart + BigInt(k) * stretch)} AND wall_ts_ns < ${uint(dayStart + BigInt(k + 1) * stretch)}`;
  await copy('hop_events', PARTS, SPLIT === 'time' ? byTime : byFlow(PARTS));
  await copy('flow_parts', 3, byFlow(3));
  execFileSync('sync');
}

async function main() {
  const base = loadConfig({ clickhouseDatabase: SRC, logLevel: 'warn' });
  // Waits for whole INSERT ... SELECTs: far beyond createClickHouse's 60 s default.
  const slow = createClickHouse(base, 'default', 3_600_000);
  const side = (db: string) => {
    const ch = createClickHouse(loadConfig({ clickhouseDatabase: db }));
    return { db, ch, store: createFlowStore(ch, base.clickhouseUrl) };
  };
  let sides: ReturnType<typeof side>[] = [];
  try {
    const t0 = performance.now();
    await copyAsFilled(slow);
    console.error(`copied ${DAY} of ${SRC} into ${DST} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    sides = [side(SRC), side(DST)];
    const layout = [];
    for (const s of sides) layout.push({ db: s.db, events: await partsOf(slow, s.db, 'hop_events'), summaries: await partsOf(slow, s.db, 'flow_parts') });
    const rs = await sides[1]!.ch.query({
      query: `SELECT toString(flow_id) AS id FROM flow_parts WHERE toDate(toDateTime(intDiv(first_ts_ns, 1000000000), 'UTC')) = ${str(DAY)} AND toDate(toDateTime(intDiv(last_ts_ns, 1000000000), 'UTC')) = ${str(DAY)} ORDER BY rand() LIMIT ${uint(2 * LOOKUPS * RUNS)}`,
      format: 'JSONEachRow',
    });
    const ids = (await rs.json<{ id: string }>()).map((r) => BigInt(r.id));
    if (ids.length < 2 * LOOKUPS * RUNS) throw new Error(`${DAY} has only ${ids.length} flows within the day`);
    const times = new Map<string, number[][]>(sides.map((s) => [s.db, []]));
    for (let run = 0; run < RUNS; run++) {
      for (const s of sides) times.get(s.db)!.push([]);
      for (let i = 0; i < LOOKUPS; i++) {
        for (const s of i % 2 ? sides : [...sides].reverse()) {
          const id = ids[(run * LOOKUPS + i) * 2 + (s.db === SRC ? 0 : 1)]!;
          await dropCaches(s.ch);
          const t = performance.now();
          const [flow, events] = await Promise.all([s.store.getFlow(id), s.store.flowEvents(id, 10_001, 'summary')]);
          times.get(s.db)![run]!.push(performance.now() - t);
          if (!flow || events.length === 0) throw new Error(`${s.db}: flow ${id} not found`);
        }
      }
    }
    console.log(`\nOne flow's timeline from disk (page cache and ClickHouse's caches dropped before each lookup): flows of ${DAY}, ${LOOKUPS} lookups on each side per run, alternating, median of ${RUNS} runs, 2 shared cores\n`);
    console.log('| database | hop_events parts of the day | flow_parts parts of its month | p50 ms | p90 ms | p99 ms | p99 of each run |');
    console.log('|---|---:|---:|---:|---:|---:|---:|');
    for (const l of layout) {
      const runs = times.get(l.db)!.map((v) => [...v].sort((a, b) => a - b));
      const m = (q: number) => median(runs.map((v) => percentile(v, q))).toFixed(1);
      const label = l.db === SRC ? `${l.db} (as it is: compacted if --compact ran)` : `${l.db} (copy, as filled: parts split by ${SPLIT === 'time' ? 'stretches of time' : 'flow, each spanning the day'})`;
      console.log(`| ${label} | ${l.events.parts} | ${l.summaries.parts} | ${m(0.5)} | ${m(0.9)} | ${m(0.99)} | ${runs.map((v) => percentile(v, 0.99).toFixed(1)).join(', ')} |`);
    }
  } finally {
    for (const s of sides) await s.ch.close();
    if (!KEEP) await slow.command({ query: `DROP DATABASE IF EXISTS ${ident(DST)}` });
    await slow.close();
  }
}

await main();
