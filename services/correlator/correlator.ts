/**
 * The correlator: a kafkajs consumer group member that turns agent batches into
 * ClickHouse rows and commits a partition's offsets only after the rows are written.
 *
 * Delivery is at least once; rows are idempotent (ReplacingMergeTree keyed by event
 * id), so a batch written twice — after a crash, a rebalance or a retry — is seen
 * once. A ClickHouse outage stalls the partition (heartbeats continue) rather than
 * skipping anything.
 */
import { Readable } from 'node:stream';
import type { Consumer, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import { decodeBatch } from '../shared/batch.js';
import type { ClickHouseClient } from '../shared/clickhouse.js';
import type { Config } from '../shared/config.js';
import { describeError, HopError } from '../shared/errors.js';
import { kafkaWhere } from '../shared/kafka.js';
import type { Logger } from '../shared/log.js';
import { RECORD_SIZE } from '../shared/record.js';
import { retry } from '../shared/retry.js';
import { flowPartEncoder, hopEventEncoder, type InsertFormat, rejectedEncoder, type TableEncoder } from './encode.js';
import { batchToRows, type FlowPartRow, type HopEventRow } from './rows.js';

export interface RejectedRow {
  received_date: string;
  origin: string;
  reason: string;
  payload: string;
}

/** Where rows go: ClickHouse in production; tests may inject another. */
export interface RowWriter {
  write(events: HopEventRow[], parts: FlowPartRow[], rejected: RejectedRow[]): Promise<void>;
  readonly where: string;
}

/**
 * Inserts rows into ClickHouse. RowBinary (the default) sends fixed-width binary the
 * server copies into columns, at half JSONEachRow's CPU; TabSeparated sits between
 * (bench/pipeline.ts compares them). All three store the same values.
 */
export function clickhouseWriter(cfg: Config, ch: ClickHouseClient, format: InsertFormat = cfg.insertFormat as InsertFormat, log?: Logger): RowWriter {
  async function insert<R>(table: string, rows: R[], enc: TableEncoder<R>, format: InsertFormat) {
    if (!rows.length) return;
    if (format === 'JSONEachRow') {
      await ch.insert({ table, values: rows, format: 'JSONEachRow' });
    } else if (format === 'TabSeparated') {
      await ch.insert({ table, values: Readable.from([enc.TabSeparated(rows)], { objectMode: false }), format: 'TabSeparated', columns: enc.columns as [string, ...string[]] });
    } else {
      // The client has no RowBinary insert; exec sends the query in the URL and the bytes as the body.
      const r = await ch.exec({ query: `INSERT INTO ${table} (${enc.columns.join(', ')}) FORMAT RowBinary`, values: Readable.from([enc.RowBinary(rows)], { objectMode: false }) });
      for await (const _ of r.stream) void _;
    }
  }
  return {
    where: `ClickHouse at ${cfg.clickhouseUrl} database ${cfg.clickhouseDatabase}`,
    async write(events, parts, rejected) {
      const all = async (f: InsertFormat) => {
        await insert('hop_events', events, hopEventEncoder, f);
        await insert('flow_parts', parts, flowPartEncoder, f);
        await insert('rejected', rejected, rejectedEncoder, f);
      };
      try {
        try {
          await all(format);
        } catch (err) {
          // ClickHouse refusing the data (a server error, not a lost connection) in a binary
          // or text format must not stall the partition forever: write it as JSONEachRow.
          if (format === 'JSONEachRow' || !/^Code: \d+/.test(describeError(err))) throw err;
          log?.error(`ClickHouse refused a ${format} insert (${describeError(err).split('\n')[0]}); writing it as JSONEachRow`);
          await all('JSONEachRow');
        }
      } catch (err) {
        throw new HopError('HOP_CLICKHOUSE_UNREACHABLE', `insert into ClickHouse at ${cfg.clickhouseUrl} failed`, true, { cause: err });
      }
    },
  };
}

export interface CorrelatorStats {
  messages: number;
  events: number;
  rejectedMessages: number;
  rejectedRecords: number;
  writes: number;
}

export interface Correlator {
  start(): Promise<void>;
  stop(): Promise<void>;
  stats(): CorrelatorStats;
}

export function createCorrelator(cfg: Config, kafka: Kafka, writer: RowWriter, log: Logger, onWritten?: (events: HopEventRow[]) => void): Correlator {
  const totals: CorrelatorStats = { messages: 0, events: 0, rejectedMessages: 0, rejectedRecords: 0, writes: 0 };
  const abort = new AbortController();
  const consumer: Consumer = kafka.consumer({
    groupId: cfg.groupId,
    sessionTimeout: 30_000,
    heartbeatInterval: 3_000,
    maxBytesPerPartition: 16 << 20,
    maxBytes: 64 << 20,
    allowAutoTopicCreation: false,
    retry: {
      retries: 5,
      // A crashed consumer (Kafka away too long) restarts and resumes from committed offsets.
      restartOnFailure: async (err) => {
        log.error(`consumer stopped on ${kafkaWhere(cfg)}: ${describeError(err)}; restarting`);
        return !abort.signal.aborted;
      },
    },
  });

  function convert(topic: string, partition: number, m: KafkaMessage) {
    const origin = `${topic}/${partition}/${m.offset}`;
    const today = new Date().toISOString().slice(0, 10);
    try {
      if (!m.value) throw new HopError('HOP_BATCH_INVALID', 'message has no value');
      const batch = decodeBatch(m.value);
      const rows = batchToRows(batch);
      const rejected = rows.bad.map((b) => ({
        received_date: today,
        origin: `${origin}#${b.index}`,
        reason: b.reason,
        payload: batch.records.subarray(b.index * RECORD_SIZE, (b.index + 1) * RECORD_SIZE).toString('base64'),
      }));
      if (rejected.length) log.warn({ origin, count: rejected.length, reasons: [...new Set(rows.bad.map((b) => b.reason))] }, 'corrupt records in batch kept in table rejected');
      return { events: rows.events, parts: rows.parts, rejected };
    } catch (err) {
      log.warn({ origin }, `undecodable message kept in table rejected: ${describeError(err)}`);
      totals.rejectedMessages++;
      return { events: [], parts: [], rejected: [{ received_date: today, origin, reason: describeError(err), payload: (m.value ?? Buffer.alloc(0)).toString('base64') }] };
    }
  }

  async function eachBatch({ batch, heartbeat, isRunning, isStale, resolveOffset }: EachBatchPayload) {
    let events: HopEventRow[] = [];
    let parts: FlowPartRow[] = [];
    let rejected: RejectedRow[] = [];
    let last: string | undefined;
    let count = 0;

    const flush = async () => {
      if (last === undefined) return;
      await retry(
        async () => {
          if (isStale()) throw new HopError('HOP_BATCH_INVALID', 'partition reassigned before the write');
          await heartbeat().catch(() => undefined);
          await writer.write(events, parts, rejected);
        },
        { what: `write ${events.length} hop events to ${writer.where}`, log, maxDelayMs: cfg.retryMaxMs, signal: abort.signal, retriable: () => !isStale() },
      );
      onWritten?.(events);
      const next = (BigInt(last) + 1n).toString();
      resolveOffset(last);
      await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: next }]);
      totals.writes++;
      totals.messages += count;
      totals.events += events.length;
      totals.rejectedRecords += rejected.length;
      events = [];
      parts = [];
      rejected = [];
      last = undefined;
      count = 0;
    };

    try {
      for (const m of batch.messages) {
        if (!isRunning() || isStale()) break;
        const rows = convert(batch.topic, batch.partition, m);
        for (const e of rows.events) events.push(e);
        for (const p of rows.parts) parts.push(p);
        for (const r of rows.rejected) rejected.push(r);
        last = m.offset;
        count++;
        if (events.length >= cfg.insertRows) await flush();
      }
      if (isRunning() && !isStale()) await flush();
    } catch (err) {
      // Reassigned or stopping: leave the rest uncommitted; whoever owns the partition next rereads it.
      if (isStale() || abort.signal.aborted) {
        log.info({ topic: batch.topic, partition: batch.partition }, `batch abandoned uncommitted: ${describeError(err)}`);
        return;
      }
      throw err;
    }
  }

  return {
    async start() {
      await retry(
        async () => {
          try {
            await consumer.connect();
          } catch (err) {
            throw new HopError('HOP_KAFKA_UNREACHABLE', `${kafkaWhere(cfg)} unreachable`, true, { cause: err });
          }
        },
        { what: `connect consumer to ${kafkaWhere(cfg)}`, log, maxDelayMs: cfg.retryMaxMs, signal: abort.signal },
      );
      await consumer.subscribe({ topics: [cfg.hopsTopic], fromBeginning: true });
      await consumer.run({ autoCommit: false, eachBatchAutoResolve: false, partitionsConsumedConcurrently: 2, eachBatch });
      log.info({ topic: cfg.hopsTopic, group: cfg.groupId }, 'correlator consuming');
    },
    async stop() {
      abort.abort();
      await consumer.disconnect();
    },
    stats: () => ({ ...totals }),
  };
}
