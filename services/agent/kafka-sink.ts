/** The agent's BatchSink on a kafkajs producer: explicit partitions, acks from all in-sync replicas. */
import '../shared/kafka-crc.js'; // before kafkajs: its batch checksum, natively
import { CompressionTypes, Partitioners, type Kafka, type Producer } from 'kafkajs';
import type { Config } from '../shared/config.js';
import { HopError } from '../shared/errors.js';
import { kafkaWhere } from '../shared/kafka.js'; // also registers the snappy codec
import type { Logger } from '../shared/log.js';
import { retry } from '../shared/retry.js';
import type { BatchSink, OutMessage } from './agent.js';

const COMPRESSION = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy } as const;

export async function createKafkaSink(cfg: Config, kafka: Kafka, log: Logger, signal?: AbortSignal): Promise<BatchSink & { close(): Promise<void> }> {
  const where = `${kafkaWhere(cfg)} topic ${cfg.hopsTopic}`;
  // Not idempotent: kafkajs' idempotence needs one request in flight and only dedups within this producer;
  // hoptrace dedups downstream by event id instead (ReplacingMergeTree).
  const producer: Producer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner, maxInFlightRequests: cfg.maxInFlight });
  await retry(
    async () => {
      try {
        await producer.connect();
      } catch (err) {
        throw new HopError('HOP_KAFKA_UNREACHABLE', `${kafkaWhere(cfg)} unreachable`, true, { cause: err });
      }
    },
    { what: `connect producer to ${kafkaWhere(cfg)}`, log, maxDelayMs: cfg.retryMaxMs, signal },
  );
  return {
    where,
    async send(messages: OutMessage[]) {
      await producer.send({
        topic: cfg.hopsTopic,
        acks: -1,
        timeout: 30_000,
        compression: COMPRESSION[cfg.kafkaCompression as keyof typeof COMPRESSION],
        messages: messages.map((m) => ({ partition: m.partition, key: m.key, value: m.value })),
      });
    },
    close: () => producer.disconnect(),
  };
}
