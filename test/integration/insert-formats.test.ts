// The three insert formats store the same values: rows with awkward strings (tab,
// newline, backslash, quote, non-ASCII) and 64-bit extremes go in as JSONEachRow,
// TabSeparated and RowBinary, and come back identical.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clickhouseWriter } from '../../services/correlator/correlator.js';
import { INSERT_FORMATS } from '../../services/correlator/encode.js';
import { decodeBatch, encodeBatch, type DecodedBatch } from '../../services/shared/batch.js';
import { createClickHouse, migrate } from '../../services/shared/clickhouse.js';
import type { Config } from '../../services/shared/config.js';
import { Kind } from '../../services/shared/record.js';
import { pack, pkt } from '../unit/helpers.js';
import { dropDatabase, isolatedConfig, query } from './env.js';

const AWKWARD = ['a\tb', 'line\nbreak', 'back\\slash', "quo'te", 'cr\rx', 'nul\0x', 'ünï€ode', '', 'x'.repeat(300)];

/** One batch per awkward string, in every name a batch carries (agent, node, netns, drop reason, drop location). */
function batches(): DecodedBatch[] {
  return AWKWARD.map((s, i) => {
    const recs = [
      pkt('10.0.0.9', 40000, '10.0.0.2', 80, { tsNs: 100n, payloadLen: 10, tcpFlags: 0x02, seq: 0xffff_ffff, ifname: 'eth\\0', netnsIno: 7 }),
      pkt('fd00::1', 65535, 'fd00:0:0:1::2', 443, { tsNs: 0xffff_ffff_ffff_fff0n, skbId: 0xffff_ffff_ffff_ffffn, kind: Kind.DROP, reason: 65535, aux: [0xffff_ffff, 0, 7], netnsIno: 7 }),
    ];
    const meta = { agent: s || 'agent', node: s, boot: 2 ** 53 - 1, clockOffsetNs: 5n, netnsNames: new Map([[7, s]]), dropReasonNames: new Map([[65535, s]]), symbols: new Map([[0xffff_ffffn, s]]) };
    return decodeBatch(encodeBatch(meta, pack(recs), [2 * i, 2 * i + 1], 2));
  });
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
    const stored: Record<string, unknown> = {};
    for (const f of INSERT_FORMATS) {
      const cfg = cfgs[f]!;
      const ch = createClickHouse(cfg);
      try {
        await clickhouseWriter(cfg, ch, f).write(batches(), [{ received_date: '2025-11-24', origin: 'o\t1', reason: 'r\n', payload: 'AAEC' }]);
      } finally {
        await ch.close();
      }
      stored[f] = {
        events: await query(cfg, 'SELECT * FROM hop_events ORDER BY seq'),
        parts: await query(cfg, 'SELECT * FROM flow_parts ORDER BY part_key'),
        rejected: await query(cfg, 'SELECT * FROM rejected'),
      };
    }
    const json = stored.JSONEachRow as { events: { agent: string; node: string; netns: string; reason_name: string; location: string }[] };
    expect(json.events.map((e) => e.node)).toEqual(AWKWARD.flatMap((s) => [s, s]));
    expect(json.events.map((e) => e.netns)).toEqual(AWKWARD.flatMap((s) => [s, s]));
    expect(json.events.map((e) => [e.reason_name, e.location])).toEqual(AWKWARD.flatMap((s) => [['', ''], [s, s]]));
    expect(stored.TabSeparated).toEqual(stored.JSONEachRow);
    expect(stored.RowBinary).toEqual(stored.JSONEachRow);
  });
});
