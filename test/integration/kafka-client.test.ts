/**
 * The kafkajs client against the real broker: a connection with nothing to do
 * leaves the process idle (services/shared/kafka-idle.ts); `hoptrace lag` reads the
 * correlator group's lag.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
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

  it('hoptrace lag counts the messages the group has not read, and --wait exits 1 until it has read them', async () => {
    await ensureTopic(cfg, kafka, quietLog);
    await producer.connect();
    await producer.send({ topic: cfg.hopsTopic, messages: [{ partition: 1, value: 'a' }, { partition: 1, value: 'b' }, { partition: 2, value: 'c' }] });
    const lag = (...args: string[]) =>
      spawnSync(process.execPath, [join(__dirname, '../../dist/services/cli/main.js'), 'lag', ...args], {
        encoding: 'utf8',
        env: { ...process.env, HOPTRACE_HOPS_TOPIC: cfg.hopsTopic, HOPTRACE_GROUP_ID: cfg.groupId, HOPTRACE_KAFKA_BROKERS: cfg.kafkaBrokers.join(',') },
      });
    const admin = kafka.admin();
    await admin.connect();
    try {
      const ends = await admin.fetchTopicOffsets(cfg.hopsTopic);
      const unread = ends.reduce((n, p) => n + Number(p.high) - Number(p.low), 0); // this group has read nothing
      expect(unread).toBeGreaterThanOrEqual(3);
      const before = lag('--wait', '1');
      expect(before.stdout).toContain(`correlator group ${cfg.groupId} on ${cfg.hopsTopic}: ${unread} message(s) behind`);
      expect(before.status).toBe(1);
      expect(before.stderr).toMatch(/has not caught up after 1 s/);
      await admin.setOffsets({ groupId: cfg.groupId, topic: cfg.hopsTopic, partitions: ends.map((p) => ({ partition: p.partition, offset: p.high })) });
    } finally {
      await admin.disconnect();
    }
    const after = lag('--wait', '5');
    expect(after.stdout).toContain(': 0 message(s) behind');
    expect(after.status).toBe(0);
  });
});
