import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import '../../services/shared/kafka.js';
import { grownSize, kafkajsUsesEncoderGrowth } from '../../services/shared/kafka-encoder.js';

const require = createRequire(import.meta.url);
type Enc = { buf: Buffer; offset: number; buffer: Buffer; writeInt8(v: number): Enc; writeInt32(v: number): Enc; writeVarInt(v: number): Enc; writeBytes(b: Buffer): Enc; writeVarIntBytes(b: Buffer | string): Enc; writeString(s: string): Enc; writeEncoder(e: Enc): Enc };
const Encoder = require('kafkajs/src/protocol/encoder.js') as new (size?: number) => Enc;
const { RecordBatch } = require('kafkajs/src/protocol/recordBatch/v0/index.js') as { RecordBatch: (o: object) => Promise<Enc> };
const Record = require('kafkajs/src/protocol/recordBatch/record/v0/index.js') as (o: object) => Enc;
const Decoder = require('kafkajs/src/protocol/decoder.js') as new (b: Buffer) => object;
const decodeBatch = require('kafkajs/src/protocol/recordBatch/v0/decoder.js') as (d: object) => Promise<{ records: { value: Buffer; key: Buffer | null }[] }>;

describe('kafkajs Encoder growth (kafka-encoder.ts)', () => {
  it('is installed once kafka.ts is imported', () => {
    expect(kafkajsUsesEncoderGrowth()).toBe(true);
  });

  it('grows to the need plus an eighth for a large write, and doubles for small ones', () => {
    expect(grownSize(512, 266_000)).toBe(266_000 + 33_250 + 64);
    expect(grownSize(512, 513)).toBe(1024);
    expect(grownSize(1 << 20, (1 << 20) + 1)).toBe(2 << 20);
    for (const [cur, need] of [[512, 600], [1024, 1_000_000], [4096, 4097]] as const) expect(grownSize(cur, need)).toBeGreaterThanOrEqual(need);
  });

  it('writes exactly the bytes written, however the buffer grew (no stale bytes past offset are ever exposed)', () => {
    const big = randomBytes(300_000);
    const e = new Encoder().writeInt8(7).writeBytes(big).writeInt32(-2).writeVarIntBytes('héllo').writeString('x'.repeat(5000));
    const inner = new Encoder().writeInt32(1).writeVarInt(300);
    e.writeEncoder(inner);
    const want = Buffer.concat([
      Buffer.from([7]),
      Buffer.from([0, 4, 0x93, 0xe0]), // 300,000 as int32 BE
      big,
      Buffer.from([0xff, 0xff, 0xff, 0xfe]),
      Buffer.from([12]), // varint zigzag(6)
      Buffer.from('héllo'),
      Buffer.from([0x13, 0x88]), // int16 5000
      Buffer.from('x'.repeat(5000)),
      inner.buffer,
    ]);
    expect(e.buffer.equals(want)).toBe(true);
    expect(e.buf.length).toBeLessThan(2 * want.length);
  });

  it('round-trips a record batch of large values through kafkajs\'s own decoder (the broker checks the CRC in the integration tests)', async () => {
    const values = [randomBytes(270_000), randomBytes(10), randomBytes(70_000)];
    const records = values.map((value, i) => Record({ offsetDelta: i, timestampDelta: 0, key: null, value, headers: {} }));
    const batch = await RecordBatch({ compression: 0, lastOffsetDelta: values.length - 1, records });
    const decoded = await decodeBatch(new Decoder(batch.buffer));
    expect(decoded.records.map((r) => r.value)).toEqual(values);
  });
});
