import { afterEach, describe, expect, it, vi } from 'vitest';
import { REQUEST_TIMEOUT_CHECK_MS, RequestQueue } from '../../services/shared/kafka-idle.js';

const silent = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

interface Queue {
  pending: unknown[];
  inflight: Map<number, unknown>;
  throttledUntil: number;
  throttleCheckTimeoutId: unknown;
  checkPendingRequests(): void;
  scheduleRequestTimeoutCheck(): void;
  maybeThrottle(ms: number): void;
  destroy(): void;
}

const newQueue = (o: object = {}): Queue =>
  new (RequestQueue as unknown as new (o: object) => Queue)({ clientId: 'test', broker: 'b:9092', logger: silent, maxInFlightRequests: 1, requestTimeout: 1000, enforceRequestTimeout: false, ...o });

describe('kafkajs request queue without the idle timer loop', () => {
  const queues: Queue[] = [];
  afterEach(() => queues.splice(0).forEach((q) => q.destroy()));

  it('arms no timer once a check finds nothing pending and no throttle (kafkajs 2.2.4 armed a 1 ms one, forever)', () => {
    const q = newQueue();
    queues.push(q);
    q.checkPendingRequests(); // what every response does
    expect(q.throttleCheckTimeoutId).toBeNull();
  });

  it('still sends a request held by a throttle once the throttle ends, then stops checking', async () => {
    const q = newQueue();
    queues.push(q);
    let sent = 0;
    q.maybeThrottle(30);
    q.pending.push({ correlationId: 1, expectResponse: true, pendingDuration: 0, send: () => void sent++ });
    q.checkPendingRequests();
    expect(sent).toBe(0);
    expect(q.throttleCheckTimeoutId).not.toBeNull();
    await new Promise((r) => setTimeout(r, 80));
    expect(sent).toBe(1);
    expect(q.pending).toEqual([]);
    expect(q.throttleCheckTimeoutId).toBeNull();
  });

  it(`checks requests in flight for a timeout every ${REQUEST_TIMEOUT_CHECK_MS} ms, not every 100 ms, and stops once disconnected`, () => {
    vi.useFakeTimers();
    try {
      let connected = true;
      const q = newQueue({ requestTimeout: 30_000, enforceRequestTimeout: true, isConnected: () => connected });
      queues.push(q);
      let timedOut = 0;
      q.inflight.set(1, { sentAt: Date.now() - 31_000, requestTimeout: 30_000, timeoutRequest: () => void timedOut++ });
      q.scheduleRequestTimeoutCheck(); // what a connection does once connected
      vi.advanceTimersByTime(REQUEST_TIMEOUT_CHECK_MS - 1); // kafkajs 2.2.4 would have looked 9 times by now
      expect(timedOut).toBe(0);
      vi.advanceTimersByTime(1);
      expect(timedOut).toBe(1);
      connected = false;
      vi.advanceTimersByTime(REQUEST_TIMEOUT_CHECK_MS); // looks once more, finds the connection gone, stops
      expect(timedOut).toBe(2);
      vi.advanceTimersByTime(10 * REQUEST_TIMEOUT_CHECK_MS);
      expect(timedOut).toBe(2);
    } finally {
      vi.useRealTimers();
    }
  });
});
