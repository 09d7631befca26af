/**
 * Kafka batching strategies for the agent's produce path, on the real broker, with the
 * same generated recording (3 nodes, one agent each, concurrently) for every strategy:
 *
 *   A  packed HopBatch messages at 64, 1024 and 4096 records per message
 *      (HOPTRACE_BATCH_RECORDS), the agent's own Kafka sink, uncompressed;
 *   B  one Kafka message per event: the agent with batchRecords 1 (each record its own
 *      one-record HopBatch, partitioned by flow like A), and a sink that leaves batching to
 *      kafkajs: up to 1024 messages per producer.send, 4 sends in flight;
 *   C  A at 1024 with kafkajs's gzip (HOPTRACE_KAFKA_COMPRESSION=gzip);
 *   D  A at 1024 with snappy as kafkajs's codec (services/shared/kafka-snappy.ts:
 *      the native binding; HOPTRACE_KAFKA_COMPRESSION=snappy): kafkajs concatenates and
 *      compresses the encoded records of each produce request;
 *   E  A at 1024 with the records compressed by the agent, one snappy block per HopBatch
 *      (HOPTRACE_RECORD_COMPRESSION=snappy, Kafka's compression off);
 *   F  the same with one LZ4 block per HopBatch, at 1024, 4096 and the default 8192.
 *
 * A-D ship the records as they are in the HopBatch (HOPTRACE_RECORD_COMPRESSION=none).
 *
 *   npm run build && node dist/bench/kafka-batching.js [--events 500000] [--runs 3]
 *
 * Needs the local Kafka (`npm run bench:kafka` starts it). Per strategy and run: a topic of
 * its own; the agents' CPU (process.cpuUsage of this process, which runs only them while
 * measured) and wall time from first record to last ack; the broker's CPU over the same
 * span (from var/run/kafka.pid: other work on the broker counts too, so that column is
 * noisy); bytes per event the broker holds for the topic (segment file sizes = record
 * batches as produced, framing and compression included); then the consumer side: a
 * kafkajs consumer fetching the whole topic and decoding every HopBatch (decodeBatch),
 * CPU per event. Medians of the runs; ratios to A at 1024 within each run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Kafka } from 'kafkajs';
import { pino } from 'pino';
import { cpuStallUs, deleteTopics, isolatedConfig, kafkaCpuS, kafkaTopicBytes, median, numArg } from './common.js';
import { createAgent, type BatchSink, type OutMessage } from '../services/agent/agent.js';
import { generateRecording } from '../services/agent/generate.js';
import { createKafkaSink } from '../services/agent/kafka-sink.js';
import { createAgentMetrics } from '../services/agent/metrics.js';
import { openRecording } from '../services/agent/recording-source.js';
import { decodeBatch } from '../services/shared/batch.js';
import { loadConfig, type Config } from '../services/shared/config.js';
import { createKafka, ensureTopic } from '../services/shared/kafka.js';

const log = pino({ level: 'warn' });
const EVENTS = numArg('events', 500_000);
const RUNS = numArg('runs', 3);
/** The shipped defaults, whatever the environment says. */
const DEFAULTS = loadConfig({}, {});
/** Strategy B: messages per producer.send, and sends in flight. */
const B_PER_SEND = 1024;
const B_SENDS_IN_FLIGHT = 4;

type Sink = BatchSink & { close(): Promise<void> };

interface Strategy {
  name: string;
  cfg: Partial<Config>;
  sink(cfg: Config, kafka: Kafka): Promise<Sink>;
}

/**
 * Strategy B's sink: what a producer of one message per event does. The agent hands over
 * 16 one-record messages per call; calls made in the same turn of the event loop (the
 * agent's whole in-flight window) are merged into producer.send calls of up to `perSend`
 * messages, so kafkajs builds one produce request per broker out of many small messages.
 */
function coalescingSink(inner: Sink, perSend: number): Sink {
  let pending: { msgs: OutMessage[]; done: () => void; fail: (err: unknown) => void }[] = [];
  let count = 0;
  let scheduled = false;
  const flush = () => {
    const group = pending;
    pending = [];
    count = 0;
    if (!group.length) return;
    inner.send(group.flatMap((g) => g.msgs)).then(
      () => group.forEach((g) => g.done()),
      (err: unknown) => group.forEach((g) => g.fail(err)),
    );
  };
  return {
    where: inner.where,
    send: (msgs) =>
      new Promise<void>((done, fail) => {
        pending.push({ msgs, done, fail });
        count += msgs.length;
        if (count >= perSend) flush();
        else if (!scheduled) {
          scheduled = true;
          setImmediate(() => {
            scheduled = false;
            flush();
          });
        }
      }),
    close: () => inner.close(),
  };
}

const realSink = (cfg: Config, kafka: Kafka) => createKafkaSink(cfg, kafka, log);
const BASE = 'A packed, 1024 records/message, uncompressed';
const PLAIN = { recordCompression: 'none' } as const;
const STRATEGIES: Strategy[] = [
  { name: 'A packed, 64 records/message, uncompressed', cfg: { ...PLAIN, batchRecords: 64, kafkaCompression: 'none' }, sink: realSink },
  { name: BASE, cfg: { ...PLAIN, batchRecords: 1024, kafkaCompression: 'none' }, sink: realSink },
  { name: 'A packed, 4096 records/message, uncompressed', cfg: { ...PLAIN, batchRecords: 4096, kafkaCompression: 'none' }, sink: realSink },
  {
    name: `B one message per event (≤${B_PER_SEND} per send, ${B_SENDS_IN_FLIGHT} sends in flight)`,
    // The agent's window counts its 16-message calls: B_SENDS_IN_FLIGHT full sends' worth.
    cfg: { ...PLAIN, batchRecords: 1, maxInFlight: (B_PER_SEND / 16) * B_SENDS_IN_FLIGHT, kafkaCompression: 'none' },
    sink: async (cfg, kafka) => coalescingSink(await realSink(cfg, kafka), B_PER_SEND),
  },
  { name: 'C packed, 1024 records/message, gzip (kafkajs)', cfg: { ...PLAIN, batchRecords: 1024, kafkaCompression: 'gzip' }, sink: realSink },
  { name: 'D packed, 1024 records/message, snappy (kafkajs codec)', cfg: { ...PLAIN, batchRecords: 1024, kafkaCompression: 'snappy' }, sink: realSink },
  { name: 'E packed, 1024 records/message, snappy block per HopBatch', cfg: { batchRecords: 1024, recordCompression: 'snappy', kafkaCompression: 'none' }, sink: realSink },
  { name: 'F packed, 1024 records/message, LZ4 block per HopBatch', cfg: { batchRecords: 1024, recordCompression: 'lz4', kafkaCompression: 'none' }, sink: realSink },
  { name: 'F packed, 4096 records/message, LZ4 block per HopBatch', cfg: { batchRecords: 4096, recordCompression: 'lz4', kafkaCompression: 'none' }, sink: realSink },
  {
    name: `F packed, ${DEFAULTS.batchRecords} records/message, ${DEFAULTS.recordCompression.toUpperCase()} block per HopBatch (the defaults)`,
    cfg: { batchRecords: DEFAULTS.batchRecords, recordCompression: DEFAULTS.recordCompression, kafkaCompression: DEFAULTS.kafkaCompression },
    sink: realSink,
  },
];

interface Result {
  events: number;
  messages: number;
  cpuS: number;
  wallS: number;
  brokerCpuS: number;
  bytes: number;
  consumerCpuS: number;
}

/** One agent per node recording, concurrently, into cfg.hopsTopic; measured from the first record to the last ack. */
async function produce(files: string[], cfg: Config, s: Strategy): Promise<Pick<Result, 'events' | 'cpuS' | 'wallS' | 'brokerCpuS'>> {
  const kafka = createKafka(cfg, 'bench-agent', log);
  const partitions = await ensureTopic(cfg, kafka, log);
  const agents = [];
  const sinks: Sink[] = [];
  for (const file of files) {
    const sink = await s.sink(cfg, kafka);
    sinks.push(sink);
    agents.push(createAgent({ cfg, source: await openRecording({ file }), sink, partitions, log, metrics: createAgentMetrics() }));
  }
  const k0 = kafkaCpuS();
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await Promise.all(agents.map((a) => a.run()));
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  const brokerCpuS = kafkaCpuS() - k0;
  await Promise.all(sinks.map((x) => x.close()));
  const events = agents.reduce((n, a) => n + a.stats().sent, 0);
  return { events, cpuS: (c.user + c.system) / 1e6, wallS, brokerCpuS };
}

/** Fetches the whole topic with a fresh group and decodes every message; CPU seconds and messages. */
async function consume(cfg: Config, expected: number): Promise<{ cpuS: number; messages: number }> {
  const kafka = createKafka(cfg, 'bench-consumer', log);
  const groupId = `${cfg.groupId}-consume`;
  const consumer = kafka.consumer({ groupId, maxBytesPerPartition: 16 << 20, maxBytes: 64 << 20, allowAutoTopicCreation: false });
  let events = 0;
  let messages = 0;
  const c0 = process.cpuUsage();
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [cfg.hopsTopic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`consumed ${events}/${expected} events of ${cfg.hopsTopic} in 300 s`)), 300_000);
      consumer
        .run({
          autoCommit: false,
          partitionsConsumedConcurrently: 2,
          eachBatch: async ({ batch }) => {
            for (const m of batch.messages) {
              const b = decodeBatch(m.value!);
              events += b.count;
              messages++;
            }
            if (events >= expected) {
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
  const c = process.cpuUsage(c0);
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteGroups([groupId]).catch(() => undefined);
  await admin.disconnect();
  return { cpuS: (c.user + c.system) / 1e6, messages };
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'hopbench-kafka-'));
  const gen = await generateRecording({ outDir: dir, events: EVENTS, seed: 99 });
  console.error(`recording: ${gen.events} events, ${gen.flows} flows, 3 nodes (${dir})`);
  const results: Record<string, Result[]> = {};
  const stall0 = cpuStallUs();
  const t0 = process.hrtime.bigint();
  for (let run = 0; run < RUNS; run++) {
    const base = isolatedConfig();
    const topics: string[] = [];
    try {
      // Rotate the order so that no strategy always runs first (warm JIT, broker state).
      for (let k = 0; k < STRATEGIES.length; k++) {
        const i = (k + run) % STRATEGIES.length;
        const s = STRATEGIES[i]!;
        const cfg = loadConfig({ ...base, ...s.cfg, hopsTopic: `${base.hopsTopic}.${i}`, groupId: `${base.groupId}-${i}` });
        topics.push(cfg.hopsTopic);
        const p = await produce(gen.files, cfg, s);
        if (p.events !== gen.events) throw new Error(`${s.name}: ${p.events} of ${gen.events} events sent`);
        const bytes = kafkaTopicBytes(cfg.hopsTopic);
        const c = await consume(cfg, p.events);
        (results[s.name] ??= []).push({ ...p, bytes, messages: c.messages, consumerCpuS: c.cpuS });
        console.error(`run ${run + 1}/${RUNS}: ${s.name}: ${Math.round(p.events / p.cpuS).toLocaleString('en-US')} events/s per core, ${c.messages} messages, ${(bytes / p.events).toFixed(1)} B/event`);
      }
    } finally {
      await deleteTopics(base, topics).catch((err: unknown) => console.error(`could not delete ${topics.join(', ')}: ${String(err)}`));
    }
  }
  rmSync(dir, { recursive: true, force: true });
  const pressure = (100 * (cpuStallUs() - stall0)) / (Number(process.hrtime.bigint() - t0) / 1e3);

  const fmt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
  const perCore = (r: Result) => r.events / r.cpuS;
  const wall = (r: Result) => r.events / r.wallS;
  const withBroker = (r: Result) => r.events / (r.cpuS + r.brokerCpuS);
  const bytes = (r: Result) => r.bytes / r.events;
  const consumer = (r: Result) => r.events / r.consumerCpuS;
  console.log(`\n${gen.events.toLocaleString('en-US')} events (3 nodes, 3 agents at once), median of ${RUNS} runs, node ${process.version}, kafkajs, 1 local broker, acks all, 2 shared cores\n`);
  console.log('| strategy | events/message | agent events/s per core | agent events/s wall | per core incl. broker CPU | bytes/event on Kafka | consumer events/s per core (fetch + decode) |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const s of STRATEGIES) {
    const rs = results[s.name]!;
    const m = (f: (r: Result) => number) => median(rs.map(f));
    console.log(`| ${s.name} | ${m((r) => r.events / r.messages).toFixed(1)} | ${fmt(m(perCore))} | ${fmt(m(wall))} | ${fmt(m(withBroker))} | ${m(bytes).toFixed(1)} | ${fmt(m(consumer))} |`);
  }
  const baseRuns = results[BASE]!;
  console.log(`\nRatios to "${BASE}" within each run, then the median (higher is better except bytes):\n`);
  console.log('| strategy | agent per core | agent wall | incl. broker CPU | bytes/event | consumer per core |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const s of STRATEGIES) {
    const rs = results[s.name]!;
    const ratio = (f: (r: Result) => number) => `${median(rs.map((r, i) => f(r) / f(baseRuns[i]!))).toFixed(2)}x`;
    console.log(`| ${s.name} | ${ratio(perCore)} | ${ratio(wall)} | ${ratio(withBroker)} | ${ratio(bytes)} | ${ratio(consumer)} |`);
  }
  console.log(`\nCPU pressure over the whole bench: ${pressure.toFixed(0)} % of the time some runnable task waited for a CPU (/proc/pressure/cpu): wall and broker figures stretch with it, per-core figures much less.`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
