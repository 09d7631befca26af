// Compaction of closed partitions against a real ClickHouse: a past day of hop_events and a
// past month of flow_parts, each written in several inserts, are merged into one part each,
// every row kept; today's partitions and recently written ones are left alone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closedPartitions, compactClosed, createCompactor } from '../../services/correlator/compact.js';
import { insertRows } from '../../services/correlator/correlator.js';
import { flowPartEncoder, hopEventEncoder } from '../../services/correlator/encode.js';
import { eventDate, type FlowPartRow, type HopEventRow } from '../../services/correlator/rows.js';
import { createClickHouse, migrate, type ClickHouseClient } from '../../services/shared/clickhouse.js';
import type { Config } from '../../services/shared/config.js';
import { flowRows } from '../unit/fixtures/flows.js';
import { dropDatabase, isolatedConfig, query, quietLog, waitFor } from './env.js';

const DAY_NS = 86_400_000_000_000n;
const NOW_NS = BigInt(Date.now()) * 1_000_000n;
const OLD_NS = NOW_NS - 40n * DAY_NS; // a past day of a past month

/** One flow's hop events at `startNs`, stored as flow `flowId`. */
function events(flowId: number, startNs: bigint): HopEventRow[] {
  const rows = flowRows();
  const base = BigInt(rows[0]!.wall_ts_ns);
  return rows.map((r) => {
    const ts = startNs + BigInt(r.wall_ts_ns) - base;
    return { reason_name: '', location: '', aux0: 0, aux1: 0, aux2: 0, isn_c: 0, isn_s: 0, ...r, seq: r.seq + flowId * 1000, event_date: eventDate(ts), flow_id: flowId, wall_ts_ns: ts.toString(), kernel_ts_ns: ts.toString(), skb_id: '0', mark: 0 } as HopEventRow;
  });
}

function part(flowId: number, atNs: bigint): FlowPartRow {
  return { event_date: eventDate(atNs), flow_id: flowId, part_key: 'node-a', proto: 6, a_addr: '10.0.0.1', a_port: 40000 + flowId, b_addr: '10.0.0.2', b_port: 80, first_ts_ns: atNs.toString(), last_ts_ns: atNs.toString(), events: 1, packets: 1, bytes: 60, drops: 0, resets: 0, retrans: 0, nodes: ['node-a'] };
}

describe('compaction of closed partitions on a real ClickHouse', () => {
  let cfg: Config;
  let ch: ClickHouseClient;
  const parts = async (table: string) =>
    (await query<{ partition_id: string; parts: string; rows: string }>(cfg, `SELECT partition_id, count() AS parts, sum(rows) AS rows FROM system.parts WHERE database = currentDatabase() AND active AND table = '${table}' GROUP BY partition_id ORDER BY partition_id`)).map((r) => ({ id: r.partition_id, parts: Number(r.parts), rows: Number(r.rows) }));

  beforeAll(async () => {
    cfg = isolatedConfig();
    await migrate(cfg);
    ch = createClickHouse(cfg);
    // Merges stopped while writing, so that each insert stays a part of its own until compacted.
    for (const t of ['hop_events', 'flow_parts']) await ch.command({ query: `SYSTEM STOP MERGES ${cfg.clickhouseDatabase}.${t}` });
    for (let f = 1; f <= 3; f++) {
      await insertRows(ch, 'hop_events', events(f, OLD_NS), hopEventEncoder);
      await insertRows(ch, 'hop_events', events(10 + f, NOW_NS), hopEventEncoder);
      await insertRows(ch, 'flow_parts', [part(f, OLD_NS)], flowPartEncoder);
    }
  });

  afterAll(async () => {
    await ch?.close();
    if (cfg) await dropDatabase(cfg);
  });

  it('finds the closed partitions in several parts, and only once nothing has been written to them for the quiet time', async () => {
    const oldDay = eventDate(OLD_NS).replaceAll('-', '');
    const oldMonth = oldDay.slice(0, 6);
    expect(await closedPartitions(ch, Date.now(), 3_600_000)).toEqual([]);
    const due = await closedPartitions(ch, Date.now(), 0);
    const perFlow = flowRows().length;
    expect(due).toEqual([
      { table: 'flow_parts', partitionId: oldMonth, parts: 3, rows: 3 },
      { table: 'hop_events', partitionId: oldDay, parts: 3, rows: 3 * perFlow },
    ]);
    // With merges stopped, OPTIMIZE is refused: each partition's failure is reported, the others still tried, nothing changes.
    const refused = await compactClosed(ch, { quietMs: 0 });
    expect(refused.compacted).toEqual([]);
    expect(refused.failed.map((f) => f.partition)).toEqual(due);
    for (const f of refused.failed) expect(f.error).toMatch(/Cancelled merging parts/);
    expect((await parts('hop_events')).find((p) => p.id === oldDay)?.parts).toBe(3);
  });

  it('merges each closed partition into one part, every row kept, and leaves today alone', async () => {
    for (const t of ['hop_events', 'flow_parts']) await ch.command({ query: `SYSTEM START MERGES ${cfg.clickhouseDatabase}.${t}` });
    const before = await query<{ n: string }>(cfg, 'SELECT count() AS n FROM hop_events FINAL');
    const oldDay = eventDate(OLD_NS).replaceAll('-', '');
    const today = eventDate(NOW_NS).replaceAll('-', '');
    // Background merges may take some of it first; what is due is compacted either way.
    expect((await compactClosed(ch, { quietMs: 0, log: quietLog })).failed).toEqual([]);
    const events = await parts('hop_events');
    expect(events.find((p) => p.id === oldDay)).toEqual({ id: oldDay, parts: 1, rows: 3 * flowRows().length });
    expect(events.find((p) => p.id === today)?.rows).toBe(3 * flowRows().length); // still written to: not compacted (its parts may merge by themselves)
    expect((await parts('flow_parts')).find((p) => p.id === oldDay.slice(0, 6))).toEqual({ id: oldDay.slice(0, 6), parts: 1, rows: 3 });
    expect(await query(cfg, 'SELECT count() AS n FROM hop_events FINAL')).toEqual(before);
    expect(await closedPartitions(ch, Date.now(), 0)).toEqual([]);
  });

  it('runs on a timer, and counts a round that fails (ClickHouse unreachable) without stopping', async () => {
    const dead = createClickHouse({ ...cfg, clickhouseUrl: 'http://127.0.0.1:1' }, undefined, 2_000);
    const failing = createCompactor({ ch: dead, log: quietLog, everyMs: 50, quietMs: 0 });
    failing.start();
    expect(await waitFor(async () => failing.stats().errors >= 2, 10_000)).toBe(true);
    failing.stop();
    await dead.close();
    expect(failing.stats()).toMatchObject({ compacted: 0 });

    // A late event for the closed day: its part is compacted into the day's on the next round
    // (merges held while it is written, so that the background does not merge it first).
    await ch.command({ query: `SYSTEM STOP MERGES ${cfg.clickhouseDatabase}.hop_events` });
    await insertRows(ch, 'hop_events', events(4, OLD_NS), hopEventEncoder);
    await ch.command({ query: `SYSTEM START MERGES ${cfg.clickhouseDatabase}.hop_events` });
    const live = createCompactor({ ch, log: quietLog, everyMs: 10, quietMs: 0 });
    live.start();
    expect(await waitFor(async () => live.stats().compacted >= 1, 10_000)).toBe(true);
    live.stop();
    expect(live.stats().errors).toBe(0);
    const oldDay = eventDate(OLD_NS).replaceAll('-', '');
    expect((await parts('hop_events')).find((p) => p.id === oldDay)).toEqual({ id: oldDay, parts: 1, rows: 4 * flowRows().length });
  });
});
