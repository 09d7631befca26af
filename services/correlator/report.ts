/**
 * Latency report over many flows: pure. Node clock offsets drift (NTP slews wall
 * clocks), so each flow is corrected with offsets estimated from its own packets when
 * it has enough of them both ways between every pair of its nodes; otherwise with the
 * offsets estimated from all flows pooled. Per-packet hop latencies are then
 * aggregated by segment.
 */
import { percentile } from '../shared/stats.js';
import { collectPairs, estimateOffsets, firstExchange, packetInstances, segmentSamples, summarizeSegments, type ClockOffset, type Exchange, type PairStats, type Segment } from './path.js';
import type { TimelineRow } from './timeline.js';

/** The flows' first requests and responses (path.ts Exchange), p50 and p99 of each part, µs. */
export interface ExchangeSummary {
  /** Flows whose two ends both saw their first request and response. */
  flows: number;
  clientWaitUs: { p50: number; p99: number };
  serverUs: { p50: number; p99: number };
  networkUs: { p50: number; p99: number };
}

export interface LatencyReport {
  flows: number;
  packets: number;
  clock: ClockOffset[];
  /** Slowest p99 first. */
  segments: Segment[];
  /** null when no flow had both ends watched. */
  exchanges: ExchangeSummary | null;
}

function summarizeExchanges(xs: Exchange[]): ExchangeSummary | null {
  if (!xs.length) return null;
  const q = (f: (x: Exchange) => number) => {
    const v = xs.map(f).sort((a, b) => a - b);
    return { p50: percentile(v, 0.5), p99: percentile(v, 0.99) };
  };
  return { flows: xs.length, clientWaitUs: q((x) => x.clientWaitUs), serverUs: q((x) => x.serverUs), networkUs: q((x) => x.networkUs) };
}

/** Packets each way between two nodes for a flow's own offset estimate to be trusted. */
const OWN_ESTIMATE_MIN = 3;

function ownOffsets(inst: ReturnType<typeof packetInstances>): Map<string, bigint> | null {
  const pairs = collectPairs(inst);
  const nodes = new Set<string>();
  for (const p of pairs.values()) {
    nodes.add(p.a).add(p.b);
    if (p.ab.length < OWN_ESTIMATE_MIN || p.ba.length < OWN_ESTIMATE_MIN) pairs.delete(`${p.a}\u0000${p.b}`);
  }
  const { offsets, clock } = estimateOffsets(pairs);
  // Every node must be placed from one reference (one tree), else fall back to the pooled estimate.
  return clock.filter((c) => c.from === null).length === 1 && offsets.size === nodes.size ? offsets : null;
}

export function latencyReport(flows: Iterable<readonly TimelineRow[]>): LatencyReport {
  const all = [...flows].map((rows) => packetInstances(rows));
  const pairs = new Map<string, PairStats>();
  for (const inst of all) collectPairs(inst, pairs);
  const { offsets, clock } = estimateOffsets(pairs);
  const samples: ReturnType<typeof segmentSamples> = new Map();
  const exchanges: Exchange[] = [];
  for (const inst of all) {
    const use = ownOffsets(inst) ?? offsets;
    segmentSamples(inst, use, samples);
    const x = firstExchange(inst, use);
    if (x) exchanges.push(x);
  }
  return {
    flows: all.length,
    packets: all.reduce((s, i) => s + i.length, 0),
    clock,
    segments: summarizeSegments(samples).sort((x, y) => y.p99Us - x.p99Us),
    exchanges: summarizeExchanges(exchanges),
  };
}
