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
 *       [--modes sampled-out,full] [--hooks tc,tracepoint] [--conntrack]
 *
 * A (base): bpf/ of git revision --base (default HEAD: the working tree's changes are the
 * candidate), built into a temporary directory with this tree's vmlinux.h, or the objects
 * already built in --base-objects. B (candidate): this tree's bpf/.output. Both must share
 * this tree's maps and record ABI (the loader is this tree's). Traffic: 1 stream of
 * 128 KiB writes over a veth pair between two namespaces of the bench's own. With
 * --conntrack both namespaces use conntrack (a nat table rule that changes nothing), as
 * the lab's nodes do: packets carry an entry, so the CT record path runs too.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createLiveSource, parseLiveOptions, type LiveSource } from '../services/agent/live/index.js';
import type { DeviceHooks } from '../services/agent/live/options.js';
import { median, numArg, strArg, withBpfStats } from './common.js';
import { createLab, type BenchLab } from './live/lab.js';

const ROOT = resolve(import.meta.dirname, '../..');
const R = numArg('repeat', 8);
const SECONDS = numArg('seconds', 3);
const MODES = strArg('modes', 'sampled-out,full').split(',') as ('sampled-out' | 'full')[];
const HOOKS = strArg('hooks', 'tc,tracepoint').split(',') as DeviceHooks[];
const CONNTRACK = process.argv.includes('--conntrack');
/** Device hook programs, by the tracepoint (or tcx attach point) they run at. */
const DEVICE: Record<DeviceHooks, [string, string]> = { tc: ['tcx/ingress', 'tcx/egress'], tracepoint: ['netif_receive_skb', 'net_dev_queue'] };

for (const m of MODES) if (m !== 'sampled-out' && m !== 'full') throw new Error(`--modes: ${m}? (sampled-out, full)`);
for (const h of HOOKS) if (h !== 'tc' && h !== 'tracepoint') throw new Error(`--hooks: ${h}? (tc, tracepoint)`);

/** The base build's objects: --base-objects, or bpf/ of --base built in a temporary directory. */
function baseObjects(): { dir: string; label: string; cleanup: () => void } {
  const given = strArg('base-objects', '');
  if (given) return { dir: resolve(given), label: given, cleanup: () => {} };
  const rev = strArg('base', 'HEAD');
  const tmp = mkdtempSync(join(tmpdir(), 'hoptrace-kernel-ab-'));
  const tar = execFileSync('git', ['-C', ROOT, 'archive', rev, 'bpf'], { maxBuffer: 1 << 30 });
  execFileSync('tar', ['-x', '-C', tmp], { input: tar });
  copyFileSync(join(ROOT, 'bpf/vmlinux.h'), join(tmp, 'bpf/vmlinux.h'));
  execFileSync('make', ['-s', '-C', join(tmp, 'bpf')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const sha = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', rev], { encoding: 'utf8' }).trim();
  return { dir: join(tmp, 'bpf/.output'), label: `${rev} (${sha})`, cleanup: () => rmSync(tmp, { recursive: true, force: true }) };
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
    await lab.tcp({ streams: 1, port, seconds: SECONDS, size: 131072 }, () => (before = stats()));
    const after = stats();
    return sources.map((_, k) => DEVICE[hooks].map((h) => (after[k]!.get(h)!.runNs - before[k]!.get(h)!.runNs) / (after[k]!.get(h)!.runs - before[k]!.get(h)!.runs)));
  } finally {
    for (const s of sources) await s.stop();
    await Promise.all(drains);
  }
}

async function main(): Promise<void> {
  const base = baseObjects();
  const cand = join(ROOT, 'bpf/.output');
  const lab = createLab();
  if (CONNTRACK) for (const ns of [lab.a, lab.b]) execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-p', 'tcp', '-j', 'RETURN']);
  const results = new Map<string, Pair[]>();
  try {
    await withBpfStats(async () => {
      let port = 9100;
      for (let i = 0; i < R; i++) {
        for (const hooks of HOOKS) {
          for (const mode of MODES) {
            const aFirst = i % 2 === 0;
            const [first, second] = await pairRun(lab, aFirst ? [base.dir, cand] : [cand, base.dir], hooks, mode, port);
            port += 4;
            const key = `${hooks} ${mode}`;
            results.set(key, [...(results.get(key) ?? []), { a: aFirst ? first! : second!, b: aFirst ? second! : first!, aFirst }]);
          }
        }
      }
    });
  } finally {
    lab.remove();
    base.cleanup();
  }

  console.log(`kernel A/B on the same packets: A = ${base.label}, B = this tree's bpf/.output; ${R} repeats of ${SECONDS} s, link order alternating${CONNTRACK ? ', conntrack in use' : ''}; kernel.bpf_stats_enabled adds ~2 clock reads to every run of both\n`);
  console.log('| device hooks | capture | hook | A ns/run | B ns/run | B/A, A linked first | B/A, B linked first | B/A (mean of both orders) |');
  console.log('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |');
  for (const [key, pairs] of results) {
    const [hooks, mode] = key.split(' ') as [DeviceHooks, string];
    DEVICE[hooks].forEach((h, j) => {
      const ratio = (aFirst: boolean) => median(pairs.filter((p) => p.aFirst === aFirst).map((p) => p.b[j]! / p.a[j]!));
      const r1 = ratio(true);
      const r2 = ratio(false);
      const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-');
      console.log(`| ${hooks} | ${mode} | ${h} | ${f(median(pairs.map((p) => p.a[j]!)))} | ${f(median(pairs.map((p) => p.b[j]!)))} | ${f(r1, 3)} | ${f(r2, 3)} | ${f((r1 + r2) / 2, 3)} |`);
    });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
