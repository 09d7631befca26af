import kafkajs from 'kafkajs';
import { compressSync } from 'snappy';
import { describe, expect, it } from 'vitest';
import { snappyCodec, snappyDecompress } from '../../services/shared/kafka-snappy.js';

describe('snappy codec for kafkajs', () => {
  const data = Buffer.from(Array.from({ length: 50_000 }, (_, i) => (i * 7) % 251));

  it('is the codec kafkajs looks up for snappy', () => {
    expect((kafkajs.CompressionCodecs as Record<number, unknown>)[kafkajs.CompressionTypes.Snappy]).toBe(snappyCodec);
  });

  it('round-trips a batch through compress and decompress', async () => {
    const codec = snappyCodec();
    const packed = await codec.compress({ buffer: data });
    expect(packed.length).toBeLessThan(data.length);
    expect((await codec.decompress(packed)).equals(data)).toBe(true);
  });

  it('reads the xerial framing Java producers write', () => {
    const header = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00, 0, 0, 0, 1, 0, 0, 0, 1]);
    const blocks = [data.subarray(0, 20_000), data.subarray(20_000)].map((b) => {
      const c = compressSync(b);
      const size = Buffer.alloc(4);
      size.writeUInt32BE(c.length);
      return Buffer.concat([size, c]);
    });
    expect(snappyDecompress(Buffer.concat([header, ...blocks])).equals(data)).toBe(true);
    // A block that claims more bytes than there are is an error that says where.
    expect(() => snappyDecompress(Buffer.concat([header, blocks[0]!.subarray(0, 10)]))).toThrow(/runs past/);
  });
});
