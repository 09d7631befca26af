// The insert formats store the same values: rows with awkward strings (tab, newline,
// backslash, quote, non-ASCII) and 64-bit extremes go in as TabSeparated and RowBinary
// and come back identical. hop_events' packed column reads the same through its ALIAS
// columns (SQL) as through the services' RowBinary decoder.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { clickhouseWriter, insertRows } from '../../services/correlator/correlator.js';
import { flowPartEncoder, hopEventEncoder, INSERT_FORMATS } from '../../services/correlator/encode.js';
import { EVENT_COLUMNS } from '../../services/correlator/timeline.js';
import { decodeBatch, encodeBatch, type DecodedBatch } from '../../services/shared/batch.js';
import { batchToRows, eventDate, type FlowPartRow } from '../../services/correlator/rows.js';
import { createClickHouse, migrate, MIGRATIONS, type ClickHouseClient } from '../../services/shared/clickhouse.js';
import type { Config } from '../../services/shared/config.js';
import { Kind } from '../../services/shared/record.js';
import { EVENT_READ_COLUMNS, HOP_EVENTS_PARTITION, PACKED_FIELDS, queryEventRows, STORED_COLUMNS, storedEventsTableSql } from '../../services/shared/stored-events.js';
import { pack, pkt } from '../unit/helpers.js';
import { dropDatabase, isolatedConfig, query } from './env.js';

const AWKWARD = ['a\tb', 'line\nbreak', 'back\\slash', "quo'te", 'cr\rx', 'nul\0x', 'ünï€ode', '', 'x'.repeat(300)];

/** One batch per awkward string, in every name a batch carries (agent, node, netns, drop reason, drop location). */
function batches(): DecodedBatch[] {
  return AWKWARD.map((s, i) => {
    const recs = [
      pkt('10.0.0.9', 40000, '10.0.0.2', 80, { tsNs: 100n, payloadLen: 10, tcpFlags: 0x02, seq: 0xffff_ffff, ifname: 'eth\\0', netnsIno: 7 }),
      pkt('fd00::1', 65535, 'fd00:0:0:1::2', 443, { tsNs: 0xffff_ffff_ffff_fff0n, skbId: 0xffff_ffff_ffff_ffffn, kind: Kind.DROP, reason: 65535, aux: [0xffff_ffff, 0, 7], netnsIno: 7 }),
      pkt('10.0.0.9', 40000, '10.96.0.1', 80, { tsNs: 200n, kind: Kind.CT, ctId: 0xffff_ffff, ctStatus: 0x1234_5678, ctInfo: 3, reply: { saddr: '10.244.1.7', daddr: '10.0.0.9', sport: 8080, dport: 40000 }, netnsIno: 7 }),
      pkt('::ffff:a01:203', 1, '2001:db8::a:0:0:1', 2, { tsNs: 300n, tcpFlags: 0x14, seq: 1, ack: 2, window: 65535, mark: 0xdead_beef, ifname: 'veth\t1', netnsIno: 7 }),
    ];
    const meta = { agent: s || 'agent', node: s, boot: 2 ** 53 - 1, clockOffsetNs: 5n, netnsNames: new Map([[7, s]]), dropReasonNames: new Map([[65535, s]]), symbols: new Map([[0xffff_ffffn, s]]) };
    return decodeBatch(encodeBatch(meta, pack(recs), recs.map((_, k) => 4 * i + k), recs.length));
  });
}

describe('insert formats', () => {
  const cfgs: Record<string, Config> = {};
  beforeAll(async () => {
    for (const f of INSERT_FORMATS) {
      cfgs[f] = isolatedConfig();
      await migrate(cfgs[f]!);
    }
  });
  afterAll(async () => {
    for (const c of Object.values(cfgs)) await dropDatabase(c);
  });

  // Every stored column, packed as hex, and every packed field through its ALIAS column.
  const everything = `SELECT ${STORED_COLUMNS.filter((c) => c !== 'packed').join(', ')}, hex(packed) AS packed, ${PACKED_FIELDS.map(([n]) => n).join(', ')} FROM hop_events ORDER BY seq`;

  it('TabSeparated and RowBinary store identical rows', async () => {
    const stored: Record<string, unknown> = {};
    for (const f of INSERT_FORMATS) {
      const cfg = cfgs[f]!;
      const ch = createClickHouse(cfg);
      try {
        await clickhouseWriter(cfg, ch, f).write(batches(), [{ received_date: '2025-11-24', origin: 'o\t1', reason: 'r\n', payload: 'AAEC' }]);
      } finally {
        await ch.close();
      }
      stored[f] = {
        events: await query(cfg, everything),
        parts: await query(cfg, 'SELECT * FROM flow_parts ORDER BY part_key'),
        rejected: await query(cfg, 'SELECT * FROM rejected'),
      };
    }
    const bin = stored.RowBinary as { events: { agent: string; node: string; netns: string; reason_name: string; location: string; kind: number; ifname: string; reply_saddr: string }[] };
    expect(bin.events.map((e) => e.node)).toEqual(AWKWARD.flatMap((s) => [s, s, s, s]));
    expect(bin.events.map((e) => e.netns)).toEqual(AWKWARD.flatMap((s) => [s, s, s, s]));
    expect(bin.events.map((e) => [e.reason_name, e.location])).toEqual(AWKWARD.flatMap((s) => [['', ''], [s, s], ['', ''], ['', '']]));
    expect(bin.events.slice(0, 4).map((e) => [e.ifname, e.reply_saddr])).toEqual([['eth\\0', ''], ['', ''], ['', '10.244.1.7'], ['veth\t1', '']]);
    expect(stored.TabSeparated).toEqual(stored.RowBinary);
  });

  it('the ALIAS columns and the RowBinary decoder read packed alike', async () => {
    const cfg = cfgs.RowBinary!;
    const fields = EVENT_COLUMNS;
    const viaSql = await query<Record<string, unknown>>(cfg, `SELECT ${fields.join(', ')} FROM hop_events ORDER BY seq`);
    const ch = createClickHouse(cfg);
    try {
      const viaJs = await queryEventRows(ch, `SELECT ${EVENT_READ_COLUMNS} FROM hop_events ORDER BY seq`, false);
      expect(viaJs.length).toBe(AWKWARD.length * 4);
      // JSON gives UInt64 as strings (what the decoder gives), the rest as numbers; IPv4-mapped IPv6 is the one text the two print differently.
      const norm = (r: Record<string, unknown>) => Object.fromEntries(fields.map((f) => [f, f === 'saddr' && r[f] === '::ffff:10.1.2.3' ? '::ffff:a01:203' : r[f]]));
      expect(viaJs.map((r) => norm(r as unknown as Record<string, unknown>))).toEqual(viaSql.map(norm));
    } finally {
      await ch.close();
    }
  });
});

const PART: FlowPartRow = { event_date: '2026-11-30', flow_id: 7, part_key: 'a', proto: 6, a_addr: '10.0.0.1', a_port: 1, b_addr: '10.0.0.2', b_port: 2, first_ts_ns: '1', last_ts_ns: '2', events: 1, packets: 1, bytes: 0, drops: 0, resets: 0, retrans: 0, nodes: ['n'] };

describe('migrations 5-8 (packed hop_events, flow_parts by month, hop_events by the day of wall_ts_ns, retracted incidents)', () => {
  let cfg: Config;
  // Each test that sets cfg has a database of its own.
  afterEach(async () => {
    if (cfg) await dropDatabase(cfg);
  });

  it('a new database has both tables in their latest layout from the start, and no old tables', async () => {
    const fresh = isolatedConfig();
    try {
      await Promise.all([migrate(fresh), migrate(fresh)]); // two correlators starting together
      const tables = await query<{ name: string }>(fresh, `SELECT name FROM system.tables WHERE database = '${fresh.clickhouseDatabase}' AND (name LIKE 'hop_events%' OR name LIKE 'flow_parts%') ORDER BY name`);
      expect(tables.map((t) => t.name)).toEqual(['flow_parts', 'hop_events']);
      const ch = createClickHouse(fresh);
      await insertRows(ch, 'flow_parts', [PART], flowPartEncoder).finally(() => ch.close());
      expect(await query(fresh, 'SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = \'flow_parts\' AND active')).toEqual([{ partition: '202611' }]);
      const [v] = await query<{ n: string }>(fresh, 'SELECT count() AS n FROM system.columns WHERE database = currentDatabase() AND table = \'hop_events\' AND name = \'packed\'');
      expect(v!.n).toBe('1');
      expect(await query(fresh, 'SELECT partition_key FROM system.tables WHERE database = currentDatabase() AND name = \'hop_events\'')).toEqual([{ partition_key: HOP_EVENTS_PARTITION }]);
      expect(await query(fresh, 'SELECT type, default_expression AS d FROM system.columns WHERE database = currentDatabase() AND table = \'incidents\' AND name = \'retracted\'')).toEqual([{ type: 'UInt8', d: '0' }]);
    } finally {
      await dropDatabase(fresh);
    }
  });

  /**
   * A database of its own (cfg) as migrations 1 to `n` left it: `sql` gives the statement that
   * stood for each ('' for none), and each is recorded as applied.
   */
  async function databaseAt(n: number, sql: (m: (typeof MIGRATIONS)[number], i: number) => string): Promise<ClickHouseClient> {
    cfg = isolatedConfig();
    const root = createClickHouse(cfg, 'default');
    await root.command({ query: `CREATE DATABASE ${cfg.clickhouseDatabase}` });
    await root.close();
    const ch = createClickHouse(cfg);
    await ch.command({ query: 'CREATE TABLE schema_migrations (version UInt32, applied_at DateTime) ENGINE = ReplacingMergeTree() ORDER BY version' });
    for (const [i, m] of MIGRATIONS.slice(0, n).entries()) {
      const q = sql(m, i);
      if (q) await ch.command({ query: q });
      await ch.insert({ table: 'schema_migrations', values: [{ version: i + 1, applied_at: 0 }], format: 'JSONEachRow' });
    }
    return ch;
  }

  it('copies the old tables\' rows into the new layouts and keeps the old tables', async () => {
    // A database as migrations 1-4 left it, with rows in the old layout.
    const ch = await databaseAt(4, (m) => m.up as string);
    try {
      const rows = batches().flatMap((b) => batchToRows(b).events);
      await ch.insert({ table: 'hop_events', values: rows, format: 'JSONEachRow' });
      await ch.insert({ table: 'flow_parts', values: [PART, { ...PART, part_key: 'b', event_date: '2026-12-01' }], format: 'JSONEachRow' });

      await migrate(cfg);
      await migrate(cfg); // again: nothing left to do

      const old = await query<Record<string, unknown>>(cfg, `SELECT ${EVENT_COLUMNS.join(', ')} FROM hop_events_v1 ORDER BY seq`);
      const now = await queryEventRows(ch, `SELECT ${EVENT_READ_COLUMNS} FROM hop_events ORDER BY seq`, false);
      expect(old.length).toBe(rows.length);
      const norm = (r: Record<string, unknown>) => Object.fromEntries(EVENT_COLUMNS.map((f) => [f, r[f]]));
      expect(now.map((r) => norm(r as unknown as Record<string, unknown>))).toEqual(old.map(norm));
      const parts = (t: string) => query(cfg, `SELECT * FROM ${t} ORDER BY part_key`);
      expect(await parts('flow_parts')).toEqual(await parts('flow_parts_v1'));
      expect((await parts('flow_parts')).length).toBe(2);
      expect(await query(cfg, 'SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = \'flow_parts\' AND active ORDER BY partition')).toEqual([{ partition: '202611' }, { partition: '202612' }]);
      // Migration 5 built the latest partitioning at once: migration 7 had nothing to copy.
      expect(await query(cfg, 'SELECT name, partition_key FROM system.tables WHERE database = currentDatabase() AND name LIKE \'hop_events%\' ORDER BY name')).toEqual([
        { name: 'hop_events', partition_key: HOP_EVENTS_PARTITION },
        { name: 'hop_events_v1', partition_key: 'event_date' },
      ]);
    } finally {
      await ch.close();
    }
  });

  it('repartitions hop_events by the day of wall_ts_ns, a day at a time, resuming a copy cut short: every row kept, each day in its partition, the old table kept', async () => {
    // A database as migrations 1-6 left it: hop_events packed, partitioned by event_date.
    const ch = await databaseAt(6, (m, i) => (i === 0 ? storedEventsTableSql('hop_events', 'event_date') : m.fresh !== undefined ? m.fresh : (m.up as string)));
    try {
      const rows = batches().flatMap((b) => batchToRows(b).events);
      const nowNs = BigInt(Date.now()) * 1_000_000n;
      rows.push({ ...rows[0]!, seq: 1_000_000, wall_ts_ns: nowNs.toString(), event_date: eventDate(nowNs) });
      await insertRows(ch, 'hop_events', rows, hopEventEncoder);
      const read = (table: string) => queryEventRows(ch, `SELECT ${EVENT_READ_COLUMNS} FROM ${table} ORDER BY wall_ts_ns, seq`, false);
      const before = await read('hop_events');
      expect(before.length).toBe(rows.length);
      // An earlier attempt cut short: today's day copied whole, the day with the most rows in part.
      const perDay = await query<{ d: string; n: string }>(cfg, 'SELECT toString(event_date) AS d, count() AS n FROM hop_events GROUP BY d ORDER BY count() DESC');
      const [big, today] = [perDay[0]!, perDay.find((p) => p.d === eventDate(nowNs))!];
      expect(Number(big.n)).toBeGreaterThan(1);
      await ch.command({ query: storedEventsTableSql('hop_events_next') });
      await ch.command({ query: `INSERT INTO hop_events_next SELECT * FROM hop_events WHERE event_date = '${today.d}'` });
      await ch.command({ query: `INSERT INTO hop_events_next SELECT * FROM hop_events WHERE event_date = '${big.d}' LIMIT 1` });

      await migrate(cfg);
      await migrate(cfg); // again: nothing left to do

      // The whole day was not copied again; the partial one was, and its repeated row collapses (FINAL).
      expect(await query(cfg, `SELECT count() AS n FROM hop_events WHERE event_date = '${today.d}'`)).toEqual([{ n: today.n }]);
      expect(await queryEventRows(ch, `SELECT ${EVENT_READ_COLUMNS} FROM hop_events FINAL ORDER BY wall_ts_ns, seq`, false)).toEqual(before);
      expect(await read('hop_events_v2')).toEqual(before);
      expect(await query(cfg, 'SELECT partition_key FROM system.tables WHERE database = currentDatabase() AND name = \'hop_events\'')).toEqual([{ partition_key: HOP_EVENTS_PARTITION }]);
      // Each row in the partition of the day event_date holds (for wall clocks within DateTime's range: beyond 2106 both wrap, differently).
      const [d] = await query<{ n: string; same: string }>(cfg, `SELECT count() AS n, countIf(event_date = ${HOP_EVENTS_PARTITION}) AS same FROM hop_events WHERE wall_ts_ns < 4294967295000000000`);
      expect(Number(d!.n)).toBeGreaterThan(1);
      expect(d!.same).toBe(d!.n);
    } finally {
      await ch.close();
    }
  });

  it('migration 8 gives incidents a retracted column, 0 for the verdicts stored before it', async () => {
    const ch = await databaseAt(7, (m) => (m.fresh !== undefined ? m.fresh : (m.up as string)));
    try {
      await ch.command({ query: "INSERT INTO incidents (event_date, flow_id, incident_key, kind, judged_at_ms) VALUES ('2026-12-06', 9, 'drop:a/1/1', 'drop', 5)" });
      await Promise.all([migrate(cfg), migrate(cfg)]); // two correlators starting together
      expect(await query(cfg, 'SELECT toString(flow_id) AS f, incident_key AS k, retracted FROM incidents FINAL')).toEqual([{ f: '9', k: 'drop:a/1/1', retracted: 0 }]);
    } finally {
      await ch.close();
    }
  });
});
