/** Shared helpers for integration tests against the real Kafka and ClickHouse started by the test command. */
import { pino } from 'pino';
import { startAgent } from '../../services/agent/main.js';
import { openRecording } from '../../services/agent/recording-source.js';
import { createClickHouse } from '../../services/shared/clickhouse.js';
import { scopedConfig, type loadConfig, type Config } from '../../services/shared/config.js';

export const quietLog = pino({ level: process.env.HOPTRACE_TEST_LOG ?? 'silent' });

/** A config with a topic, database and consumer group of its own. */
export const isolatedConfig = (overrides: Parameters<typeof loadConfig>[0] = {}): Config => scopedConfig('test', overrides);

export async function query<T>(cfg: Config, sql: string): Promise<T[]> {
  const ch = createClickHouse(cfg);
  try {
    const rs = await ch.query({ query: sql, format: 'JSONEachRow' });
    return await rs.json<T>();
  } finally {
    await ch.close();
  }
}

export async function dropDatabase(cfg: Config): Promise<void> {
  const ch = createClickHouse(cfg, 'default');
  try {
    await ch.command({ query: `DROP DATABASE IF EXISTS ${cfg.clickhouseDatabase}` });
  } finally {
    await ch.close();
  }
}

/** Polls until `check` returns a truthy value or the deadline passes; returns the last value. */
export async function waitFor<T>(check: () => Promise<T>, timeoutMs: number, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => undefined as T);
    if (v || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function countEvents(cfg: Config): Promise<{ rows: number; distinct: number }> {
  const [r] = await query<{ rows: string; distinct: string }>(cfg, 'SELECT count() AS rows, uniqExact(agent, boot, seq) AS distinct FROM hop_events FINAL');
  return { rows: Number(r?.rows ?? 0), distinct: Number(r?.distinct ?? 0) };
}

/** One agent per recording file (one per node), producing to the config's topic; `rate` paces each (events/s; 0 = as fast as it goes). */
export async function replayFiles(cfg: Config, files: readonly string[], log = quietLog, rate = 0) {
  const agents = [];
  for (const file of files) agents.push(await startAgent(cfg, await openRecording({ file, rate }), log, { metrics: false }));
  return agents;
}
