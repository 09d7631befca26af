/**
 * Same-packets A/B of two builds of the BPF objects (root, real kernel). The kernel
 * section of bench/live-capture.ts measures one build at a time, and its ns/run drifts
 * by 10-20% between runs minutes apart on these shared VMs (its floor row moves with it),
 * more than most changes to the programs are worth. Here both builds' device programs
 * are linked at once, by two in-process live sources owning the same namespace pair, so
 * every packet runs both, one after the other: each program's bpf_stats ns/run is taken
 * over the same packets at the same moment. The second program of a pair finds the skb
 * and the packet headers in cache, so the link order alternates between repeats and the
 * table gives the ratio in each order and their mean, which cancels it.
 *
 *   npm run bench:kernel-ab -- [--base HEAD] [--base-objects DIR] [--repeat 8] [--seconds 3]
 *       [--modes sampled-out,full] [--hooks tc,tracepoint] [--conntrack] [--ablate all|PART,...]
 *
 * A (base): bpf/ of git revision --base (default HEAD: the working tree's changes are the
 * candidate), built into a temporary directory with this tree's vmlinux.h, or the objects
 * already built in --base-objects. B (candidate): this tree's bpf/.output. Both must share
 * this tree's maps and record ABI (the loader is this tree's). Traffic: 1 stream of
 * 128 KiB writes over a veth pair between two namespaces of the bench's own. With
 * --conntrack both namespaces use conntrack (a nat table rule that changes nothing), as
 * the lab's nodes do: packets carry an entry, so the CT record path runs too.
 *
 * --ablate: a profile of the device program by subtraction. A is this tree's build; each B
 * is a copy of it with one part removed (bench/live/ablations.ts: the clock read, the
 * emission, conntrack, ...), and the table gives what each part costs per run.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createLiveSource, parseLiveOptions, type LiveSource } from '../services/agent/live/index.js';
import type { DeviceHooks } from '../services/agent/live/options.js';
import { median, numArg, strArg, withBpfStats } from './common.js';
import { ablate, ablation, ABLATIONS, type Ablation } from './live/ablations.js';
import { BULK_WRITE, createLab, type BenchLab } from './live/lab.js';

const ROOT = resolve(import.meta.dirname, '../..');
const R = numArg('repeat', 8);
const SECONDS = numArg('seconds', 3);
const MODES = strArg('modes', 'sampled-out,full').split(',') as ('sampled-out' | 'full')[];
const HOOKS = strArg('hooks', 'tc,tracepoint').split(',') as DeviceHooks[];
const CONNTRACK = process.argv.includes('--conntrack');
/** This tree's build: the candidate of an A/B, the whole program of a profile (--ablate). */
const CANDIDATE = join(ROOT, 'bpf/.output');
/** Device hook programs, by the tracepoint (or tcx attach point) they run at. */
const DEVICE: Record<DeviceHooks, [string, string]> = { tc: ['tcx/ingress', 'tcx/egress'], tracepoint: ['netif_receive_skb', 'net_dev_queue'] };

for (const m of MODES) if (m !== 'sampled-out' && m !== 'full') throw new Error(`--modes: ${m}? (sampled-out, full)`);
for (const h of HOOKS) if (h !== 'tc' && h !== 'tracepoint') throw new Error(`--hooks: ${h}? (tc, tracepoint)`);

/** bpf/ placed in a temporary directory by `place`, built there: its objects, and how to remove it. */
function buildCopy(place: (tmp: string) => void): { dir: string; cleanup: () => void } {
  const tmp = mkdtempSync(join(tmpdir(), 'hoptrace-kernel-ab-'));
  const cleanup = () => rmSync(tmp, { recursive: true, force: true });
  try {
    place(tmp);
    execFileSync('make', ['-s', '-C', join(tmp, 'bpf')], { stdio: ['ignore', 'ignore', 'inherit'] });
  } catch (err) {
    cleanup();
    throw err;
  }
  return { dir: join(tmp, 'bpf/.output'), cleanup };
}

/** The base build's objects: --base-objects, or bpf/ of --base built in a temporary directory. */
function baseObjects(): { dir: string; label: string; cleanup: () => void } {
  const given = strArg('base-objects', '');
  if (given) return { dir: resolve(given), label: given, cleanup: () => {} };
  const rev = strArg('base', 'HEAD');
  const built = buildCopy((tmp) => {
    const tar = execFileSync('git', ['-C', ROOT, 'archive', rev, 'bpf'], { maxBuffer: 1 << 30 });
    execFileSync('tar', ['-x', '-C', tmp], { input: tar });
    copyFileSync(join(ROOT, 'bpf/vmlinux.h'), join(tmp, 'bpf/vmlinux.h'));
  });
  const sha = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', rev], { encoding: 'utf8' }).trim();
  return { ...built, label: `${rev} (${sha})` };
}

interface Pair {
  /** ns/run per device hook, A and B. */
  a: number[];
  b: number[];
  /** A linked first. */
  aFirst: boolean;
}

/** Both builds linked at once (`order`: first linked first) over one run of traffic: each one's ns/run per device hook. */
async function pairRun(lab: BenchLab, order: string[], hooks: DeviceHooks, mode: string, port: number): Promise<number[][]> {
  const sources: LiveSource[] = [];
  const drains: Promise<void>[] = [];
  try {
    for (const objDir of order) {
      // queueIdleMs 0: start_xmit stays linked (it returns at once on this noqueue pair) in both
      const s = createLiveSource(parseLiveOptions({ netns: [lab.a, lab.b], sampleN: mode === 'full' ? 1 : 1 << 20, node: 'kernel-ab', deviceHooks: hooks, objDir, objects: ['packet'], queueIdleMs: 0 }));
      sources.push(s);
      drains.push((async () => { for await (const c of s.chunks()) void c; })());
    }
    const stats = () => sources.map((s) => new Map(s.programStats().map((p) => [p.tracepoint, p])));
    let before = stats();
    await lab.tcp({ streams: 1, port, seconds: SECONDS, size: BULK_WRITE }, () => (before = stats()));
    const after = stats();
    return sources.map((_, k) => DEVICE[hooks].map((h) => (after[k]!.get(h)!.runNs - before[k]!.get(h)!.runNs) / (after[k]!.get(h)!.runs - before[k]!.get(h)!.runs)));
  } finally {
    for (const s of sources) await s.stop();
    await Promise.all(drains);
  }
}

/** Both builds on the same packets, R repeats with the link order alternating: the pairs, by "hooks mode". */
async function compare(lab: BenchLab, aDir: string, bDir: string, port: { next: number }): Promise<Map<string, Pair[]>> {
  const results = new Map<string, Pair[]>();
  for (let i = 0; i < R; i++) {
    for (const hooks of HOOKS) {
      for (const mode of MODES) {
        const aFirst = i % 2 === 0;
        const [first, second] = await pairRun(lab, aFirst ? [aDir, bDir] : [bDir, aDir], hooks, mode, port.next);
        port.next += 4;
        const key = `${hooks} ${mode}`;
        results.set(key, [...(results.get(key) ?? []), { a: aFirst ? first! : second!, b: aFirst ? second! : first!, aFirst }]);
      }
    }
  }
  return results;
}

/** Per device hook of one "hooks mode": median A and B ns/run, and B/A in each link order and their mean. */
function summarize(pairs: Pair[], j: number) {
  const ratio = (aFirst: boolean) => median(pairs.filter((p) => p.aFirst === aFirst).map((p) => p.b[j]! / p.a[j]!));
  const r1 = ratio(true);
  const r2 = ratio(false);
  return { a: median(pairs.map((p) => p.a[j]!)), b: median(pairs.map((p) => p.b[j]!)), r1, r2, mean: (r1 + r2) / 2 };
}

/** One table row per "hooks mode" and device hook of `results`, as `row` writes it. */
function tableRows(results: Map<string, Pair[]>, row: (hooks: DeviceHooks, mode: string, hook: string, s: ReturnType<typeof summarize>) => string): string[] {
  return [...results].flatMap(([key, pairs]) => {
    const [hooks, mode] = key.split(' ') as [DeviceHooks, string];
    return DEVICE[hooks].map((h, j) => row(hooks, mode, h, summarize(pairs, j)));
  });
}

const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-');

async function main(): Promise<void> {
  const ablateArg = strArg('ablate', '');
  const parts = ablateArg === 'all' ? ABLATIONS : ablateArg ? ablateArg.split(',').map(ablation) : [];
  const lab = createLab();
  if (CONNTRACK) for (const ns of [lab.a, lab.b]) execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-p', 'tcp', '-j', 'RETURN']);
  const port = { next: 9100 };
  const head = `${R} repeats of ${SECONDS} s, link order alternating${CONNTRACK ? ', conntrack in use' : ''}; kernel.bpf_stats_enabled adds ~2 clock reads to every run of both`;
  try {
    if (parts.length) {
      await profile(lab, parts, port, head);
      return;
    }
    const base = baseObjects();
    let results: Map<string, Pair[]>;
    try {
      results = await withBpfStats(() => compare(lab, base.dir, CANDIDATE, port));
    } finally {
      base.cleanup();
    }
    console.log(`kernel A/B on the same packets: A = ${base.label}, B = this tree's bpf/.output; ${head}\n`);
    console.log('| device hooks | capture | hook | A ns/run | B ns/run | B/A, A linked first | B/A, B linked first | B/A (mean of both orders) |');
    console.log('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |');
    for (const r of tableRows(results, (hooks, mode, h, s) => `| ${hooks} | ${mode} | ${h} | ${f(s.a)} | ${f(s.b)} | ${f(s.r1, 3)} | ${f(s.r2, 3)} | ${f(s.mean, 3)} |`)) console.log(r);
  } finally {
    lab.remove();
  }
}

/**
 * --ablate: this tree's build (A) against copies of it with one part of the device program
 * removed (B, bench/live/ablations.ts), part by part: what each part costs per run.
 */
async function profile(lab: BenchLab, parts: readonly Ablation[], port: { next: number }, head: string): Promise<void> {
  const rows: string[] = [];
  await withBpfStats(async () => {
    for (const part of parts) {
      const copy = buildCopy((tmp) => {
        execFileSync('cp', ['-r', join(ROOT, 'bpf'), tmp]);
        rmSync(join(tmp, 'bpf/.output'), { recursive: true, force: true });
        ablate(join(tmp, 'bpf/packet.bpf.c'), part);
      });
      try {
        const results = await compare(lab, CANDIDATE, copy.dir, port);
        rows.push(...tableRows(results, (hooks, mode, h, s) => `| ${part.part} | ${hooks} | ${mode} | ${h} | ${f(s.a)} | ${f(s.b)} | ${f(s.a * (1 - s.mean))} | ${f(100 * (1 - s.mean), 1)}% | ${part.what} |`));
      } finally {
        copy.cleanup();
      }
    }
  });
  console.log(`device program profile by subtraction, on the same packets: this tree's build against copies with one part removed; ${head}. "saved" is the whole run's ns times (1 - B/A, mean of both link orders)\n`);
  console.log('| part removed | device hooks | capture | hook | whole run ns | without it ns | saved ns/run | share of the run | the part |');
  console.log('| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |');
  for (const r of rows) console.log(r);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
