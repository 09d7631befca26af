/**
 * Latency report over many flows: pure. Clock offsets are estimated once from every
 * flow's packets pooled (far more samples than one flow has), then each flow's
 * per-packet hop latencies are aggregated by segment.
 */
import { collectPairs, estimateOffsets, packetInstances, segmentSamples, summarizeSegments, type ClockOffset, type PairStats, type Segment } from './path.js';
import type { TimelineRow } from './timeline.js';

export interface LatencyReport {
  flows: number;
  packets: number;
  clock: ClockOffset[];
  /** Slowest p99 first. */
  segments: Segment[];
}

export function latencyReport(flows: Iterable<readonly TimelineRow[]>): LatencyReport {
  const all = [...flows].map((rows) => packetInstances(rows));
  const pairs = new Map<string, PairStats>();
  for (const inst of all) collectPairs(inst, pairs);
  const { offsets, clock } = estimateOffsets(pairs);
  const samples: ReturnType<typeof segmentSamples> = new Map();
  for (const inst of all) segmentSamples(inst, offsets, samples);
  return {
    flows: all.length,
    packets: all.reduce((s, i) => s + i.length, 0),
    clock,
    segments: summarizeSegments(samples).sort((x, y) => y.p99Us - x.p99Us),
  };
}
