import { describe, expect, it } from 'vitest';
import { createBatcher } from '../../services/agent/batcher.js';
import type { AnnotatedChunk } from '../../services/agent/connections.js';
import { RECORD_SIZE } from '../../services/shared/record.js';
import { pack, pkt } from './helpers.js';

/** n records on distinct flows; every third carries a connection id. */
function chunk(n: number, firstSeq = 100, misaligned = false): AnnotatedChunk {
  const recs = pack(Array.from({ length: n }, (_, i) => pkt('10.0.0.1', 1000 + i, '10.0.0.2', 80, { tsNs: BigInt(i + 1) })));
  const conn = Buffer.alloc(8 * n);
  for (let i = 0; i < n; i += 3) {
    conn.writeUInt32LE(0x1000 + i, 8 * i);
    conn.writeUInt32LE(0x2000 + i, 8 * i + 4);
  }
  // Copies that start one byte into a buffer: the batcher must not depend on alignment.
  const place = (b: Buffer) => {
    if (!misaligned) return b;
    const m = Buffer.alloc(b.length + 1).subarray(1);
    b.copy(m);
    return m;
  };
  return { buf: place(recs), conn: place(conn), count: n, seqs: Float64Array.from({ length: n }, (_, i) => firstSeq + i), clockOffsetNs: 7n };
}

describe('batcher', () => {
  it.each([false, true])('packs every record, its connection id and seq, in order, across batches (misaligned input: %s)', (misaligned) => {
    const c = chunk(50, 100, misaligned);
    const b = createBatcher(6, 16, 50, 0);
    const out = [...b.add(c, 0), ...b.due(0, true)];
    expect(out.map((x) => x.count)).toEqual([16, 16, 16, 2]);
    expect(out.map((x) => x.partition)).toEqual([0, 1, 2, 3]);
    expect(Buffer.concat(out.map((x) => x.records)).equals(c.buf)).toBe(true);
    expect(Buffer.concat(out.map((x) => x.conn)).equals(c.conn)).toBe(true);
    expect(out.flatMap((x) => [...x.seqs])).toEqual(Array.from({ length: 50 }, (_, i) => 100 + i));
  });

  it('carries where the records to name are, shifted into each batch, or that a chunk did not say', () => {
    const b = createBatcher(1, 8, 50);
    const sealed = (...parts: [number, number[] | undefined][]) => {
      const out = parts.flatMap(([n, named]) => b.add({ ...chunk(n), named }, 0));
      return [...out, ...b.due(0, true)].map((x) => x.named);
    };
    expect(sealed([3, []], [3, []])).toEqual([[]]);
    expect(sealed([3, [0]], [3, [2]])).toEqual([[0, 5]]);
    expect(sealed([3, [1]], [3, undefined])).toEqual([null]);
    // a chunk split across two batches: each gets its own part, at its own offsets
    expect(sealed([6, []], [4, [0, 1, 3]])).toEqual([[6, 7], [1]]);
  });

  it('fills a batch from several chunks', () => {
    const b = createBatcher(1, 8, 50);
    expect(b.add(chunk(5, 0), 0)).toEqual([]);
    const [full] = b.add(chunk(5, 5), 1);
    expect([...full!.seqs]).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(full!.records.subarray(5 * RECORD_SIZE, 6 * RECORD_SIZE).equals(chunk(5).buf.subarray(0, RECORD_SIZE))).toBe(true);
    expect(b.pending).toBe(2);
  });

  it('seals a batch when the clock reference changes', () => {
    const b = createBatcher(1, 8, 50);
    b.add(chunk(4, 0), 0);
    const sealed = b.add({ ...chunk(1, 4), clockOffsetNs: 8n }, 0);
    expect(sealed.map((x) => [x.count, x.clockOffsetNs])).toEqual([[4, 7n]]);
    expect(b.due(0, true).map((x) => [x.count, x.clockOffsetNs])).toEqual([[1, 8n]]);
  });

  it('reuses the buffers of recycled batches only', () => {
    const b = createBatcher(1, 8, 50);
    const [first] = b.add(chunk(8), 0);
    const kept = Buffer.from(first!.records);
    const [second] = b.add(chunk(8), 0);
    // Not recycled: the first batch's memory is left alone.
    expect(second!.records.buffer).not.toBe(first!.records.buffer);
    expect(first!.records.equals(kept)).toBe(true);
    b.recycle(first!);
    const [third] = b.add(chunk(8), 0);
    expect(third!.records.buffer).toBe(first!.records.buffer);
  });

  it('sends the open batch once its first record has waited lingerMs', () => {
    const b = createBatcher(6, 1024, 50);
    b.add(chunk(3), 0);
    b.add(chunk(30, 200), 40);
    expect(b.due(49)).toEqual([]);
    expect(b.due(50).map((x) => x.count)).toEqual([33]);
    expect(b.pending).toBe(0);
  });

  it('runs the linger from the chunk\'s since, never from later than it was added, and says when it is due', () => {
    const b = createBatcher(1, 1024, 50);
    expect(b.dueAt()).toBe(Infinity);
    b.add({ ...chunk(3), since: 900 }, 1000); // drained at 1000; reached the ring after 900
    expect(b.dueAt()).toBe(950);
    expect(b.due(949)).toEqual([]);
    expect(b.due(950).map((x) => [x.count, x.since])).toEqual([[3, 900]]);
    b.add({ ...chunk(2), since: 2000 }, 1500); // a since ahead of the caller's clock is not trusted
    expect(b.dueAt()).toBe(1550);
  });
});
