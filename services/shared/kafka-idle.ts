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
 * proposed upstream fix does. Importing this module patches the class kafkajs
 * loads (the same module instance: CommonJS caches it by path).
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface RequestQueueLike {
  pending: unknown[];
  throttledUntil: number;
  scheduleCheckPendingRequests(): void;
}

export const RequestQueue = require('kafkajs/src/network/requestQueue/index.js') as { prototype: RequestQueueLike };

const proto = RequestQueue.prototype;
const original = proto.scheduleCheckPendingRequests;
if (typeof original !== 'function') throw new Error('kafkajs: RequestQueue.scheduleCheckPendingRequests not found; kafka-idle.ts needs review for this kafkajs version');

if (!(original as { hoptraceIdleFix?: boolean }).hoptraceIdleFix) {
  const patched = function (this: RequestQueueLike): void {
    if (this.pending.length === 0 && this.throttledUntil <= Date.now()) return;
    original.call(this);
  };
  (patched as { hoptraceIdleFix?: boolean }).hoptraceIdleFix = true;
  proto.scheduleCheckPendingRequests = patched;
}
