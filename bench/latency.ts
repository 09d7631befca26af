/**
 * Latency from kernel event to queryable timeline at a sustained event rate: the time
 * from the moment an agent emits an event until a ClickHouse query sees it in hop_events.
 *
 *   npm run build && node dist/bench/latency.js [--rate 100000] [--seconds 60] [--warmup 10]
 *       [--sample 1000] [--poll-ms 50] [--no-breakdown] [--env HOPTRACE_X=value ...]
 *
 * Real services as separate processes, on a topic, database and consumer group of their
 * own: one `hoptrace agent --recording FILE --rate RATE/3 --retime` per node of a generated
 * 3-node recording, and one `hoptrace correlator`, with the default options (or --env).
 * `--retime` stamps each record with the monotonic clock when the agent reads it and the
 * real wall-minus-monotonic offset, so an event's wall_ts_ns is its emission time.
 *
 * The prober: a materialized view in the bench's database copies (agent, seq, wall_ts_ns)
 * of every event with seq % SAMPLE = 0 as hop_events is inserted (the same insert, right
 * after the hop_events part is committed, so it is seen no earlier than hop_events). Every
 * --poll-ms the prober asks for the sampled events at or beyond, per agent, the first seq
 * not seen yet; latency = (time the answer arrived) - wall_ts_ns, for each sample the first
 * time it appears. A late sample holds its agent's watermark until it shows up, so none is
 * missed; samples never seen by the end are counted. Only events emitted in the window
 * [warm-up, warm-up + seconds] count. After the window the agents stop, the correlator
 * drains (group lag 0) and the rate achieved is counted in ClickHouse.
 *
 * Breakdown (on by default; --no-breakdown): an observer consumer in this process reads
 * the topic too, and for each sampled event notes the Kafka message's CreateTime (kafkajs
 * stamps it at send: the agent's batching, linger and in-flight window end there) and when
 * a fetch returned it (Kafka: produce, acks, fetch). The rest, to visible, is the
 * correlator (its own fetch, decode, rows, insert) and ClickHouse. Costs this process a
 * little CPU (shown in the CPU table).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, createWriteStream, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Consumer, Kafka } from 'kafkajs';
import { pino } from 'pino';
import { clickhouseCpuS, cpuStallUs, deleteTopics, isolatedConfig, kafkaCpuS, numArg, percentile, procCpuS, sleep } from './common.js';
import { generateRecording } from '../services/agent/generate.js';
import { AGENT_NODE_FLAGS } from '../services/agent/node-flags.js';
import { decodeBatch } from '../services/shared/batch.js';
import { createClickHouse, migrate, type ClickHouseClient } from '../services/shared/clickhouse.js';
import { loadConfig, type Config } from '../services/shared/config.js';
import { createKafka, ensureTopic, lagReader } from '../services/shared/kafka.js';
import { RECORD_SIZE } from '../services/shared/record.js';
import { decodeHeader, HEADER_SIZE } from '../services/shared/recording.js';
import { str } from '../services/shared/sql.js';

const log = pino({ level: 'warn' });
const RATE = numArg('rate', 100_000);
const SECONDS = numArg('seconds', 60);
const WARMUP = numArg('warmup', 10);
const SAMPLE = numArg('sample', 1000);
const POLL_MS = numArg('poll-ms', 50);
const BREAKDOWN = !process.argv.includes('--no-breakdown');
/** --env K=V (repeatable): options for the agents and the correlator, e.g. HOPTRACE_LINGER_MS=20. */
const EXTRA_ENV: Record<string, string> = Object.fromEntries(
  process.argv.flatMap((a, i) => (a === '--env' ? [process.argv[i + 1] ?? ''] : [])).map((kv) => {
    const m = /^(HOPTRACE_[A-Z_]+)=(.*)$/.exec(kv);
    if (!m) throw new Error(`--env needs HOPTRACE_NAME=value, got ${JSON.stringify(kv)}`);
    return [m[1]!, m[2]!];
  }),
);
const CLI = fileURLToPath(new URL('../services/cli/main.js', import.meta.url));
const AGENTS = 3; // the generator's nodes, one agent each

/** Wall clock in ms with sub-ms precision (the same clock the retimed agents stamp wall_ts_ns with). */
const nowMs = () => performance.timeOrigin + performance.now();

interface Child {
  name: string;
  proc: ChildProcess;
  logFile: string;
  exited: Promise<number | null>;
  running: boolean;
}

function startChild(dir: string, name: string, args: string[], env: NodeJS.ProcessEnv, onLine?: (line: string) => void): Child {
  const logFile = join(dir, `${name}.log`);
  const proc = spawn(process.execPath, [...(args[0] === 'agent' ? AGENT_NODE_FLAGS : []), CLI, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.pipe(createWriteStream(logFile));
  if (onLine) createInterface({ input: proc.stderr! }).on('line', onLine);
  const child: Child = { name, proc, logFile, running: true, exited: Promise.resolve(null) };
  child.exited = new Promise((resolve) =>
    proc.once('exit', (code) => {
      child.running = false;
      resolve(code);
    }),
  );
  return child;
}

const tail = (c: Child) => readFileSync(c.logFile, 'utf8').trim().split('\n').slice(-5).join('\n');

async function stopChild(c: Child, timeoutMs = 20_000): Promise<void> {
  if (!c.running) return;
  c.proc.kill('SIGTERM');
  const t = setTimeout(() => c.running && c.proc.kill('SIGKILL'), timeoutMs);
  await c.exited;
  clearTimeout(t);
}

/** Waits until a consumer group has members and is Stable (joined, partitions assigned). */
async function waitForGroup(kafka: Kafka, groupId: string, watch?: Child): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    for (const deadline = Date.now() + 90_000; Date.now() < deadline; await sleep(200)) {
      if (watch && !watch.running) throw new Error(`${watch.name} exited:\n${tail(watch)}`);
      const g = (await admin.describeGroups([groupId])).groups[0];
      if (g?.state === 'Stable' && g.members.length > 0) return;
    }
    throw new Error(`consumer group ${groupId} not stable after 90 s`);
  } finally {
    await admin.disconnect();
  }
}

/** Sampled events the first time a query shows them. */
function createProber(ch: ClickHouseClient, agents: string[]) {
  const seen = new Map<string, { wallMs: number; visMs: number }>();
  const low = new Map(agents.map((a) => [a, 0]));
  let polls = 0;
  let queryMs = 0;
  let maxRows = 0;
  async function poll() {
    const where = [...low].map(([a, s]) => `(agent = ${str(a)} AND seq >= ${s})`).join(' OR ');
    const t0 = nowMs();
    const rs = await ch.query({ query: `SELECT agent, seq, wall_ts_ns FROM latency_probe WHERE ${where}`, format: 'TabSeparated' });
    const text = await rs.text();
    const vis = nowMs();
    polls++;
    queryMs += vis - t0;
    let rows = 0;
    for (const line of text.split('\n')) {
      if (!line) continue;
      rows++;
      const [agent, seq, wall] = line.split('\t');
      const key = `${agent}:${seq}`;
      if (!seen.has(key)) seen.set(key, { wallMs: Number(wall) / 1e6, visMs: vis });
    }
    maxRows = Math.max(maxRows, rows);
    for (const [a, s] of low) {
      let next = s;
      while (seen.has(`${a}:${next}`)) next += SAMPLE;
      low.set(a, next);
    }
  }
  let stopped = false;
  let errors = 0;
  const loop = (async () => {
    while (!stopped) {
      const t0 = nowMs();
      // A failed poll (ClickHouse busy) only delays detection: the next one sees the same rows, later.
      await poll().catch(() => void errors++);
      await sleep(Math.max(0, POLL_MS - (nowMs() - t0)));
    }
  })();
  return {
    seen,
    poll,
    async stop() {
      stopped = true;
      await loop;
    },
    stats: () => ({ polls, errors, meanQueryMs: queryMs / Math.max(1, polls), maxRows }),
  };
}

/** The breakdown's observer: when each sampled event's Kafka message was created and fetched. */
async function startObserver(kafka: Kafka, cfg: Config, groupId: string) {
  const stages = new Map<string, { sentMs: number; fetchedMs: number }>();
  const consumer: Consumer = kafka.consumer({ groupId, maxBytesPerPartition: 16 << 20, maxBytes: 64 << 20, allowAutoTopicCreation: false });
  await consumer.connect();
  await consumer.subscribe({ topics: [cfg.hopsTopic], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    partitionsConsumedConcurrently: 2,
    eachBatch: async ({ batch }) => {
      const fetchedMs = nowMs();
      for (const m of batch.messages) {
        const b = decodeBatch(m.value!);
        const sentMs = Number(m.timestamp);
        for (let i = 0; i < b.count; i++) {
          const seq = b.seqOf(i);
          if (seq % SAMPLE === 0) stages.set(`${b.agent}:${seq}`, { sentMs, fetchedMs });
        }
      }
    },
  });
  return { stages, consumer };
}

function recordingInfo(file: string): { node: string; records: number } {
  const hb = Buffer.alloc(HEADER_SIZE);
  const fd = openSync(file, 'r');
  readSync(fd, hb, 0, HEADER_SIZE, 0);
  closeSync(fd);
  return { node: decodeHeader(hb, file).node, records: Math.floor((statSync(file).size - HEADER_SIZE) / RECORD_SIZE) };
}

interface CpuSnap {
  t: number;
  agents: number;
  correlator: number;
  kafka: number;
  clickhouse: number;
  bench: number;
  stallUs: number;
}

async function main() {
  // Options given with --env apply here too (topic partitions are set where the topic is created).
  const own = isolatedConfig();
  const cfg = loadConfig({ hopsTopic: own.hopsTopic, clickhouseDatabase: own.clickhouseDatabase, groupId: own.groupId, metricsPort: 0 }, { ...process.env, ...EXTRA_ENV });
  const dir = mkdtempSync(join(tmpdir(), 'hopbench-latency-'));
  const kafka = createKafka(cfg, 'bench-latency', log);
  const ch = createClickHouse(cfg);
  const children: Child[] = [];
  const observerGroup = `${cfg.groupId}-observer`;
  let observer: Consumer | undefined;
  let files: string[] = [];
  let failed = false;
  try {
    const perAgent = Math.round(RATE / AGENTS);
    const needed = Math.ceil(perAgent * (WARMUP + SECONDS + 5));
    const t0 = Date.now();
    const gen = await generateRecording({ outDir: dir, events: Math.ceil(needed * AGENTS * 1.03), seed: 7 });
    files = gen.files;
    const recs = gen.files.map(recordingInfo);
    for (const [i, r] of recs.entries()) if (r.records < needed) throw new Error(`${gen.files[i]}: ${r.records} records, ${needed} needed`);
    console.error(`recording: ${gen.events} events, ${gen.flows} flows, ${AGENTS} nodes, in ${((Date.now() - t0) / 1000).toFixed(0)} s (${dir})`);

    await migrate(cfg);
    await ch.command({ query: `CREATE MATERIALIZED VIEW latency_probe ENGINE = MergeTree() ORDER BY (agent, seq) AS SELECT agent, seq, wall_ts_ns FROM hop_events WHERE seq % ${SAMPLE} = 0` });
    await ensureTopic(cfg, kafka, log);

    const env: NodeJS.ProcessEnv = { ...process.env, HOPTRACE_HOPS_TOPIC: cfg.hopsTopic, HOPTRACE_CLICKHOUSE_DB: cfg.clickhouseDatabase, HOPTRACE_GROUP_ID: cfg.groupId, HOPTRACE_METRICS_PORT: '0', ...EXTRA_ENV };
    const used = loadConfig({}, env);
    const progress: { t: number; events: number; writes: number }[] = [];
    const correlator = startChild(dir, 'correlator', ['correlator'], { ...env, HOPTRACE_LOG_LEVEL: 'info' }, (line) => {
      if (!line.includes('correlator progress')) return;
      try {
        const p = JSON.parse(line) as { events: number; writes: number };
        progress.push({ t: nowMs(), events: p.events, writes: p.writes });
      } catch {
        /* not a log line of ours */
      }
    });
    children.push(correlator);
    await waitForGroup(kafka, cfg.groupId, correlator);
    let stages: Map<string, { sentMs: number; fetchedMs: number }> | undefined;
    if (BREAKDOWN) {
      const o = await startObserver(kafka, cfg, observerGroup);
      observer = o.consumer;
      stages = o.stages;
      await waitForGroup(kafka, observerGroup);
    }

    const prober = createProber(ch, recs.map((r) => r.node));
    const spawnMs = nowMs();
    const agents = gen.files.map((f, i) => startChild(dir, `agent-${recs[i]!.node}`, ['agent', '--recording', f, '--rate', String(perAgent), '--retime'], { ...env, HOPTRACE_LOG_LEVEL: 'warn' }));
    children.push(...agents);
    const winStart = spawnMs + WARMUP * 1000;
    const winEnd = winStart + SECONDS * 1000;
    const snap = (): CpuSnap => {
      const c = process.cpuUsage();
      return { t: nowMs(), agents: agents.reduce((s, a) => s + procCpuS(a.proc.pid!), 0), correlator: procCpuS(correlator.proc.pid!), kafka: kafkaCpuS(), clickhouse: clickhouseCpuS(), bench: (c.user + c.system) / 1e6, stallUs: cpuStallUs() };
    };
    const checkAlive = () => {
      for (const c of children) if (!c.running) throw new Error(`${c.name} exited during the window:\n${tail(c)}`);
    };
    await sleep(winStart - nowMs());
    checkAlive();
    const cpu0 = snap();
    console.error(`window: ${SECONDS} s from now`);
    await sleep(winEnd - nowMs());
    const cpu1 = snap();
    checkAlive();
    const windowProgress = progress.filter((p) => p.t >= cpu0.t && p.t <= cpu1.t);
    await sleep(1000); // events of the window's last chunks

    // Stop the agents (they flush), let the correlator drain, look once more.
    await Promise.all(agents.map((a) => stopChild(a)));
    const drainStart = nowMs();
    const lag = lagReader(cfg, kafka);
    try {
      for (;;) {
        if (!correlator.running) throw new Error(`correlator exited:\n${tail(correlator)}`);
        if ((await lag.read()) === 0) break;
        if (nowMs() - drainStart > 300_000) throw new Error('correlator lag not 0 after 300 s');
        await sleep(500);
      }
    } finally {
      await lag.close();
    }
    await prober.stop();
    await prober.poll();
    const drainS = (nowMs() - drainStart) / 1000;

    // Results: samples emitted in the window.
    const inWindow = [...prober.seen].filter(([, s]) => s.wallMs >= winStart && s.wallMs < winEnd);
    const lat = inWindow.map(([, s]) => s.visMs - s.wallMs).sort((a, b) => a - b);
    const [{ n }] = (await (await ch.query({ query: `SELECT uniqExact(agent, seq) AS n FROM latency_probe WHERE wall_ts_ns >= ${Math.round(winStart * 1e6)} AND wall_ts_ns < ${Math.round(winEnd * 1e6)}`, format: 'JSONEachRow' })).json<{ n: string }>()) as [{ n: string }];
    const [{ events }] = (await (await ch.query({ query: `SELECT count() AS events FROM hop_events WHERE wall_ts_ns >= ${Math.round(winStart * 1e6)} AND wall_ts_ns < ${Math.round(winEnd * 1e6)}`, format: 'JSONEachRow' })).json<{ events: string }>()) as [{ events: string }];

    const ms = (x: number) => (Number.isFinite(x) ? `${Math.round(x).toLocaleString('en-US')} ms` : '-');
    const row = (name: string, xs: number[]) => `| ${name} | ${ms(percentile(xs, 0.5))} | ${ms(percentile(xs, 0.9))} | ${ms(percentile(xs, 0.99))} | ${ms(xs[xs.length - 1]!)} |`;
    const ps = prober.stats();
    const secs = (cpu1.t - cpu0.t) / 1000;
    const ins = windowProgress.length >= 2 ? { events: windowProgress.at(-1)!.events - windowProgress[0]!.events, writes: windowProgress.at(-1)!.writes - windowProgress[0]!.writes, s: (windowProgress.at(-1)!.t - windowProgress[0]!.t) / 1000 } : undefined;

    console.log(`\nkernel event (agent emission, --retime) -> visible in hop_events; ${AGENTS} agents x ${perAgent.toLocaleString('en-US')} events/s, ${SECONDS} s window after ${WARMUP} s warm-up, node ${process.version}, 2 shared cores\n`);
    console.log('| | value |');
    console.log('|---|---:|');
    console.log(`| target rate | ${(perAgent * AGENTS).toLocaleString('en-US')} events/s |`);
    console.log(`| achieved rate (events emitted in the window, all visible after the drain) | ${Math.round(Number(events) / SECONDS).toLocaleString('en-US')} events/s |`);
    console.log(`| sampled events in the window (seq % ${SAMPLE} = 0): timed by the prober / stored | ${lat.length.toLocaleString('en-US')} / ${Number(n).toLocaleString('en-US')} |`);
    console.log(`| latency p50 / p90 / p99 / max | ${ms(percentile(lat, 0.5))} / ${ms(percentile(lat, 0.9))} / ${ms(percentile(lat, 0.99))} / ${ms(lat[lat.length - 1]!)} |`);
    console.log(`| share of samples over 2 s | ${((100 * lat.filter((x) => x > 2000).length) / Math.max(1, lat.length)).toFixed(2)} % |`);
    console.log(`| prober: polls (failed), mean query time, most rows in one answer | ${ps.polls.toLocaleString('en-US')} every ${POLL_MS} ms (${ps.errors}), ${ps.meanQueryMs.toFixed(1)} ms, ${ps.maxRows} |`);
    if (ins) {
      console.log(`| correlator in the window: events written/s (keeping up = the achieved rate) | ${Math.round(ins.events / ins.s).toLocaleString('en-US')} events/s |`);
      console.log(`| correlator inserts: hop_events rows per insert (mean), inserts/s | ${Math.round(ins.events / Math.max(1, ins.writes)).toLocaleString('en-US')}, ${(ins.writes / ins.s).toFixed(1)}/s |`);
    }
    console.log(`| drain after the agents stopped (lag 0) | ${drainS.toFixed(1)} s |`);

    if (stages) {
      const parts = inWindow.flatMap(([k, s]) => {
        const st = stages!.get(k);
        return st ? [{ agent: st.sentMs - s.wallMs, kafka: st.fetchedMs - st.sentMs, rest: s.visMs - st.fetchedMs, total: s.visMs - s.wallMs }] : [];
      });
      const col = (f: (p: (typeof parts)[number]) => number) => parts.map(f).sort((a, b) => a - b);
      console.log(`\nWhere the time goes (${parts.length.toLocaleString('en-US')} samples; each stage's percentiles on their own, so they do not add up):\n`);
      console.log('| stage | p50 | p90 | p99 | max |');
      console.log('|---|---:|---:|---:|---:|');
      console.log(row('agent: emitted -> Kafka message created (batching, linger, in-flight window)', col((p) => p.agent)));
      console.log(row('Kafka: created -> fetched by a consumer (produce, acks=all, fetch)', col((p) => p.kafka)));
      console.log(row(`correlator + ClickHouse: fetched -> visible to the prober (decode, rows, insert; prober polls every ${POLL_MS} ms)`, col((p) => p.rest)));
      console.log(row('total', col((p) => p.total)));
    }

    const cores = (k: keyof CpuSnap) => ((cpu1[k] - cpu0[k]) / secs).toFixed(2);
    console.log('\nCPU during the window (cores; Kafka and ClickHouse include whatever else uses them):\n');
    console.log('| agents (3 processes) | correlator | Kafka broker | ClickHouse | this process (prober, observer) |');
    console.log('|---:|---:|---:|---:|---:|');
    console.log(`| ${cores('agents')} | ${cores('correlator')} | ${cores('kafka')} | ${cores('clickhouse')} | ${cores('bench')} |`);
    console.log(`\nCPU pressure during the window: ${((100 * (cpu1.stallUs - cpu0.stallUs)) / 1e6 / secs).toFixed(0)} % of the time some runnable task waited for a CPU (/proc/pressure/cpu; near 0 = the figures are the system's own, high = other work on the machine stretched them).`);

    console.log(`\nSettings: ${Object.keys(EXTRA_ENV).length ? Object.entries(EXTRA_ENV).map(([k, v]) => `${k}=${v}`).join(', ') : 'defaults'}: batchRecords ${used.batchRecords}, lingerMs ${used.lingerMs}, partialLingerMs ${used.partialLingerMs || 4 * used.lingerMs}, maxInFlight ${used.maxInFlight}, topicPartitions ${used.topicPartitions}, insertRows ${used.insertRows}, insertDelayMs ${used.insertDelayMs}, insertFormat ${used.insertFormat}; correlator consumer: kafkajs fetch minBytes 1, maxWaitTimeInMs 5000 (defaults), 16 MiB per partition, all partitions at once, batches fetched within insertDelayMs share one insert (at most insertRows).`);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await observer?.disconnect().catch(() => undefined);
    await Promise.all(children.map((c) => stopChild(c)));
    if (failed) for (const c of children) console.error(`--- ${c.name} (${c.logFile}):\n${tail(c)}`);
    const admin = kafka.admin();
    await admin.connect().catch(() => undefined);
    await admin.deleteGroups([cfg.groupId, observerGroup]).catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
    await deleteTopics(cfg, [cfg.hopsTopic]).catch(() => undefined);
    await ch.close();
    const root = createClickHouse(cfg, 'default');
    await root.command({ query: `DROP DATABASE IF EXISTS ${cfg.clickhouseDatabase}` }).catch(() => undefined);
    await root.close();
    // The recording is large; the services' logs are kept when something failed.
    if (!failed) rmSync(dir, { recursive: true, force: true });
    else for (const f of files) rmSync(f, { force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
