/**
 * Full capture against capture off, switched back and forth inside one run of the lab's
 * bulk TCP traffic (root, real kernel, real Kafka).
 *
 * `npm run bench:live -- --sections lab` starts the traffic afresh for every repeat and
 * compares repeats run one after another, so each ratio also carries what differs between
 * two runs on this VM: new connections ramping up, the host's load, drift. Single repeats
 * spread 0.70-1.08, and medians of 12-20 repeats moved by 2-4 points from run to run. Here
 * one set of connections runs throughout, and one live agent process (the agent's source,
 * batching and Kafka sink, bench/live/toggle-agent.ts) switches what it owns between
 * windows:
 *
 *   full   every node and pod namespace of the lab, as bench:live's `one-full` row (with
 *          `--sample N`, 1 connection in N kept, as its `one-sampled` row: each connection
 *          is chosen at its handshake, made while the agent owns the lab, by its ISNs, so
 *          the share kept varies from run to run; the bench prints it, from the kernel's
 *          counters, and more connections (`--conns`) bring it nearer 1 in N)
 *   off    one empty namespace of its own: the device programs are unlinked from every
 *          lab device (tcx), so no packet of the traffic runs a program; the agent stays
 *          up, idle, and the socket and drop tracepoints stay attached (they fire for a
 *          handful of packets: drops, resets, state changes)
 *
 * Windows go full, off, off, full, full, off, ... (ABBA, so a linear drift favours neither),
 * each `--settle-s` to let the switch take effect and then `--window-s` measured: bytes
 * received by the server pod (its /proc/net/dev), CPU of the agent and of the broker. Each
 * full window is paired with the off window next to it; the figure is the median of the
 * pairs' ratios, with a 90% bootstrap interval for that median.
 *
 * Run:  npm run bench:toggle -- [--windows 24] [--window-s 2] [--settle-s 1] [--warmup-s 6]
 *                                [--streams 8] [--conns 8] [--sample 1]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { AGENT_NODE_FLAGS } from '../services/agent/node-flags.js';
import { labDown, labUp } from '../services/lab/index.js';
import { deleteTopics, fmt, isolatedConfig, kafkaCpuS, median, numArg, percentile, procCpuS, sleep, withBpfStats } from './common.js';
import { BULK_WRITE, pythonRunner, tcpBetween } from './live/lab.js';

type Mode = 'full' | 'off';

interface Window {
  mode: Mode;
  gbps: number;
  agentCpu: number;
  brokerCpu: number;
  recordsPerS: number;
  lost: number;
  /** Of the packets' device runs the programs judged, the share that wrote a record (1 at full capture). */
  kept: number;
}

/** Received bytes of every device but lo in the namespace of process `pid`. */
function rxBytes(pid: number): number {
  let sum = 0;
  for (const line of readFileSync(`/proc/${pid}/net/dev`, 'utf8').split('\n').slice(2)) {
    const [name, rest] = line.split(':');
    if (!rest || name!.trim() === 'lo') continue;
    sum += Number(rest.trim().split(/\s+/)[0]);
  }
  return sum;
}

/** The median of `xs` and a 90% bootstrap interval for it. */
function medianInterval(xs: number[], resamples = 4000): { median: number; lo: number; hi: number } {
  const meds: number[] = [];
  for (let r = 0; r < resamples; r++) meds.push(median(Array.from(xs, () => xs[Math.floor(Math.random() * xs.length)]!)));
  meds.sort((x, y) => x - y);
  return { median: median(xs), lo: percentile(meds, 0.05), hi: percentile(meds, 0.95) };
}

/** The toggle agent: a child process answering one JSON line per command. */
function startToggleAgent(own: string[], sampleN: number, env: NodeJS.ProcessEnv): { child: ChildProcess; ask(cmd: object): Promise<Record<string, unknown>> } {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'live', 'toggle-agent.js');
  // its own session, as the lab starts agents: one CFS autogroup of its own, not the bench's
  const child = spawn(process.execPath, ['--enable-source-maps', ...AGENT_NODE_FLAGS, script, own.join(','), String(sampleN)], { detached: true, stdio: ['pipe', 'pipe', 'inherit'], env });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`toggle agent exited (${child.exitCode ?? child.signalCode})`);
    return JSON.parse(value as string) as Record<string, unknown>;
  };
  let ready: Promise<unknown> = next();
  return {
    child,
    async ask(cmd) {
      await ready;
      child.stdin!.write(`${JSON.stringify(cmd)}\n`);
      const p = next();
      ready = p.catch(() => undefined);
      return p;
    },
  };
}

async function main(): Promise<void> {
  const windows = Math.max(4, Math.ceil(numArg('windows', 24) / 4) * 4);
  const windowS = numArg('window-s', 2);
  const settleS = numArg('settle-s', 1);
  const warmupS = numArg('warmup-s', 6);
  const streams = numArg('streams', 8);
  const conns = numArg('conns', 8);
  const sampleN = numArg('sample', 1);
  const cfg = isolatedConfig();
  const idle = `hopt-bench-toggle-${randomBytes(3).toString('hex')}`;
  const children: ChildProcess[] = [];
  let agent: ReturnType<typeof startToggleAgent> | null = null;
  const cleanup = async () => {
    if (agent?.child.exitCode === null) {
      await Promise.race([agent.ask({ stop: true }).catch(() => undefined), sleep(10_000)]);
      agent.child.kill('SIGKILL');
    }
    for (const c of children) c.kill('SIGKILL');
    await labDown().catch((err: unknown) => console.error(`lab down: ${String(err)}`));
    try {
      execFileSync('ip', ['netns', 'del', idle], { stdio: 'ignore' });
    } catch {
      /* not made */
    }
    await deleteTopics(cfg, [cfg.hopsTopic]).catch((err: unknown) => console.error(`could not delete topic ${cfg.hopsTopic}: ${String(err)}`));
  };
  process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
  try {
    const state = await labUp({});
    execFileSync('ip', ['netns', 'add', idle]);
    execFileSync('ip', ['-n', idle, 'link', 'set', 'lo', 'up']);
    const client = state.pods.client!;
    const server = state.pods.server!;
    // node and pod namespaces, not the wires: bench:live's one agent owning a node's namespaces
    const lab = Object.keys(state.namespaces);
    agent = startToggleAgent(lab, sampleN, { ...process.env, HOPTRACE_HOPS_TOPIC: cfg.hopsTopic, HOPTRACE_METRICS_PORT: '0' });
    const a = agent;
    await a.ask({});
    const probe = spawn('ip', ['netns', 'exec', server.netns, 'sleep', 'infinity'], { stdio: 'ignore' });
    children.push(probe);
    await sleep(200);
    const python = pythonRunner(children);
    // the windows, the timed window after them, and room for the commands between windows
    const seconds = warmupS + (windows + 1) * (settleS + windowS) + 5;
    console.log(`lab toggle bench: Linux ${release()}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), node ${process.version}`);
    const capture = sampleN > 1 ? `1 connection in ${sampleN} sampled` : 'full capture';
    console.log(`${client.netns} -> ${server.netns} (${server.ip}), ${streams} senders x ${conns} connections, ${BULK_WRITE >> 10} KiB writes, ${seconds} s in all; ${windows} windows of ${windowS} s after ${settleS} s each, ${warmupS} s of ${capture} first; "full" windows: ${capture}`);
    let started = false;
    const traffic = tcpBetween(python, client.netns, server.netns, server.ip, { streams, conns, port: 21000, seconds, size: BULK_WRITE }, () => (started = true));
    while (!started) await sleep(50);
    await sleep(warmupS * 1000);
    const stats = async () => (await a.ask({})).stats as Record<string, number>;
    const lostOf = (s: Record<string, number>) => (s.kernel_ringbuf_full ?? 0) + (s.queue_full ?? 0);
    /** Switches to `mode`, lets it settle, then measures one window: per second of it, and the agent's counters' deltas. */
    const measure = async (mode: Mode) => {
      await a.ask({ own: mode === 'full' ? lab : [idle] });
      await sleep(settleS * 1000);
      const s0 = await stats();
      const b0 = rxBytes(probe.pid!);
      const c0 = procCpuS(a.child.pid!);
      const k0 = kafkaCpuS();
      const t0 = performance.now();
      await sleep(windowS * 1000);
      const el = (performance.now() - t0) / 1000;
      const b1 = rxBytes(probe.pid!);
      const c1 = procCpuS(a.child.pid!);
      const k1 = kafkaCpuS();
      const s1 = await stats();
      const delta = (k: string) => s1[k]! - s0[k]!;
      const written = delta('kernel_emitted');
      const kept = written / (written + delta('kernel_sampled_out') + delta('kernel_sampled_out_seen'));
      const window: Window = { mode, gbps: ((b1 - b0) * 8) / el / 1e9, agentCpu: (c1 - c0) / el, brokerCpu: (k1 - k0) / el, recordsPerS: delta('read') / el, lost: lostOf(s1) - lostOf(s0), kept };
      return { window, el, delta };
    };
    const out: Window[] = [];
    for (let i = 0; i < windows; i++) out.push((await measure([0, 3].includes(i % 4) ? 'full' : 'off')).window);
    // One more full window with the kernel timing every program run (kernel.bpf_stats_enabled):
    // the programs' own CPU, which no process accounts for. Not paired: the timing adds two
    // clock reads to each run.
    const timed = await withBpfStats(async () => {
      const { el, delta } = await measure('full');
      const runs = delta('programRuns');
      if (!runs) throw new Error('no program ran in the timed window: did the traffic stop early?');
      return { runsPerS: runs / el, nsPerRun: delta('programRunNs') / runs, cpu: delta('programRunNs') / el / 1e9 };
    });
    await traffic;

    const pairs: number[] = [];
    for (let i = 0; i < out.length; i += 2) {
      const [x, y] = [out[i]!, out[i + 1]!];
      pairs.push(x.mode === 'full' ? x.gbps / y.gbps : y.gbps / x.gbps);
    }
    const of = (m: Mode) => out.filter((w) => w.mode === m);
    const pct = (xs: number[]) => `${fmt(median(xs) * 100, 1)}%`;
    const r = medianInterval(pairs);
    console.log('\n| capture | windows | Gbit/s (median) | ratio full / off, median of pairs [90% interval] | pairs\' ratios, in order | agent CPU | broker CPU | events/s read | records lost |');
    console.log('|---|---:|---:|---:|---|---:|---:|---:|---:|');
    for (const m of ['off', 'full'] as const) {
      const ws = of(m);
      const cells = [m, ws.length, fmt(median(ws.map((w) => w.gbps)), 2), m === 'full' ? `${fmt(r.median, 3)} [${fmt(r.lo, 3)}, ${fmt(r.hi, 3)}]` : '', m === 'full' ? pairs.map((x) => fmt(x, 3)).join(', ') : '', pct(ws.map((w) => w.agentCpu)), pct(ws.map((w) => w.brokerCpu)), fmt(median(ws.map((w) => w.recordsPerS))), fmt(ws.reduce((s, w) => s + w.lost, 0))];
      console.log(`| ${cells.join(' | ')} |`);
    }
    console.log('\nCPU figures are percent of one CPU; "off" still runs the idle agent process.');
    // Which connections a sample keeps depends on their ISNs: say how much of the traffic it kept.
    if (sampleN > 1) console.log(`Kept by the sample: ${fmt(median(of('full').map((w) => w.kept)) * 100, 1)}% of the device runs the programs judged (records written over records written and packets sampled out, median of the full windows; 1 in ${sampleN} is ${fmt(100 / sampleN, 1)}%).`);
    const full = of('full');
    const overOff = (f: (w: Window) => number) => median(full.map(f)) - median(of('off').map(f));
    console.log(`\nWhere full capture's CPU goes, percent of one CPU (of ${cpus().length}): agent process ${fmt(overOff((w) => w.agentCpu) * 100, 1)}%, broker ${fmt(overOff((w) => w.brokerCpu) * 100, 1)}% (both over off), device and socket programs ${fmt(timed.cpu * 100, 1)}% (${fmt(timed.runsPerS)} runs/s, ${fmt(timed.nsPerRun)} ns per run, one timed full window; with nothing kept: --sample 1048576). Throughput lost: ${fmt((1 - r.median) * 100, 1)}% of the traffic's.`);
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
