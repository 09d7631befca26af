import { describe, expect, it } from 'vitest';
import { createBatcher, type ReadyBatch } from '../../services/agent/batcher.js';
import type { AnnotatedChunk } from '../../services/agent/connections.js';
import { partitionOf, partitionOfConn } from '../../services/shared/flowkey.js';
import { RECORD_SIZE } from '../../services/shared/record.js';
import { pack, pkt } from './helpers.js';

/** n records on distinct flows; every third carries a connection id. */
function chunk(n: number, misaligned: boolean): AnnotatedChunk {
  const recs = pack(Array.from({ length: n }, (_, i) => pkt('10.0.0.1', 1000 + i, '10.0.0.2', 80, { tsNs: BigInt(i + 1) })));
  const conn = Buffer.alloc(8 * n);
  for (let i = 0; i < n; i += 3) {
    conn.writeUInt32LE(0x1000 + i, 8 * i);
    conn.writeUInt32LE(0x2000 + i, 8 * i + 4);
  }
  // Copies that start one byte into a buffer: not 4-byte aligned, so the batcher must not use word views on them.
  const place = (b: Buffer) => {
    if (!misaligned) return b;
    const m = Buffer.alloc(b.length + 1).subarray(1);
    b.copy(m);
    return m;
  };
  return { buf: place(recs), conn: place(conn), count: n, seqs: Array.from({ length: n }, (_, i) => 100 + i), clockOffsetNs: 7n };
}

const flat = (bs: ReadyBatch[]) =>
  bs
    .sort((a, b) => a.partition - b.partition)
    .map((b) => ({ p: b.partition, recs: b.records.toString('hex'), conn: b.conn.toString('hex'), seqs: b.seqs, count: b.count }));

describe('batcher', () => {
  it.each([false, true])('packs each record, its connection id and seq into its partition (misaligned input: %s)', (misaligned) => {
    const c = chunk(50, misaligned);
    const b = createBatcher(6, 1024, 50);
    expect(b.add(c, 0)).toEqual([]);
    expect(b.pending).toBe(50);
    const out = b.due(0, true);
    expect(out.reduce((s, x) => s + x.count, 0)).toBe(50);
    for (const batch of out) {
      for (let k = 0; k < batch.count; k++) {
        const i = batch.seqs[k]! - 100;
        expect(batch.records.subarray(k * RECORD_SIZE, (k + 1) * RECORD_SIZE).equals(c.buf.subarray(i * RECORD_SIZE, (i + 1) * RECORD_SIZE))).toBe(true);
        expect(batch.conn.subarray(8 * k, 8 * k + 8).equals(c.conn.subarray(8 * i, 8 * i + 8))).toBe(true);
        const isnC = c.conn.readUInt32LE(8 * i);
        expect(batch.partition).toBe(isnC ? partitionOfConn(isnC, 6) : partitionOf(c.buf, i * RECORD_SIZE, 6));
      }
    }
  });

  it('gives the same batches whether or not the input is 4-byte aligned', () => {
    const run = (misaligned: boolean) => {
      const b = createBatcher(4, 16, 50);
      return flat([...b.add(chunk(100, misaligned), 0), ...b.due(0, true)]);
    };
    expect(run(true)).toEqual(run(false));
  });

  it('seals a batch at maxRecords and when the clock reference changes', () => {
    const b = createBatcher(1, 8, 50);
    const full = b.add(chunk(20, false), 0);
    expect(full.map((x) => x.count)).toEqual([8, 8]);
    const next = { ...chunk(1, false), clockOffsetNs: 8n };
    const sealed = b.add(next, 0);
    expect(sealed.map((x) => [x.count, x.clockOffsetNs])).toEqual([[4, 7n]]);
    expect(b.due(0, true).map((x) => [x.count, x.clockOffsetNs])).toEqual([[1, 8n]]);
  });

  it('reuses the buffers of recycled batches only', () => {
    const b = createBatcher(1, 8, 50);
    const [first] = b.add(chunk(8, false), 0);
    const kept = Buffer.from(first!.records);
    const [second] = b.add(chunk(8, false), 0);
    // Not recycled: the first batch's memory is left alone.
    expect(second!.records.buffer).not.toBe(first!.records.buffer);
    expect(first!.records.equals(kept)).toBe(true);
    b.recycle(first!);
    const [third] = b.add(chunk(8, false), 0);
    expect(third!.records.buffer).toBe(first!.records.buffer);
  });

  it('sends every open batch once the oldest has waited lingerMs', () => {
    const b = createBatcher(6, 1024, 50);
    b.add(chunk(3, false), 0); // a few partitions, opened at t=0
    b.add({ ...chunk(30, false), seqs: Array.from({ length: 30 }, (_, i) => 200 + i) }, 40); // more, at t=40
    expect(b.due(49)).toEqual([]);
    const out = b.due(50);
    expect(out.reduce((s, x) => s + x.count, 0)).toBe(33);
    expect(b.pending).toBe(0);
  });
});
