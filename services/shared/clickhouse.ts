/**
 * ClickHouse: client, schema and migrations.
 *
 * SQL stays portable between the local ClickHouse 18.16 and current releases: no
 * DateTime64 (times are UInt64 ns), no query parameters (values go through sql.ts),
 * no window functions. Idempotent writes rely on ReplacingMergeTree: a row written
 * twice has the same sorting key and collapses; readers use FINAL.
 */
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import type { Config } from './config.js';
import { HopError } from './errors.js';
import { ident, str } from './sql.js';
import { packSql, STORED_COLUMNS, storedEventsTableSql } from './stored-events.js';

export type { ClickHouseClient };

export function createClickHouse(cfg: Config, database?: string, requestTimeoutMs = 60_000): ClickHouseClient {
  return createClient({
    url: cfg.clickhouseUrl,
    username: cfg.clickhouseUser,
    password: cfg.clickhousePassword,
    database: database ?? cfg.clickhouseDatabase,
    request_timeout: requestTimeoutMs,
    compression: { request: false, response: false },
    max_open_connections: 8,
  });
}

/**
 * hop_events as first shipped, a column per field; migration 5 replaces it with the
 * packed layout (stored-events.ts), and a new database starts with that one instead.
 * One hop event per row. The sorting key starts with flow_id (the lookup) and ends
 * with the event id, so a redelivered event collapses onto its first copy. flow_id
 * is the connection's (isn_c, isn_s) identity when the agent saw its handshake, so
 * the hops on both sides of NAT share it; otherwise the 5-tuple's.
 */
const HOP_EVENTS = `CREATE TABLE IF NOT EXISTS hop_events (
  event_date Date,
  flow_id UInt64,
  wall_ts_ns UInt64,
  kernel_ts_ns UInt64,
  agent String,
  boot UInt64,
  seq UInt64,
  node String,
  netns_ino UInt32,
  netns String,
  pod String,
  ifindex UInt32,
  ifname String,
  hook UInt8,
  kind UInt8,
  family UInt8,
  proto UInt8,
  dir UInt8,
  saddr String,
  daddr String,
  sport UInt16,
  dport UInt16,
  tcp_seq UInt32,
  tcp_ack UInt32,
  tcp_flags UInt8,
  tcp_window UInt16,
  payload_len UInt16,
  ip_id UInt16,
  flags UInt16,
  ct_id UInt32,
  ct_status UInt32,
  ct_info UInt8,
  reply_saddr String,
  reply_daddr String,
  reply_sport UInt16,
  reply_dport UInt16,
  reason UInt16,
  reason_name String,
  location String,
  sk_state UInt8,
  skb_id UInt64,
  mark UInt32,
  aux0 UInt32,
  aux1 UInt32,
  aux2 UInt32,
  isn_c UInt32,
  isn_s UInt32
) ENGINE = ReplacingMergeTree()
PARTITION BY event_date
ORDER BY (flow_id, wall_ts_ns, agent, boot, seq)`;

/**
 * Flow summaries as partial rows, one per (flow, agent batch). a_* is the client
 * endpoint as that batch's node saw it (the smaller endpoint when no handshake was seen). A batch always yields
 * the same partial rows, so redelivery collapses them; readers sum partials per flow.
 * This keeps the correlator stateless across restarts and rebalances.
 *
 * Partitioned by month since migration 6 (first shipped by day): a flow's summary is
 * looked up by flow_id alone, in every partition, so each partition's parts cost a read
 * per column; by day that was 3 parts a day, ~35 ms p50 from disk at 4 days, growing
 * with retention (bench/timeline-lookup.ts).
 */
const flowPartsSql = (table: string, partition: string) => `CREATE TABLE IF NOT EXISTS ${table} (
  event_date Date,
  flow_id UInt64,
  part_key String,
  proto UInt8,
  a_addr String,
  a_port UInt16,
  b_addr String,
  b_port UInt16,
  first_ts_ns UInt64,
  last_ts_ns UInt64,
  events UInt64,
  packets UInt64,
  bytes UInt64,
  drops UInt64,
  resets UInt64,
  retrans UInt64,
  nodes Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY ${partition}
ORDER BY (flow_id, part_key)`;

const FLOW_PARTS = flowPartsSql('flow_parts', 'event_date');
const FLOW_PARTS_MONTHLY = (table: string) => flowPartsSql(table, 'toYYYYMM(event_date)');

/**
 * What the correlator could not use: undecodable Kafka messages and corrupt records,
 * kept with their bytes (base64) so nothing is silently lost.
 */
const REJECTED = `CREATE TABLE IF NOT EXISTS rejected (
  received_date Date,
  origin String,
  reason String,
  payload String
) ENGINE = ReplacingMergeTree()
ORDER BY origin`;

/**
 * Verdicts (services/correlator/verdicts.ts) stored as incidents, one row per
 * (flow, incident key). Judging a flow again (late events) writes a newer
 * judged_at_ms, which replaces the row; a verdict the flow no longer gets is replaced
 * by a copy with `retracted` = 1 (since migration 8), which readers leave out after
 * FINAL. FINAL collapses a key's rows across partitions too, so a verdict whose time
 * moved to another day is still one incident.
 */
const INCIDENTS = `CREATE TABLE IF NOT EXISTS incidents (
  event_date Date,
  flow_id UInt64,
  incident_key String,
  kind String,
  ts_ns UInt64,
  node String,
  netns String,
  pod String,
  place String,
  sk_state String,
  reason UInt16,
  reason_name String,
  trigger String,
  title String,
  evidence String,
  fix String,
  judged_at_ms UInt64
) ENGINE = ReplacingMergeTree(judged_at_ms)
PARTITION BY event_date
ORDER BY (flow_id, incident_key)`;

/**
 * Migration 8: incidents get `retracted`. 18.16 has no ADD COLUMN IF NOT EXISTS: a
 * correlator that loses the race to another one finds the column there.
 */
async function addRetracted(ch: ClickHouseClient, database: string): Promise<void> {
  const has = () => exists(ch, `system.columns WHERE database = ${str(database)} AND table = 'incidents' AND name = 'retracted'`);
  if (await has()) return;
  try {
    await ch.command({ query: `ALTER TABLE incidents ADD COLUMN retracted UInt8 DEFAULT 0` });
  } catch (err) {
    if (!(await has())) throw err;
  }
}

const MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version UInt32,
  applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version`;

/**
 * Replaces `table` by a new layout: creates `<table>_next` with `create`, copies every row
 * into it (`columns`, all when '', from `select` over the old table; a copy made twice
 * collapses, same sorting key) and renames the old table `retired`, kept for the operator to
 * drop once satisfied. Every table replaced so far was partitioned by event_date: the copy
 * goes one of its days at a time, and skips a day whose rows are all in `<table>_next`
 * already, so that no statement copies more than a day and a copy cut short (a statement's
 * timeout, a restart: the correlator retries migrate) resumes where it stopped. `done` says
 * the replacement already happened (a crash before it was recorded). Two processes migrating
 * one old database at once: the second's RENAME fails, and its restart finds the work done.
 */
function replaceTable(table: string, create: (name: string) => string, columns: string, select: string, done: (ch: ClickHouseClient, database: string) => Promise<boolean>, retired = `${table}_v1`) {
  return async (ch: ClickHouseClient, database: string) => {
    if (await done(ch, database)) return;
    const next = `${table}_next`;
    await ch.command({ query: create(next) });
    const rs = await ch.query({ query: `SELECT DISTINCT partition FROM system.parts WHERE database = ${str(database)} AND table = ${str(table)} AND active ORDER BY partition`, format: 'JSONEachRow' });
    for (const { partition } of await rs.json<{ partition: string }>()) {
      const day = `event_date = ${str(partition)}`;
      if ((await count(ch, `${next} WHERE ${day}`)) >= (await count(ch, `${table} WHERE ${day}`))) continue;
      await ch.command({ query: `INSERT INTO ${next}${columns ? ` (${columns})` : ''} SELECT ${select} FROM ${table} WHERE ${day}` });
    }
    await ch.command({ query: `RENAME TABLE ${table} TO ${retired}, ${next} TO ${table}` });
  };
}

async function count(ch: ClickHouseClient, sql: string): Promise<number> {
  const rs = await ch.query({ query: `SELECT count() AS n FROM ${sql}`, format: 'JSONEachRow' });
  return Number((await rs.json<{ n: string }>())[0]?.n ?? 0);
}

const exists = async (ch: ClickHouseClient, sql: string): Promise<boolean> => (await count(ch, sql)) > 0;

const unpacked = STORED_COLUMNS.filter((c) => c !== 'packed').join(', ');

/** Migration 5: hop_events in the packed layout (stored-events.ts), and partitioned as migration 7 leaves it. */
const packHopEvents = replaceTable('hop_events', storedEventsTableSql, `${unpacked}, packed`, `${unpacked}, ${packSql((f) => f)}`, (ch, db) =>
  exists(ch, `system.columns WHERE database = ${str(db)} AND table = 'hop_events' AND name = 'packed'`),
);

/** Migration 6: flow_parts partitioned by month. */
const monthlyFlowParts = replaceTable('flow_parts', FLOW_PARTS_MONTHLY, '', '*', (ch, db) => exists(ch, `system.tables WHERE database = ${str(db)} AND name = 'flow_parts_v1'`));

/**
 * Migration 7: hop_events partitioned by the day of wall_ts_ns instead of by event_date (the
 * same day), so that each part carries its min and max wall_ts_ns (stored-events.ts
 * HOP_EVENTS_PARTITION). Migration 5's table is kept as hop_events_v2; a database that
 * reached migration 5 after this one existed has the new key already.
 */
const wallDayHopEvents = replaceTable('hop_events', storedEventsTableSql, '', '*', (ch, db) =>
  exists(ch, `system.tables WHERE database = ${str(db)} AND name = 'hop_events' AND partition_key LIKE '%wall_ts_ns%'`), 'hop_events_v2',
);

interface Migration {
  up: string | ((ch: ClickHouseClient, database: string) => Promise<void>);
  /**
   * What a new database runs instead: the table as a later migration leaves it, or ''
   * for a migration whose result it has from the start. Plain statements, IF NOT EXISTS,
   * so correlators creating one database together agree.
   */
  fresh?: string;
}

/** Ordered, append-only: never edit a migration that has shipped; add one. */
export const MIGRATIONS: readonly Migration[] = [
  { up: HOP_EVENTS, fresh: storedEventsTableSql('hop_events') },
  { up: FLOW_PARTS, fresh: FLOW_PARTS_MONTHLY('flow_parts') },
  { up: REJECTED },
  { up: INCIDENTS },
  { up: packHopEvents, fresh: '' },
  { up: monthlyFlowParts, fresh: '' },
  { up: wallDayHopEvents, fresh: '' },
  { up: addRetracted }, // a new database too: an ALTER of an empty table
];

/**
 * Creates the database and applies the migrations not yet recorded. Safe to run
 * from several correlators at once: every statement is idempotent (replaceTable says
 * where not). A statement gets `requestTimeoutMs`: copying a day of a large old hop_events
 * (migrations 5 and 7) takes minutes (100M events: ~2 min here).
 */
export async function migrate(cfg: Config, database = cfg.clickhouseDatabase, requestTimeoutMs = 600_000): Promise<void> {
  const root = createClickHouse(cfg, 'default');
  try {
    await root.command({ query: `CREATE DATABASE IF NOT EXISTS ${ident(database)}` });
  } catch (err) {
    throw new HopError('HOP_CLICKHOUSE_UNREACHABLE', `ClickHouse at ${cfg.clickhouseUrl}: cannot create database ${database}`, true, { cause: err });
  } finally {
    await root.close();
  }
  const ch = createClickHouse(cfg, database, requestTimeoutMs);
  try {
    await ch.command({ query: MIGRATIONS_TABLE });
    const rs = await ch.query({ query: 'SELECT version FROM schema_migrations FINAL', format: 'JSONEachRow' });
    const done = new Set((await rs.json<{ version: number }>()).map((r) => Number(r.version)));
    // A new database gets each table in its latest layout at once (Migration.fresh).
    const fresh = done.size === 0;
    for (const [i, m] of MIGRATIONS.entries()) {
      if (done.has(i + 1)) continue;
      const q = fresh && m.fresh !== undefined ? m.fresh : m.up;
      if (typeof q === 'function') await q(ch, database);
      else if (q) await ch.command({ query: q });
      await ch.insert({ table: 'schema_migrations', values: [{ version: i + 1, applied_at: Math.floor(Date.now() / 1000) }], format: 'JSONEachRow' });
    }
  } finally {
    await ch.close();
  }
}
