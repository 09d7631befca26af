import { describe, expect, it } from 'vitest';
import { decodeBatch, encodeBatch } from '../../services/shared/batch.js';
import { HopError } from '../../services/shared/errors.js';
import { hoptrace } from '../../services/shared/gen/hop.js';
import { createBatcher } from '../../services/agent/batcher.js';
import { RECORD_SIZE } from '../../services/shared/record.js';
import { pack, pkt } from './helpers.js';

const HopBatch = hoptrace.v1.HopBatch;
const meta = { agent: 'a1', node: 'node-a', boot: 2 ** 52 + 7, clockOffsetNs: 1_764_000_000_123_456_789n };

describe('HopBatch codec', () => {
  it('round-trips records, ids and a 64-bit clock offset exactly', () => {
    const recs = pack([pkt('10.0.0.1', 1, '10.0.0.2', 2), pkt('10.0.0.2', 2, '10.0.0.1', 1)]);
    const d = decodeBatch(encodeBatch({ ...meta, netnsNames: new Map([[4026531840, 'hopt-a']]) }, recs, [10, 11], 2));
    expect(d).toMatchObject({ agent: 'a1', node: 'node-a', boot: meta.boot, clockOffsetNs: meta.clockOffsetNs, count: 2, firstSeq: 10 });
    expect(d.records.equals(recs)).toBe(true);
    expect([d.seqOf(0), d.seqOf(1)]).toEqual([10, 11]);
    expect(d.netnsNames?.get(4026531840)).toBe('hopt-a');
  });

  it('carries connection ids and out-of-order seqs (held handshake records)', () => {
    const recs = pack([pkt('10.0.0.1', 1, '10.0.0.2', 2), pkt('10.0.0.1', 1, '10.0.0.2', 2)]);
    const conn = Buffer.alloc(16);
    conn.writeUInt32LE(7, 0);
    conn.writeUInt32LE(9, 4);
    const d = decodeBatch(encodeBatch(meta, recs, [12, 4], 2, conn));
    expect([d.seqOf(0), d.seqOf(1)]).toEqual([12, 4]);
    expect([d.isnC(0), d.isnS(0), d.isnC(1), d.isnS(1)]).toEqual([7, 9, 0, 0]);
  });

  it.each(['lz4', 'snappy'] as const)('compresses records and ids into %s blocks when asked, and reads them back the same', (codec) => {
    const recs = pack(Array.from({ length: 50 }, (_, i) => pkt('10.0.0.1', 1000 + (i % 3), '10.0.0.2', 80, { seq: i })));
    const conn = Buffer.alloc(8 * 50);
    for (let i = 0; i < 50; i++) conn.writeUInt32LE(1000 + (i % 3), 8 * i);
    const plain = encodeBatch(meta, recs, Array.from({ length: 50 }, (_, i) => i), 50, conn);
    const packed = encodeBatch({ ...meta, codec }, recs, Array.from({ length: 50 }, (_, i) => i), 50, conn);
    expect(packed.length).toBeLessThan(plain.length / 3);
    const d = decodeBatch(packed);
    expect(d.records.equals(recs)).toBe(true);
    expect(Array.from({ length: 50 }, (_, i) => d.isnC(i))).toEqual(Array.from({ length: 50 }, (_, i) => 1000 + (i % 3)));
  });

  it.each(['lz4', 'snappy'] as const)('rejects a %s block that does not decompress, and an unknown codec, naming the field', (codec) => {
    const recs = pack([pkt('10.0.0.1', 1, '10.0.0.2', 2)]);
    const msg = HopBatch.decode(encodeBatch({ ...meta, codec }, recs, [0], 1));
    msg.records = Buffer.from([0xff, 0xff, 0xff, 0x7f, 0x0f, 1, 2, 3]);
    expect(() => decodeBatch(Buffer.from(HopBatch.encode(msg).finish()))).toThrow(new RegExp(`records is not a ${codec} block`));
    msg.codec = 9 as hoptrace.v1.RecordCodec;
    expect(() => decodeBatch(Buffer.from(HopBatch.encode(msg).finish()))).toThrow(/unknown record codec 9/);
  });

  it('carries kernel names for reasons and drop locations', () => {
    const names = { dropReasonNames: new Map([[6, 'NETFILTER_DROP']]), resetReasonNames: new Map([[1, 'NO_SOCKET']]), symbols: new Map([[0xffffffff81234567n, 'nf_hook_slow']]) };
    const d = decodeBatch(encodeBatch({ ...meta, ...names }, pkt('10.0.0.1', 1, '10.0.0.2', 2), [0], 1));
    expect(d.dropReasonNames).toEqual(names.dropReasonNames);
    expect(d.resetReasonNames).toEqual(names.resetReasonNames);
    expect(d.symbols).toEqual(names.symbols);
  });

  it('keeps seq gaps (skipped corrupt records)', () => {
    const recs = pack([pkt('10.0.0.1', 1, '10.0.0.2', 2), pkt('10.0.0.1', 1, '10.0.0.2', 2), pkt('10.0.0.1', 1, '10.0.0.2', 2)]);
    const d = decodeBatch(encodeBatch(meta, recs, [3, 5, 9], 3));
    expect([0, 1, 2].map(d.seqOf)).toEqual([3, 5, 9]);
  });

  it.each([
    ['garbage', Buffer.from('not protobuf at all, just text \xff\xff')],
    ['empty agent', encodeBatch({ ...meta, agent: '' }, pkt('10.0.0.1', 1, '10.0.0.2', 2), [0], 1)],
  ])('rejects %s with HOP_BATCH_INVALID', (_n, value) => {
    expect(() => decodeBatch(value)).toThrow(HopError);
  });
});

describe('batcher', () => {
  const chunk = (bufs: Buffer[], firstSeq = 0, conn = Buffer.alloc(8 * bufs.length)) => ({ buf: pack(bufs), count: bufs.length, seqs: Float64Array.from(bufs, (_, i) => firstSeq + i), conn, clockOffsetNs: 5n });

  it('keeps records in the order given, with their seqs and connection ids', () => {
    const b = createBatcher(4, 100, 1000, 2);
    const fwd = pkt('10.0.0.1', 1234, '10.0.0.2', 80);
    const rev = pkt('10.0.0.2', 80, '10.0.0.1', 1234);
    const conn = Buffer.alloc(24);
    conn.writeUInt32LE(0xabc, 8);
    conn.writeUInt32LE(0xdef, 12);
    expect(b.add(chunk([fwd, rev, fwd], 7, conn), 0)).toEqual([]);
    expect(b.pending).toBe(3);
    const out = b.due(0, true);
    expect(out).toHaveLength(1);
    expect(out[0]!.partition).toBe(2);
    expect([...out[0]!.seqs]).toEqual([7, 8, 9]);
    expect(out[0]!.records.equals(pack([fwd, rev, fwd]))).toBe(true);
    expect(out[0]!.conn.equals(conn)).toBe(true);
    expect(b.pending).toBe(0);
  });

  it('sends batch after batch to the partitions in turn', () => {
    const b = createBatcher(3, 2, 1000, 1);
    const r = pkt('10.0.0.1', 1, '10.0.0.2', 2);
    const out = b.add(chunk([r, r, r, r, r, r, r, r]), 0);
    expect(out.map((x) => x.partition)).toEqual([1, 2, 0, 1]);
  });

  it('seals a batch when full, and others on linger', () => {
    const b = createBatcher(1, 2, 50);
    const r = pkt('10.0.0.1', 1, '10.0.0.2', 2);
    expect(b.add(chunk([r, r, r]), 0).map((x) => x.count)).toEqual([2]);
    expect(b.due(49)).toEqual([]);
    expect(b.due(50).map((x) => x.count)).toEqual([1]);
  });

  it('starts a new batch when the clock reference changes', () => {
    const b = createBatcher(1, 10, 50);
    const r = pkt('10.0.0.1', 1, '10.0.0.2', 2);
    b.add(chunk([r]), 0);
    const sealed = b.add({ ...chunk([r]), clockOffsetNs: 6n }, 0);
    expect(sealed.map((x) => x.clockOffsetNs)).toEqual([5n]);
    expect(b.due(0, true).map((x) => x.clockOffsetNs)).toEqual([6n]);
  });
});
