/**
 * Live capture bench (root, real kernel): two namespaces joined by a veth pair,
 * traffic only between them. Sections (--sections, default all, in this order):
 *
 *  drain       Events drained per agent core, in process: a TCP stream of small
 *              NODELAY writes (one segment each, plus ACKs) while a live source
 *              drains to nothing; records drained / this process's CPU seconds.
 *  agent       The full agent path, ring buffer -> decode -> batches -> Kafka: the
 *              real `hoptrace agent --live` process owning the two namespaces, with
 *              1..N parallel small-write streams (--agent-streams) to push it to the
 *              highest event rate the veth traffic reaches (a pfifo root qdisc on the
 *              veth ends, as a NIC has, so each packet passes all three device hooks).
 *              Events = records read back
 *              from its Kafka topic; CPU = its /proc/<pid>/stat over the traffic and
 *              until Kafka has acknowledged everything; RSS steady (median VmRSS over
 *              the second half of the traffic) and peak (VmHWM). The traffic runs on
 *              CPU 0 and the agent alone on the last CPU: with tick-based CPU
 *              accounting, softirq work on the agent's CPU would be charged to it.
 *  recording   `hoptrace agent --recording FILE --rate 0` (a generated recording,
 *              --recording-events in the replayed file): reading outruns Kafka, so
 *              the agent holds its full buffer; its RSS is the other maximum load.
 *  kernel      The capture's cost inside the packet path: nanoseconds per run of
 *              each device hook's BPF program (kernel.bpf_stats_enabled, set for
 *              the section and restored), with 1 stream of 128 KiB writes, when the
 *              namespace is not owned, when every flow is sampled out, and with full
 *              capture, each with tracepoints and with tcx links as device hooks
 *              (not owned: a namespace of lo only is owned, which the traffic does not
 *              cross). Each hook runs once per packet; on the veth pair (noqueue)
 *              net_dev_start_xmit returns at once, so its ns/run is the floor: the
 *              tracepoint's call into BPF plus the stats clock reads.
 *  throughput  TCP throughput, 1 stream of 128 KiB writes, capture off / on (in
 *              process, namespaces owned) / on but not owning them; per-repeat
 *              ratios to off, then the median.
 *  sampling    TCP throughput, --tp-streams senders x --tp-conns connections of
 *              128 KiB writes (round robin: every flow carries the same bytes):
 *              capture off / full / 1-in-N flow sampling (--sample), capture by the
 *              agent process to Kafka; per-repeat ratios to off, then the median.
 *              One more row attaches the programs with every flow sampled out and
 *              nothing in user space: the kernel side's share of the cost. Run
 *              twice: traffic and capture sharing every CPU (on 2 CPUs, every CPU
 *              second the agent and the broker take is taken from the traffic),
 *              then traffic on CPU 0 and the agent on the last CPU, as on a node
 *              where the agent has a CPU budget of its own.
 *              Sampling keeps or drops whole flows (symmetric tuple hash), so the
 *              kept share varies run to run around 1/N: the kernel's emitted /
 *              ringbuf_full / sampled_out counters are shown. Beside Gbit/s, bytes
 *              per CPU second (senders, sinks, ksoftirqd, capture) and its ratio.
 *  lab         TCP throughput over the lab (`hoptrace lab`, which it brings up and
 *              takes down again: a lab already up is replaced), pod to pod across
 *              the three nodes, --tp-streams x --tp-conns flows of 128 KiB writes,
 *              everything sharing every CPU: capture off; one agent owning the node
 *              and pod namespaces (a node's view: one program set per hook) with every
 *              flow sampled out, full capture, 1-in-N and 1-in-4N sampling; the lab's three
 *              agents (three program sets per hook on this one kernel), full and 1-in-N.
 *              The broker's CPU over each run (var/run/kafka.pid; it idles at a few
 *              percent with nothing to do, so "off" shows its floor): on these 2 CPUs the
 *              capture's requests to it come out of the traffic too.
 *              Beside events/s, the records lost in each repeat (kernel ring full plus
 *              the agent's queue_full: a ratio bought with losses is not full capture)
 *              and the agents' major GCs per second (hoptrace_agent_gcs_total).
 *              Each run is preceded by --warmup seconds (default 3) of the same traffic
 *              with the same agents, not measured: a fresh agent's JIT compilation is
 *              a one-off that a long-running agent does not pay (0: measure it too).
 *              Except one row: a full-capture agent started in this process's session (the
 *              traffic's autogroup, where every other agent gets a session of its own) and
 *              measured from its start, whose losses show what a cold agent without a CPU
 *              weight of its own drops.
 *
 * Every figure is the median of --repeat runs. Each agent process gets a Kafka
 * topic of its own, deleted once counted; namespaces, processes, topics and the
 * generated recording are removed on every exit path.
 *
 * Run:  npm run bench:live -- [--seconds 3] [--repeat 3]
 *   [--sections drain,agent,recording,kernel,throughput,sampling,lab] [--agent-streams 1,2,4]
 *   [--tp-streams 8] [--tp-conns 8] [--sample 8] [--recording-events 2000000] [--warmup 3]
 *   [--lab-rows off,one-none,one-full]   (only these lab rows, 'off' always: more repeats of a comparison
 *                                         in the same time, where single repeats vary by +-10%)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateRecording } from '../services/agent/generate.js';
import { AGENT_NODE_FLAGS } from '../services/agent/node-flags.js';
import { createLiveSource, parseLiveOptions, type LiveSource } from '../services/agent/live/index.js';
import type { DeviceHooks } from '../services/agent/live/options.js';
import { loadConfig } from '../services/shared/config.js';
import { RECORD_SIZE } from '../services/shared/record.js';
import { HEADER_SIZE } from '../services/shared/recording.js';
import { deleteTopics, fmt, kafkaCpuS, median, procCpuS, procMemMiB, sleep, topicRecords, withBpfStats } from './common.js';
import { agentPlans, startAgents, stopAgents } from '../services/lab/agents.js';
import { labDown, labUp } from '../services/lab/index.js';
import { BULK_WRITE, createLab, pythonRunner, tcpBetween, type BenchLab, type TcpResult, type TcpRun } from './live/lab.js';

const SECTIONS = ['drain', 'agent', 'recording', 'kernel', 'throughput', 'sampling', 'lab'] as const;
type Section = (typeof SECTIONS)[number];

interface Args {
  seconds: number;
  repeat: number;
  sections: Section[];
  agentStreams: number[];
  tpStreams: number;
  tpConns: number;
  sample: number;
  recordingEvents: number;
  warmup: number;
  /** Lab rows to run (their Mode names); null: all. */
  labRows: string[] | null;
}

const USAGE =
  'usage: live-capture.js [--seconds N] [--repeat N] [--sections drain,agent,recording,kernel,throughput,sampling,lab] [--agent-streams 1,2,4] [--tp-streams N] [--tp-conns N] [--sample N] [--recording-events N] [--warmup S] [--lab-rows off,one-none,one-full,...]';

function parseArgs(argv: string[]): Args {
  const out: Args = { seconds: 3, repeat: 3, sections: [...SECTIONS], agentStreams: [1, 2, 4], tpStreams: 8, tpConns: 8, sample: 8, recordingEvents: 2_000_000, warmup: 3, labRows: null };
  const ints = (k: string, v: string | undefined) => {
    const xs = (v ?? '').split(',').map(Number);
    if (!xs.length || !xs.every((x) => Number.isInteger(x) && x > 0)) throw new Error(`${USAGE}\n(bad ${k} ${v})`);
    return xs;
  };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]!;
    const v = argv[i + 1];
    if (k === '--seconds') out.seconds = ints(k, v)[0]!;
    else if (k === '--repeat') out.repeat = ints(k, v)[0]!;
    else if (k === '--agent-streams') out.agentStreams = ints(k, v);
    else if (k === '--tp-streams') out.tpStreams = ints(k, v)[0]!;
    else if (k === '--tp-conns') out.tpConns = ints(k, v)[0]!;
    else if (k === '--sample') out.sample = ints(k, v)[0]!;
    else if (k === '--recording-events') out.recordingEvents = ints(k, v)[0]!;
    else if (k === '--warmup') {
      out.warmup = Number(v);
      if (!Number.isInteger(out.warmup) || out.warmup < 0) throw new Error(`${USAGE}\n(bad ${k} ${v})`);
    }
    else if (k === '--lab-rows') out.labRows = (v ?? '').split(',');
    else if (k === '--sections') {
      const s = (v ?? '').split(',');
      if (!s.every((x): x is Section => (SECTIONS as readonly string[]).includes(x))) throw new Error(`${USAGE}\n(bad --sections ${v})`);
      out.sections = SECTIONS.filter((x) => s.includes(x));
    } else throw new Error(`${USAGE}\n(unknown ${k})`);
  }
  return out;
}

const row = (cells: (string | number)[]) => console.log(`| ${cells.join(' | ')} |`);
const header = (cells: string[]) => {
  row(cells);
  row(cells.map((_, i) => (i ? '---:' : '---')));
};
/** `xs` rotated left by `n`: repeats run the compared modes in different orders, so drift does not favour one. */
const rotate = <T>(xs: readonly T[], n: number): T[] => xs.map((_, i) => xs[(i + n) % xs.length]!);
const DEVICE_HOOKS = ['netif_receive_skb', 'net_dev_queue', 'tcx/ingress', 'tcx/egress', 'net_dev_start_xmit'];
const SMALL = 64; // bytes per NODELAY write: one small segment each

// ---- in-process live source (drain, throughput) ----

type Mode = 'off' | 'owned' | 'not-owned' | 'sampled-out';

interface InProcessRun {
  tcp: TcpResult;
  /** Per device hook: runs and ns spent over the traffic (0 unless kernel.bpf_stats_enabled). */
  hooks: Map<string, { runs: number; ns: number }>;
  drained: number;
  cpuS: number;
  /** The CPU window: senders start -> last drain. Rates use tcp.seconds (the senders' own). */
  seconds: number;
  ringLost: number;
  queueLost: number;
}

async function inProcessRun(lab: BenchLab, mode: Mode, o: TcpRun, deviceHooks: DeviceHooks = 'tc', queueIdleMs?: number): Promise<InProcessRun> {
  let source: LiveSource | null = null;
  let drained = 0;
  let consumer: Promise<void> = Promise.resolve();
  if (mode !== 'off') {
    // not-owned: own a namespace the traffic does not cross: tracepoints reject every event in the
    // kernel, tcx links are on its lo only. sampled-out: 1 flow in 2^20 kept, so (almost surely) none
    // of the few flows here.
    source = createLiveSource(
      parseLiveOptions({ netns: mode === 'not-owned' ? [lab.idle] : [lab.a, lab.b], sampleN: mode === 'sampled-out' ? 1 << 20 : 1, node: 'bench', deviceHooks, queueIdleMs }),
    );
    const s = source;
    consumer = (async () => {
      for await (const c of s.chunks()) drained += c.count;
    })();
  }
  let cpu0 = process.cpuUsage();
  let t0 = process.hrtime.bigint();
  const hookStats = () => new Map((source?.programStats() ?? []).filter((p) => DEVICE_HOOKS.includes(p.tracepoint)).map((p) => [p.tracepoint, p]));
  let hooks0 = hookStats();
  try {
    const tcp = await lab.tcp(o, () => {
      cpu0 = process.cpuUsage();
      t0 = process.hrtime.bigint();
      hooks0 = hookStats();
    });
    const hooks = new Map([...hookStats()].map(([k, p]) => [k, { runs: p.runs - (hooks0.get(k)?.runs ?? 0), ns: p.runNs - (hooks0.get(k)?.runNs ?? 0) }]));
    await sleep(50); // let the last timer drain run
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    const st = source?.stats() ?? {};
    return { tcp, hooks, drained, cpuS: (cpu.user + cpu.system) / 1e6, seconds, ringLost: st.kernel_ringbuf_full ?? 0, queueLost: st.queue_full ?? 0 };
  } finally {
    await source?.stop();
    await consumer;
  }
}

// ---- agent processes (agent, recording, sampling) ----

const CLI = join(dirname(fileURLToPath(import.meta.url)), '../services/cli/main.js');
const kafkaCfg = loadConfig({ metricsPort: 0 });
const running = new Set<ChildProcess>();
const topics: string[] = [];

interface AgentProc {
  pid: number;
  topic: string;
  /** Settles once the agent logs "agent producing". */
  producing: Promise<void>;
  /** The "agent finished" log line's numbers (agent and source stats), once the process exits. */
  exited: Promise<Record<string, number>>;
  /** SIGTERM (graceful: flushes to Kafka), then the exit's stats. */
  stop(): Promise<Record<string, number>>;
  kill(): void;
}

/** Spawns `hoptrace agent ...` (on CPUs `cpus` when given) on a topic of its own; warnings and errors it logs are echoed to stderr. */
function spawnAgent(args: string[], metricsPort: number, cpus?: string): AgentProc {
  const topic = `hoptrace.bench.live.${randomBytes(4).toString('hex')}`;
  topics.push(topic);
  const cmd = [process.execPath, ...AGENT_NODE_FLAGS, CLI, 'agent', ...args];
  const child = spawn(cpus ? 'taskset' : cmd[0]!, cpus ? ['-c', cpus, ...cmd] : cmd.slice(1), {
    env: { ...process.env, HOPTRACE_HOPS_TOPIC: topic, HOPTRACE_METRICS_PORT: String(metricsPort), HOPTRACE_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.add(child);
  const tail: string[] = [];
  let finished: Record<string, number> | null = null;
  let onProducing: () => void = () => undefined;
  const producing = new Promise<void>((r) => (onProducing = r));
  let partial = '';
  child.stderr!.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      let j: { level?: number; msg?: string } & Record<string, unknown>;
      try {
        j = JSON.parse(line) as typeof j;
      } catch {
        console.error(`agent ${child.pid}: ${line}`);
        continue;
      }
      if (j.msg === 'agent producing') onProducing();
      else if (j.msg === 'agent finished') finished = Object.fromEntries(Object.entries(j).filter((e): e is [string, number] => typeof e[1] === 'number'));
      else if ((j.level ?? 0) >= 40) console.error(`agent ${child.pid}: ${j.msg}`);
    }
  });
  const exited = new Promise<Record<string, number>>((resolve, reject) => {
    child.on('exit', (code, signal) => {
      running.delete(child);
      if (finished && code === 0) resolve(finished);
      else reject(new Error(`agent ${args.join(' ')} exited ${code ?? signal}:\n${tail.join('\n')}`));
    });
  });
  // An agent dying before it produces fails `producing` too.
  const producingOrDied = Promise.race([producing, exited.then(() => Promise.reject(new Error('agent exited before producing')))]);
  producingOrDied.catch(() => undefined);
  exited.catch(() => undefined);
  return {
    pid: child.pid!,
    topic,
    producing: producingOrDied,
    exited,
    stop: () => {
      child.kill('SIGTERM');
      return exited;
    },
    kill: () => void (child.exitCode === null && child.signalCode === null && child.kill('SIGKILL')),
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** One sample from an agent's /metrics: a Prometheus text line, by its name with any labels as written (`name{k="v"}`). */
async function scrape(port: number, names: string[]): Promise<number[]> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return names.map((n) => Number(new RegExp(`^${n.replace(/[{}"\\]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN));
}
const MAJOR_GCS = 'hoptrace_agent_gcs_total{kind="major"}';

/** Waits until everything the agent read is acknowledged by Kafka and no more is coming (or 60 s). */
async function settled(port: number): Promise<void> {
  let last = '';
  for (const end = Date.now() + 60_000; Date.now() < end; await sleep(200)) {
    const [read, sent] = await scrape(port, ['hoptrace_agent_records_read_total', 'hoptrace_agent_records_sent_total']);
    const now = `${read}/${sent}`;
    if (read === sent && now === last) return;
    last = now;
  }
  console.error(`agent on :${port} not settled after 60 s (read/sent ${last})`);
}

/** Records an agent left on its topic (read back from Kafka); the topic is deleted then. */
async function producedRecords(topic: string): Promise<number> {
  const { records } = await topicRecords({ ...kafkaCfg, hopsTopic: topic, groupId: `hoptrace-bench-${topic}` });
  await deleteTopics(kafkaCfg, [topic]);
  topics.splice(topics.indexOf(topic), 1);
  return records;
}

interface AgentRun {
  tcp: TcpResult;
  /** Records read back from the agent's Kafka topic. */
  produced: number;
  cpuS: number;
  /** The CPU window: senders start -> Kafka acknowledged all. Rates use tcp.seconds (the senders' own). */
  seconds: number;
  rssMiB: number;
  hwmMiB: number;
  /** The agent's own totals at exit (sent, dropped, kernel_*, queue_full...). */
  stats: Record<string, number>;
  /** Longest time the ring went undrained while the senders ran, ms. */
  undrainedMs: number;
}
const UNDRAINED = 'hoptrace_live_ring_undrained_max_seconds';

/** Traffic `o` while a live agent process owning the lab's namespaces ships everything to Kafka. */
async function liveAgentRun(lab: BenchLab, o: TcpRun, sampleN: number, agentCpus?: string): Promise<AgentRun> {
  const port = await freePort();
  const agent = spawnAgent(['--live', '--node', 'bench', '--netns', `${lab.a},${lab.b}`, '--sample', String(sampleN)], port, agentCpus);
  try {
    await agent.producing;
    let cpu0 = NaN;
    let t0 = 0n;
    const rss: number[] = [];
    const sampler = setInterval(() => {
      const m = procMemMiB(agent.pid);
      if (m && t0) rss.push(m.rss);
    }, 100);
    let tcp: TcpResult;
    try {
      tcp = await lab.tcp(o, () => {
        cpu0 = procCpuS(agent.pid);
        t0 = process.hrtime.bigint();
        void scrape(port, [UNDRAINED]); // starts the gauge's window over
      });
    } finally {
      clearInterval(sampler);
    }
    const [undrained] = await scrape(port, [UNDRAINED]);
    await settled(port);
    const cpuS = procCpuS(agent.pid) - cpu0;
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const hwmMiB = procMemMiB(agent.pid)?.hwm ?? NaN;
    const stats = await agent.stop();
    const records = await producedRecords(agent.topic);
    return { tcp, produced: records, cpuS, seconds, rssMiB: median(rss.slice(rss.length >> 1)), hwmMiB, stats, undrainedMs: undrained! * 1000 };
  } finally {
    agent.kill();
  }
}

interface RecordingRun {
  produced: number;
  cpuS: number;
  seconds: number;
  rssMiB: number;
  hwmMiB: number;
}

/** Replays `file` as fast as Kafka takes it; samples the process every 50 ms until it exits. */
async function recordingAgentRun(file: string): Promise<RecordingRun> {
  const agent = spawnAgent(['--recording', file, '--rate', '0'], 0);
  try {
    let cpu0 = NaN;
    let t0 = 0n;
    let t1 = 0n;
    let cpu = NaN;
    let hwm = NaN;
    const rss: number[] = [];
    void agent.producing.then(
      () => {
        cpu0 = procCpuS(agent.pid);
        t0 = process.hrtime.bigint();
      },
      () => undefined,
    );
    const sampler = setInterval(() => {
      const m = procMemMiB(agent.pid);
      const c = procCpuS(agent.pid);
      if (!m || Number.isNaN(c)) return;
      hwm = m.hwm;
      cpu = c;
      t1 = process.hrtime.bigint();
      if (t0) rss.push(m.rss);
    }, 50);
    try {
      await agent.exited;
    } finally {
      clearInterval(sampler);
    }
    const records = await producedRecords(agent.topic);
    // Steady: the middle half of the replay (after the buffer fills, before the final flush).
    const steady = rss.slice(rss.length >> 2, rss.length - (rss.length >> 2));
    return { produced: records, cpuS: cpu - cpu0, seconds: Number(t1 - t0) / 1e9, rssMiB: median(steady), hwmMiB: hwm };
  } finally {
    agent.kill();
  }
}

interface TpRow {
  label: string;
  /** Per repeat: the traffic, and CPU seconds spent capturing it (0 when off) over captureS seconds. */
  runs: { tcp: TcpResult; captureCpuS: number; captureS: number }[];
  extra: string[];
}

/**
 * Throughput rows, the first being capture off. Ratios are taken per repeat (same
 * moment, same machine state), then the median. Veth TCP is CPU-bound, so bytes per
 * CPU second (senders, sinks, ksoftirqd, capture) predicts the throughput ratio of
 * an otherwise idle machine; it is much less disturbed by concurrent work than Gbit/s.
 */
function throughputTable(extraHeaders: string[], rows: TpRow[]): void {
  const off = rows[0]!.runs;
  const perCpu = (r: TpRow['runs'][number]) => r.tcp.bytes / 1e9 / (r.tcp.cpuS + r.tcp.ksoftirqdS + r.captureCpuS);
  const pct = (xs: number[]) => `${fmt(median(xs) * 100, 1)}%`;
  header(['capture', 'Gbit/s', 'ratio to off', 'per-repeat ratios', 'GB per CPU-s', 'ratio to off, per CPU-s', 'traffic CPU', 'ksoftirqd CPU', 'capture CPU', ...extraHeaders]);
  for (const { label, runs, extra } of rows) {
    const ratios = runs.map((r, i) => r.tcp.gbps / off[i]!.tcp.gbps);
    row([
      label,
      fmt(median(runs.map((r) => r.tcp.gbps)), 2),
      fmt(median(ratios), 3),
      runs === off ? '' : ratios.map((x) => fmt(x, 3)).join(', '),
      fmt(median(runs.map(perCpu)), 3),
      fmt(median(runs.map((r, i) => perCpu(r) / perCpu(off[i]!))), 3),
      pct(runs.map((r) => r.tcp.cpuS / r.tcp.seconds)),
      pct(runs.map((r) => r.tcp.ksoftirqdS / r.tcp.seconds)),
      pct(runs.map((r) => r.captureCpuS / r.captureS)),
      ...extra,
    ]);
  }
}

// ---- sections ----

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const lab = createLab();
  let tmp: string | null = null;
  let cleaning: Promise<void> | null = null;
  const cleanup = () =>
    (cleaning ??= (async () => {
      for (const c of running) c.kill('SIGKILL');
      lab.remove();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
      await deleteTopics(kafkaCfg, topics).catch((err: unknown) => console.error(`could not delete topics ${topics.join(', ')}: ${String(err)}`));
    })());
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let port = 20000;
  const tcp = (streams: number, size: number, conns = 1): TcpRun => {
    const o = { streams, conns, port, seconds: args.seconds, size };
    port += streams;
    return o;
  };
  const R = args.repeat;
  try {
    console.log(`live capture bench: Linux ${release()}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), node ${process.version}`);
    console.log(`namespaces ${lab.a} <-> ${lab.b} over veth; ${args.seconds}s per run, median of ${R}; all 7 programs, records ${RECORD_SIZE} bytes`);

    const samplingSection = async (pin?: { traffic: string; agent: string }): Promise<void> => {
      const S = args.tpStreams;
      const C = args.tpConns;
      const off: TcpResult[] = [];
      const full: AgentRun[] = [];
      const sampled: AgentRun[] = [];
      const kernelOnly: InProcessRun[] = [];
      const run = () => ({ ...tcp(S, BULK_WRITE, C), cpus: pin?.traffic });
      const steps = [
        async () => void off.push(await lab.tcp(run())),
        async () => void kernelOnly.push(await inProcessRun(lab, 'sampled-out', run())),
        async () => void full.push(await liveAgentRun(lab, run(), 1, pin?.agent)),
        async () => void sampled.push(await liveAgentRun(lab, run(), args.sample, pin?.agent)),
      ];
      for (let i = 0; i < R; i++) for (const step of rotate(steps, i)) await step();
      const where = pin ? `; traffic on CPU ${pin.traffic}, agent on CPU ${pin.agent}` : '; traffic and capture share every CPU';
      console.log(`\n### TCP throughput, ${S} senders x ${C} connections = ${S * C} flows (equal bytes each), ${BULK_WRITE >> 10} KiB writes; capture by the agent process -> Kafka${where}\n`);
      const agentRow = (label: string, runs: AgentRun[]): TpRow => ({
        label,
        runs: runs.map((r) => ({ tcp: r.tcp, captureCpuS: r.cpuS, captureS: r.seconds })),
        extra: [
          fmt(median(runs.map((r) => r.produced / r.tcp.seconds))),
          runs.map((r) => [r.stats.kernel_emitted, r.stats.kernel_ringbuf_full, r.stats.kernel_sampled_out].map((n) => fmt(n ?? NaN)).join(' / ')).join(', '),
        ],
      });
      throughputTable(
        ['events/s produced', 'kernel: emitted / ring full / sampled out'],
        [
          { label: 'off', runs: off.map((t) => ({ tcp: t, captureCpuS: 0, captureS: t.seconds })), extra: ['', ''] },
          {
            label: 'programs attached, every flow sampled out (no agent, no Kafka: the kernel side alone)',
            runs: kernelOnly.map((r) => ({ tcp: r.tcp, captureCpuS: r.cpuS, captureS: r.seconds })),
            extra: ['0', ''],
          },
          agentRow('full', full),
          agentRow(`1 flow in ${args.sample} sampled`, sampled),
        ],
      );
    };

    // The issue's own words: TCP over the lab (client pod -> node-a -> node-lb -> node-c -> server
    // pod, pod to pod, no sidecar on the way), all on 2 CPUs.
    const labSection = async (): Promise<void> => {
      const state = await labUp({});
      const children: ChildProcess[] = [];
      const python = pythonRunner(children);
      const client = state.pods.client!;
      const server = state.pods.server!;
      const topic = `hoptrace.bench.lab.${randomBytes(4).toString('hex')}`;
      topics.push(topic);
      const env = { ...process.env, HOPTRACE_HOPS_TOPIC: topic };
      // Three agents on one kernel run three program sets at every hook (each skips the others'
      // namespaces), where a real node runs one: so also one agent owning every node and pod
      // namespace. It leaves out the wires, which stand for cables (the lab's agents watch them
      // to show a link's delay), so each packet passes 8 owned devices instead of 12.
      const three = agentPlans(state);
      const one = [{ node: 'bench-lab', netns: Object.keys(state.namespaces), clockSkewMs: 0, metricsPort: three[0]!.metricsPort + 10 }];
      type Mode = 'off' | 'one-none' | 'one-none-xmit' | 'one-full' | 'one-full-xmit' | 'one-full-cold' | 'one-full-single' | 'one-full-eager' | 'one-sampled' | 'one-sampled-sparse' | 'one-sampled-eager' | 'three-full' | 'three-sampled';
      const runs: Record<Mode, (TpRow['runs'][number] & { events: number; majorGcs: number; lost: number; brokerCpuS: number })[]> = { off: [], 'one-none': [], 'one-none-xmit': [], 'one-full': [], 'one-full-xmit': [], 'one-full-cold': [], 'one-full-single': [], 'one-full-eager': [], 'one-sampled': [], 'one-sampled-sparse': [], 'one-sampled-eager': [], 'three-full': [], 'three-sampled': [] };
      // sparse: 4x fewer flows (of the 64 connections, ~2 at the default 1 in 32)
      const sparse = args.sample * 4;
      const sampleOf: Record<Mode, number | undefined> = { off: undefined, 'one-none': 1 << 20, 'one-none-xmit': 1 << 20, 'one-full': undefined, 'one-full-xmit': undefined, 'one-full-cold': undefined, 'one-full-single': undefined, 'one-full-eager': undefined, 'one-sampled': args.sample, 'one-sampled-sparse': sparse, 'one-sampled-eager': args.sample, 'three-full': undefined, 'three-sampled': args.sample };
      // the send policy before requests were shared: each batch its own request, sent at once, 50 ms linger
      const EAGER = { HOPTRACE_SEND_BATCHES: '1', HOPTRACE_LINGER_MS: '50' };
      const once = async (mode: Mode) => {
        const plans = mode === 'off' ? [] : mode.startsWith('one') ? one : three;
        // runs of 1: each record its own ring write and JS copy, as before the kernel wrote runs
        const runRecords = mode === 'one-full-single' ? 1 : undefined;
        // cold: a fresh agent in this process's session, so in the traffic's autogroup, measured from its start
        const cold = mode === 'one-full-cold';
        // -xmit: net_dev_start_xmit kept linked, as before it was linked only while an owned device queues
        const queueIdleMs = mode.endsWith('-xmit') ? 0 : undefined;
        const agents = await startAgents(plans.map((p) => ({ ...p, sampleN: sampleOf[mode], runRecords, sameSession: cold, queueIdleMs })), mode.endsWith('-eager') ? { ...env, ...EAGER } : env);
        try {
          const cpuOf = () => agents.reduce((s, a) => s + procCpuS(a.pid), 0);
          // events read, major GCs (each a pause plus marking threads that take CPU from the traffic),
          // and records lost: a capture that keeps up only by losing records is not full capture
          const countsOf = async () => {
            let events = 0;
            let gcs = 0;
            let lost = 0;
            for (const p of plans) {
              const [e, g, ring, queue] = await scrape(p.metricsPort, ['hoptrace_agent_records_read_total', MAJOR_GCS, 'hoptrace_live_ringbuf_lost_total', 'hoptrace_live_agent_dropped_total{reason="queue_full"}']);
              events += e!;
              gcs += Number.isNaN(g) ? 0 : g!; // no series until the first major GC
              lost += ring! + (Number.isNaN(queue) ? 0 : queue!); // no queue_full series until the source reports it
            }
            return { events, gcs, lost };
          };
          // The same traffic first, unmeasured: V8 compiles the agent's hot paths in its first
          // seconds (~1.7 CPU-s at full capture), a one-off that a node's long-running agent
          // does not pay again, and that a 3 s run would otherwise charge to the capture.
          if (args.warmup && !cold) await tcpBetween(python, client.netns, server.netns, server.ip, { ...tcp(args.tpStreams, BULK_WRITE, args.tpConns), seconds: args.warmup });
          const before = await countsOf();
          let cpu0 = 0;
          let broker0 = 0;
          const t = await tcpBetween(python, client.netns, server.netns, server.ip, tcp(args.tpStreams, BULK_WRITE, args.tpConns), () => {
            cpu0 = cpuOf();
            broker0 = kafkaCpuS();
          });
          const captureCpuS = cpuOf() - cpu0;
          const brokerCpuS = kafkaCpuS() - broker0;
          const after = await countsOf();
          runs[mode].push({ tcp: t, captureCpuS, captureS: t.seconds, events: after.events - before.events, majorGcs: after.gcs - before.gcs, lost: after.lost - before.lost, brokerCpuS });
        } finally {
          await stopAgents(plans.map((p) => p.node));
        }
      };
      try {
        const modes = Object.keys(runs) as Mode[];
        const unknown = (args.labRows ?? []).filter((m) => !modes.includes(m as Mode));
        if (unknown.length) throw new Error(`--lab-rows: unknown ${unknown.join(', ')} (rows: ${modes.join(', ')})`);
        const chosen = modes.filter((m) => m === 'off' || !args.labRows || args.labRows.includes(m));
        for (let i = 0; i < R; i++) for (const m of rotate(chosen, i)) await once(m);
      } finally {
        for (const c of children) c.kill('SIGKILL');
        await stopAgents([...three, ...one].map((p) => p.node));
        await labDown();
      }
      console.log(
        `\n### TCP throughput over the lab: ${client.netns} -> ${server.netns} (${server.ip}) through node-a, node-lb and node-c, ${args.tpStreams} senders x ${args.tpConns} connections, ${BULK_WRITE >> 10} KiB writes; capture -> Kafka; everything shares every CPU\n`,
      );
      const labRow = (label: string, m: Mode): TpRow => ({
        label,
        runs: runs[m],
        extra: [
          `${fmt(median(runs[m].map((r) => r.brokerCpuS / r.tcp.seconds)) * 100, 1)}%`,
          ...(m === 'off'
            ? ['', '', '']
            : [fmt(median(runs[m].map((r) => r.events / r.tcp.seconds))), runs[m].map((r) => fmt(r.lost)).join(', '), fmt(median(runs[m].map((r) => r.majorGcs / r.tcp.seconds)), 2)]),
        ],
      });
      throughputTable(
        ['broker CPU (idle too)', 'events/s read by the agents', 'records lost per repeat (ring full + agent queue full)', 'agents\' major GCs/s'],
        [
          labRow('off', 'off'),
          labRow('one agent, every flow sampled out (the kernel side and an idle agent)', 'one-none'),
          labRow('the same, net_dev_start_xmit always linked (--queue-idle-ms 0; no device here queues)', 'one-none-xmit'),
          labRow('full, one agent owning every node and pod namespace (one program set per hook, as on a node)', 'one-full'),
          labRow('the same, net_dev_start_xmit always linked (--queue-idle-ms 0)', 'one-full-xmit'),
          labRow("full, one agent just started in the traffic's own session (no warm-up; one CFS autogroup, so one CPU weight, with the traffic)", 'one-full-cold'),
          labRow('full, one agent, each record written to the ring on its own (--run-records 1)', 'one-full-single'),
          labRow('full, one agent, each batch its own Kafka request at once, 50 ms linger (HOPTRACE_SEND_BATCHES=1, HOPTRACE_LINGER_MS=50)', 'one-full-eager'),
          labRow(`1 flow in ${args.sample} sampled, one agent`, 'one-sampled'),
          labRow(`1 flow in ${sparse} sampled, one agent`, 'one-sampled-sparse'),
          labRow(`1 flow in ${args.sample} sampled, one agent, each batch its own request, 50 ms linger`, 'one-sampled-eager'),
          labRow("full, the lab's three agents (three program sets at every hook of this one kernel)", 'three-full'),
          labRow(`1 flow in ${args.sample} sampled, three agents`, 'three-sampled'),
        ].filter((r) => r.runs.length),
      );
    };

    if (args.sections.includes('drain')) {
      const runs: InProcessRun[] = [];
      for (let i = 0; i < R; i++) runs.push(await inProcessRun(lab, 'owned', tcp(1, SMALL)));
      console.log(`\n### drain: ring buffer -> validated chunks, in process, to nothing (1 TCP stream, ${SMALL}-byte NODELAY writes)\n`);
      header(['events/s drained', 'agent CPU', 'events/s per agent core', 'lost in ring / agent queue']);
      row([
        fmt(median(runs.map((r) => r.drained / r.tcp.seconds))),
        `${fmt(median(runs.map((r) => (r.cpuS / r.seconds) * 100)), 1)}%`,
        fmt(median(runs.map((r) => r.drained / r.cpuS))),
        runs.map((r) => `${r.ringLost}/${r.queueLost}`).join(', '),
      ]);
    }

    if (args.sections.includes('agent')) {
      const rows = new Map<number, AgentRun[]>();
      for (const s of args.agentStreams) rows.set(s, []);
      // Traffic on CPU 0, the agent alone on the last CPU: this kernel accounts CPU time by ticks, so
      // softirq work of traffic sharing the agent's CPU would be charged to the agent.
      const n = cpus().length;
      const pin = n > 1 ? { traffic: '0', agent: String(n - 1) } : undefined;
      // A pfifo root on the veth ends, as a NIC has a qdisc: every packet passes all three device
      // hooks, the most events per packet, so the traffic this VM can make pushes the agent hardest.
      lab.qdisc('pfifo');
      try {
        for (let i = 0; i < R; i++) {
          for (const s of rotate(args.agentStreams, i)) rows.get(s)!.push(await liveAgentRun(lab, { ...tcp(s, SMALL), cpus: pin?.traffic }, 1, pin?.agent));
        }
      } finally {
        lab.qdisc(null);
      }
      const where = pin ? `; traffic on CPU ${pin.traffic}, agent on CPU ${pin.agent}` : '';
      console.log(`\n### agent process, full path: ring buffer -> decode -> batches -> Kafka (${SMALL}-byte NODELAY writes, pfifo on the veth ends${where})\n`);
      header(['TCP streams', 'events/s captured (kernel: emitted + ring full)', 'events/s produced (in Kafka)', 'agent CPU', 'events/s per agent core', 'RSS steady MiB', 'RSS peak MiB', 'lost: ring / agent queue / unsent', 'longest undrained, ms', 'agent sent = in Kafka']);
      for (const [s, runs] of rows) {
        row([
          s,
          fmt(median(runs.map((r) => ((r.stats.kernel_emitted ?? NaN) + (r.stats.kernel_ringbuf_full ?? NaN)) / r.tcp.seconds))),
          fmt(median(runs.map((r) => r.produced / r.tcp.seconds))),
          `${fmt(median(runs.map((r) => (r.cpuS / r.seconds) * 100)), 1)}%`,
          fmt(median(runs.map((r) => r.produced / r.cpuS))),
          fmt(median(runs.map((r) => r.rssMiB))),
          fmt(median(runs.map((r) => r.hwmMiB))),
          runs.map((r) => `${fmt(r.stats.kernel_ringbuf_full ?? NaN)}/${fmt(r.stats.queue_full ?? NaN)}/${fmt(r.stats.dropped ?? NaN)}`).join(', '),
          runs.map((r) => fmt(r.undrainedMs)).join(', '),
          runs.every((r) => r.stats.sent === r.produced) ? 'yes' : runs.map((r) => `${r.stats.sent} vs ${r.produced}`).join(', '),
        ]);
      }
    }

    if (args.sections.includes('recording')) {
      tmp = mkdtempSync(join(tmpdir(), 'hopt-live-bench-'));
      // Three node files; the replayed one holds about a third of the events.
      const gen = await generateRecording({ outDir: tmp, events: 3 * args.recordingEvents, seed: 7 });
      const file = gen.files.reduce((a, b) => (statSync(b).size > statSync(a).size ? b : a));
      const records = (statSync(file).size - HEADER_SIZE) / RECORD_SIZE;
      const runs: RecordingRun[] = [];
      for (let i = 0; i < R; i++) runs.push(await recordingAgentRun(file));
      rmSync(tmp, { recursive: true, force: true });
      tmp = null;
      console.log(`\n### agent process, recording at maximum replay rate (--rate 0) -> Kafka; agent buffer ${kafkaCfg.bufferBytes >> 20} MiB\n`);
      header(['records in file', 'events/s produced', 'agent CPU', 'events/s per agent core', 'RSS steady MiB', 'RSS peak MiB', 'all in Kafka']);
      row([
        fmt(records),
        fmt(median(runs.map((r) => r.produced / r.seconds))),
        `${fmt(median(runs.map((r) => (r.cpuS / r.seconds) * 100)), 1)}%`,
        fmt(median(runs.map((r) => r.produced / r.cpuS))),
        fmt(median(runs.map((r) => r.rssMiB))),
        fmt(median(runs.map((r) => r.hwmMiB))),
        runs.every((r) => r.produced === records) ? 'yes' : runs.map((r) => fmt(r.produced)).join(', '),
      ]);
    }

    if (args.sections.includes('kernel')) {
      // each capture mode with either kind of device hook (tracepoints fire on every device; tcx links
      // run only on the owned namespaces' devices); net_dev_start_xmit kept linked (queueIdleMs 0),
      // though no device here queues: its run on a noqueue device is the floor of a hook's cost
      const cases = (['tracepoint', 'tc'] as const).flatMap((h) => (['not-owned', 'sampled-out', 'owned'] as const).map((m) => ({ h, m, key: `${h} ${m}` })));
      const runs = new Map<string, InProcessRun[]>(cases.map((c) => [c.key, []]));
      await withBpfStats(async () => {
        for (let i = 0; i < R; i++) for (const c of rotate(cases, i)) runs.get(c.key)!.push(await inProcessRun(lab, c.m, tcp(1, BULK_WRITE), c.h, 0));
      });
      console.log(`\n### kernel: BPF run time per packet in each device hook (1 stream, ${BULK_WRITE >> 10} KiB writes; kernel.bpf_stats_enabled adds ~2 clock reads per run)\n`);
      header(['device hooks', 'capture', ...DEVICE_HOOKS.map((h) => `${h} ns/run`), 'runs/s per device program', 'BPF CPU (device hooks)', 'Gbit/s']);
      for (const c of cases) {
        const rs = runs.get(c.key)!;
        const per = (h: string) => median(rs.map((r) => (r.hooks.get(h)?.ns ?? NaN) / (r.hooks.get(h)?.runs ?? NaN)));
        const busy = (r: InProcessRun) => [...r.hooks.values()].reduce((a, b) => a + b.ns, 0) / 1e9 / r.tcp.seconds;
        const first = c.h === 'tc' ? 'tcx/ingress' : 'netif_receive_skb';
        row([
          c.h,
          { 'not-owned': 'namespaces not owned', 'sampled-out': 'owned, every flow sampled out', owned: 'owned, full capture' }[c.m],
          ...DEVICE_HOOKS.map((h) => fmt(per(h))),
          fmt(median(rs.map((r) => (r.hooks.get(first)?.runs ?? 0) / r.tcp.seconds))),
          `${fmt(median(rs.map(busy)) * 100, 1)}%`,
          fmt(median(rs.map((r) => r.tcp.gbps)), 2),
        ]);
      }
    }

    if (args.sections.includes('throughput')) {
      const modes: Mode[] = ['off', 'owned', 'not-owned'];
      const tp = new Map<Mode, InProcessRun[]>(modes.map((m) => [m, []]));
      for (let i = 0; i < R; i++) for (const m of rotate(modes, i)) tp.get(m)!.push(await inProcessRun(lab, m, tcp(1, BULK_WRITE)));
      console.log(`\n### TCP throughput, 1 stream, ${BULK_WRITE >> 10} KiB writes; capture in process\n`);
      throughputTable(
        ['events/s drained'],
        modes.map((m) => ({
          label: { off: 'off', owned: 'on, namespaces owned', 'not-owned': 'on, namespaces not owned', 'sampled-out': 'on, all sampled out' }[m],
          runs: tp.get(m)!.map((r) => ({ tcp: r.tcp, captureCpuS: m === 'off' ? 0 : r.cpuS, captureS: r.seconds })),
          extra: [fmt(median(tp.get(m)!.map((r) => r.drained / r.tcp.seconds)))],
        })),
      );
    }

    if (args.sections.includes('sampling')) {
      // Traffic and capture on every CPU, then traffic on CPU 0 and the agent on the last, as on a node
      // where the agent has a CPU budget of its own: there only the kernel side slows the traffic.
      await samplingSection();
      if (cpus().length > 1) await samplingSection({ traffic: '0', agent: String(cpus().length - 1) });
    }
    if (args.sections.includes('lab')) await labSection();
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
