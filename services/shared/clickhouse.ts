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
 */
const FLOW_PARTS = `CREATE TABLE IF NOT EXISTS flow_parts (
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
PARTITION BY event_date
ORDER BY (flow_id, part_key)`;

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
 * judged_at_ms, which replaces the row.
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

const MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version UInt32,
  applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version`;

/**
 * Migration 5: hop_events in the packed layout (stored-events.ts), for a database created
 * before it (a new one has it from the start). The old table's rows are copied (a copy
 * made twice collapses: same sorting key) and it is kept as hop_events_v1 for the
 * operator to drop once satisfied. Two processes migrating one old database at once: the
 * second's RENAME fails, and its restart finds the work done.
 */
async function packHopEvents(ch: ClickHouseClient, database: string): Promise<void> {
  const cols = await ch.query({ query: `SELECT name FROM system.columns WHERE database = ${str(database)} AND table = 'hop_events'`, format: 'JSONEachRow' });
  if ((await cols.json<{ name: string }>()).some((c) => c.name === 'packed')) return;
  await ch.command({ query: storedEventsTableSql('hop_events_packed') });
  const columns = STORED_COLUMNS.filter((c) => c !== 'packed');
  await ch.command({ query: `INSERT INTO hop_events_packed (${columns.join(', ')}, packed) SELECT ${columns.join(', ')}, ${packSql((f) => f)} FROM hop_events` });
  await ch.command({ query: 'RENAME TABLE hop_events TO hop_events_v1, hop_events_packed TO hop_events' });
}

type Migration = string | ((ch: ClickHouseClient, database: string) => Promise<void>);

/** Ordered, append-only: never edit a migration that has shipped; add one. */
export const MIGRATIONS: readonly Migration[] = [HOP_EVENTS, FLOW_PARTS, REJECTED, INCIDENTS, packHopEvents];

/**
 * Creates the database and applies the migrations not yet recorded. Safe to run
 * from several correlators at once: every statement is idempotent (migration 5 says
 * where not). A statement gets `requestTimeoutMs`: copying a large old hop_events
 * (migration 5) takes minutes.
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
    // A new database gets hop_events packed at once (CREATE ... IF NOT EXISTS like the rest, so
    // correlators starting together agree); migration 5 then finds nothing to do.
    const fresh = done.size === 0;
    for (const [i, m] of MIGRATIONS.entries()) {
      if (done.has(i + 1)) continue;
      const q = fresh && i === 0 ? storedEventsTableSql('hop_events') : m;
      if (typeof q === 'string') await ch.command({ query: q });
      else await q(ch, database);
      await ch.insert({ table: 'schema_migrations', values: [{ version: i + 1, applied_at: Math.floor(Date.now() / 1000) }], format: 'JSONEachRow' });
    }
  } finally {
    await ch.close();
  }
}
