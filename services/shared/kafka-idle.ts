/**
 * kafkajs 2.2.4 keeps every broker connection's event loop spinning once one
 * response has arrived: RequestQueue.checkPendingRequests ends by calling
 * scheduleCheckPendingRequests, which with nothing pending and no throttle arms a
 * setTimeout of (throttledUntil - now), a negative delay, that is 1 ms; its callback
 * calls checkPendingRequests again (tulios/kafkajs#1556, #1604, #1704; the fix there
 * is unreleased). Each connection wakes its process ~1,000 times a second for
 * nothing: a live agent with no events to ship used 5% of a CPU (590 wakeups/s in
 * /proc/PID/schedstat), and the wakeups land on CPUs that carry the traffic.
 *
 * Nothing needs that timer: a request pushed while the queue may send goes out at
 * once, one pushed while throttled or over the in-flight limit is pending and
 * schedules its own check, and every response checks the queue. So the check is
 * scheduled only when a request is pending or a throttle is in force, as the
 * proposed upstream fix does.
 *
 * Each connection also checks its requests in flight for a timeout every 100 ms
 * (scheduleRequestTimeoutCheck), in flight or not: ten JavaScript wake-ups a second
 * per connection. Here it checks every REQUEST_TIMEOUT_CHECK_MS instead, so a request
 * times out at most that much after its requestTimeout (30 s by default). A quiet
 * agent over the lab (every flow sampled out) went from ~22 to ~14 context switches
 * and from ~14 to ~11.5 ms of CPU a second (perf stat on the agent, two 10 s runs each).
 *
 * Importing this module patches the class kafkajs loads (the same module instance:
 * CommonJS caches it by path).
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface RequestQueueLike {
  pending: unknown[];
  inflight: Map<number, { sentAt: number; requestTimeout: number; timeoutRequest(): void }>;
  throttledUntil: number;
  enforceRequestTimeout: boolean;
  requestTimeout: number;
  requestTimeoutIntervalId?: NodeJS.Timeout;
  isConnected(): boolean;
  destroy(): void;
  scheduleCheckPendingRequests(): void;
  scheduleRequestTimeoutCheck(): void;
}

/** How often a connection looks for requests past their timeout, ms (kafkajs: 100). */
export const REQUEST_TIMEOUT_CHECK_MS = 1000;

export const RequestQueue = require('kafkajs/src/network/requestQueue/index.js') as { prototype: RequestQueueLike };

type Method = (this: RequestQueueLike) => void;

/** Replaces RequestQueue.prototype[name] with make(kafkajs's own), once; throws if kafkajs no longer has it. */
function patch(name: 'scheduleCheckPendingRequests' | 'scheduleRequestTimeoutCheck', make: (original: Method) => Method): void {
  const proto = RequestQueue.prototype;
  const original = proto[name] as Method & { hoptraceIdleFix?: boolean };
  if (typeof original !== 'function') throw new Error(`kafkajs: RequestQueue.${name} not found; kafka-idle.ts needs review for this kafkajs version`);
  if (original.hoptraceIdleFix) return;
  const patched = make(original) as Method & { hoptraceIdleFix?: boolean };
  patched.hoptraceIdleFix = true;
  proto[name] = patched;
}

patch('scheduleCheckPendingRequests', (original) =>
  function (this: RequestQueueLike): void {
    if (this.pending.length === 0 && this.throttledUntil <= Date.now()) return;
    original.call(this);
  },
);

// What kafkajs 2.2.4's does, at REQUEST_TIMEOUT_CHECK_MS.
patch('scheduleRequestTimeoutCheck', () =>
  function (this: RequestQueueLike): void {
    if (!this.enforceRequestTimeout) return;
    this.destroy();
    this.requestTimeoutIntervalId = setInterval(() => {
      this.inflight.forEach((request) => {
        if (Date.now() - request.sentAt > request.requestTimeout) request.timeoutRequest();
      });
      if (!this.isConnected()) this.destroy();
    }, Math.min(this.requestTimeout, REQUEST_TIMEOUT_CHECK_MS));
  },
);
