/**
 * All of hoptrace's options, declared once: name, environment variable, default,
 * parser and documentation. The Config type is derived from these declarations, the
 * README's option tables come from `hoptrace options`, and nothing outside this module
 * reads process.env. Config is validated once at start-up and frozen.
 */
import { randomBytes } from 'node:crypto';
import { HopError } from './errors.js';

interface Option<T> {
  env: string;
  default: T;
  doc: string;
  parse(raw: string, name: string): T;
}

function fail(name: string, env: string, why: string): never {
  throw new HopError('HOP_CONFIG_INVALID', `option ${name} (${env}): ${why}`);
}

function str(env: string, def: string, doc: string, re?: RegExp): Option<string> {
  return {
    env,
    default: def,
    doc,
    parse(raw, name) {
      if (re && !re.test(raw)) fail(name, env, `${JSON.stringify(raw)} does not match ${re}`);
      return raw;
    },
  };
}

function int(env: string, def: number, doc: string, min: number, max: number): Option<number> {
  return {
    env,
    default: def,
    doc,
    parse(raw, name) {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < min || n > max) fail(name, env, `${JSON.stringify(raw)} is not an integer in [${min}, ${max}]`);
      return n;
    },
  };
}

function list(env: string, def: string[], doc: string, re: RegExp): Option<string[]> {
  return {
    env,
    default: def,
    doc,
    parse(raw, name) {
      const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
      for (const item of items) if (!re.test(item)) fail(name, env, `${JSON.stringify(item)} does not match ${re}`);
      return items;
    },
  };
}

const HOSTPORT = /^[A-Za-z0-9.\-_:[\]]+:\d{1,5}$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$/;

export const options = {
  // shared
  kafkaBrokers: list('HOPTRACE_KAFKA_BROKERS', ['127.0.0.1:19092'], 'Kafka bootstrap brokers (host:port, comma-separated).', HOSTPORT),
  kafkaClientId: str('HOPTRACE_KAFKA_CLIENT_ID', 'hoptrace', 'Kafka client id prefix.', NAME),
  hopsTopic: str('HOPTRACE_HOPS_TOPIC', 'hoptrace.hops.v1', 'Topic of agent hop-event batches.', /^[A-Za-z0-9._\-]{1,200}$/),
  topicPartitions: int('HOPTRACE_TOPIC_PARTITIONS', 6, 'Partitions when hoptrace creates the hops topic.', 1, 1024),
  clickhouseUrl: str('HOPTRACE_CLICKHOUSE_URL', 'http://127.0.0.1:18123', 'ClickHouse HTTP endpoint.', /^https?:\/\/[^\s]+$/),
  clickhouseDatabase: str('HOPTRACE_CLICKHOUSE_DB', 'hoptrace', 'ClickHouse database; created if missing.', /^[A-Za-z_][A-Za-z0-9_]{0,62}$/),
  clickhouseUser: str('HOPTRACE_CLICKHOUSE_USER', 'default', 'ClickHouse user.'),
  clickhousePassword: str('HOPTRACE_CLICKHOUSE_PASSWORD', '', 'ClickHouse password.'),
  retryMaxMs: int('HOPTRACE_RETRY_MAX_MS', 10_000, 'Longest backoff between retries of Kafka or ClickHouse, ms.', 100, 600_000),
  logLevel: str('HOPTRACE_LOG_LEVEL', 'info', 'debug | info | warn | error.', /^(debug|info|warn|error)$/),
  // agent
  agentName: str('HOPTRACE_AGENT_NAME', '', 'Agent name (EventId.agent); defaults to the node name.', /^$|^[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$/),
  batchRecords: int('HOPTRACE_BATCH_RECORDS', 8192, 'Records packed into one Kafka message, at most (8192 = 1 MiB before compression, ~0.25 MiB after LZ4; the broker must accept it: message.max.bytes). Per event, fewer messages cost the broker and kafkajs less: full capture over the lab took the broker ~1.7x the CPU at 4096 (npm run bench:live -- --sections lab). 16384 cost the agent less again, but its live queue overflowed (counted, queue_full) in 2 of 6 runs of bench:live --sections agent.', 1, 65_536),
  lingerMs: int('HOPTRACE_LINGER_MS', 250, 'Longest a full batch waits in the agent for others to share its produce request (HOPTRACE_SEND_BATCHES), ms, counted from the ring drain before the one that found its first record (the time in the ring counts); a batch not yet full waits up to HOPTRACE_PARTIAL_LINGER_MS instead. Below the rate that fills HOPTRACE_SEND_BATCHES batches within it, the agent makes one request per linger: with 50 ms, a 1-in-8 sampled agent over the lab took ~1/3 more CPU than with 250 (npm run bench:live -- --sections lab). It adds to the kernel-to-queryable latency: p99 ~0.9 s at 100,000 events/s with 250, ~0.7 s with 50 (npm run bench:latency).', 0, 60_000),
  partialLingerMs: int('HOPTRACE_PARTIAL_LINGER_MS', 0, 'Longest a record waits in a batch that is not yet full, ms (counted as HOPTRACE_LINGER_MS is); 0: 4 x HOPTRACE_LINGER_MS (1000). A produce request costs the agent ~1 ms and the broker ~2-3 ms of CPU whatever it carries, so an agent with little to send sends seldom: below a full batch per linger (~33,000 events/s) batches fill slower than the linger, and an agent over the lab with every flow sampled out made ~4 requests a second with 250 ms here, ~1 with 1000, which saves the agent and the broker CPU; in TCP throughput over the lab it measured no difference beyond this machine\'s noise (0.948 vs 0.947 of off, ad hoc A/B, 6 interleaved repeats; the whole linger at 1000 instead of 250 measured 0.963 vs 0.949). Above that rate batches fill first and this never applies; below it, it is the most the agent adds to a record\'s latency.', 0, 60_000),
  sendBatches: int('HOPTRACE_SEND_BATCHES', 8, 'Batches the agent gathers into one produce request, unless the linger runs out first (HOPTRACE_LINGER_MS). A request costs the agent ~0.7 ms of CPU here whatever it carries (kafkajs, and the loopback round trip), as much as a 256 KiB message: at full capture over the lab the agent took ~16.5% of a CPU with 8 per request and a 250 ms linger, ~20% with 1 and 50 ms (npm run bench:live -- --sections lab, the "each batch its own Kafka request" rows).', 1, 16),
  maxInFlight: int('HOPTRACE_MAX_IN_FLIGHT', 8, 'Kafka sends in flight at once.', 1, 256),
  recordCompression: str(
    'HOPTRACE_RECORD_COMPRESSION',
    'lz4',
    'The agent compresses each HopBatch\'s records itself, once, before kafkajs copies the message: lz4 | snappy | none. LZ4 (the default) stores ~30 bytes per event instead of ~138 and costs a fifth of snappy\'s CPU on both sides (npm run bench:kafka).',
    /^(lz4|snappy|none)$/,
  ),
  kafkaCompression: str(
    'HOPTRACE_KAFKA_COMPRESSION',
    'none',
    'Kafka-level compression of the produced record batches: none | snappy | gzip. None (the default) when the records are compressed already (HOPTRACE_RECORD_COMPRESSION).',
    /^(snappy|gzip|none)$/,
  ),
  bufferBytes: int('HOPTRACE_BUFFER_BYTES', 64 << 20, 'Bytes of records the agent holds while Kafka is slow or away; a live source drops (counted) beyond it.', 1 << 20, 1 << 30),
  metricsPort: int('HOPTRACE_METRICS_PORT', 9464, 'Agent Prometheus /metrics port on 127.0.0.1 (0 = off).', 0, 65_535),
  // correlator
  groupId: str('HOPTRACE_GROUP_ID', 'hoptrace-correlator', 'Correlator consumer group.', NAME),
  insertRows: int('HOPTRACE_INSERT_ROWS', 100_000, 'Hop events written to ClickHouse per insert, at most.', 1, 10_000_000),
  insertDelayMs: int('HOPTRACE_INSERT_DELAY_MS', 200, 'Longest a fetched batch waits for batches of other partitions to share its insert, ms: bounds the time to queryable at moderate rates; larger means fewer, bigger inserts.', 0, 60_000),
  insertFormat: str('HOPTRACE_INSERT_FORMAT', 'RowBinary', 'ClickHouse insert format: RowBinary or TabSeparated (same stored rows; RowBinary is encoded straight from the records). A write ClickHouse refuses in RowBinary is written again as TabSeparated. JSONEachRow is no longer offered: hop_events holds a binary column.', /^(RowBinary|TabSeparated)$/),
  judgeSettleMs: int('HOPTRACE_JUDGE_SETTLE_MS', 3_000, 'Wait after a reset, drop or retransmission is written before judging its flow (other hops still arriving), ms.', 0, 600_000),
  compactEveryMs: int('HOPTRACE_COMPACT_EVERY_MS', 600_000, 'How often the correlator looks for closed partitions of hop_events, flow_parts and incidents (all data before today, UTC) left in several parts, and merges each into one (OPTIMIZE ... FINAL): a cold timeline lookup reads once per part. 0 = never.', 0, 86_400_000),
  compactQuietMs: int('HOPTRACE_COMPACT_QUIET_MS', 1_800_000, 'A closed partition is compacted only once nothing has been inserted into it for this long, ms (late events for a past day make it due again).', 0, 86_400_000),
  judgeLookbackMs: int('HOPTRACE_JUDGE_LOOKBACK_MS', 900_000, 'At start, flows with anomalies this recent (event time) are judged again, ms.', 0, 86_400_000),
  // api
  apiHost: str('HOPTRACE_API_HOST', '127.0.0.1', 'API listen address.'),
  apiPort: int('HOPTRACE_API_PORT', 8080, 'API listen port.', 0, 65_535),
  apiMaxRows: int('HOPTRACE_API_MAX_ROWS', 10_000, 'Most rows one API response returns.', 1, 1_000_000),
} satisfies Record<string, Option<unknown>>;

type Options = typeof options;
export type Config = { readonly [K in keyof Options]: Options[K]['default'] };

/**
 * Builds the frozen config from overrides (CLI flags, tests) over the environment
 * over defaults. Throws HOP_CONFIG_INVALID naming the option on bad input.
 */
export function loadConfig(overrides: Partial<{ [K in keyof Options]: Options[K]['default'] | string }> = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const out: Record<string, unknown> = {};
  for (const [name, o] of Object.entries(options) as [keyof Options, Option<unknown>][]) {
    const given = overrides[name];
    if (given !== undefined && typeof given !== 'string') out[name] = given;
    else {
      const raw = given ?? env[o.env];
      out[name] = raw === undefined ? o.default : o.parse(raw, name);
    }
  }
  return Object.freeze(out) as Config;
}

/**
 * A config with a Kafka topic, ClickHouse database and consumer group of its own
 * (`hoptrace.<scope>.<id>`, `hoptrace_<scope>_<id>`, random id) and no metrics port:
 * tests and benchmarks that share one Kafka and ClickHouse without seeing each other.
 */
export function scopedConfig(scope: 'test' | 'bench', overrides: Parameters<typeof loadConfig>[0] = {}): Config {
  const id = randomBytes(4).toString('hex');
  return loadConfig({ hopsTopic: `hoptrace.${scope}.${id}`, clickhouseDatabase: `hoptrace_${scope}_${id}`, groupId: `hoptrace-${scope}-${id}`, metricsPort: 0, ...overrides });
}

/** Markdown table of options, for the README (`hoptrace options`). */
export function optionsTable(): string {
  const rows = Object.entries(options).map(([name, o]: [string, Option<unknown>]) => `| \`${o.env}\` | \`${JSON.stringify(o.default)}\` | ${o.doc} |`);
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
}

/** The few process-level facts other modules need, read here so nothing else touches process.env. */
export const processEnv = Object.freeze({
  allowSkipPrivileged: process.env.HOPTRACE_ALLOW_SKIP_PRIVILEGED === '1',
});
