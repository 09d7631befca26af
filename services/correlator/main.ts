/** Correlator entry: migrate the schema, join the consumer group, stop gracefully on signals. */
import { createClickHouse, migrate } from '../shared/clickhouse.js';
import type { Config } from '../shared/config.js';
import { createKafka, ensureTopic } from '../shared/kafka.js';
import { createLogger } from '../shared/log.js';
import { retry } from '../shared/retry.js';
import { clickhouseWriter, createCorrelator, type Correlator } from './correlator.js';
import { createJudge, type Judge } from './judge.js';

export async function startCorrelator(cfg: Config, signal?: AbortSignal): Promise<Correlator & { judge: Judge; close(): Promise<void> }> {
  const log = createLogger('correlator', cfg.logLevel);
  await retry(() => migrate(cfg), { what: `migrate schema on ClickHouse at ${cfg.clickhouseUrl}`, log, maxDelayMs: cfg.retryMaxMs, signal });
  const kafka = createKafka(cfg, 'correlator', log);
  await ensureTopic(cfg, kafka, log, signal);
  const ch = createClickHouse(cfg);
  const judge = createJudge({ ch, log, settleMs: cfg.judgeSettleMs, lookbackMs: cfg.judgeLookbackMs });
  const c = createCorrelator(cfg, kafka, clickhouseWriter(cfg, ch, undefined, log), log, (anomalous) => judge.notify(anomalous));
  await judge.start();
  await c.start();
  const timer = setInterval(() => log.info({ ...c.stats(), judge: judge.stats() }, 'correlator progress'), 10_000);
  timer.unref();
  return {
    ...c,
    judge,
    async close() {
      clearInterval(timer);
      await c.stop();
      await judge.stop();
      await ch.close();
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
