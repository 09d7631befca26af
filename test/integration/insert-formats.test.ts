// The three insert formats store the same values: rows with awkward strings (tab,
// newline, backslash, quote, non-ASCII) and 64-bit extremes go in as JSONEachRow,
// TabSeparated and RowBinary, and come back identical.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clickhouseWriter } from '../../services/correlator/correlator.js';
import { INSERT_FORMATS } from '../../services/correlator/encode.js';
import { batchToRows, type FlowPartRow, type HopEventRow } from '../../services/correlator/rows.js';
import { decodeBatch, encodeBatch } from '../../services/shared/batch.js';
import { createClickHouse, migrate } from '../../services/shared/clickhouse.js';
import type { Config } from '../../services/shared/config.js';
import { Kind } from '../../services/shared/record.js';
import { pack, pkt } from '../unit/helpers.js';
import { dropDatabase, isolatedConfig, query } from './env.js';

const AWKWARD = ['a\tb', 'line\nbreak', 'back\\slash', "quo'te", 'cr\rx', 'nul\0x', 'ünï€ode', '', 'x'.repeat(300)];

function rows(): { events: HopEventRow[]; parts: FlowPartRow[] } {
  const recs = [
    pkt('10.0.0.9', 40000, '10.0.0.2', 80, { tsNs: 100n, payloadLen: 10, tcpFlags: 0x02, seq: 0xffff_ffff, ifname: 'eth\\0' }),
    pkt('fd00::1', 65535, 'fd00:0:0:1::2', 443, { tsNs: 0xffff_ffff_ffff_fff0n, skbId: 0xffff_ffff_ffff_ffffn, kind: Kind.DROP, reason: 65535, aux: [0xffff_ffff, 0, 7] }),
  ];
  const r = batchToRows(decodeBatch(encodeBatch({ agent: 'agent-a', node: 'node-a', boot: 2 ** 53 - 1, clockOffsetNs: 5n }, pack(recs), [0, 1], 2)));
  const events = AWKWARD.map((s, i) => ({ ...r.events[i % 2]!, seq: i, agent: s, node: s, netns: s, reason_name: s, location: s }));
  const parts = AWKWARD.map((s, i) => ({ ...r.parts[0]!, part_key: `${i}`, nodes: [s, 'b', s + "'"] }));
  return { events, parts };
}

describe('insert formats', () => {
  const cfgs: Record<string, Config> = {};
  beforeAll(async () => {
    for (const f of INSERT_FORMATS) {
      cfgs[f] = isolatedConfig();
      await migrate(cfgs[f]!);
    }
  });
  afterAll(async () => {
    for (const c of Object.values(cfgs)) await dropDatabase(c);
  });

  it('JSONEachRow, TabSeparated and RowBinary store identical rows', async () => {
    const { events, parts } = rows();
    const stored: Record<string, unknown> = {};
    for (const f of INSERT_FORMATS) {
      const cfg = cfgs[f]!;
      const ch = createClickHouse(cfg);
      try {
        await clickhouseWriter(cfg, ch, f).write(events, parts, [{ received_date: '2025-11-24', origin: 'o\t1', reason: 'r\n', payload: 'AAEC' }]);
      } finally {
        await ch.close();
      }
      stored[f] = {
        events: await query(cfg, 'SELECT * FROM hop_events ORDER BY seq'),
        parts: await query(cfg, 'SELECT * FROM flow_parts ORDER BY part_key'),
        rejected: await query(cfg, 'SELECT * FROM rejected'),
      };
    }
    const json = stored.JSONEachRow as { events: { agent: string }[] };
    expect(json.events.map((e) => e.agent)).toEqual(AWKWARD);
    expect(stored.TabSeparated).toEqual(stored.JSONEachRow);
    expect(stored.RowBinary).toEqual(stored.JSONEachRow);
  });
});
