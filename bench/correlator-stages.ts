/**
 * Where the correlator's CPU goes, stage by stage, without Kafka: agent batches are
 * built in memory from a generated recording, then decoded, turned into rows, encoded
 * in each insert format (RowBinary also straight from the records, as the correlator
 * does) and (with --insert) inserted into ClickHouse through the correlator's writer.
 *
 *   npm run build && node dist/bench/correlator-stages.js [--events 300000] [--runs 3] [--insert]
 *
 * Prints ns per event per stage (median of runs) and, with --insert, node and
 * ClickHouse CPU per event for each format.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { clickhouseCpuS, isolatedConfig, median, numArg } from './common.js';
import { createAgent, type OutMessage } from '../services/agent/agent.js';
import { generateRecording } from '../services/agent/generate.js';
import { createAgentMetrics } from '../services/agent/metrics.js';
import { openRecording } from '../services/agent/recording-source.js';
import { clickhouseWriter } from '../services/correlator/correlator.js';
import { encodeEvents } from '../services/correlator/binary-rows.js';
import { BinWriter, flowPartEncoder, hopEventEncoder, INSERT_FORMATS } from '../services/correlator/encode.js';
import { batchToRows, type FlowPartRow, type HopEventRow } from '../services/correlator/rows.js';
import { decodeBatch, type DecodedBatch } from '../services/shared/batch.js';
import { createClickHouse, migrate } from '../services/shared/clickhouse.js';
import { loadConfig } from '../services/shared/config.js';

const log = pino({ level: 'warn' });
const EVENTS = numArg('events', 300_000);
const RUNS = numArg('runs', 3);
const INSERT = process.argv.includes('--insert');

function cpuNs(fn: () => void): number {
  const c0 = process.cpuUsage();
  fn();
  const c = process.cpuUsage(c0);
  return (c.user + c.system) * 1000;
}


async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'hopstages-'));
  const gen = await generateRecording({ outDir: dir, events: EVENTS, seed: 99 });
  const cfg = loadConfig({ metricsPort: 0 });
  const messages: OutMessage[] = [];
  for (const file of gen.files) {
    const source = await openRecording({ file });
    const agent = createAgent({ cfg, source, sink: { where: 'memory', send: async (m: OutMessage[]) => void messages.push(...m) }, partitions: 6, log, metrics: createAgentMetrics() });
    await agent.run();
  }
  const n = messages.reduce((s, m) => s + m.records, 0);
  console.error(`${n} events in ${messages.length} batches`);

  const stages: Record<string, number[]> = {};
  const add = (k: string, ns: number) => (stages[k] ??= []).push(ns / n);
  let decoded: DecodedBatch[] = [];
  let events: HopEventRow[] = [];
  let parts: FlowPartRow[] = [];
  const encoded: Record<string, Buffer | string> = {};
  const direct = new BinWriter(n * 200);
  for (let run = 0; run < RUNS + 1; run++) {
    const warm = run === 0;
    const t: Record<string, number> = {};
    t['protobuf decode (decodeBatch)'] = cpuNs(() => (decoded = messages.map((m) => decodeBatch(m.value))));
    t['records -> row objects (batchToRows)'] = cpuNs(() => {
      events = [];
      parts = [];
      for (const b of decoded) {
        const r = batchToRows(b);
        for (const e of r.events) events.push(e);
        for (const p of r.parts) parts.push(p);
      }
    });
    t['encode TabSeparated'] = cpuNs(() => void (encoded.TabSeparated = Buffer.concat([hopEventEncoder.TabSeparated(events), flowPartEncoder.TabSeparated(parts)])));
    t['encode RowBinary from row objects'] = cpuNs(() => void (encoded.RowBinary = Buffer.concat([hopEventEncoder.RowBinary(events), flowPartEncoder.RowBinary(parts)])));
    t['RowBinary straight from records (encodeEvents + flow parts), what the correlator runs'] = cpuNs(() => {
      direct.pos = 0; // one buffer reused, as the correlator's writer does
      const w = direct;
      const p: FlowPartRow[] = [];
      for (const b of decoded) for (const x of encodeEvents(b, w, new Set()).parts.rows()) p.push(x);
      encoded.direct = Buffer.concat([w.take(), flowPartEncoder.RowBinary(p)]);
    });
    if (!warm) for (const [k, v] of Object.entries(t)) add(k, v);
  }
  console.log(`\n${n.toLocaleString('en-US')} events (${parts.length.toLocaleString('en-US')} flow parts), CPU ns per event, median of ${RUNS} runs, node ${process.version}\n`);
  console.log('| stage | ns/event |');
  console.log('|---|---:|');
  for (const [k, v] of Object.entries(stages)) console.log(`| ${k} | ${Math.round(median(v))} |`);
  console.log('');
  console.log('| format | bytes/event |');
  console.log('|---|---:|');
  for (const f of INSERT_FORMATS) console.log(`| ${f} | ${Math.round(Buffer.byteLength(encoded[f]!) / n)} |`);

  if (!INSERT) return;
  const icfg = isolatedConfig();
  const db = icfg.clickhouseDatabase;
  await migrate(icfg);
  const ch = createClickHouse(icfg);
  const res: Record<string, { node: number[]; ch: number[]; wall: number[] }> = {};
  const CHUNK = 100_000;
  const chunks: DecodedBatch[][] = [[]];
  let inChunk = 0;
  for (const b of decoded) {
    if (inChunk >= CHUNK) chunks.push([]), (inChunk = 0);
    chunks[chunks.length - 1]!.push(b);
    inChunk += b.count;
  }
  try {
    for (let run = 0; run < RUNS + 1; run++) {
      for (const format of INSERT_FORMATS) {
        const w = clickhouseWriter(icfg, ch, format);
        const c0 = process.cpuUsage();
        const ch0 = clickhouseCpuS();
        const t0 = process.hrtime.bigint();
        for (const chunk of chunks) await w.write(chunk, []);
        const wall = Number(process.hrtime.bigint() - t0);
        const c = process.cpuUsage(c0);
        const chS = clickhouseCpuS() - ch0;
        if (run === 0) continue;
        const r = (res[format] ??= { node: [], ch: [], wall: [] });
        r.node.push(((c.user + c.system) * 1000) / n);
        r.ch.push((chS * 1e9) / n);
        r.wall.push(wall / n);
      }
      for (const t of ['hop_events', 'flow_parts']) await ch.command({ query: `TRUNCATE TABLE ${t}` }).catch(() => undefined);
    }
  } finally {
    await ch.command({ query: `DROP DATABASE IF EXISTS ${db}` });
    await ch.close();
  }
  console.log(`\nInsert of the same rows (${CHUNK.toLocaleString('en-US')} per insert), ns per event, median of ${RUNS} runs (ClickHouse CPU from /proc, 10 ms ticks)\n`);
  console.log('| format | node CPU (rows + encode + HTTP) | ClickHouse CPU | node + ClickHouse | wall | events/s per core (node + ClickHouse) |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const [f, r] of Object.entries(res)) {
    const tot = median(r.node.map((x, i) => x + r.ch[i]!));
    console.log(`| ${f} | ${Math.round(median(r.node))} | ${Math.round(median(r.ch))} | ${Math.round(tot)} | ${Math.round(median(r.wall))} | ${Math.round(1e9 / tot).toLocaleString('en-US')} |`);
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
