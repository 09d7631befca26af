import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createAgent, kernelNames, type OutMessage } from '../../services/agent/agent.js';
import { Kind } from '../../services/shared/record.js';
import { createAgentMetrics } from '../../services/agent/metrics.js';
import type { RecordChunk, RecordSource } from '../../services/agent/source.js';
import { decodeBatch } from '../../services/shared/batch.js';
import { loadConfig } from '../../services/shared/config.js';
import { RECORD_SIZE } from '../../services/shared/record.js';
import { pack, pkt } from './helpers.js';

const log = pino({ level: 'silent' });

function arraySource(chunks: RecordChunk[]): RecordSource {
  return {
    node: 'node-a',
    boot: 42,
    async *chunks() {
      yield* chunks;
    },
    stop: async () => undefined,
    stats: () => ({}),
    rejected: () => ({}),
  };
}

function chunksOf(n: number, per: number): RecordChunk[] {
  const out: RecordChunk[] = [];
  for (let c = 0; c < n; c++) {
    const recs = Array.from({ length: per }, (_, i) => pkt('10.0.0.1', 1000 + ((c * per + i) % 37), '10.0.0.2', 80));
    out.push({ buf: pack(recs), count: per, firstSeq: c * per, clockOffsetNs: 99n });
  }
  return out;
}

describe('agent pipeline', () => {
  it('ships every record exactly once with its seq, many records per message', async () => {
    const sent: OutMessage[] = [];
    const cfg = loadConfig({ batchRecords: 64, lingerMs: 5, maxInFlight: 2 }, {});
    const agent = createAgent({ cfg, source: arraySource(chunksOf(10, 100)), sink: { where: 'test', send: async (m) => void sent.push(...m) }, partitions: 3, log, metrics: createAgentMetrics() });
    await agent.run();
    const seqs = sent.flatMap((m) => {
      const b = decodeBatch(m.value);
      expect(b).toMatchObject({ agent: 'node-a', node: 'node-a', boot: 42, clockOffsetNs: 99n });
      return Array.from({ length: b.count }, (_, i) => b.seqOf(i));
    });
    expect(seqs.sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(sent.length).toBeLessThan(1000 / 10);
    expect(agent.stats()).toMatchObject({ read: 1000, sent: 1000, dropped: 0 });
  });

  /**
   * An agent running on a source that yields `chunks`, then stays open until release():
   * what it sends meanwhile was sent by its own policy, not by the flush at the end.
   * With `firstAnswer`, the sink answers its first request only once that resolves.
   */
  function runHeldOpen(chunks: RecordChunk[], cfg: ReturnType<typeof loadConfig>, partitions: number, firstAnswer?: Promise<void>) {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const source: RecordSource = {
      ...arraySource([]),
      async *chunks() {
        yield* chunks;
        await gate;
      },
    };
    const requests: OutMessage[][] = [];
    const send = async (m: OutMessage[]) => {
      requests.push(m);
      if (requests.length === 1) await firstAnswer;
    };
    const agent = createAgent({ cfg, source, sink: { where: 'test', send }, partitions, log, metrics: createAgentMetrics() });
    const run = agent.run();
    const until = async (cond: () => boolean) => {
      for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
    };
    return { agent, requests, until, finish: () => (release(), run) };
  }

  it('gathers sendBatches full batches into one request while none has lingered', async () => {
    const { agent, requests, until, finish } = runHeldOpen(chunksOf(8, 10), loadConfig({ batchRecords: 10, sendBatches: 4, lingerMs: 60_000 }, {}), 3);
    await until(() => requests.length >= 2);
    expect(requests.map((r) => r.length)).toEqual([4, 4]);
    await finish();
    expect(agent.stats()).toMatchObject({ read: 80, sent: 80, dropped: 0 });
  });

  // Each sent alone while the source is still open: the linger, not the final flush, sent it.
  it.each([
    ['a full batch once its first record has waited lingerMs', chunksOf(1, 10), { lingerMs: 20, partialLingerMs: 60_000 }],
    ['a partial batch once its first record has waited partialLingerMs', chunksOf(1, 3), { lingerMs: 10, partialLingerMs: 20 }],
    // Drained a minute after the drain before: with the linger counted from the drain
    // itself, these would wait another minute (or the final flush).
    ['a partial batch at once when its records reached the source (chunk.since) a linger ago, as a quiet agent drains', chunksOf(1, 3).map((c) => ({ ...c, since: Date.now() - 60_000 })), { lingerMs: 60_000, partialLingerMs: 60_000 }],
  ])('sends %s', async (_what, chunks, linger) => {
    const { requests, until, finish } = runHeldOpen(chunks, loadConfig({ batchRecords: 10, sendBatches: 4, ...linger }, {}), 1);
    await until(() => requests.length >= 1);
    expect(requests.map((r) => r.map((m) => m.records))).toEqual([[chunks[0]!.count]]);
    await finish();
    expect(requests).toHaveLength(1);
  });

  it('waits partialLingerMs, not lingerMs, for a batch to fill', async () => {
    // 4 times the linger by default: a quiet agent sends ~1 request a second, not ~4.
    expect(loadConfig({}, {})).toMatchObject({ lingerMs: 250, partialLingerMs: 0 });
    const { requests, until, finish } = runHeldOpen(chunksOf(1, 3), loadConfig({ batchRecords: 10, sendBatches: 4, lingerMs: 10 }, {}), 1);
    await new Promise((r) => setTimeout(r, 25)); // past lingerMs, not yet 4 x lingerMs
    expect(requests).toHaveLength(0);
    await until(() => requests.length >= 1);
    expect(requests.map((r) => r.map((m) => m.records))).toEqual([[3]]);
    await finish();
  });

  it.each([1, 4])('while a request is out, keeps pulling, and lingered batches share the next request, as Nagle does (maxInFlight %i)', async (maxInFlight) => {
    let answer!: () => void;
    const answered = new Promise<void>((r) => (answer = r)); // Kafka slow to answer the first request
    const cfg = loadConfig({ batchRecords: 10, sendBatches: 8, lingerMs: 0, maxInFlight }, {});
    const { agent, requests, until, finish } = runHeldOpen(chunksOf(5, 10), cfg, 1, answered);
    await until(() => agent.stats().read === 50);
    expect(agent.stats().read).toBe(50); // pulled everything while the first request was out
    expect(requests.map((r) => r.length)).toEqual([1]); // a slot free for each, but they wait for the one out
    answer();
    await until(() => requests.length === 2);
    expect(requests.map((r) => r.length)).toEqual([1, 4]); // one request, while the source is still open
    await finish();
    expect(agent.stats()).toMatchObject({ read: 50, sent: 50, batches: 5, dropped: 0 });
  });

  it('retries while the sink fails and loses nothing', async () => {
    const sent: OutMessage[] = [];
    let failures = 0;
    const cfg = loadConfig({ batchRecords: 50, lingerMs: 1, retryMaxMs: 100 }, {});
    const sink = {
      where: 'flaky',
      send: async (m: OutMessage[]) => {
        if (failures++ < 5) throw Object.assign(new Error('broker down'), { type: 'KAFKA_DOWN' });
        sent.push(...m);
      },
    };
    const metrics = createAgentMetrics();
    const agent = createAgent({ cfg, source: arraySource(chunksOf(4, 50)), sink, partitions: 2, log, metrics });
    await agent.run();
    expect(sent.reduce((s, m) => s + m.records, 0)).toBe(200);
    expect((await metrics.registry.getSingleMetricAsString('hoptrace_agent_kafka_produce_errors_total'))).toContain('code="KAFKA_DOWN"');
  });

  it('counts what the source rejected as malformed once, by reason, without asking for its stats', async () => {
    const rejected: Record<string, number> = {};
    const source: RecordSource = {
      ...arraySource([]),
      async *chunks() {
        for (const [i, c] of chunksOf(3, 10).entries()) {
          rejected.bad_kind = i + 1; // cumulative, as sources keep them
          if (i === 2) rejected.truncated = 1;
          yield c;
        }
      },
      stats: () => {
        throw new Error('stats() reads kernel counters: not per chunk');
      },
      rejected: () => rejected,
    };
    const metrics = createAgentMetrics();
    const agent = createAgent({ cfg: loadConfig({ batchRecords: 10, lingerMs: 1 }, {}), source, sink: { where: 'test', send: async () => undefined }, partitions: 1, log, metrics });
    await agent.run();
    expect(agent.stats()).toMatchObject({ read: 30, sent: 30, dropped: 4 });
    const text = await metrics.registry.getSingleMetricAsString('hoptrace_agent_records_dropped_total');
    expect(text).toContain('reason="corrupt_bad_kind"} 3');
    expect(text).toContain('reason="corrupt_truncated"} 1');
  });

  it('counts what is still unsent when a stop gives up on a dead sink', async () => {
    const cfg = loadConfig({ batchRecords: 10, lingerMs: 1, retryMaxMs: 100 }, {});
    const agent = createAgent({ cfg, source: arraySource(chunksOf(1, 30)), sink: { where: 'dead', send: async () => Promise.reject(new Error('down')) }, partitions: 1, log, metrics: createAgentMetrics(), flushTimeoutMs: 300 });
    await agent.run();
    expect(agent.stats()).toMatchObject({ read: 30, sent: 0, dropped: 30 });
  });

  it('bounds what it holds: stops pulling while the sink is stalled', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let pulled = 0;
    const source: RecordSource = {
      ...arraySource([]),
      async *chunks() {
        for (const c of chunksOf(200, 100)) {
          pulled += c.count;
          yield c;
        }
      },
    };
    const cfg = loadConfig({ batchRecords: 100, lingerMs: 1, maxInFlight: 1, bufferBytes: 1 << 20 }, {});
    const agent = createAgent({ cfg, source, sink: { where: 'slow', send: () => gate }, partitions: 1, log, metrics: createAgentMetrics() });
    const run = agent.run();
    await new Promise((r) => setTimeout(r, 100));
    expect(pulled * RECORD_SIZE).toBeLessThanOrEqual((1 << 20) + 100 * RECORD_SIZE);
    release();
    await run;
    expect(agent.stats().sent).toBe(20_000);
  });

  it('on stop, takes every chunk the source still holds before it flushes', async () => {
    // As the live source does: stop() ends the chunks once its queue is empty, not before.
    const queued = chunksOf(5, 100);
    let stopped = false;
    let wake: (() => void) | null = null;
    const source: RecordSource = {
      ...arraySource([]),
      async *chunks() {
        for (;;) {
          const c = stopped ? queued.shift() : undefined;
          if (c) yield c;
          else if (stopped) return;
          else await new Promise<void>((r) => (wake = r));
        }
      },
      stop: async () => {
        stopped = true;
        wake?.();
      },
    };
    const sent: OutMessage[] = [];
    const cfg = loadConfig({ batchRecords: 64, lingerMs: 5 }, {});
    const agent = createAgent({ cfg, source, sink: { where: 'test', send: async (m) => void sent.push(...m) }, partitions: 1, log, metrics: createAgentMetrics() });
    const run = agent.run();
    await agent.stop();
    await run;
    expect(agent.stats()).toMatchObject({ read: 500, sent: 500, dropped: 0 });
  });
});

describe('kernel names', () => {
  it('names the drop in the batch that carries it, and looks for names only in batches with a drop or reset', async () => {
    const sent: OutMessage[] = [];
    const looked: number[] = [];
    const names = { dropReason: (n: number) => (looked.push(n), n === 6 ? 'NETFILTER_DROP' : undefined), resetReason: () => undefined, symbol: () => undefined };
    const plain = Array.from({ length: 4 }, (_, i) => pkt('10.0.0.1', 1000 + i, '10.0.0.2', 80));
    const drop = pkt('10.0.0.1', 1, '10.0.0.2', 2, { kind: Kind.DROP, reason: 6 });
    const chunks: RecordChunk[] = [
      { buf: pack(plain), count: 4, firstSeq: 0, clockOffsetNs: 1n },
      { buf: pack([drop, ...plain]), count: 5, firstSeq: 4, clockOffsetNs: 2n }, // a new clock reference: a batch of its own
    ];
    const cfg = loadConfig({ batchRecords: 64, lingerMs: 5 }, {});
    const agent = createAgent({ cfg, source: { ...arraySource(chunks), names }, sink: { where: 'test', send: async (m) => void sent.push(...m) }, partitions: 1, log, metrics: createAgentMetrics() });
    await agent.run();
    const batches = sent.map((m) => decodeBatch(m.value)).sort((a, b) => a.firstSeq - b.firstSeq);
    expect(batches.map((b) => b.count)).toEqual([4, 5]);
    expect(batches[0]!.dropReasonNames?.size ?? 0).toBe(0);
    expect(batches[1]!.dropReasonNames).toEqual(new Map([[6, 'NETFILTER_DROP']]));
    expect(looked).toEqual([6]);
  });

  it('names only the reasons and locations present in the batch', () => {
    const drop = pkt('10.0.0.1', 1, '10.0.0.2', 2, { kind: Kind.DROP, reason: 6, aux: [0x81234567, 0xffffffff, 2] });
    const rst = pkt('10.0.0.2', 2, '10.0.0.1', 1, { kind: Kind.RST_SENT, reason: 1 });
    const names = { dropReason: (n: number) => (n === 6 ? 'NETFILTER_DROP' : undefined), resetReason: (n: number) => (n === 1 ? 'NO_SOCKET' : undefined), symbol: (a: bigint) => (a === 0xffffffff81234567n ? 'nf_hook_slow' : undefined) };
    expect(kernelNames(names, pack([drop, rst, pkt('10.0.0.1', 1, '10.0.0.2', 2)]), 3)).toEqual({
      dropReasonNames: new Map([[6, 'NETFILTER_DROP']]),
      resetReasonNames: new Map([[1, 'NO_SOCKET']]),
      symbols: new Map([[0xffffffff81234567n, 'nf_hook_slow']]),
    });
    // where the batch knows its records to name, only those are read
    expect(kernelNames(names, pack([drop, rst, pkt('10.0.0.1', 1, '10.0.0.2', 2)]), 3, [1])).toEqual({
      dropReasonNames: new Map(),
      resetReasonNames: new Map([[1, 'NO_SOCKET']]),
      symbols: new Map(),
    });
  });
});
