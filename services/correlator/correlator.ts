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
import { decodeBatch, type DecodedBatch } from '../shared/batch.js';
import type { ClickHouseClient } from '../shared/clickhouse.js';
import type { Config } from '../shared/config.js';
import { describeError, HopError } from '../shared/errors.js';
import { kafkaWhere } from '../shared/kafka.js';
import type { Logger } from '../shared/log.js';
import { RECORD_SIZE } from '../shared/record.js';
import { retry } from '../shared/retry.js';
import { encodeEvents } from './binary-rows.js';
import { BinWriter, flowPartEncoder, hopEventEncoder, type InsertFormat, rejectedEncoder, type TableEncoder } from './encode.js';
import { badRecords, batchToRows, type FlowPartRow, type HopEventRow } from './rows.js';
import { isAnomaly } from './verdicts.js';

export interface RejectedRow {
  received_date: string;
  origin: string;
  reason: string;
  payload: string;
}

/** Where rows go: ClickHouse in production; tests may inject another. */
export interface RowWriter {
  /**
   * Writes the valid records of these batches as hop_events rows, their per-batch
   * flow_parts, and the rejected rows. Resolves with the flows worth judging.
   */
  write(batches: readonly DecodedBatch[], rejected: RejectedRow[]): Promise<Set<number>>;
  readonly where: string;
}

/** Inserts encoded rows. The client has no RowBinary insert; exec sends the query in the URL and the bytes as the body. */
export async function insertEncoded(ch: ClickHouseClient, table: string, columns: readonly string[], format: InsertFormat, bytes: Buffer): Promise<void> {
  const r = await ch.exec({ query: `INSERT INTO ${table} (${columns.join(', ')}) FORMAT ${format}`, values: Readable.from([bytes], { objectMode: false }) });
  for await (const _ of r.stream) void _;
}

/** Inserts row objects in a format (tests write hop_events rows this way: the table takes no JSON). */
export async function insertRows<R>(ch: ClickHouseClient, table: string, rows: readonly R[], enc: TableEncoder<R>, format: InsertFormat = 'RowBinary'): Promise<void> {
  if (rows.length) await insertEncoded(ch, table, enc.columns, format, enc[format](rows));
}

/**
 * Inserts rows into ClickHouse. RowBinary (the default) is encoded straight from the
 * records (binary-rows.ts): no row objects, and binary columns the server copies
 * rather than parses. TabSeparated goes through row objects (bench/pipeline.ts
 * compares the two). Both store the same values.
 */
export function clickhouseWriter(cfg: Config, ch: ClickHouseClient, format: InsertFormat = cfg.insertFormat as InsertFormat, log?: Logger): RowWriter {
  async function viaObjects(batches: readonly DecodedBatch[], f: InsertFormat): Promise<Set<number>> {
    const events: HopEventRow[] = [];
    const parts: FlowPartRow[] = [];
    for (const b of batches) {
      const r = batchToRows(b);
      for (const e of r.events) events.push(e);
      for (const p of r.parts) parts.push(p);
    }
    await insertRows(ch, 'hop_events', events, hopEventEncoder, f);
    await insertRows(ch, 'flow_parts', parts, flowPartEncoder, f);
    return new Set(events.filter(isAnomaly).map((e) => e.flow_id));
  }
  // Output buffers kept between inserts (one per insert in flight): a fresh multi-MiB buffer per insert costs more in page faults than the encoding.
  const spare: BinWriter[] = [];
  async function direct(batches: readonly DecodedBatch[]): Promise<Set<number>> {
    const w = spare.pop() ?? new BinWriter(1 << 22);
    w.pos = 0;
    try {
      return await directInto(w, batches);
    } finally {
      spare.push(w);
    }
  }
  async function directInto(w: BinWriter, batches: readonly DecodedBatch[]): Promise<Set<number>> {
    const parts: FlowPartRow[] = [];
    const anomalous = new Set<number>();
    let events = 0;
    for (const b of batches) {
      const e = encodeEvents(b, w, anomalous);
      events += e.events;
      for (const p of e.parts.rows()) parts.push(p);
    }
    if (events) await insertEncoded(ch, 'hop_events', hopEventEncoder.columns, 'RowBinary', w.take());
    await insertRows(ch, 'flow_parts', parts, flowPartEncoder, 'RowBinary');
    return anomalous;
  }
  return {
    where: `ClickHouse at ${cfg.clickhouseUrl} database ${cfg.clickhouseDatabase}`,
    async write(batches, rejected) {
      const all = async (f: InsertFormat) => {
        const anomalous = f === 'RowBinary' ? await direct(batches) : await viaObjects(batches, f);
        await insertRows(ch, 'rejected', rejected, rejectedEncoder, f);
        return anomalous;
      };
      try {
        try {
          return await all(format);
        } catch (err) {
          // ClickHouse refusing the data (a server error, not a lost connection) in binary
          // must not stall the partition forever: write it through row objects as text.
          if (format === 'TabSeparated' || !/^Code: \d+/.test(describeError(err))) throw err;
          log?.error(`ClickHouse refused a ${format} insert (${describeError(err).split('\n')[0]}); writing it as TabSeparated`);
          return await all('TabSeparated');
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

export function createCorrelator(cfg: Config, kafka: Kafka, writer: RowWriter, log: Logger, onWritten?: (anomalousFlows: Set<number>) => void): Correlator {
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

  /** A Kafka message as a decoded batch and its rejected rows (corrupt records, or the whole message when undecodable). */
  function convert(topic: string, partition: number, m: KafkaMessage): { batch: DecodedBatch | null; events: number; rejected: RejectedRow[] } {
    const origin = `${topic}/${partition}/${m.offset}`;
    const today = new Date().toISOString().slice(0, 10);
    try {
      if (!m.value) throw new HopError('HOP_BATCH_INVALID', 'message has no value');
      const batch = decodeBatch(m.value);
      const bad = badRecords(batch);
      const rejected = bad.map((b) => ({
        received_date: today,
        origin: `${origin}#${b.index}`,
        reason: b.reason,
        payload: batch.records.subarray(b.index * RECORD_SIZE, (b.index + 1) * RECORD_SIZE).toString('base64'),
      }));
      if (rejected.length) log.warn({ origin, count: rejected.length, reasons: [...new Set(bad.map((b) => b.reason))] }, 'corrupt records in batch kept in table rejected');
      return { batch, events: batch.count - bad.length, rejected };
    } catch (err) {
      log.warn({ origin }, `undecodable message kept in table rejected: ${describeError(err)}`);
      totals.rejectedMessages++;
      return { batch: null, events: 0, rejected: [{ received_date: today, origin, reason: describeError(err), payload: (m.value ?? Buffer.alloc(0)).toString('base64') }] };
    }
  }

  /**
   * Group insert: batches fetched from any partition within insertDelayMs of each other
   * (or until insertRows events) share one write, so at a moderate rate every partition's
   * events become visible within about that delay and ClickHouse gets a few large inserts
   * rather than one small one per partition. Each partition commits its own offsets once
   * the group holding its batches is written.
   */
  interface Group {
    batches: DecodedBatch[];
    rejected: RejectedRow[];
    events: number;
    messages: number;
    waiters: { resolve: () => void; reject: (err: unknown) => void }[];
    timer?: NodeJS.Timeout;
  }
  let open: Group | null = null;

  function submit(batches: DecodedBatch[], rejected: RejectedRow[], events: number, messages: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const g = (open ??= { batches: [], rejected: [], events: 0, messages: 0, waiters: [] });
      for (const b of batches) g.batches.push(b);
      for (const r of rejected) g.rejected.push(r);
      g.events += events;
      g.messages += messages;
      g.waiters.push({ resolve, reject });
      if (g.events >= cfg.insertRows) void writeGroup(g);
      else g.timer ??= setTimeout(() => void writeGroup(g), cfg.insertDelayMs);
    });
  }

  async function writeGroup(g: Group) {
    clearTimeout(g.timer);
    if (open === g) open = null;
    try {
      const anomalous = await retry(() => writer.write(g.batches, g.rejected), { what: `write ${g.events} hop events to ${writer.where}`, log, maxDelayMs: cfg.retryMaxMs, signal: abort.signal });
      totals.writes++;
      totals.messages += g.messages;
      totals.events += g.events;
      totals.rejectedRecords += g.rejected.length;
      if (anomalous.size) onWritten?.(anomalous);
      for (const w of g.waiters) w.resolve();
    } catch (err) {
      for (const w of g.waiters) w.reject(err);
    }
  }

  async function eachBatch({ batch, heartbeat, isRunning, isStale, resolveOffset }: EachBatchPayload) {
    let batches: DecodedBatch[] = [];
    let rejected: RejectedRow[] = [];
    let events = 0;
    let last: string | undefined;
    let count = 0;

    const flush = async () => {
      if (last === undefined) return;
      // Stay in the group while the write waits (for the group, or for ClickHouse to come back).
      const beat = setInterval(() => void heartbeat().catch(() => undefined), 3_000);
      try {
        await submit(batches, rejected, events, count);
      } finally {
        clearInterval(beat);
      }
      // Written either way (idempotent rows); only the partition's owner commits.
      if (isStale()) throw new HopError('HOP_BATCH_INVALID', 'partition reassigned during the write');
      const next = (BigInt(last) + 1n).toString();
      resolveOffset(last);
      await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: next }]);
      batches = [];
      rejected = [];
      events = 0;
      last = undefined;
      count = 0;
    };

    try {
      for (const m of batch.messages) {
        if (!isRunning() || isStale()) break;
        const c = convert(batch.topic, batch.partition, m);
        if (c.batch) batches.push(c.batch);
        for (const r of c.rejected) rejected.push(r);
        events += c.events;
        last = m.offset;
        count++;
        if (events >= cfg.insertRows) await flush();
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
      await consumer.run({ autoCommit: false, eachBatchAutoResolve: false, partitionsConsumedConcurrently: 64, eachBatch });
      log.info({ topic: cfg.hopsTopic, group: cfg.groupId }, 'correlator consuming');
    },
    async stop() {
      abort.abort();
      await consumer.disconnect();
    },
    stats: () => ({ ...totals }),
  };
}
