// @ts-check
/**
 * The client pod's workload: <count> short HTTP requests to <url>, each on a new TCP
 * connection, <concurrency> at a time. Prints one JSON summary: successes, failures by
 * error code, connect (TCP handshake, about one RTT) and total times, and one entry per
 * flow (source port, start time, outcome) for checkers that match flows to timelines.
 */
import http from 'node:http';
import { arg, intArg } from './args.js';

const url = new URL(arg('url', 'http://10.96.0.10:80/bytes?n=100'));
const count = intArg('count', 10);
const concurrency = Math.max(1, intArg('concurrency', 8));
const timeoutMs = intArg('timeout-ms', 3000);

/** @typedef {{ sport: number, startMs: number, connectMs: number, totalMs: number, ok: boolean, status?: number, error?: string }} Flow */

/** @returns {Promise<Flow>} */
function one() {
  return new Promise((resolve) => {
    const start = performance.now();
    const startMs = Date.now();
    /** @type {Flow} */
    const flow = { sport: 0, startMs, connectMs: -1, totalMs: -1, ok: false };
    let settled = false;
    /** @param {string | undefined} error */
    const finish = (error) => {
      if (settled) return;
      settled = true;
      flow.totalMs = round(performance.now() - start);
      if (error) flow.error = error;
      else flow.ok = true;
      resolve(flow);
    };
    const req = http.request(url, { agent: false, headers: { connection: 'close' }, timeout: timeoutMs }, (res) => {
      flow.status = res.statusCode;
      res.on('data', () => undefined);
      res.on('end', () => finish(res.statusCode === 200 ? undefined : `HTTP_${res.statusCode}`));
      res.on('error', (err) => finish(code(err)));
    });
    req.on('socket', (s) => {
      s.on('connect', () => {
        flow.connectMs = round(performance.now() - start);
        flow.sport = s.localPort ?? 0;
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (err) => finish(code(err)));
    req.end();
  });
}

/** @param {Error & { code?: string }} err */
function code(err) {
  return err.code ?? err.message;
}

/** @param {number} x */
function round(x) {
  return Math.round(x * 1000) / 1000;
}

/** @param {number[]} xs */
function summary(xs) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  /** @param {number} q */
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[s.length - 1] ?? 0 };
}

/** @type {Flow[]} */
const flows = [];
let next = 0;
async function worker() {
  while (next < count) {
    next++;
    flows.push(await one());
  }
}
const t0 = performance.now();
await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(count, 1)) }, worker));
/** @type {Record<string, number>} */
const errors = {};
for (const f of flows) if (f.error) errors[f.error] = (errors[f.error] ?? 0) + 1;
const ok = flows.filter((f) => f.ok);
process.stdout.write(
  `${JSON.stringify({
    url: url.href,
    requests: flows.length,
    ok: ok.length,
    failed: flows.length - ok.length,
    errors,
    elapsedMs: round(performance.now() - t0),
    connectMs: summary(ok.map((f) => f.connectMs)),
    totalMs: summary(ok.map((f) => f.totalMs)),
    flows,
  })}\n`,
);
