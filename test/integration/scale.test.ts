// Issue 2's acceptance run: 1,000,000 events over >= 10,000 flows and 3 nodes go
// agent -> Kafka -> correlator -> ClickHouse and come back exactly once.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateRecording } from '../../services/agent/generate.js';
import { startCorrelator } from '../../services/correlator/main.js';
import { countEvents, dropDatabase, isolatedConfig, query, replayFiles, waitFor } from './env.js';

const EVENTS = 1_000_000;

describe('scale', () => {
  const cfg = isolatedConfig();
  afterAll(() => dropDatabase(cfg));

  it(`${EVENTS} events, >= 10,000 flows, 3 nodes: exactly ${EVENTS} distinct events stored`, async () => {
    const gen = await generateRecording({ outDir: mkdtempSync(join(tmpdir(), 'hopscale-')), events: EVENTS, seed: 1234 });
    expect(gen.flows).toBeGreaterThanOrEqual(10_000);
    const correlator = await startCorrelator(cfg);
    try {
      const agents = await replayFiles(cfg, gen.files);
      await Promise.all(agents.map((a) => a.done));
      expect(agents.reduce((s, a) => s + a.agent.stats().sent, 0)).toBe(EVENTS);
      const done = await waitFor(async () => {
        const c = await countEvents(cfg);
        return c.distinct === EVENTS ? c : undefined;
      }, 600_000, 2_000);
      expect(done).toEqual({ rows: EVENTS, distinct: EVENTS });
      const [f] = await query<{ flows: string; nodes: string }>(cfg, 'SELECT uniqExact(flow_id) AS flows, uniqExact(node) AS nodes FROM hop_events FINAL');
      expect(Number(f!.flows)).toBe(gen.flows);
      expect(Number(f!.nodes)).toBe(3);
    } finally {
      await correlator.close();
    }
  }, 900_000);
});
