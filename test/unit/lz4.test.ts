import { randomBytes } from 'node:crypto';
import * as lz4napi from 'lz4-napi';
import { describe, expect, it } from 'vitest';
import { createLz4Compressor, lz4Uncompress, LZ4_MAX_BLOCK } from '../../services/shared/lz4.js';
import { encodeRecord, RECORD_SIZE } from '../../services/shared/record.js';

/** Hop records as the agent packs them: repetitive fields, a few varying ones. */
function records(n: number): Buffer {
  const out = Buffer.alloc(n * RECORD_SIZE);
  for (let i = 0; i < n; i++) {
    encodeRecord({
      tsNs: 1_700_000_000_000_000_000n + BigInt(i * 1_000),
      kind: 1,
      hook: 2,
      family: 2,
      l4proto: 6,
      tcpFlags: 0x10,
      seq: (i * 1448) >>> 0,
      ack: 12345,
      tuple: { saddr: '10.244.1.2', daddr: '10.96.0.10', sport: 40000 + (i % 64), dport: 80 },
    }, out, i * RECORD_SIZE);
  }
  return out;
}

describe('LZ4 blocks through liblz4 (lz4.ts)', () => {
  const cases: [string, Buffer][] = [
    ['hop records', records(8192)],
    ['random bytes', randomBytes(100_000)],
    ['one byte', Buffer.from([42])],
  ];

  it.each(cases)('round-trips %s, and lz4-napi (what wrote blocks before) reads them', (_, src) => {
    const block = Buffer.from(createLz4Compressor()(src));
    expect(block.readUInt32LE(0)).toBe(src.length);
    expect(lz4Uncompress(block).equals(src)).toBe(true);
    expect(lz4napi.uncompressSync(block).equals(src)).toBe(true);
  });

  it.each(cases)('reads lz4-napi blocks of %s', (_, src) => {
    expect(lz4Uncompress(lz4napi.compressSync(src)).equals(src)).toBe(true);
  });

  it('compresses hop records ~4x', () => {
    const src = records(8192);
    expect(createLz4Compressor()(src).length).toBeLessThan(src.length / 3);
  });

  it('lends its result until its next call, and a second compressor keeps its own', () => {
    const a = createLz4Compressor();
    const b = createLz4Compressor();
    const x = records(100);
    const first = a(x);
    const copy = Buffer.from(first);
    const other = b(randomBytes(5000));
    expect(first.equals(copy)).toBe(true); // b did not touch a's buffer
    a(randomBytes(5000));
    expect(lz4Uncompress(copy).equals(x)).toBe(true);
    expect(lz4Uncompress(Buffer.from(other)).length).toBe(5000);
  });

  it('refuses blocks that lie, with what is wrong', () => {
    const good = Buffer.from(createLz4Compressor()(records(10)));
    expect(() => lz4Uncompress(good.subarray(0, 3))).toThrow(/no length prefix/);
    const big = Buffer.from(good);
    big.writeUInt32LE(LZ4_MAX_BLOCK + 1, 0);
    expect(() => lz4Uncompress(big)).toThrow(/claims/);
    const long = Buffer.from(good);
    long.writeUInt32LE(good.readUInt32LE(0) + 1, 0);
    expect(() => lz4Uncompress(long)).toThrow(/corrupt|decoded/);
    const cut = good.subarray(0, good.length - 5);
    expect(() => lz4Uncompress(cut)).toThrow(/corrupt|decoded/);
    const junk = Buffer.concat([good.subarray(0, 4), Buffer.alloc(good.length - 4, 0xff)]);
    expect(() => lz4Uncompress(junk)).toThrow(/corrupt|decoded/);
  });
});
