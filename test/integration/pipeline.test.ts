// Recording -> agent -> real Kafka -> correlator -> real ClickHouse, checked against
// the recording itself: every event exactly once, flows' timelines complete and ordered.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateRecording, type GenerateResult } from '../../services/agent/generate.js';
import { startCorrelator } from '../../services/correlator/main.js';
import type { Config } from '../../services/shared/config.js';
import { flowId } from '../../services/shared/flowkey.js';
import { consumerLag, createKafka } from '../../services/shared/kafka.js';
import { checkRecord, decodeRecord, RECORD_SIZE, type Tuple } from '../../services/shared/record.js';
import { decodeHeader, HEADER_SIZE } from '../../services/shared/recording.js';
import { countEvents, dropDatabase, isolatedConfig, query, quietLog, replayFiles, waitFor } from './env.js';

type Truth = Map<number, { tuple: Tuple; events: { node: string; seq: number; wall: bigint }[] }>;

/** Ground truth from the recording files: per 5-tuple, its events' (node, seq, wall ts), time-ordered. */
function truth(files: string[]) {
  const flows: Truth = new Map();
  let valid = 0;
  for (const f of files) {
    const bytes = readFileSync(f);
    const h = decodeHeader(bytes, f);
    const body = bytes.subarray(HEADER_SIZE);
    for (let i = 0; i * RECORD_SIZE < body.length; i++) {
      const off = i * RECORD_SIZE;
      if (checkRecord(body, off)) continue;
      valid++;
      const id = flowId(body, off);
      if (!flows.has(id)) flows.set(id, { tuple: decodeRecord(body, off).tuple, events: [] });
      flows.get(id)!.events.push({ node: h.node, seq: i, wall: body.readBigUInt64LE(off) + h.clockOffsetNs });
    }
  }
  for (const { events: evs } of flows.values()) evs.sort((a, b) => (a.wall < b.wall ? -1 : a.wall > b.wall ? 1 : a.node.localeCompare(b.node) || a.seq - b.seq));
  return { flows, valid };
}

async function replayAll(cfg: Config, files: string[]) {
  const agents = await replayFiles(cfg, files);
  await Promise.all(agents.map((a) => a.done));
  return agents.map((a) => a.agent.stats());
}

/** Sampled flows: one flow id holds every event of the 5-tuple (both directions, all nodes), in time order. */
async function checkSampledTimelines(cfg: Config, flows: Truth, samples: number) {
  const ids = [...flows.keys()];
  for (let k = 0; k < samples; k++) {
    const { tuple: t, events } = flows.get(ids[Math.floor((k * ids.length) / samples)]!)!;
    const [owner] = await query<{ flow_id: string }>(cfg, `SELECT DISTINCT flow_id FROM hop_events WHERE saddr = '${t.saddr}' AND sport = ${t.sport} AND daddr = '${t.daddr}' AND dport = ${t.dport}`);
    const rows = await query<{ node: string; seq: string; wall_ts_ns: string }>(cfg, `SELECT node, seq, wall_ts_ns FROM hop_events FINAL WHERE flow_id = ${owner!.flow_id} ORDER BY wall_ts_ns, node, seq`);
    const want = events.map((e) => `${e.node}/${e.seq}/${e.wall}`);
    expect(rows.map((r) => `${r.node}/${r.seq}/${r.wall_ts_ns}`), `flow ${t.saddr}:${t.sport} -> ${t.daddr}:${t.dport}`).toEqual(want);
  }
}

describe('pipeline on real Kafka and ClickHouse', () => {
  let cfg: Config;
  let gen: GenerateResult;
  let correlator: Awaited<ReturnType<typeof startCorrelator>>;

  beforeAll(async () => {
    cfg = isolatedConfig({ batchRecords: 512, insertRows: 20_000 });
    gen = await generateRecording({ outDir: mkdtempSync(join(tmpdir(), 'hopint-')), events: 30_000, seed: 11, corrupt: 3 });
    correlator = await startCorrelator(cfg);
  });

  afterAll(async () => {
    await correlator?.close();
    if (cfg) await dropDatabase(cfg);
  });

  it('every valid event lands exactly once; corrupt ones are reported and kept aside', async () => {
    const stats = await replayAll(cfg, gen.files);
    const { flows, valid } = truth(gen.files);
    expect(valid).toBe(30_000 - 3);
    expect(stats.reduce((s, a) => s + a.sent, 0)).toBe(valid);
    expect(stats.reduce((s, a) => s + a.dropped, 0)).toBe(3);
    const got = await waitFor(async () => {
      const c = await countEvents(cfg);
      return c.distinct === valid ? c : undefined;
    }, 60_000);
    expect(got).toEqual({ rows: valid, distinct: valid });
    await checkSampledTimelines(cfg, flows, 25);
    const summaries = await query<{ n: string }>(cfg, 'SELECT uniqExact(flow_id) AS n FROM flow_parts FINAL');
    expect(Number(summaries[0]!.n)).toBe(flows.size);
    // Lag, as the lab check waits on it: every message for a group that never consumed, none once committed.
    const kafka = createKafka(cfg, 'test', quietLog);
    expect(await consumerLag({ ...cfg, groupId: `${cfg.groupId}-idle` }, kafka)).toBe(stats.reduce((s, a) => s + a.batches, 0));
    expect(await waitFor(async () => (await consumerLag(cfg, kafka)) === 0, 30_000)).toBe(true);
  });

  it('the same batches delivered again (group rewound) change nothing visible', async () => {
    const { valid } = truth(gen.files);
    await correlator.close();
    const admin = createKafka(cfg, 'test', quietLog).admin();
    await admin.connect();
    await admin.resetOffsets({ groupId: cfg.groupId, topic: cfg.hopsTopic, earliest: true });
    await admin.disconnect();
    correlator = await startCorrelator(cfg);
    expect(await waitFor(async () => correlator.stats().events >= valid, 60_000)).toBe(true);
    expect(await countEvents(cfg)).toEqual({ rows: valid, distinct: valid });
    const flowsEvents = await query<{ events: string }>(cfg, 'SELECT sum(events) AS events FROM flow_parts FINAL');
    expect(Number(flowsEvents[0]!.events)).toBe(valid);
  });

  it('the recording replayed again stores no event twice', async () => {
    // A new agent run may cut batches elsewhere (linger), so only event ids are the same: hop_events dedupes;
    // flow_parts are per batch and would count a re-cut batch again (a replay is not a redelivery).
    const before = correlator.stats().events;
    await replayAll(cfg, gen.files);
    const { valid } = truth(gen.files);
    expect(await waitFor(async () => correlator.stats().events >= before + valid, 60_000)).toBe(true);
    expect(await countEvents(cfg)).toEqual({ rows: valid, distinct: valid });
  });
});
