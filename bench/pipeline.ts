/**
 * Throughput of the agent and the correlator on replayed events, per core.
 *
 *   npm run build && node dist/bench/pipeline.js [--events 1000000] [--runs 3] [--formats TabSeparated,RowBinary]
 *
 * Needs the local Kafka and ClickHouse (`npm run bench` starts them). Each run uses a
 * topic and database of its own. "Per core" divides events by the CPU seconds the
 * measured process used (process.cpuUsage), so the figure is comparable across a busy
 * 2-core machine; wall-clock rates are shown beside it. Medians of the runs.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { clickhouseCpuS, deleteTopics, isolatedConfig, median, numArg, strArg } from './common.js';
import { createAgent, type OutMessage } from '../services/agent/agent.js';
import { generateRecording } from '../services/agent/generate.js';
import { startAgent } from '../services/agent/main.js';
import { createAgentMetrics } from '../services/agent/metrics.js';
import { openRecording } from '../services/agent/recording-source.js';
import { startCorrelator } from '../services/correlator/main.js';
import { createClickHouse } from '../services/shared/clickhouse.js';
import { loadConfig, type Config } from '../services/shared/config.js';

const log = pino({ level: 'warn' });
const EVENTS = numArg('events', 1_000_000);
const RUNS = numArg('runs', 3);
/** Insert formats the correlator stage is run with (--formats RowBinary,TabSeparated). */
const FORMATS = strArg('formats', 'TabSeparated,RowBinary').split(',');

interface Sample {
  events: number;
  wallS: number;
  cpuS: number;
}

async function measure(fn: () => Promise<number>): Promise<Sample> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const events = await fn();
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  return { events, wallS, cpuS: (c.user + c.system) / 1e6 };
}


async function agentToNull(files: string[], cfg: Config): Promise<number> {
  let n = 0;
  for (const file of files) {
    const source = await openRecording({ file });
    const agent = createAgent({ cfg, source, sink: { where: 'null', send: async (m: OutMessage[]) => void (n += m.reduce((s, x) => s + x.records, 0)) }, partitions: 6, log, metrics: createAgentMetrics() });
    await agent.run();
  }
  return n;
}

async function agentToKafka(files: string[], cfg: Config): Promise<number> {
  const running = [];
  for (const file of files) running.push(await startAgent(cfg, await openRecording({ file }), log, { metrics: false }));
  await Promise.all(running.map((r) => r.done));
  return running.reduce((s, r) => s + r.agent.stats().sent, 0);
}

async function correlatorDrain(cfg: Config, expected: number): Promise<number> {
  const c = await startCorrelator(cfg);
  while (c.stats().events < expected) await new Promise((r) => setTimeout(r, 50));
  await c.close();
  return c.stats().events;
}

async function dropDb(cfg: Config) {
  const ch = createClickHouse(cfg, 'default');
  await ch.command({ query: `DROP DATABASE IF EXISTS ${cfg.clickhouseDatabase}` });
  await ch.close();
}



async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'hopbench-'));
  const gen = await generateRecording({ outDir: dir, events: EVENTS, seed: 99 });
  console.error(`recording: ${gen.events} events, ${gen.flows} flows, 3 nodes (${dir})`);
  const rows: Record<string, { perCore: number[]; wall: number[]; extra: number[] }> = {};
  const add = (name: string, s: Sample, extraCpu = 0) => {
    const r = (rows[name] ??= { perCore: [], wall: [], extra: [] });
    r.perCore.push(s.events / s.cpuS);
    r.wall.push(s.events / s.wallS);
    r.extra.push(extraCpu ? s.events / (s.cpuS + extraCpu) : NaN);
  };
  for (let run = 0; run < RUNS; run++) {
    const cfg = isolatedConfig();
    add('agent: recording -> batches (null sink)', await measure(() => agentToNull(gen.files, cfg)));
    add('agent: recording -> Kafka', await measure(() => agentToKafka(gen.files, cfg)));
    // The same topic drained once per insert format, each by a group and into a database of its own.
    for (const format of FORMATS) {
      const fcfg = loadConfig({ ...cfg, insertFormat: format, groupId: `${cfg.groupId}-${format}`, clickhouseDatabase: `${cfg.clickhouseDatabase}_${format}` });
      const ch0 = clickhouseCpuS();
      const s = await measure(() => correlatorDrain(fcfg, gen.events));
      add(`correlator: Kafka -> ClickHouse, ${format}`, s, clickhouseCpuS() - ch0);
      await dropDb(fcfg);
    }
    await deleteTopics(cfg, [cfg.hopsTopic]);
    console.error(`run ${run + 1}/${RUNS} done`);
  }
  const fmt = (n: number) => (Number.isNaN(n) ? '-' : Math.round(n).toLocaleString('en-US'));
  console.log(`\n${EVENTS.toLocaleString('en-US')} events, median of ${RUNS} runs, node ${process.version}, 2 shared cores\n`);
  console.log('| stage | events/s per core (node CPU) | events/s wall | events/s per core incl. ClickHouse CPU |');
  console.log('|---|---:|---:|---:|');
  for (const [name, r] of Object.entries(rows)) console.log(`| ${name} | ${fmt(median(r.perCore))} | ${fmt(median(r.wall))} | ${fmt(median(r.extra))} |`);
  const base = rows['correlator: Kafka -> ClickHouse, TabSeparated'];
  if (base) {
    // Ratios within each run (same recording, same topic, same machine state), then the median.
    console.log('\n| insert format | per core (node CPU) vs TabSeparated | per core incl. ClickHouse vs TabSeparated | wall vs TabSeparated |');
    console.log('|---|---:|---:|---:|');
    for (const format of FORMATS) {
      const r = rows[`correlator: Kafka -> ClickHouse, ${format}`]!;
      const ratio = (k: 'perCore' | 'extra' | 'wall') => median(r[k].map((x, i) => x / base[k][i]!)).toFixed(2);
      console.log(`| ${format} | ${ratio('perCore')}x | ${ratio('extra')}x | ${ratio('wall')}x |`);
    }
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
