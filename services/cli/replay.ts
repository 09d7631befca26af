/**
 * `hoptrace replay FILE...`: one agent per recording (one per node of a multi-node
 * recording), all in this process, with a progress display on a terminal and
 * periodic progress lines otherwise.
 */
import cliProgress from 'cli-progress';
import { startAgent, type RunningAgent } from '../agent/main.js';
import { openRecording, type CorruptReport } from '../agent/recording-source.js';
import type { Config } from '../shared/config.js';
import { createLogger } from '../shared/log.js';

export interface ReplaySummary {
  node: string;
  file: string;
  records: number;
  sent: number;
  dropped: number;
  corrupt: CorruptReport[];
}

export async function replay(cfg: Config, files: string[], opts: { rate: number; progress: boolean }): Promise<ReplaySummary[]> {
  const log = createLogger('replay', opts.progress ? 'warn' : cfg.logLevel);
  const corrupt = new Map<string, CorruptReport[]>();
  const running: { file: string; total: number; run: RunningAgent }[] = [];
  for (const file of files) {
    const list: CorruptReport[] = [];
    corrupt.set(file, list);
    const source = await openRecording({
      file,
      rate: opts.rate,
      onCorrupt: (r) => {
        list.push(r);
        log.warn(r, `corrupt record in ${r.file} at offset ${r.offset}: ${r.reason}`);
      },
    });
    running.push({ file, total: source.totalRecords, run: await startAgent(cfg, source, log, { metrics: false }) });
  }
  const onSignal = () => running.forEach((r) => void r.run.stop());
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const bars = opts.progress ? new cliProgress.MultiBar({ format: ' {node} [{bar}] {percentage}% | {value}/{total} records | {rate}/s', hideCursor: true, clearOnComplete: false }, cliProgress.Presets.shades_classic) : undefined;
  const perBar = running.map((r) => bars?.create(r.total, 0, { node: r.run.source.node.padEnd(8), rate: 0 }));
  const t0 = Date.now();
  const tick = setInterval(() => {
    const secs = Math.max(0.001, (Date.now() - t0) / 1000);
    running.forEach((r, i) => {
      const s = r.run.agent.stats();
      perBar[i]?.update(s.sent, { rate: Math.round(s.sent / secs) });
      if (!bars) log.info({ node: r.run.source.node, sent: s.sent, total: r.total }, 'replay progress');
    });
  }, bars ? 200 : 5_000);
  try {
    await Promise.all(running.map((r) => r.run.done));
  } finally {
    clearInterval(tick);
    running.forEach((r, i) => perBar[i]?.update(r.run.agent.stats().sent));
    bars?.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return running.map((r) => {
    const s = r.run.agent.stats();
    return { node: r.run.source.node, file: r.file, records: r.total, sent: s.sent, dropped: s.dropped, corrupt: corrupt.get(r.file) ?? [] };
  });
}
