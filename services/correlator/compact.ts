/**
 * Compaction of closed partitions. ClickHouse 18.16 leaves a day of hop_events in
 * ~6-8 parts once its background merges settle, and one flow's timeline costs a read
 * per part (flow_id's granule and marks, then the selected columns where it matches).
 * With the page cache and ClickHouse's caches dropped before each, lookups of one day's
 * flows took p50 36 / p99 53 ms with the day as filled (8 parts) and 21 / 30 ms with it
 * merged into one (100M events over 4 days; `bash scripts/bench.sh timeline-compaction`).
 * A lookup after an incident is mostly of older data, the least likely to be cached.
 *
 * So once a partition is closed - all its data from before today (UTC), no insert
 * into it for `quietMs` - it is merged into one part with OPTIMIZE ... FINAL, which
 * also collapses the duplicate rows that ReplacingMergeTree readers otherwise pay
 * for at query time. Today's partition is left to the background merges: it is
 * still being written, and recently written data is usually in the page cache.
 *
 * Costs: the merge rewrites the partition once (~30 s for a day of 25M events here),
 * needs that much free disk for the time, and a late insert into a closed
 * partition makes it due again after `quietMs`. Several correlators may run this at
 * once: an OPTIMIZE of a partition already being merged does nothing.
 */
import type { ClickHouseClient } from '../shared/clickhouse.js';
import { describeError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { ident, str, uint } from '../shared/sql.js';
import { eventDate } from './rows.js';

/** The tables partitioned by event date (by day or by month). */
export const COMPACTED_TABLES = ['hop_events', 'flow_parts', 'incidents'] as const;

export interface ClosedPartition {
  table: string;
  partitionId: string;
  parts: number;
  rows: number;
}

export interface CompactStats {
  rounds: number;
  compacted: number;
  errors: number;
}

/**
 * A partition's last day: max_date where its key has a Date column (flow_parts: the month of
 * event_date; incidents: event_date), else the partition's value, a day (hop_events: the day of
 * wall_ts_ns, an expression whose parts have no min_date/max_date in system.parts).
 */
const LAST_DAY = `if(max(max_date) > toDate(0), max(max_date), toDateOrZero(any(partition)))`;

/**
 * The partitions of `tables` that hold more than one active part, only data from
 * before the UTC day of `nowMs`, and no part newer than `quietMs` (server clock).
 */
export async function closedPartitions(ch: ClickHouseClient, nowMs: number, quietMs: number, tables: readonly string[] = COMPACTED_TABLES): Promise<ClosedPartition[]> {
  const today = eventDate(BigInt(nowMs) * 1_000_000n);
  const rs = await ch.query({
    query: `SELECT table, partition_id, count() AS parts, sum(rows) AS rows
FROM system.parts
WHERE database = currentDatabase() AND active AND table IN (${tables.map(str).join(', ')})
GROUP BY table, partition_id
HAVING parts > 1 AND ${LAST_DAY} < toDate(${str(today)}) AND max(modification_time) <= now() - ${uint(Math.ceil(quietMs / 1000))}
ORDER BY table, partition_id`,
    format: 'JSONEachRow',
  });
  const rows = await rs.json<{ table: string; partition_id: string; parts: string | number; rows: string | number }>();
  return rows.map((r) => ({ table: r.table, partitionId: r.partition_id, parts: Number(r.parts), rows: Number(r.rows) }));
}

/** Merges one partition into a single part. Waits for the merge: give `ch` a timeout of minutes. */
export async function compactPartition(ch: ClickHouseClient, p: Pick<ClosedPartition, 'table' | 'partitionId'>): Promise<void> {
  await ch.command({ query: `OPTIMIZE TABLE ${ident(p.table)} PARTITION ID ${str(p.partitionId)} FINAL` });
}

export interface CompactResult {
  compacted: ClosedPartition[];
  /** Partitions whose OPTIMIZE failed (disk space, merges stopped, a timeout): left as they are, tried again next round. */
  failed: { partition: ClosedPartition; error: string }[];
}

/**
 * Compacts every closed partition, one at a time. One partition's failure does not stop the
 * others; only failing to list them throws.
 */
export async function compactClosed(ch: ClickHouseClient, o: { nowMs?: number; quietMs: number; log?: Logger; tables?: readonly string[] }): Promise<CompactResult> {
  const out: CompactResult = { compacted: [], failed: [] };
  for (const p of await closedPartitions(ch, o.nowMs ?? Date.now(), o.quietMs, o.tables)) {
    const t0 = Date.now();
    try {
      await compactPartition(ch, p);
    } catch (err) {
      out.failed.push({ partition: p, error: describeError(err) });
      o.log?.warn(`compacting ${p.table} partition ${p.partitionId} (${p.parts} parts) failed, will retry: ${describeError(err)}`);
      continue;
    }
    o.log?.info({ table: p.table, partition: p.partitionId, parts: p.parts, rows: p.rows, ms: Date.now() - t0 }, `compacted ${p.table} partition ${p.partitionId}: ${p.parts} parts into one`);
    out.compacted.push(p);
  }
  return out;
}

export interface Compactor {
  start(): void;
  /** No further rounds. A merge in progress is not waited for: the server finishes or abandons it, whole. */
  stop(): void;
  stats(): CompactStats;
}

/**
 * Runs compactClosed every `everyMs` (0: never). A failed round (ClickHouse away, a merge
 * refused) is logged and counted (a partition that failed counts once per round), and the
 * next round tries again: nothing is lost, the partitions only stay as they are.
 */
export function createCompactor(o: { ch: ClickHouseClient; log: Logger; everyMs: number; quietMs: number }): Compactor {
  const totals: CompactStats = { rounds: 0, compacted: 0, errors: 0 };
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const round = async () => {
    totals.rounds++;
    try {
      const r = await compactClosed(o.ch, { quietMs: o.quietMs, log: o.log });
      totals.compacted += r.compacted.length;
      totals.errors += r.failed.length;
    } catch (err) {
      if (stopped) return; // the client was closed under it
      totals.errors++;
      o.log.warn(`listing closed partitions to compact failed, will retry in ${o.everyMs} ms: ${describeError(err)}`);
    }
  };
  const arm = () => {
    if (stopped || o.everyMs <= 0) return;
    timer = setTimeout(() => void round().finally(arm), o.everyMs);
    timer.unref();
  };
  return {
    start: arm,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    stats: () => ({ ...totals }),
  };
}
