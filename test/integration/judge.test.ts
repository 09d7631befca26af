// The correlator's judge against a real ClickHouse: at start it re-judges the anomalies of
// its lookback (and only those), then the flows it is told of; verdicts land in `incidents`,
// and a verdict that late events take back is retracted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertRows } from '../../services/correlator/correlator.js';
import { hopEventEncoder } from '../../services/correlator/encode.js';
import { createFlowStore } from '../../services/api/queries.js';
import { createJudge, type Judge } from '../../services/correlator/judge.js';
import { eventDate, type HopEventRow } from '../../services/correlator/rows.js';
import type { TimelineRow } from '../../services/correlator/timeline.js';
import { createClickHouse, migrate, type ClickHouseClient } from '../../services/shared/clickhouse.js';
import type { Config } from '../../services/shared/config.js';
import { Hook, Kind } from '../../services/shared/record.js';
import { C, flowRows, POD } from '../unit/fixtures/flows.js';
import { dropDatabase, isolatedConfig, query, quietLog, waitFor } from './env.js';

const HOUR_NS = 3_600_000_000_000n;
const NOW_NS = BigInt(Date.now()) * 1_000_000n;

/** `rows` stored as flow `flowId`, moved in time so that the first starts at `startNs`. */
function stored(flowId: number, startNs: bigint, rows: TimelineRow[], base = BigInt(rows[0]!.wall_ts_ns)): HopEventRow[] {
  return rows.map((r) => {
    const ts = startNs + BigInt(r.wall_ts_ns) - base;
    return { reason_name: '', location: '', aux0: 0, aux1: 0, aux2: 0, isn_c: 0, isn_s: 0, ...r, seq: r.seq + flowId * 1000, event_date: eventDate(ts), flow_id: flowId, wall_ts_ns: ts.toString(), kernel_ts_ns: ts.toString(), skb_id: '0', mark: 0 } as HopEventRow;
  });
}

/** A SYN to a closed port, answered by a reset, starting at `startNs`, stored as flow `flowId`. */
function refused(flowId: number, startNs: bigint): HopEventRow[] {
  const rows = flowRows().slice(0, 3);
  const rst: TimelineRow = { ...rows[0]!, seq: 500, kind: Kind.RST_SENT, hook: Hook.TCP_SEND_RESET, node: 'node-c', saddr: POD.addr, sport: POD.port, daddr: C.addr, dport: C.port, sk_state: 0, reason_name: 'NO_SOCKET' };
  return stored(flowId, startNs, [...rows, rst]);
}

/** The server's retransmissions of its response, at 200 ms steps (i = 1, 2, ...) after `rows`' first packet of it. */
function retransmissions(rows: TimelineRow[], steps: number[]): TimelineRow[] {
  const rt = rows.find((r) => r.tcp_seq === 7_000_001 && r.payload_len === 500)!;
  return steps.map((i) => ({ ...rt, seq: 8000 + i, kind: Kind.RETRANS, hook: Hook.TCP_RETRANSMIT, wall_ts_ns: (BigInt(rt.wall_ts_ns) + BigInt(i) * 200_000_000n).toString() }));
}

describe('judge on a real ClickHouse', () => {
  let cfg: Config;
  let ch: ClickHouseClient;
  let judge: Judge | undefined;
  const incidents = () => query<{ flow_id: string; kind: string }>(cfg, 'SELECT toString(flow_id) AS flow_id, kind FROM incidents FINAL ORDER BY flow_id');

  beforeAll(async () => {
    cfg = isolatedConfig();
    await migrate(cfg);
    ch = createClickHouse(cfg);
    // 1: a minute ago (inside the hour of lookback); 2: three days ago; 3: a minute ago, written after start.
    await insertRows(ch, 'hop_events', [...refused(1, NOW_NS - HOUR_NS / 60n), ...refused(2, NOW_NS - 72n * HOUR_NS)], hopEventEncoder);
  });

  afterAll(async () => {
    await judge?.stop();
    await ch?.close();
    if (cfg) await dropDatabase(cfg);
  });

  it('re-judges the lookback at start, then the flows it is told of', async () => {
    judge = createJudge({ ch, log: quietLog, settleMs: 100, lookbackMs: 3_600_000 });
    await judge.start();
    expect(await waitFor(async () => (await incidents()).length === 1, 10_000)).toBe(true);
    expect(await incidents()).toEqual([{ flow_id: '1', kind: 'reset_refused' }]);

    await insertRows(ch, 'hop_events', refused(3, NOW_NS - HOUR_NS / 60n), hopEventEncoder);
    judge.notify([3]);
    expect(await waitFor(async () => (await incidents()).length === 2, 10_000)).toBe(true);
    expect((await incidents()).map((r) => r.flow_id)).toEqual(['1', '3']);
    expect(judge.stats()).toMatchObject({ judged: 2, incidents: 2, retracted: 0, errors: 0 });
  });

  it('retracts a verdict that late events take back, and keeps it out of the API\'s incidents', async () => {
    // Flow 4: three retransmissions judged as a burst keyed by the first; then an agent
    // catching up delivers one before them, which becomes the burst's first.
    const rows = flowRows();
    const start = NOW_NS - HOUR_NS / 30n;
    const base = BigInt(rows[0]!.wall_ts_ns);
    await insertRows(ch, 'hop_events', stored(4, start, [...rows, ...retransmissions(rows, [2, 3, 4])], base), hopEventEncoder);
    judge!.notify([4]);
    const burst = async () => query<{ key: string; retracted: number }>(cfg, 'SELECT incident_key AS key, retracted FROM incidents FINAL WHERE flow_id = 4 ORDER BY key');
    expect(await waitFor(async () => (await burst()).length === 1, 10_000)).toBe(true);
    const [first] = await burst();
    expect(first).toEqual({ key: expect.stringMatching(/^retrans:/), retracted: 0 });

    await insertRows(ch, 'hop_events', stored(4, start, retransmissions(rows, [1]), base), hopEventEncoder);
    judge!.notify([4]);
    expect(await waitFor(async () => (await burst()).length === 2, 10_000)).toBe(true);
    const now = await burst();
    expect(now.find((r) => r.key === first!.key)).toEqual({ key: first!.key, retracted: 1 });
    expect(now.filter((r) => r.retracted === 0)).toHaveLength(1);
    expect(judge!.stats()).toMatchObject({ retracted: 1, errors: 0 });

    const store = createFlowStore(ch, cfg.clickhouseUrl);
    const listed = (await store.listIncidents({ limit: 100 })).filter((i) => i.flowId === '4');
    expect(listed.map((i) => i.key)).toEqual(now.filter((r) => r.retracted === 0).map((r) => r.key));

    // Judged again with nothing new: nothing more retracted, the retraction stands.
    const judged = judge!.stats().judged;
    judge!.notify([4]);
    expect(await waitFor(async () => judge!.stats().judged > judged, 10_000)).toBe(true);
    expect(judge!.stats()).toMatchObject({ retracted: 1, errors: 0 });
    expect(await burst()).toEqual(now);
  });

  it('judges the flows past its row limit in later rounds, and a flow alone over it on its first rows', async () => {
    // 4 events a flow, 5 a round: each round reads one flow whole and the next one's first event.
    const small = createJudge({ ch, log: quietLog, settleMs: 100, lookbackMs: 1, maxRows: 5 });
    await small.start();
    try {
      await insertRows(ch, 'hop_events', [5, 6, 7].flatMap((f) => refused(f, NOW_NS - HOUR_NS / 60n)), hopEventEncoder);
      small.notify([7, 5, 6]);
      const refusedFlows = async () => (await incidents()).filter((r) => ['5', '6', '7'].includes(r.flow_id));
      expect(await waitFor(async () => (await refusedFlows()).length === 3, 10_000)).toBe(true);
      expect(await refusedFlows()).toEqual(['5', '6', '7'].map((flow_id) => ({ flow_id, kind: 'reset_refused' })));
      expect(small.stats()).toMatchObject({ judged: 3, truncated: 0, pending: 0, errors: 0 });
    } finally {
      await small.stop();
    }

    // A flow of 4 events, 3 a round: judged on its first 3, counted, and not put back.
    const tiny = createJudge({ ch, log: quietLog, settleMs: 100, lookbackMs: 1, maxRows: 3 });
    await tiny.start();
    try {
      await insertRows(ch, 'hop_events', refused(8, NOW_NS - HOUR_NS / 60n), hopEventEncoder);
      tiny.notify([8]);
      expect(await waitFor(async () => tiny.stats().judged === 1, 10_000)).toBe(true);
      expect(tiny.stats()).toMatchObject({ judged: 1, truncated: 1, pending: 0, errors: 0 });
    } finally {
      await tiny.stop();
    }
  });
});
