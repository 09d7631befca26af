import { describe, expect, it } from 'vitest';
import { flowPartEncoder, hopEventEncoder } from '../../services/correlator/encode.js';
import { decodeBatch, encodeBatch } from '../../services/shared/batch.js';
import { batchToRows } from '../../services/correlator/rows.js';
import { pack, pkt } from './helpers.js';

describe('RowBinary encoder', () => {
  // Found on the live lab: strings ate into the room a row reserved for its fixed-width
  // fields, and writes past the buffer's end were silently dropped (the last row came up short).
  it('encodes many rows exactly as it encodes each alone, wherever the buffer has to grow', () => {
    for (const nameLen of [8, 40, 70, 120]) {
      for (const n of [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]) {
        const meta = { agent: 'a'.repeat(nameLen), node: 'n'.repeat(nameLen), boot: 3, clockOffsetNs: 1_764_000_000_000_000_000n };
        const recs = Array.from({ length: n }, (_, i) => pkt('10.0.0.1', 1000 + i, '10.0.0.2', 80, { ifname: 'veth'.padEnd(15, String(i % 10)) }));
        const { events, parts } = batchToRows(decodeBatch(encodeBatch(meta, pack(recs), recs.map((_, i) => i), recs.length)));
        const alone = Buffer.concat(events.map((e) => hopEventEncoder.RowBinary([e])));
        expect(hopEventEncoder.RowBinary(events).equals(alone), `${n} rows, names of ${nameLen}`).toBe(true);
        expect(flowPartEncoder.RowBinary(parts).equals(Buffer.concat(parts.map((p) => flowPartEncoder.RowBinary([p]))))).toBe(true);
      }
    }
  });
});
