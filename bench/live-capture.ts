/**
 * Live capture bench (root, real kernel): two namespaces joined by a veth pair,
 * traffic only between them.
 *
 *  1. Events drained per agent core: a TCP stream of small NODELAY writes (one
 *     segment each, plus ACKs) while the live source drains; records drained per
 *     second divided by the agent process's CPU seconds.
 *  2. TCP throughput over the veth with capture off, on (namespaces owned), and
 *     on but not owning them (programs run, filter rejects in-kernel), as
 *     ratios to off.
 *
 * Build and run:  npm run build && make -C bpf && node dist/bench/live-capture.js [--seconds 3] [--repeat 3]
 */
import { cpus } from 'node:os';
import { release } from 'node:os';
import { createLiveSource, parseLiveOptions, type LiveSource } from '../services/agent/live/index.js';
import { createLab, TCP_SINK, TCP_SOURCE, type BenchLab } from './live/lab.js';

interface Args {
  seconds: number;
  repeat: number;
}

function parseArgs(argv: string[]): Args {
  const out: Args = { seconds: 3, repeat: 3 };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    const v = Number(argv[i + 1]);
    if ((k !== '--seconds' && k !== '--repeat') || !(v > 0)) throw new Error(`usage: live-capture.js [--seconds N] [--repeat N] (bad ${k} ${argv[i + 1]})`);
    out[k.slice(2) as keyof Args] = v;
  }
  return out;
}

type Mode = 'off' | 'owned' | 'not-owned';

interface Run {
  gbps: number;
  drained: number;
  cpuSec: number;
  seconds: number;
  ringLost: number;
  queueLost: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function runOnce(lab: BenchLab, mode: Mode, seconds: number, writeSize: number, port: number): Promise<Run> {
  let source: LiveSource | null = null;
  let drained = 0;
  let consumer: Promise<void> = Promise.resolve();
  if (mode !== 'off') {
    // not-owned: own some other namespace (the agent's own), so every event is rejected in the kernel.
    source = createLiveSource(parseLiveOptions({ netns: mode === 'owned' ? [lab.a, lab.b] : ['/proc/self/ns/net'], node: 'bench' }));
    const s = source;
    consumer = (async () => {
      for await (const c of s.chunks()) drained += c.count;
    })();
  }
  const sink = lab.python(lab.b, TCP_SINK, [lab.addrB, String(port)]);
  await new Promise<void>((r) => sink.child.stdout!.once('data', () => r()));
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const out = await lab.python(lab.a, TCP_SOURCE, [lab.addrB, String(port), String(seconds), String(writeSize)]).done;
  await sink.done;
  await sleep(50); // let the last timer drain run
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const [sent = '0', el = '1'] = out.trim().split(/\s+/);
  let ringLost = 0;
  let queueLost = 0;
  if (source) {
    await source.stop();
    await consumer;
    const st = source.stats();
    ringLost = st.kernel_ringbuf_full ?? 0;
    queueLost = st.queue_full ?? 0;
  }
  return { gbps: (Number(sent) * 8) / Number(el) / 1e9, drained, cpuSec: (cpu.user + cpu.system) / 1e6, seconds: wall, ringLost, queueLost };
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const lab = createLab();
  const onSignal = () => {
    lab.remove();
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let port = 20000;
  try {
    console.log(`live capture bench: Linux ${release()}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), node ${process.version}`);
    console.log(`namespaces ${lab.a} <-> ${lab.b} over veth; ${args.seconds}s per run, median of ${args.repeat}\n`);

    // 1. Events drained per agent core.
    const ev: Run[] = [];
    for (let i = 0; i < args.repeat; i++) ev.push(await runOnce(lab, 'owned', args.seconds, 64, port++));
    const rate = median(ev.map((r) => r.drained / r.seconds));
    const perCore = median(ev.map((r) => r.drained / r.cpuSec));
    const cpuShare = median(ev.map((r) => r.cpuSec / r.seconds));
    console.log('1. events drained (TCP, 64-byte NODELAY writes, all 7 programs, namespaces owned)');
    console.log('   events/s drained   agent CPU   events/s per agent core   lost in ring / agent queue');
    console.log(
      `   ${fmt(rate).padStart(16)}   ${fmt(cpuShare * 100, 1).padStart(8)}%   ${fmt(perCore).padStart(23)}   ${ev.map((r) => `${r.ringLost}/${r.queueLost}`).join(', ')}`,
    );

    // 2. Throughput ratio.
    const modes: Mode[] = ['off', 'owned', 'not-owned'];
    const tp = new Map<Mode, Run[]>(modes.map((m) => [m, []]));
    for (let i = 0; i < args.repeat; i++) for (const m of modes) tp.get(m)!.push(await runOnce(lab, m, args.seconds, 128 * 1024, port++));
    const off = median(tp.get('off')!.map((r) => r.gbps));
    console.log('\n2. TCP throughput over veth (1 stream, 128 KiB writes)');
    console.log('   capture                         Gbit/s   ratio to off   events/s drained   agent CPU');
    for (const m of modes) {
      const runs = tp.get(m)!;
      const g = median(runs.map((r) => r.gbps));
      const label = { off: 'off', owned: 'on, namespaces owned', 'not-owned': 'on, namespaces not owned' }[m];
      console.log(
        `   ${label.padEnd(30)} ${fmt(g, 2).padStart(7)}   ${fmt(g / off, 3).padStart(12)}   ${fmt(median(runs.map((r) => r.drained / r.seconds))).padStart(16)}   ${fmt(median(runs.map((r) => (r.cpuSec / r.seconds) * 100)), 1).padStart(8)}%`,
      );
    }
  } finally {
    lab.remove();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
