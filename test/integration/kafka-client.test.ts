/**
 * The kafkajs client against the real broker: a connection with nothing to do
 * leaves the process idle (services/shared/kafka-idle.ts).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createKafka, ensureTopic } from '../../services/shared/kafka.js';
import { RequestQueue } from '../../services/shared/kafka-idle.js';
import { isolatedConfig, quietLog } from './env.js';

describe('kafkajs client on the real broker', () => {
  const cfg = isolatedConfig();
  const kafka = createKafka(cfg, 'test', quietLog);
  const producer = kafka.producer();
  afterAll(async () => {
    await producer.disconnect();
    const admin = kafka.admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [cfg.hopsTopic] }).catch(() => undefined);
    await admin.disconnect();
  });

  it('checks its request queue per response, not every millisecond, once a producer is idle', async () => {
    await ensureTopic(cfg, kafka, quietLog);
    await producer.connect();
    await producer.send({ topic: cfg.hopsTopic, messages: [{ partition: 0, value: 'one' }] });
    const proto = (RequestQueue as unknown as { prototype: { checkPendingRequests(): void } }).prototype;
    const check = proto.checkPendingRequests;
    let checks = 0;
    proto.checkPendingRequests = function (this: unknown) {
      checks++;
      check.call(this);
    };
    try {
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      proto.checkPendingRequests = check;
    }
    // kafkajs 2.2.4 as released: ~500 per connection here (a 1 ms timer loop).
    expect(checks).toBeLessThan(5);
  });
});
