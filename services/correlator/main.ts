/** Correlator entry: migrate the schema, join the consumer group, stop gracefully on signals. */
import { createClickHouse, migrate } from '../shared/clickhouse.js';
import type { Config } from '../shared/config.js';
import { createKafka, ensureTopic } from '../shared/kafka.js';
import { createLogger } from '../shared/log.js';
import { retry } from '../shared/retry.js';
import { createCompactor, type Compactor } from './compact.js';
import { clickhouseWriter, createCorrelator, type Correlator } from './correlator.js';
import { createJudge, type Judge } from './judge.js';

export async function startCorrelator(cfg: Config, signal?: AbortSignal): Promise<Correlator & { judge: Judge; compactor: Compactor; close(): Promise<void> }> {
  const log = createLogger('correlator', cfg.logLevel);
  await retry(() => migrate(cfg), { what: `migrate schema on ClickHouse at ${cfg.clickhouseUrl}`, log, maxDelayMs: cfg.retryMaxMs, signal });
  const kafka = createKafka(cfg, 'correlator', log);
  await ensureTopic(cfg, kafka, log, signal);
  const ch = createClickHouse(cfg);
  const judge = createJudge({ ch, log, settleMs: cfg.judgeSettleMs, lookbackMs: cfg.judgeLookbackMs });
  const c = createCorrelator(cfg, kafka, clickhouseWriter(cfg, ch, undefined, log), log, (anomalous) => judge.notify(anomalous));
  // A client of its own: an OPTIMIZE waits for its merge, minutes for a large day.
  const slow = createClickHouse(cfg, undefined, 3_600_000);
  const compactor = createCompactor({ ch: slow, log, everyMs: cfg.compactEveryMs, quietMs: cfg.compactQuietMs });
  await judge.start();
  await c.start();
  compactor.start();
  const timer = setInterval(() => log.info({ ...c.stats(), judge: judge.stats(), compact: compactor.stats() }, 'correlator progress'), 10_000);
  timer.unref();
  return {
    ...c,
    judge,
    compactor,
    async close() {
      clearInterval(timer);
      compactor.stop();
      await c.stop();
      await judge.stop();
      await Promise.all([ch.close(), slow.close()]);
    },
  };
}

export async function runCorrelator(cfg: Config): Promise<void> {
  const abort = new AbortController();
  const stopped = new Promise<void>((resolve) => {
    const onSignal = () => {
      abort.abort();
      resolve();
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
  const c = await startCorrelator(cfg, abort.signal);
  await stopped;
  await c.close();
}
