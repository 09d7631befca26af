/** Helpers shared by the benchmarks. */
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { decodeBatch } from '../services/shared/batch.js';
import type { ClickHouseClient } from '../services/shared/clickhouse.js';
import { scopedConfig, type loadConfig, type Config } from '../services/shared/config.js';
import { createKafka } from '../services/shared/kafka.js';

/** ClickHouse's mark and uncompressed caches and the OS page cache, dropped (root): the next read comes from disk. */
export async function dropCaches(ch: ClickHouseClient): Promise<void> {
  await ch.command({ query: 'SYSTEM DROP MARK CACHE' });
  await ch.command({ query: 'SYSTEM DROP UNCOMPRESSED CACHE' });
  await writeFile('/proc/sys/vm/drop_caches', '3');
}

/** Runs fn with kernel.bpf_stats_enabled on (programs' run counts and times; root), then restores it. */
export async function withBpfStats<T>(fn: () => Promise<T>): Promise<T> {
  const STATS = '/proc/sys/kernel/bpf_stats_enabled';
  const was = readFileSync(STATS, 'utf8').trim();
  writeFileSync(STATS, '1');
  try {
    return await fn();
  } finally {
    writeFileSync(STATS, was);
  }
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** n with `digits` decimals and thousands separators; '-' for NaN (a figure that could not be read). */
export const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '-');

export { percentile } from '../services/shared/stats.js';

export { sleep } from '../services/shared/retry.js';

/** CPU seconds (user + system) of a live process, from /proc/<pid>/stat (USER_HZ = 100); NaN once it is gone. */
export function procCpuS(pid: number | string): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

/** Resident memory of a live process in MiB: now (VmRSS) and peak (VmHWM), from /proc/<pid>/status; null once it is gone. */
export function procMemMiB(pid: number | string): { rss: number; hwm: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
    return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
  } catch {
    return null;
  }
}

const quiet = pino({ level: 'warn' });

/**
 * Records on cfg.hopsTopic, counted by reading every HopBatch on it back (what
 * Kafka actually holds, not what a producer claims). Uses a throw-away consumer group.
 */
export async function topicRecords(cfg: Config, timeoutMs = 60_000): Promise<{ records: number; messages: number }> {
  const kafka = createKafka(cfg, 'bench-count', quiet);
  const admin = kafka.admin();
  await admin.connect();
  const groupId = `${cfg.groupId}-count`;
  try {
    const total = (await admin.fetchTopicOffsets(cfg.hopsTopic)).reduce((s, p) => s + Number(p.high) - Number(p.low), 0);
    if (total === 0) return { records: 0, messages: 0 };
    const consumer = kafka.consumer({ groupId });
    let records = 0;
    let messages = 0;
    try {
      await consumer.connect();
      await consumer.subscribe({ topic: cfg.hopsTopic, fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`read ${messages}/${total} messages of ${cfg.hopsTopic} in ${timeoutMs} ms`)), timeoutMs);
        consumer
          .run({
            autoCommit: false,
            eachMessage: async ({ message }) => {
              records += message.value ? decodeBatch(message.value).count : 0;
              if (++messages >= total) {
                clearTimeout(timer);
                resolve();
              }
            },
          })
          .catch(reject);
      });
    } finally {
      await consumer.disconnect().catch(() => undefined);
    }
    await admin.deleteGroups([groupId]).catch(() => undefined);
    return { records, messages };
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** Deletes bench topics (best effort: a topic never created is not an error). */
export async function deleteTopics(cfg: Config, topics: string[]): Promise<void> {
  if (!topics.length) return;
  const admin = createKafka(cfg, 'bench-cleanup', quiet).admin();
  try {
    await admin.connect();
    const existing = new Set(await admin.listTopics());
    const gone = topics.filter((t) => existing.has(t));
    if (gone.length) await admin.deleteTopics({ topics: gone, timeout: 10_000 });
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** `--name TEXT` from the command line, or `def`. */
export function strArg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = process.argv[i + 1];
  if (v === undefined || v.startsWith('--')) throw new Error(`--${name} needs a value`);
  return v;
}

/** `--name N` from the command line, or `def`. */
export function numArg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const n = Number(process.argv[i + 1]);
  if (!Number.isFinite(n)) throw new Error(`--${name} needs a number, got ${JSON.stringify(process.argv[i + 1])}`);
  return n;
}

/** A config with a topic, database and consumer group of its own (random suffix) and no metrics port. */
export const isolatedConfig = (overrides: Parameters<typeof loadConfig>[0] = {}): Config => scopedConfig('bench', overrides);

/** Directories where the local infra may live: this checkout, or HOPTRACE_INFRA_DIR (the checkout that started it). */
const infraDirs = () => [process.cwd(), process.env.HOPTRACE_INFRA_DIR ?? ''].filter(Boolean);

/** CPU seconds of a local infra server (var/run/<name>.pid), NaN if not found. */
function infraCpuS(name: 'clickhouse' | 'kafka'): number {
  for (const dir of infraDirs()) {
    try {
      const cpu = procCpuS(readFileSync(join(dir, `var/run/${name}.pid`), 'utf8').trim());
      if (!Number.isNaN(cpu)) return cpu;
    } catch {
      /* next */
    }
  }
  return NaN;
}

/** ClickHouse server CPU seconds. */
export const clickhouseCpuS = () => infraCpuS('clickhouse');
/** Kafka broker CPU seconds. */
export const kafkaCpuS = () => infraCpuS('kafka');

/**
 * Bytes the local broker holds for a topic: the sizes of its partitions' segment files
 * (log.dirs of var/kafka/server.properties). The broker appends produced record batches
 * as they came (magic v2), so this is what producers put on the wire, framing and
 * compression included, minus the request headers.
 */
export function kafkaTopicBytes(topic: string): number {
  for (const dir of infraDirs()) {
    let logDirs: string[];
    try {
      const props = readFileSync(join(dir, 'var/kafka/server.properties'), 'utf8');
      logDirs = (/^log\.dirs=(.*)$/m.exec(props)?.[1] ?? '').split(',').filter(Boolean);
    } catch {
      continue;
    }
    let bytes = 0;
    for (const logDir of logDirs) {
      for (const part of readdirSync(logDir).filter((d) => d.startsWith(`${topic}-`) && /^\d+$/.test(d.slice(topic.length + 1)))) {
        for (const f of readdirSync(join(logDir, part))) if (f.endsWith('.log')) bytes += statSync(join(logDir, part, f)).size;
      }
    }
    return bytes;
  }
  return NaN;
}

/**
 * Microseconds since boot during which at least one runnable task waited for a CPU
 * (/proc/pressure/cpu, "some" total); NaN without PSI. Its growth over a run divided by
 * the run's length is how oversubscribed the machine was: the noise in wall-clock figures.
 */
export function cpuStallUs(): number {
  try {
    return Number(/^some .*total=(\d+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}
