// The correlator's writer against a fake ClickHouse: a RowBinary insert the server refuses
// is written again as TabSeparated; a lost connection is not (it stalls and retries).
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { clickhouseWriter } from '../../services/correlator/correlator.js';
import { decodeBatch, encodeBatch } from '../../services/shared/batch.js';
import type { ClickHouseClient } from '../../services/shared/clickhouse.js';
import { loadConfig } from '../../services/shared/config.js';
import { pack, pkt } from './helpers.js';

function fakeClickHouse(refuse: (query: string) => Error | undefined) {
  const inserts: { query: string; bytes: number }[] = [];
  const ch = {
    async exec({ query, values }: { query: string; values: Readable }) {
      let bytes = 0;
      for await (const c of values) bytes += (c as Buffer).length;
      const err = refuse(query);
      if (err) throw err;
      inserts.push({ query, bytes });
      return { stream: Readable.from([]) };
    },
  } as unknown as ClickHouseClient;
  return { ch, inserts };
}

const batch = () => decodeBatch(encodeBatch({ agent: 'a', node: 'n', boot: 1, clockOffsetNs: 0n }, pack([pkt('10.0.0.1', 1, '10.0.0.2', 2, { tsNs: 1_000n })]), [0], 1));

describe('clickhouseWriter', () => {
  const cfg = loadConfig({});

  it('writes what ClickHouse refused in RowBinary again as TabSeparated', async () => {
    const { ch, inserts } = fakeClickHouse((q) => (q.endsWith('FORMAT RowBinary') ? new Error('Code: 33, e.displayText() = DB::Exception: Cannot read all data') : undefined));
    await clickhouseWriter(cfg, ch, 'RowBinary').write([batch()], []);
    expect(inserts.map((i) => i.query.replace(/ \(.*\)/, ''))).toEqual(['INSERT INTO hop_events FORMAT TabSeparated', 'INSERT INTO flow_parts FORMAT TabSeparated']);
    expect(inserts.every((i) => i.bytes > 0)).toBe(true);
  });

  it('does not fall back when ClickHouse cannot be reached', async () => {
    const { ch, inserts } = fakeClickHouse(() => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:18123'), { code: 'ECONNREFUSED' }));
    await expect(clickhouseWriter(cfg, ch, 'RowBinary').write([batch()], [])).rejects.toThrow(/insert into ClickHouse at .* failed/);
    expect(inserts).toEqual([]);
  });
});
