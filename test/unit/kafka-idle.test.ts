import { afterEach, describe, expect, it } from 'vitest';
import { RequestQueue } from '../../services/shared/kafka-idle.js';

const silent = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

interface Queue {
  pending: unknown[];
  inflight: Map<number, unknown>;
  throttledUntil: number;
  throttleCheckTimeoutId: unknown;
  checkPendingRequests(): void;
  maybeThrottle(ms: number): void;
  destroy(): void;
}

const newQueue = (): Queue =>
  new (RequestQueue as unknown as new (o: object) => Queue)({ clientId: 'test', broker: 'b:9092', logger: silent, maxInFlightRequests: 1, requestTimeout: 1000, enforceRequestTimeout: false });

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
});
