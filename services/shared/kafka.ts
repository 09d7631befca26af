/** Kafka clients (kafkajs) and topic set-up shared by the agent and the correlator. */
import './kafka-crc.js'; // before kafkajs: its batch checksum, natively
import './kafka-snappy.js'; // the snappy codec kafkajs does not ship
import './kafka-idle.js'; // no 1 ms timer loop per idle broker connection
import './kafka-encoder.js'; // request buffers grown unzeroed, to size
import { Kafka, logLevel, type Admin, type LogEntry } from 'kafkajs';
import type { Config } from './config.js';
import { HopError } from './errors.js';
import type { Logger } from './log.js';
import { retry, sleep } from './retry.js';

export function createKafka(cfg: Config, role: string, log: Logger): Kafka {
  return new Kafka({
    clientId: `${cfg.kafkaClientId}-${role}`,
    brokers: [...cfg.kafkaBrokers],
    connectionTimeout: 3_000,
    requestTimeout: 30_000,
    // kafkajs retries each request a few times; hoptrace's own loop (retry.ts) takes over after that.
    retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2_000 },
    logLevel: logLevel.WARN,
    // kafkajs logs each failed attempt at ERROR ("Connection error", "Failed to connect to seed
    // broker") although it and then hoptrace's retry loop go on; hoptrace logs an error itself
    // once a request, a send or the consumer fails for good. So kafkajs's own lines are warnings.
    logCreator:
      () =>
      ({ log: entry }: LogEntry) => {
        const { message, ...rest } = entry;
        log.warn({ kafkajs: rest }, `kafkajs: ${message}`);
      },
  });
}

export function kafkaWhere(cfg: Config): string {
  return `Kafka at ${cfg.kafkaBrokers.join(',')}`;
}

/**
 * Makes sure the hops topic exists (created with cfg.topicPartitions) and returns
 * its partition count. Retries with backoff while Kafka is unreachable.
 */
export async function ensureTopic(cfg: Config, kafka: Kafka, log: Logger, signal?: AbortSignal): Promise<number> {
  return retry(
    async () => {
      const admin: Admin = kafka.admin();
      try {
        await admin.connect();
      } catch (err) {
        throw new HopError('HOP_KAFKA_UNREACHABLE', `${kafkaWhere(cfg)} unreachable`, true, { cause: err });
      }
      try {
        const topics = await admin.listTopics();
        if (!topics.includes(cfg.hopsTopic)) {
          await admin.createTopics({ topics: [{ topic: cfg.hopsTopic, numPartitions: cfg.topicPartitions, replicationFactor: 1 }], waitForLeaders: true });
          log.info({ topic: cfg.hopsTopic, partitions: cfg.topicPartitions }, 'created hops topic');
        }
        const md = await admin.fetchTopicMetadata({ topics: [cfg.hopsTopic] });
        const n = md.topics[0]?.partitions.length ?? 0;
        if (n === 0) throw new HopError('HOP_KAFKA_UNREACHABLE', `${kafkaWhere(cfg)}: topic ${cfg.hopsTopic} has no partitions yet`, true);
        return n;
      } finally {
        await admin.disconnect().catch(() => undefined);
      }
    },
    { what: `set up topic ${cfg.hopsTopic} on ${kafkaWhere(cfg)}`, log, maxDelayMs: cfg.retryMaxMs, signal },
  );
}

/**
 * Messages on the hops topic the correlator group has not committed yet (committed
 * only after the ClickHouse write, so 0 means everything produced so far is stored).
 * A partition the group never committed counts from its low watermark.
 */
export async function consumerLag(cfg: Config, kafka: Kafka): Promise<number> {
  const reader = lagReader(cfg, kafka);
  try {
    return await reader.read();
  } finally {
    await reader.close();
  }
}

/** consumerLag over one admin connection, for polling (a connection per reading otherwise); close() when done. */
export function lagReader(cfg: Config, kafka: Kafka): { read(): Promise<number>; close(): Promise<void> } {
  const admin = kafka.admin();
  let connected: Promise<void> | null = null;
  return {
    async read() {
      await (connected ??= admin.connect().catch((err: unknown) => {
        connected = null; // the next reading tries again
        throw err;
      }));
      const [ends, [committed]] = await Promise.all([admin.fetchTopicOffsets(cfg.hopsTopic), admin.fetchOffsets({ groupId: cfg.groupId, topics: [cfg.hopsTopic] })]);
      const at = new Map((committed?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
      return ends.reduce((lag, p) => {
        const c = at.get(p.partition) ?? -1;
        return lag + Number(p.high) - (c < 0 ? Number(p.low) : c);
      }, 0);
    },
    close: () => admin.disconnect().catch(() => undefined),
  };
}

/**
 * Reads `lag` every `pollMs` until it is 0 or `timeoutMs` has passed; returns the last
 * reading (0: caught up). `onLag` hears every nonzero reading.
 */
export async function waitForNoLag(lag: () => Promise<number>, timeoutMs: number, onLag: (n: number) => void = () => undefined, pollMs = 1000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = await lag();
    if (n === 0 || Date.now() >= deadline) return n;
    onLag(n);
    await sleep(Math.min(pollMs, Math.max(0, deadline - Date.now())));
  }
}
