// The correlator's judge against a real ClickHouse: at start it re-judges the anomalies of
// its lookback (and only those), then the flows it is told of; verdicts land in `incidents`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertRows } from '../../services/correlator/correlator.js';
import { hopEventEncoder } from '../../services/correlator/encode.js';
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

/** A SYN to a closed port, answered by a reset, starting at `startNs`, stored as flow `flowId`. */
function refused(flowId: number, startNs: bigint): HopEventRow[] {
  const rows = flowRows().slice(0, 3);
  const rst: TimelineRow = { ...rows[0]!, seq: 500, kind: Kind.RST_SENT, hook: Hook.TCP_SEND_RESET, node: 'node-c', saddr: POD.addr, sport: POD.port, daddr: C.addr, dport: C.port, sk_state: 0, reason_name: 'NO_SOCKET' };
  const base = BigInt(rows[0]!.wall_ts_ns);
  return [...rows, rst].map((r) => {
    const ts = startNs + BigInt(r.wall_ts_ns) - base;
    return { reason_name: '', location: '', aux0: 0, aux1: 0, aux2: 0, isn_c: 0, isn_s: 0, ...r, seq: r.seq + flowId * 1000, event_date: eventDate(ts), flow_id: flowId, wall_ts_ns: ts.toString(), kernel_ts_ns: ts.toString(), skb_id: '0', mark: 0 } as HopEventRow;
  });
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
    expect(judge.stats()).toMatchObject({ judged: 2, incidents: 2, errors: 0 });
  });
});
