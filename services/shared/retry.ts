/** Retry with capped exponential backoff and jitter, for Kafka and ClickHouse outages. */
import { describeError } from './errors.js';
import type { Logger } from './log.js';

export interface RetryOptions {
  /** What is being attempted and against which service, for the log: "insert into ClickHouse at http://...". */
  what: string;
  log: Logger;
  maxDelayMs: number;
  /** Stop retrying (rethrow) when this returns false for an error. Default: always retry. */
  retriable?: (err: unknown) => boolean;
  /** Give up (rethrow the last error) once aborted. */
  signal?: AbortSignal;
  /** Most attempts; default unbounded. */
  attempts?: number;
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

export async function retry<T>(fn: () => Promise<T>, o: RetryOptions): Promise<T> {
  let delay = 100;
  for (let attempt = 1; ; attempt++) {
    try {
      const out = await fn();
      if (attempt > 1) o.log.info({ attempt }, `${o.what}: succeeded after ${attempt} attempts`);
      return out;
    } catch (err) {
      if (o.signal?.aborted || (o.retriable && !o.retriable(err)) || (o.attempts !== undefined && attempt >= o.attempts)) throw err;
      const wait = Math.min(o.maxDelayMs, delay) * (0.75 + Math.random() * 0.5);
      o.log.warn({ attempt, retryInMs: Math.round(wait) }, `${o.what} failed: ${describeError(err)}; retrying`);
      await sleep(wait, o.signal);
      delay *= 2;
    }
  }
}
